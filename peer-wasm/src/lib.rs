//! StreamTorrent in the browser: joins a channel over WebSocket signalling, swaps chunks
//! with peers over WebRTC data channels through the `swarm` core, and plays them with
//! Media Source Extensions.
//!
//! Browser callbacks never touch state: gloo `EventListener`s (unregistered when dropped)
//! forward each event into one channel, and [`app::App`] — the one owner of state —
//! handles them in order. It publishes a [`snapshot::Snapshot`] that the JS API
//! ([`api::JsPlayer`], `Player` in JavaScript) and the page read.

mod api;
mod app;
pub mod controls;
mod embed_bridge;
mod error;
mod event;
mod fetch;
pub use event::Event;
pub mod latency;
pub mod link;
pub mod live_sync;
pub mod media;
mod media_source;
pub mod options;
mod page;
pub mod page_params;
mod report;
pub mod signalling;
pub mod snapshot;

pub use api::JsPlayer;
pub use error::WebError;

use wasm_bindgen::prelude::*;

/// Runs when the module loads. On StreamTorrent's own page (`<body data-streamtorrent-app>`)
/// `/` shows the channel list and `/watch/<channel>` and `/embed/<channel>` play, with the
/// player exposed as `window.streamtorrent`. Anywhere else (a site using the JS API) it
/// does nothing: that site creates its own `Player`.
#[wasm_bindgen(start)]
pub fn start() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let is_app_page = window
        .document()
        .and_then(|d| d.body())
        .is_some_and(|b| b.has_attribute("data-streamtorrent-app"));
    if !is_app_page {
        return;
    }
    let path = window.location().pathname().unwrap_or_default();
    let mut parts = path.trim_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(mode @ ("watch" | "embed")), Some(channel)) => {
            if let Err(e) = watch(&window, channel, mode == "embed") {
                page::show("player");
                page::show_error(&e);
            }
        }
        _ => wasm_bindgen_futures::spawn_local(page::channel_list()),
    }
}

fn watch(window: &web_sys::Window, channel: &str, embed: bool) -> Result<(), String> {
    let search = window.location().search().unwrap_or_default();
    let query = web_sys::UrlSearchParams::new_with_str(&search)
        .map_err(|_| "cannot read the page's URL parameters".to_owned())?;
    let params = page_params::PageParams::parse(|name| query.get(name));
    for warning in &params.warnings {
        web_sys::console::warn_1(&warning.into());
    }
    let raw = options::RawOptions {
        channel: Some(channel.to_owned()),
        audit: Some(params.audit),
        autoplay: Some(params.autoplay),
        muted: Some(params.muted),
        latency: params.latency.map(|p| p.as_str().to_owned()),
        relay_only: Some(params.relay_only),
        ..options::RawOptions::default()
    };
    let options = options::PlayerOptions::parse(raw, &api::page_origin())?;
    let ui = page::PageUi::new(&options.channel, &options.origin, embed, params);
    let video = window
        .document()
        .and_then(|d| d.get_element_by_id("video"))
        .and_then(|v| v.dyn_into::<web_sys::HtmlVideoElement>().ok())
        .ok_or("the page has no <video id=video>")?;
    let player = JsPlayer::start(video, options, Some(ui)).map_err(|e| e.to_string())?;
    js_sys::Reflect::set(window, &"streamtorrent".into(), &JsValue::from(player))
        .map_err(|_| "cannot set window.streamtorrent".to_owned())?;
    Ok(())
}
