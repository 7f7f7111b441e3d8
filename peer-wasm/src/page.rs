//! The pages around the player: the channel list at `/`, and on `/watch/<channel>` the
//! controls, the status line, the stats panel with its live chart, and the Embed button.
//! `/embed/` shows the player and its controls alone, with its state over the video, and
//! speaks to its parent page through the iframe API.

use std::collections::VecDeque;

use gloo_events::EventListener;
use protocol::{ChannelName, ChannelSummary};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Document, HtmlElement};

use crate::controls::Controls;
use crate::embed_bridge::EmbedBridge;
use crate::event::Events;
use crate::page_params::PageParams;
use crate::snapshot::{PlayerState, Rates, Snapshot};

/// Seconds of history in the chart (one point per second).
const CHART_POINTS: usize = 60;
/// How often the channel list refreshes.
const CHANNEL_LIST_EVERY_MS: u32 = 3_000;

fn document() -> Option<Document> {
    web_sys::window()?.document()
}

pub(crate) fn element(id: &str) -> Option<HtmlElement> {
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
    set_text("status", message);
    set_text("overlay-text", message);
    if let Some(overlay) = element("overlay") {
        overlay.set_hidden(false);
    }
}

/// The watch (or embed) page's own elements, updated from the app's snapshot.
pub struct PageUi {
    embed: bool,
    params: PageParams,
    controls: Option<Controls>,
    bridge: Option<EmbedBridge>,
    /// Video has played: "offline" then means the broadcast ended.
    started: bool,
    /// Rates from peers and from the broadcaster, one point a second, newest last.
    history: VecDeque<(f64, f64)>,
    last_chart_point: Option<Rates>,
    _listeners: Vec<EventListener>,
}

impl PageUi {
    pub fn new(channel: &ChannelName, origin: &str, embed: bool, params: PageParams) -> PageUi {
        show("player");
        if let Some(body) = document().and_then(|d| d.body()) {
            body.set_class_name(if embed { "embed" } else { "" });
        }
        set_text("channel-title", channel.as_str());
        set_text("slate-channel", channel.as_str());
        if let Some(snippet) = element("embed-snippet") {
            snippet.set_text_content(Some(&embed_snippet(origin, channel)));
        }
        let mut listeners = Vec::new();
        if let (Some(button), Some(panel)) = (element("embed-button"), element("embed-panel")) {
            let toggle = button.clone();
            listeners.push(EventListener::new(&button, "click", move |_| {
                panel.set_hidden(!panel.hidden());
                let _ = toggle.set_attribute("aria-expanded", &(!panel.hidden()).to_string());
            }));
        }
        if let Some(snippet) = element("embed-snippet") {
            // Select all on focus, so one copy takes the whole snippet.
            let textarea = snippet.clone();
            listeners.push(EventListener::new(&snippet, "focus", move |_| {
                if let Some(t) = textarea.dyn_ref::<web_sys::HtmlTextAreaElement>() {
                    t.select();
                }
            }));
        }
        PageUi {
            embed,
            params,
            controls: None,
            bridge: None,
            started: false,
            history: VecDeque::with_capacity(CHART_POINTS),
            last_chart_point: None,
            _listeners: listeners,
        }
    }

    /// Wires the controls (and on the embed page, the iframe API) to the app's inbox.
    pub fn connect(&mut self, events: &Events) {
        self.controls = Controls::new(events, self.params.controls);
        if self.embed {
            self.bridge = EmbedBridge::new(events, self.params.parent_origin.clone());
        }
    }

    /// What fullscreen shows: the video with its controls.
    pub fn fullscreen_target(&self) -> Option<web_sys::Element> {
        element("stage").map(Into::into)
    }

