use thiserror::Error;

/// Why a byte stream is not a fragmented MP4 this crate can cut.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Fmp4Error {
    #[error("invalid fragmented MP4: {0}")]
    Invalid(String),
    #[error("codec {0} is not supported (supported: avc1, avc3, vp09, av01, mp4a, Opus, fLaC)")]
    UnsupportedCodec(String),
}
