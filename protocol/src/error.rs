use thiserror::Error;

/// Why a message from the network was refused. Each variant names the exact defect so the
/// sender can be told precisely what was wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed JSON message: {0}")]
    Json(String),
    #[error("message truncated: needed {needed} more bytes for {field}")]
    Truncated { field: &'static str, needed: usize },
    #[error("unknown peer message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("{count} trailing bytes after a complete message")]
    TrailingBytes { count: usize },
    #[error("invalid channel name {0:?}: use 1-64 characters a-z, 0-9, '-' or '_'")]
    InvalidChannelName(String),
    #[error("invalid field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}