    pub fn toggle_stats(&mut self) {
        if let (Some(panel), Some(button)) = (element("stats-panel"), element("stats-toggle")) {
            panel.set_hidden(!panel.hidden());
            let _ = button.set_attribute("aria-expanded", &(!panel.hidden()).to_string());
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
        set_text("status", &text);
        self.show_overlay(state);
        if let Some(bridge) = &self.bridge {
            bridge.post_state(state, message.unwrap_or(state.describe()));
        }
    }

    /// Once a second, with the `stats` event.
    pub fn post_stats(&self, snapshot: &Snapshot) {
        if let Some(bridge) = &self.bridge {
            bridge.post_stats(snapshot);
        }
    }

    /// The controls only (after a command), without the stats panel.
    pub fn render_controls(&mut self, snapshot: &Snapshot) {
        if let Some(controls) = &mut self.controls {
            controls.render(snapshot);
        }
    }

    pub fn render(&mut self, snapshot: &Snapshot, rates: &Rates, retry_in_ms: Option<f64>) {
        self.started |= snapshot.startup_ms.is_some();
        self.render_controls(snapshot);
        self.show_overlay(snapshot.state);
        // The live region says the state alone: a countdown in it would be read out
        // every tick.
        let status = match snapshot.state {
            PlayerState::Playing if snapshot.via_server => "Playing via server",
            state => state.describe(),
        };
        set_text("status", status);
        let note = match (snapshot.signal_connected, retry_in_ms) {
            // Peer links keep the video going; say so while the server is away.
            (true, _) => String::new(),
            (false, Some(ms)) => format!(
                "Signal server unreachable, reconnecting in {:.1} s",
                ms / 1000.0
            ),
            (false, None) => "Reaching the signal server…".to_owned(),
        };
        set_text("signal-note", &note);
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

impl PageUi {
    /// Over the video, only what needs the viewer's attention; offline, a slate with the
    /// channel's name.
    fn show_overlay(&self, state: PlayerState) {
        let Some(overlay) = element("overlay") else {
            return;
        };
        let text = match state {
            PlayerState::Offline if self.started => "The broadcast has ended.",
            PlayerState::Offline => "Not live right now: waiting for the broadcaster…",
            other => other.describe(),
        };
        set_text("overlay-text", text);
        let slate = matches!(state, PlayerState::Offline | PlayerState::Stopped) || !self.started;
        let class = if slate { "slate" } else { "" };
        if overlay.class_name() != class {
            overlay.set_class_name(class);
        }
        let hidden = matches!(state, PlayerState::Playing | PlayerState::Paused);
        if overlay.hidden() != hidden {
            overlay.set_hidden(hidden);
        }
    }
}

/// Sets an element's text only when it changes, so a live region speaks only then and
/// nothing is re-laid out for nothing.
fn set_text(id: &str, text: &str) {
    if let Some(el) = element(id) {
        if el.text_content().as_deref() != Some(text) {
            el.set_text_content(Some(text));
        }
    }
}

/// Fullscreen on `target`, or back out of it.
pub fn toggle_fullscreen(target: &web_sys::Element) {
    let Some(document) = document() else {
        return;
    };
    if document.fullscreen_element().is_some() {
        document.exit_fullscreen();
    } else if let Err(e) = target.request_fullscreen() {
        web_sys::console::warn_2(&"fullscreen refused:".into(), &e);
    }
}

/// Picture-in-picture for `video`, or back out of it. (Through `Reflect`: web-sys marks
/// the API unstable.)
pub fn toggle_picture_in_picture(video: &web_sys::HtmlVideoElement) {
    let Some(document) = document() else {
        return;
    };
    let current =
        js_sys::Reflect::get(&document, &"pictureInPictureElement".into()).unwrap_or_default();
    let (target, method): (&wasm_bindgen::JsValue, &str) = if current.is_object() {
        (document.as_ref(), "exitPictureInPicture")
    } else {
        (video.as_ref(), "requestPictureInPicture")
    };
    let call = js_sys::Reflect::get(target, &method.into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    let Some(call) = call else {
        web_sys::console::warn_1(&"picture-in-picture is not available in this browser".into());
        return;
    };
    if let Ok(promise) = call
        .call0(target)
        .and_then(|p| p.dyn_into::<js_sys::Promise>())
    {
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = JsFuture::from(promise).await {
                web_sys::console::warn_2(&"picture-in-picture refused:".into(), &e);
            }
        });
    }
}

/// The `<iframe>` a site owner pastes.
pub fn embed_snippet(origin: &str, channel: &ChannelName) -> String {
    format!(
        r#"<iframe src="{origin}/embed/{channel}" title="{channel} (live, StreamTorrent)" width="640" height="360" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen style="border:0"></iframe>"#
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
        (
            "Via server (HTTP)",
            format!("{:.1} MB", s.bytes_from_http as f64 / 1e6),
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
    let mut shown: Option<Vec<String>> = None;
    loop {
        match fetch_channels().await {
            Ok(channels) if channels.is_empty() => {
                if shown.as_ref().is_none_or(|names| !names.is_empty()) {
                    list.set_inner_html(
                        "<p class=empty>No channel is live right now. This list updates by itself; \
                         to start one, run <code>scripts/demo</code> or \
                         <code>streamtorrent broadcast</code> (see the README).</p>",
                    );
                }
                shown = Some(Vec::new());
            }
            Ok(channels) => {
                let names: Vec<String> = channels.iter().map(|c| c.name.to_string()).collect();
                if shown.as_ref() != Some(&names) {
                    rebuild_channel_list(&list, &channels);
                    shown = Some(names);
                }
                // The same channels: only the audience figures change, in place, so
                // keyboard focus on a link stays where it is.
                for c in &channels {
                    set_text(&format!("viewers-{}", c.name), &audience(c.viewers));
                }
            }
            Err(e) => {
                list.set_text_content(Some(&format!(
                    "Could not load the channel list ({e}); trying again…"
                )));
                shown = None;
            }
        }
        gloo_timers::future::TimeoutFuture::new(CHANNEL_LIST_EVERY_MS).await;
    }
}

fn audience(viewers: usize) -> String {
    let who = if viewers == 1 { "viewer" } else { "viewers" };
    format!("{viewers} {who}")
}

/// Channels came or went: the list is drawn again, and a link that had the focus gets
/// it back.
fn rebuild_channel_list(list: &HtmlElement, channels: &[ChannelSummary]) {
    let focused = document()
        .and_then(|d| d.active_element())
        .and_then(|el| el.get_attribute("data-channel"));
    let items: String = channels
        .iter()
        .map(|c| {
            format!(
                r#"<li><a href="/watch/{0}" data-channel="{0}">{0}</a> <span class="viewers" id="viewers-{0}">{1}</span></li>"#,
                c.name,
                audience(c.viewers)
            )
        })
        .collect();
    list.set_inner_html(&format!(r#"<ul aria-label="Live channels">{items}</ul>"#));
    if let Some(name) = focused {
        let link = document()
            .and_then(|d| {
                d.query_selector(&format!(r#"a[data-channel="{name}"]"#))
                    .ok()?
            })
            .and_then(|el| el.dyn_into::<HtmlElement>().ok());
        if let Some(link) = link {
            let _ = link.focus();
        }
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
        assert!(snippet.contains(r#"allow="autoplay; fullscreen; picture-in-picture""#));
        assert!(snippet.contains(r#"title="news (live, StreamTorrent)""#));
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
