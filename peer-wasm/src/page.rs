//! The page around the player: status line, stats panel, channel list.

use protocol::ChannelSummary;
use swarm::Stats;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, HtmlElement};

fn document() -> Option<Document> {
    web_sys::window()?.document()
}

fn element(id: &str) -> Option<HtmlElement> {
    document()?
        .get_element_by_id(id)?
        .dyn_into::<HtmlElement>()
        .ok()
}

/// Plain-language state for the viewer.
pub fn set_status(text: &str) {
    if let Some(status) = element("status") {
        status.set_text_content(Some(text));
    }
}

/// Shows one of the page's sections (`channels` or `player`).
pub fn show(section: &str) {
    if let Some(el) = element(section) {
        el.set_hidden(false);
    }
}

pub fn set_embed(embed: bool) {
    if let Some(body) = document().and_then(|d| d.body()) {
        body.set_class_name(if embed { "embed" } else { "" });
    }
}

pub fn render_stats(peers: usize, stats: &Stats, buffer_s: f64) {
    let Some(panel) = element("stats") else {
        return;
    };
    let total = stats.bytes_from_peers + stats.bytes_from_source;
    let share = if total == 0 {
        0.0
    } else {
        100.0 * stats.bytes_from_peers as f64 / total as f64
    };
    panel.set_text_content(Some(&format!(
        "peers {peers} · from peers {share:.0}% · uploaded {} KiB · buffer {buffer_s:.1} s · played {} · missed {}",
        stats.bytes_uploaded / 1024,
        stats.chunks_played,
        stats.chunks_missed,
    )));
}

/// `/`: the live channels, each a link to its watch page.
pub async fn show_channel_list() {
    show("channels");
    let Some(list) = element("channel-list") else {
        return;
    };
    let channels = match fetch_channels().await {
        Ok(channels) => channels,
        Err(e) => {
            list.set_text_content(Some(&format!("Could not load channels: {e}")));
            return;
        }
    };
    if channels.is_empty() {
        list.set_text_content(Some(
            "No channel is live right now. Start one with `streamtorrent broadcast` (see README).",
        ));
        return;
    }
    let html: String = channels
        .iter()
        .map(|c| {
            format!(
                r#"<li><a href="/watch/{0}">{0}</a> · {1} watching</li>"#,
                c.name, c.viewers
            )
        })
        .collect();
    list.set_inner_html(&format!("<ul>{html}</ul>"));
}

async fn fetch_channels() -> Result<Vec<ChannelSummary>, crate::WebError> {
    let window = web_sys::window().ok_or(crate::WebError::Unsupported("window"))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str("/api/channels"))
        .await?
        .dyn_into()?;
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| crate::WebError::Js(format!("bad channel list: {e}")))
}
