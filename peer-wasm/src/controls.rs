//! The player's controls on the watch and embed pages: play/pause, mute and volume, the
//! live badge with Go live, the latency menu, the stats toggle, picture-in-picture and
//! fullscreen, and the keyboard shortcuts. Clicks and keys only become [`Command`]s for
//! the app, which owns the video; [`Controls::render`] shows what the app reports.

use gloo_events::{EventListener, EventListenerOptions};
use wasm_bindgen::JsCast;
use web_sys::{HtmlElement, HtmlInputElement, HtmlSelectElement, KeyboardEvent};

use crate::event::{emit, Event, Events};
use crate::latency::LatencyPreset;
use crate::page::element;
use crate::snapshot::{PlayerState, Snapshot};

/// What a viewer (or the embedding page, or the JS API) asks of the player.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    Play,
    Pause,
    TogglePlay,
    Mute,
    Unmute,
    ToggleMute,
    /// Volume from 0 to 1 (unmutes when above 0).
    Volume(f64),
    /// Volume up or down by this much.
    VolumeBy(f64),
    /// Back to the live edge, at the target delay.
    GoLive,
    Latency(LatencyPreset),
    ToggleFullscreen,
    TogglePictureInPicture,
    ToggleStats,
}

/// Volume change per arrow key, as on YouTube.
const VOLUME_STEP: f64 = 0.05;
/// Within this much of the target delay the badge says LIVE; further behind, it offers
/// Go live.
pub const AT_LIVE_SLACK_MS: u64 = 1_500;

/// The shortcut for a key (`KeyboardEvent.key`), as video.js and YouTube users expect.
pub fn command_for_key(key: &str) -> Option<Command> {
    Some(match key {
        " " | "k" | "K" => Command::TogglePlay,
        "m" | "M" => Command::ToggleMute,
        "f" | "F" => Command::ToggleFullscreen,
        "i" | "I" => Command::TogglePictureInPicture,
        "l" | "L" | "End" => Command::GoLive,
        "ArrowUp" => Command::VolumeBy(VOLUME_STEP),
        "ArrowDown" => Command::VolumeBy(-VOLUME_STEP),
        _ => return None,
    })
}

/// Whether a key pressed on `tag` (the focused element) is that element's own: typing in
/// a field, arrows on the volume slider or the menu, space and Enter on a button (which
/// click it).
fn key_belongs_to_target(tag: &str, key: &str) -> bool {
    match tag {
        "TEXTAREA" => true,
        "INPUT" | "SELECT" => key.starts_with("Arrow") || key == " ",
        "BUTTON" => key == " " || key == "Enter",
        _ => false,
    }
}

/// What the controls show, derived from the snapshot; rendered only when it changes.
#[derive(Debug, Clone, PartialEq)]
struct View {
    paused: bool,
    muted: bool,
    /// Percent, so slider noise does not re-render.
    volume: u32,
    /// Seconds behind live beyond the target, when more than the slack.
    behind_s: Option<u64>,
    started: bool,
    latency: LatencyPreset,
}

impl View {
    fn of(s: &Snapshot) -> View {
        let behind_s = s
            .lag_ms
            .filter(|lag| *lag > s.target_latency_ms + AT_LIVE_SLACK_MS)
            .map(|lag| lag.div_ceil(1000));
        View {
            paused: s.paused,
            muted: s.muted,
            volume: (s.volume * 100.0).round() as u32,
            behind_s,
            started: s.startup_ms.is_some() || s.state == PlayerState::Paused,
            latency: s.latency,
        }
    }
}

pub struct Controls {
    play: HtmlElement,
    mute: HtmlElement,
    volume: HtmlInputElement,
    live: HtmlElement,
    latency: HtmlSelectElement,
    /// "Click for sound", over the video while muted playback runs.
    unmute: Option<HtmlElement>,
    shown: bool,
    last: Option<View>,
    _listeners: Vec<EventListener>,
}

