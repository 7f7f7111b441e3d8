//! Native StreamTorrent peer on the `webrtc` crate: the broadcaster (fMP4 in, chunks out),
//! the ingest server (RTMP in, a broadcaster per channel) and a headless viewer.

pub mod broadcast;
pub mod edge;
pub mod identity;
pub mod ingest;
pub mod node;
pub mod timeline;
pub mod watch;

mod error;
pub(crate) mod fetch;
mod link;
mod record;
mod signalling;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

pub use error::NativeError;
