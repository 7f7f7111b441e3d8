//! The JavaScript API: `new Player(videoElement, options)`, `player.stats()`,
//! `player.state()`, `state` and `stats` events, the playback commands (`play()`,
//! `pause()`, `mute()`, `unmute()`, `setVolume()`, `goLive()`, `setLatency()`),
//! `player.destroy()`. The ES module
//! `streamtorrent.js` re-exports this class once the wasm is loaded (docs/embed.md).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use web_sys::{EventTarget, HtmlVideoElement};

use crate::app::App;
use crate::controls::Command;
use crate::event::{emit, Event, Events};
use crate::latency::LatencyPreset;
use crate::options::{PlayerOptions, RawOptions};
use crate::page::PageUi;
use crate::report::{to_js, Reporter};
use crate::snapshot::Snapshot;

/// A live channel playing in a `<video>` element, fetched from the channel's swarm.
#[wasm_bindgen(js_name = Player)]
pub struct JsPlayer {
    shared: Rc<RefCell<Snapshot>>,
    target: EventTarget,
    events: Events,
}

#[wasm_bindgen(js_class = Player)]
impl JsPlayer {
    /// `options`: `{ channel, server?, muted?, autoplay?, maxUploadKbps?, latency?,
    /// targetLatencyMs?, audit? }`.
    /// Throws on bad options or a browser without WebRTC or Media Source Extensions.
    #[wasm_bindgen(constructor)]
    pub fn new(video: HtmlVideoElement, options: JsValue) -> Result<JsPlayer, JsError> {
        let options = PlayerOptions::parse(read_options(&options)?, &page_origin())
            .map_err(|e| JsError::new(&e))?;
        JsPlayer::start(video, options, None).map_err(|e| JsError::new(&e.to_string()))
    }

    /// The stats contract (docs/embed.md): peers, bytes_from_peers, bytes_from_source,
    /// bytes_uploaded, chunks_played, chunks_missed, stalls, buffer_ms, lag_ms, startup_ms…
    pub fn stats(&self) -> JsValue {
        to_js(&*self.shared.borrow())
    }

    /// `connecting`, `buffering`, `playing`, `paused`, `offline`, `unsupported`,
    /// `codec_unsupported` or `stopped`.
    pub fn state(&self) -> JsValue {
        to_js(&self.shared.borrow().state)
    }

    /// Resumes where playback paused (or starts, with `autoplay: false`).
    pub fn play(&self) {
        self.command(Command::Play);
    }

    /// Pauses; the player keeps receiving and forwarding, so `goLive()` is instant.
    pub fn pause(&self) {
        self.command(Command::Pause);
    }

    pub fn mute(&self) {
        self.command(Command::Mute);
    }

    pub fn unmute(&self) {
        self.command(Command::Unmute);
    }

    /// `volume` from 0 to 1; above 0 also unmutes.
    #[wasm_bindgen(js_name = setVolume)]
    pub fn set_volume(&self, volume: f64) -> Result<(), JsError> {
        if !(0.0..=1.0).contains(&volume) {
            return Err(JsError::new(&format!(
                "setVolume(volume): volume must be from 0 to 1, got {volume}"
            )));
        }
        self.command(Command::Volume(volume));
        Ok(())
    }

    /// Back to the live edge, at the target delay.
    #[wasm_bindgen(js_name = goLive)]
    pub fn go_live(&self) {
        self.command(Command::GoLive);
    }

    /// `"low"`, `"normal"` or `"high"`: how far behind live to play (docs/embed.md).
    #[wasm_bindgen(js_name = setLatency)]
    pub fn set_latency(&self, preset: &str) -> Result<(), JsError> {
        let preset: LatencyPreset = preset
            .parse()
            .map_err(|e| JsError::new(&format!("setLatency: {e}")))?;
        self.command(Command::Latency(preset));
        Ok(())
    }

    /// `state` events carry `{state, message}`; `stats` events (once a second) the stats.
    #[wasm_bindgen(js_name = addEventListener)]
    pub fn add_event_listener(&self, kind: &str, listener: &js_sys::Function) {
        let _ = self.target.add_event_listener_with_callback(kind, listener);
    }

    #[wasm_bindgen(js_name = removeEventListener)]
    pub fn remove_event_listener(&self, kind: &str, listener: &js_sys::Function) {
        let _ = self
            .target
            .remove_event_listener_with_callback(kind, listener);
    }

    /// Leaves the channel: closes every peer link and the signal connection.
    pub fn destroy(&self) {
        emit(&self.events, Event::Stop);
    }
}

impl JsPlayer {
    fn command(&self, command: Command) {
        emit(&self.events, Event::Command(command));
    }
}

impl JsPlayer {
    /// Starts the app; the watch and embed pages pass their page UI.
    pub(crate) fn start(
        video: HtmlVideoElement,
        options: PlayerOptions,
        mut page: Option<PageUi>,
    ) -> Result<JsPlayer, crate::WebError> {
        let shared = Rc::new(RefCell::new(Snapshot::default()));
        let target = EventTarget::new()?;
        let (events, inbox) = futures::channel::mpsc::unbounded::<Event>();
        if let Some(page) = &mut page {
            page.connect(&events);
        }
        let reporter = Reporter::new(shared.clone(), target.clone(), page);
        let app = App::new(video, options, reporter, events.clone())?;
        wasm_bindgen_futures::spawn_local(app.run(inbox));
        Ok(JsPlayer {
            shared,
            target,
            events,
        })
    }
}

/// The page's own origin, the default server.
pub(crate) fn page_origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default()
}

fn read_options(options: &JsValue) -> Result<RawOptions, JsError> {
    if !options.is_object() {
        return Err(JsError::new(
            "new Player(video, options): options must be an object like { channel: \"demo\" }",
        ));
    }
    Ok(RawOptions {
        channel: optional(options, "channel", "a string", JsValue::as_string)?,
        server: optional(options, "server", "a string", JsValue::as_string)?,
        muted: optional(options, "muted", "true or false", JsValue::as_bool)?,
        autoplay: optional(options, "autoplay", "true or false", JsValue::as_bool)?,
        max_upload_kbps: optional(options, "maxUploadKbps", "a number", JsValue::as_f64)?,
        latency: optional(options, "latency", "a string", JsValue::as_string)?,
        target_latency_ms: optional(options, "targetLatencyMs", "a number", JsValue::as_f64)?,
        audit: optional(options, "audit", "true or false", JsValue::as_bool)?,
        relay_only: optional(options, "relayOnly", "true or false", JsValue::as_bool)?,
    })
}

/// `options[name]` through `convert`: `None` when absent (undefined or null), an error
/// naming the field and what it must be when present with another type.
fn optional<T>(
    options: &JsValue,
    name: &str,
    expected: &str,
    convert: impl Fn(&JsValue) -> Option<T>,
) -> Result<Option<T>, JsError> {
    let value = js_sys::Reflect::get(options, &name.into()).unwrap_or_default();
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    convert(&value)
        .map(Some)
        .ok_or_else(|| JsError::new(&format!("options.{name} must be {expected}")))
}
