//! Which Media Source the browser offers: the standard `MediaSource`, or on iPhone and iPad
//! Safari (which lack it) `ManagedMediaSource`. The managed one is a `MediaSource` that
//! the browser may ask to stop being fed (`endstreaming`, when it holds enough or saves
//! power) and to resume (`startstreaming`); it opens only for a video element with
//! `disableRemotePlayback` (or an AirPlay alternative, which a live P2P stream has not).
//!
//! web-sys has no binding for it, so it is reached through `Reflect`; once built it is used
//! through the `MediaSource` binding it extends.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{HtmlVideoElement, MediaSource};

use crate::WebError;

/// The constructor's global name on Safari.
const MANAGED: &str = "ManagedMediaSource";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The standard `MediaSource`: fed whenever there is media.
    Standard,
    /// `ManagedMediaSource`: fed only between `startstreaming` and `endstreaming`.
    Managed,
}

impl SourceKind {
    /// What this browser offers, the standard one first; `None`: no Media Source at all.
    pub fn detect() -> Option<SourceKind> {
        let window = web_sys::window()?;
        let has = |name: &str| js_sys::Reflect::has(&window, &name.into()).unwrap_or(false);
        if has("MediaSource") {
            Some(SourceKind::Standard)
        } else if has(MANAGED) {
            Some(SourceKind::Managed)
        } else {
            None
        }
    }

    /// A new source of this kind, for `video`.
    pub fn create(self, video: &HtmlVideoElement) -> Result<MediaSource, WebError> {
        let unsupported = |_| WebError::Unsupported("Media Source Extensions");
        match self {
            SourceKind::Standard => MediaSource::new().map_err(unsupported),
            SourceKind::Managed => {
                // Without this Safari never opens the source: it would offer AirPlay of a
                // URL no other device can fetch.
                js_sys::Reflect::set(video, &"disableRemotePlayback".into(), &true.into())
                    .map_err(unsupported)?;
                let constructor = managed_constructor()?;
                let source = js_sys::Reflect::construct(&constructor, &js_sys::Array::new())
                    .map_err(unsupported)?;
                Ok(source.unchecked_into())
            }
        }
    }

    /// Whether this kind can play `mime` (its own static `isTypeSupported`).
    pub fn is_type_supported(self, mime: &str) -> bool {
        match self {
            SourceKind::Standard => MediaSource::is_type_supported(mime),
            SourceKind::Managed => managed_constructor()
                .ok()
                .and_then(|constructor| {
                    let check = js_sys::Reflect::get(&constructor, &"isTypeSupported".into())
                        .ok()?
                        .dyn_into::<js_sys::Function>()
                        .ok()?;
                    check.call1(&constructor, &mime.into()).ok()?.as_bool()
                })
                .unwrap_or(false),
        }
    }

    /// Whether `source` wants media now: always for the standard one; for the managed
    /// one its `streaming` attribute.
    pub fn streaming(self, source: &MediaSource) -> bool {
        match self {
            SourceKind::Standard => true,
            SourceKind::Managed => js_sys::Reflect::get(source, &"streaming".into())
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }
    }
}

fn managed_constructor() -> Result<js_sys::Function, WebError> {
    let window = web_sys::window().ok_or(WebError::Unsupported("window"))?;
    js_sys::Reflect::get(&window, &MANAGED.into())
        .ok()
        .filter(|v: &JsValue| !v.is_undefined())
        .and_then(|v| v.dyn_into::<js_sys::Function>().ok())
        .ok_or(WebError::Unsupported("Media Source Extensions"))
}
