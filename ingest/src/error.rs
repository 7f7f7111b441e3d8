use thiserror::Error;

/// Why a publisher's input was refused. Each names what was wrong, for the publisher's
/// log and the operator's.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IngestError {
    #[error("RTMP: {0}")]
    Rtmp(String),
    #[error("AMF0: {0}")]
    Amf(String),
    #[error("FLV: {0}")]
    Flv(String),
    #[error("H.264: {0}")]
    Avc(String),
    #[error("AAC: {0}")]
    Aac(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
}
