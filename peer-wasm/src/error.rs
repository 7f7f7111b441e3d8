use thiserror::Error;
use wasm_bindgen::{JsCast, JsValue};

#[derive(Debug, Error)]
pub enum WebError {
    #[error("{0}")]
    Js(String),
    /// The signal server refused us for good (an outdated page, say): the player stops.
    #[error("{0}")]
    Refused(String),
    #[error("this browser lacks {0}, which StreamTorrent needs")]
    Unsupported(&'static str),
    #[error("this browser cannot play {0}")]
    CodecUnsupported(String),
}

impl From<JsValue> for WebError {
    fn from(value: JsValue) -> WebError {
        let text = value
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| value.as_string())
            .unwrap_or_else(|| format!("{value:?}"));
        WebError::Js(text)
    }
}
