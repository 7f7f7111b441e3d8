use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid settings: {0}")]
    Config(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}
