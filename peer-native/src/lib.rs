//! Native StreamTorrent peer on the `webrtc` crate: the broadcaster (fMP4 in, chunks out)
//! and a headless viewer.

pub mod fmp4;

mod error;

pub use error::NativeError;
