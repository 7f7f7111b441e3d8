//! The pages around the player: the channel list at `/`, and on `/watch/<channel>` the
//! status line, the stats panel with its live chart, and the Embed button. `/embed/` shows
//! the player alone, with its state over the video.

use std::collections::VecDeque;

use gloo_events::EventListener;
use protocol::{ChannelName, ChannelSummary};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, HtmlElement};

use crate::snapshot::{PlayerState, Rates, Snapshot};

/// Seconds of history in the chart (one point per second).
const CHART_POINTS: usize = 60;
/// How often the channel list refreshes.
const CHANNEL_LIST_EVERY_MS: u32 = 3_000;

fn document() -> Option<Document> {
    web_sys::window()?.document()
}

fn element(id: &str) -> Option<HtmlElement> {
    document()?
        .get_element_by_id(id)?
        .dyn_into::<HtmlElement>()
        .ok()
}

/// Shows one of the page's sections (`channels` or `player`).
pub fn show(section: &str) {
    if let Some(el) = element(section) {
        el.set_hidden(false);
    }
}

/// Shows a message where the state goes, for errors before a player exists.
pub fn show_error(message: &str) {
    for id in ["status", "overlay"] {
        if let Some(el) = element(id) {
            el.set_text_content(Some(message));
            el.set_hidden(false);
        }
    }
}

/// The watch (or embed) page's own elements, updated from the app's snapshot.
pub struct PageUi {
    embed: bool,
    /// Rates from peers and from the broadcaster, one point a second, newest last.
    history: VecDeque<(f64, f64)>,
    last_chart_point: Option<Rates>,
    _listeners: Vec<EventListener>,
}

impl PageUi {
    pub fn new(channel: &ChannelName, origin: &str, embed: bool) -> PageUi {
        show("player");
        if let Some(body) = document().and_then(|d| d.body()) {
            body.set_class_name(if embed { "embed" } else { "" });
        }
        if let Some(title) = element("channel-title") {
            title.set_text_content(Some(channel.as_str()));
        }
        if let Some(snippet) = element("embed-snippet") {
            snippet.set_text_content(Some(&embed_snippet(origin, channel)));
        }
        let mut listeners = Vec::new();
        // Muted autoplay is allowed everywhere; sound needs one click.
        if let (Some(button), Some(video)) = (element("unmute"), element("video")) {
            let button_ref = button.clone();
            listeners.push(EventListener::new(&button, "click", move |_| {
                if let Some(video) = video.dyn_ref::<web_sys::HtmlMediaElement>() {
                    video.set_muted(false);
                }
                button_ref.set_hidden(true);
            }));
        }
        if let (Some(button), Some(panel)) = (element("embed-button"), element("embed-panel")) {
            listeners.push(EventListener::new(&button, "click", move |_| {
                panel.set_hidden(!panel.hidden());
            }));
        }
        PageUi {
            embed,
            history: VecDeque::with_capacity(CHART_POINTS),
            last_chart_point: None,
            _listeners: listeners,
        }
    }

    /// A new state (or a fatal error) shows at once, before the next tick.
    pub fn show_state(&mut self, state: PlayerState, message: Option<&str>) {
        let text = match message {
            Some(message) if state != PlayerState::Playing => {
                format!("{} ({message})", state.describe())
            }
            _ => state.describe().to_owned(),
        };
        set_state_text(state, &text);
    }

    pub fn render(&mut self, snapshot: &Snapshot, rates: &Rates, retry_in_ms: Option<f64>) {
        let mut text = snapshot.state.describe().to_owned();
        if !snapshot.signal_connected {
            // Peer links keep the video going; say so while the server is away.
            match retry_in_ms {
                Some(ms) => text.push_str(&format!(
                    " · signal server unreachable, reconnecting in {:.1} s",
                    ms / 1000.0
                )),
                None => text.push_str(" · reaching the signal server…"),
            }
        }
        set_state_text(snapshot.state, &text);
        if self.embed {
            return;
        }
        if self.last_chart_point.as_ref() != Some(rates) {
            if self.history.len() == CHART_POINTS {
                self.history.pop_front();
            }
            self.history
                .push_back((rates.from_peers_kbps, rates.from_source_kbps));
            self.last_chart_point = Some(rates.clone());
        }
        if let Some(panel) = element("stats") {
            panel.set_inner_html(&stats_html(snapshot));
        }
        if let Some(table) = element("neighbours") {
            table.set_inner_html(&neighbours_html(snapshot));
        }
        if let Some(chart) = element("chart") {
            chart.set_inner_html(&chart_svg(&self.history));
        }
    }
}

fn set_state_text(state: PlayerState, text: &str) {
    if let Some(status) = element("status") {
        status.set_text_content(Some(text));
    }
    // Over the video, only what needs the viewer's attention.
    if let Some(overlay) = element("overlay") {
        overlay.set_text_content(Some(state.describe()));
        overlay.set_hidden(state == PlayerState::Playing);
    }
}

/// The `<iframe>` a site owner pastes.
pub fn embed_snippet(origin: &str, channel: &ChannelName) -> String {
    format!(
        r#"<iframe src="{origin}/embed/{channel}" width="640" height="360" allow="autoplay; fullscreen" allowfullscreen style="border:0"></iframe>"#
    )
}

