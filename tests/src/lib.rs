//! Helpers for end-to-end tests: the project's real binaries as child processes, killed
//! when the test ends, inside a private network namespace.

pub mod browser;
pub mod http;
pub mod netns;
pub mod nginx;
pub mod process;
pub mod redis;
pub mod turn;
