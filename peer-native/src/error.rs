use thiserror::Error;

#[derive(Debug, Error)]
pub enum NativeError {
    #[error(transparent)]
    Media(#[from] fmp4::Fmp4Error),
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    #[error("init segment is {0} bytes; at most {max} fit in one peer message", max = protocol::MAX_PEER_MESSAGE_BYTES - 400)]
    InitTooLarge(usize),
    #[error(
        "a chunk (keyframe to keyframe) is {0} bytes; one signed manifest covers at most {max}: \
         use a shorter keyframe interval or a lower bitrate",
        max = protocol::MAX_CHUNK_BYTES
    )]
    ChunkTooLarge(usize),
    #[error("signal server {url}: {reason}")]
    Signal { url: String, reason: String },
    #[error("ingest configuration: {0}")]
    Config(String),
    #[error("channel key {0}")]
    Key(String),
    #[error("signal server refused: {0}")]
    Refused(String),
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("stopped after playing {played} of the {wanted} chunks asked for")]
    FellShort { played: u64, wanted: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