fn seconds(ms: Option<u64>) -> String {
    ms.map_or("–".to_owned(), |ms| {
        format!("{:.1} s", ms as f64 / 1000.0)
    })
}

fn stats_html(s: &Snapshot) -> String {
    let rows = [
        ("Neighbours", s.peers.to_string()),
        (
            "From other viewers",
            format!("{:.0} %", 100.0 * s.peer_share),
        ),
        ("Download", format!("{:.0} kbit/s", s.download_kbps)),
        ("Upload", format!("{:.0} kbit/s", s.upload_kbps)),
        ("Buffer", seconds(Some(s.buffer_ms))),
        ("Behind live", seconds(s.lag_ms)),
        ("Chunks played", s.chunks_played.to_string()),
        ("Chunks missed", s.chunks_missed.to_string()),
        ("Stalls", s.stalls.to_string()),
        ("Started in", seconds(s.startup_ms)),
    ];
    rows.iter()
        .map(|(name, value)| format!("<div><dt>{name}</dt><dd>{value}</dd></div>"))
        .collect()
}

fn neighbours_html(s: &Snapshot) -> String {
    if s.neighbours.is_empty() {
        return "<tr><td colspan=4>No neighbours yet</td></tr>".to_owned();
    }
    let head = "<tr><th>Neighbour</th><th></th><th>↓ kbit/s</th><th>↑ kbit/s</th></tr>";
    let rows: String = s
        .neighbours
        .iter()
        .map(|n| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td></tr>",
                n.peer,
                if n.source { "broadcaster" } else { "viewer" },
                n.down_kbps,
                n.up_kbps
            )
        })
        .collect();
    format!("{head}{rows}")
}

/// Download rate over the last minute: from other viewers and from the broadcaster.
fn chart_svg(history: &VecDeque<(f64, f64)>) -> String {
    const W: f64 = 300.0;
    const H: f64 = 80.0;
    let top = history
        .iter()
        .map(|(peers, source)| peers.max(*source))
        .fold(100.0, f64::max);
    let line = |pick: fn(&(f64, f64)) -> f64| -> String {
        history
            .iter()
            .enumerate()
            .map(|(i, point)| {
                let x = W * i as f64 / (CHART_POINTS - 1) as f64;
                let y = H - H * pick(point) / top;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r#"<svg viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" aria-label="download rate over the last minute"><polyline class="peers" points="{}"/><polyline class="source" points="{}"/></svg><div class="legend"><span class="peers">from viewers</span> <span class="source">from broadcaster</span> · max {top:.0} kbit/s</div>"#,
        line(|p| p.0),
        line(|p| p.1)
    )
}

/// `/`: the live channels with their audience, refreshed while the page is open.
pub async fn channel_list() {
    show("channels");
    let Some(list) = element("channel-list") else {
        return;
    };
    loop {
        match fetch_channels().await {
            Ok(channels) if channels.is_empty() => list.set_inner_html(
                "<p class=empty>No channel is live right now. This list updates by itself; \
                 to start one, run <code>scripts/demo</code> or \
                 <code>streamtorrent broadcast</code> (see the README).</p>",
            ),
            Ok(channels) => {
                let items: String = channels
                    .iter()
                    .map(|c| {
                        let who = if c.viewers == 1 { "viewer" } else { "viewers" };
                        format!(
                            r#"<li><a href="/watch/{0}">{0}</a> <span class="viewers">{1} {who}</span></li>"#,
                            c.name, c.viewers
                        )
                    })
                    .collect();
                list.set_inner_html(&format!("<ul>{items}</ul>"));
            }
            Err(e) => list.set_text_content(Some(&format!(
                "Could not load the channel list ({e}); trying again…"
            ))),
        }
        gloo_timers::future::TimeoutFuture::new(CHANNEL_LIST_EVERY_MS).await;
    }
}

async fn fetch_channels() -> Result<Vec<ChannelSummary>, crate::WebError> {
    let window = web_sys::window().ok_or(crate::WebError::Unsupported("window"))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str("/api/channels"))
        .await?
        .dyn_into()?;
    if !response.ok() {
        return Err(crate::WebError::Js(format!("HTTP {}", response.status())));
    }
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| crate::WebError::Js(format!("bad channel list: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_snippet_points_at_the_embed_page() {
        let channel: ChannelName = "news".parse().unwrap();
        let snippet = embed_snippet("https://tv.example", &channel);
        assert!(snippet.starts_with(r#"<iframe src="https://tv.example/embed/news""#));
        assert!(snippet.contains(r#"allow="autoplay; fullscreen""#));
    }

    #[test]
    fn chart_scales_to_the_highest_rate() {
        let history: VecDeque<(f64, f64)> = [(0.0, 400.0), (800.0, 0.0)].into();
        let svg = chart_svg(&history);
        assert!(svg.contains("max 800 kbit/s"), "{svg}");
        // The 800 kbit/s point from viewers is at the top of the chart.
        assert!(svg.contains(r#"points="0.0,80.0 5.1,0.0""#), "{svg}");
    }
}
