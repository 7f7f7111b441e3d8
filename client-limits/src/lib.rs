//! What the project's servers (the signal server, the HTTP edge) hold against one client:
//! a token bucket for a rate with a burst, and per-address limits on what an address has
//! open and how fast it opens more.

mod ip_limits;
mod token_bucket;

pub use ip_limits::{IpLimits, IpRefusal};
pub use token_bucket::TokenBucket;
