//! StreamTorrent in the browser: joins a channel over WebSocket signalling, swaps chunks
//! with peers over WebRTC data channels through the `swarm` core, and plays them with
//! Media Source Extensions.
//!
//! Browser callbacks never touch state: gloo `EventListener`s (unregistered when dropped)
//! forward each event into one channel, and [`app::App`] — the one owner of state —
//! handles them in order.

mod app;
mod error;
mod event;
pub use event::Event;
mod link;
mod page;
pub mod player;
pub mod reconnect;
mod signalling;

pub use error::WebError;

use wasm_bindgen::prelude::*;

/// Entry point: `/` shows the channel list; `/watch/<channel>` and `/embed/<channel>` play.
#[wasm_bindgen(start)]
pub fn start() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let path = window.location().pathname().unwrap_or_default();
    let mut parts = path.trim_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(mode @ ("watch" | "embed")), Some(channel)) => {
            let embed = mode == "embed";
            match channel.parse::<protocol::ChannelName>() {
                Ok(channel) => wasm_bindgen_futures::spawn_local(async move {
                    if let Err(e) = app::App::run(channel, embed).await {
                        page::set_status(&format!("Error: {e}"));
                    }
                }),
                Err(e) => page::set_status(&e.to_string()),
            }
        }
        _ => wasm_bindgen_futures::spawn_local(page::show_channel_list()),
    }
}