impl Controls {
    /// Wires the page's controls; `None` when the page has none (or `controls=0`).
    pub fn new(events: &Events, shown: bool) -> Option<Controls> {
        let bar = element("controls")?;
        bar.set_hidden(!shown);
        let play = element("play")?;
        let mute = element("mute")?;
        let volume = element("volume")?.dyn_into::<HtmlInputElement>().ok()?;
        let live = element("live")?;
        let latency = element("latency")?.dyn_into::<HtmlSelectElement>().ok()?;
        latency.set_inner_html(
            &LatencyPreset::ALL
                .iter()
                .map(|p| format!(r#"<option value="{}">{}</option>"#, p.as_str(), p.label()))
                .collect::<String>(),
        );
        let click = |id: &str, command: Command| {
            let events = events.clone();
            element(id).map(|el| {
                EventListener::new(&el, "click", move |_| {
                    emit(&events, Event::Command(command))
                })
            })
        };
        let mut listeners: Vec<EventListener> = [
            click("play", Command::TogglePlay),
            click("mute", Command::ToggleMute),
            click("unmute", Command::Unmute),
            click("live", Command::GoLive),
            click("fullscreen", Command::ToggleFullscreen),
            click("pip", Command::TogglePictureInPicture),
            click("stats-toggle", Command::ToggleStats),
        ]
        .into_iter()
        .flatten()
        .collect();
        {
            let events = events.clone();
            let slider = volume.clone();
            listeners.push(EventListener::new(&volume, "input", move |_| {
                let value = slider.value_as_number();
                if value.is_finite() {
                    emit(&events, Event::Command(Command::Volume(value)));
                }
            }));
        }
        {
            let events = events.clone();
            let menu = latency.clone();
            listeners.push(EventListener::new(&latency, "change", move |_| {
                if let Ok(preset) = menu.value().parse() {
                    emit(&events, Event::Command(Command::Latency(preset)));
                }
            }));
        }
        if shown {
            listeners.extend(shortcuts(events));
        }
        Some(Controls {
            play,
            mute,
            volume,
            live,
            latency,
            unmute: element("unmute"),
            shown,
            last: None,
            _listeners: listeners,
        })
    }

    pub fn render(&mut self, snapshot: &Snapshot) {
        let view = View::of(snapshot);
        if self.last.as_ref() == Some(&view) {
            return;
        }
        let (play_label, play_glyph) = if view.paused {
            ("Play (k)", "▶")
        } else {
            ("Pause (k)", "❚❚")
        };
        set_button(&self.play, play_glyph, play_label);
        let (mute_label, mute_glyph) = if view.muted {
            ("Unmute (m)", "🔇")
        } else {
            ("Mute (m)", "🔊")
        };
        set_button(&self.mute, mute_glyph, mute_label);
        self.volume
            .set_value(&format!("{:.2}", f64::from(view.volume) / 100.0));
        let _ = self.volume.set_attribute(
            "aria-valuetext",
            &if view.muted {
                format!("{}%, muted", view.volume)
            } else {
                format!("{}%", view.volume)
            },
        );
        match view.behind_s {
            Some(s) => {
                set_button(
                    &self.live,
                    &format!("{s} s behind · Go live"),
                    &format!("Go live: {s} seconds behind live (l)"),
                );
                self.live.set_class_name("behind");
            }
            None => {
                set_button(&self.live, "● LIVE", "Live: at the live edge (l)");
                self.live
                    .set_class_name(if view.started { "at-live" } else { "" });
            }
        }
        self.latency.set_value(view.latency.as_str());
        if let Some(unmute) = &self.unmute {
            unmute.set_hidden(!(self.shown && view.muted && view.started));
        }
        self.last = Some(view);
    }
}

/// The keyboard shortcuts, anywhere on the page; keys that belong to the focused element
/// (typing, a slider's arrows, a button's space) stay with it.
fn shortcuts(events: &Events) -> Option<EventListener> {
    let document = web_sys::window()?.document()?;
    let events = events.clone();
    // Not passive: a handled key must not also scroll the page.
    let options = EventListenerOptions::enable_prevent_default();
    Some(EventListener::new_with_options(
        &document,
        "keydown",
        options,
        move |event| {
            let Some(key) = event.dyn_ref::<KeyboardEvent>() else {
                return;
            };
            if key.ctrl_key() || key.alt_key() || key.meta_key() {
                return;
            }
            let tag = event
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .map(|el| el.tag_name())
                .unwrap_or_default();
            if key_belongs_to_target(&tag, &key.key()) {
                return;
            }
            if let Some(command) = command_for_key(&key.key()) {
                event.prevent_default();
                emit(&events, Event::Command(command));
            }
        },
    ))
}

fn set_button(button: &HtmlElement, text: &str, label: &str) {
    if button.text_content().as_deref() != Some(text) {
        button.set_text_content(Some(text));
    }
    let _ = button.set_attribute("aria-label", label);
    button.set_title(label);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_keys_drive_the_player() {
        for key in [" ", "k", "K"] {
            assert_eq!(command_for_key(key), Some(Command::TogglePlay), "{key:?}");
        }
        assert_eq!(command_for_key("m"), Some(Command::ToggleMute));
        assert_eq!(command_for_key("f"), Some(Command::ToggleFullscreen));
        assert_eq!(command_for_key("i"), Some(Command::TogglePictureInPicture));
        assert_eq!(command_for_key("End"), Some(Command::GoLive));
        assert_eq!(
            command_for_key("ArrowDown"),
            Some(Command::VolumeBy(-VOLUME_STEP))
        );
        assert_eq!(command_for_key("x"), None);
        assert_eq!(command_for_key("Tab"), None);
    }

    #[test]
    fn keys_for_the_focused_control_stay_with_it() {
        assert!(key_belongs_to_target("BUTTON", " "));
        assert!(!key_belongs_to_target("BUTTON", "m"));
        assert!(key_belongs_to_target("INPUT", "ArrowUp"));
        assert!(!key_belongs_to_target("INPUT", "f"));
        assert!(key_belongs_to_target("TEXTAREA", "k"));
        assert!(!key_belongs_to_target("VIDEO", " "));
        assert!(!key_belongs_to_target("BODY", "ArrowUp"));
    }

    #[test]
    fn the_badge_offers_go_live_only_when_well_behind() {
        let mut s = Snapshot {
            target_latency_ms: 1_500,
            lag_ms: Some(2_900),
            startup_ms: Some(800),
            ..Snapshot::default()
        };
        assert_eq!(View::of(&s).behind_s, None);
        s.lag_ms = Some(12_200);
        assert_eq!(View::of(&s).behind_s, Some(13));
    }
}
