//! The embed page's iframe API (docs/embed.md): posts `streamtorrent:ready`,
//! `streamtorrent:state` and `streamtorrent:stats` to the parent page and obeys its
//! `streamtorrent:command` messages. Messages that are not ours are ignored; ours that are
//! malformed, or come from another window or a refused origin, are ignored with a console
//! warning.

use gloo_events::EventListener;
use serde_json::{json, Value};
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Window};

use crate::controls::Command;
use crate::event::{emit, Event, Events};
use crate::report::to_js;
use crate::snapshot::{PlayerState, Snapshot};

const PREFIX: &str = "streamtorrent:";

/// The command in a message from the parent: `Ok(None)` when the message is not ours
/// (other scripts post to every frame), an error saying what is wrong when it is ours but
/// malformed.
pub fn parse_command(message: &Value) -> Result<Option<Command>, String> {
    let Some(kind) = message.get("type").and_then(Value::as_str) else {
        return Ok(None);
    };
    let Some(kind) = kind.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    if kind != "command" {
        return Err(format!(
            "unknown message type \"{PREFIX}{kind}\" (the embed accepts \"{PREFIX}command\")"
        ));
    }
    let name = message
        .get("command")
        .and_then(Value::as_str)
        .ok_or("a command message needs \"command\": a string")?;
    let value = message.get("value");
    Ok(Some(match name {
        "play" => Command::Play,
        "pause" => Command::Pause,
        "mute" => Command::Mute,
        "unmute" => Command::Unmute,
        "goLive" => Command::GoLive,
        "volume" => match value.and_then(Value::as_f64) {
            Some(v) if (0.0..=1.0).contains(&v) => Command::Volume(v),
            _ => {
                return Err(format!(
                    "\"volume\" needs a value from 0 to 1, got {value:?}"
                ))
            }
        },
        "latency" => {
            let preset = value
                .and_then(Value::as_str)
                .ok_or("\"latency\" needs a value: \"low\", \"normal\" or \"high\"")?;
            Command::Latency(preset.parse()?)
        }
        other => {
            return Err(format!(
                "unknown command {other:?} (play, pause, mute, unmute, volume, goLive, latency)"
            ))
        }
    }))
}

pub struct EmbedBridge {
    parent: Window,
    /// Where our messages may go: the allowed origin, or any parent.
    target_origin: String,
    _listener: EventListener,
}

impl EmbedBridge {
    /// Listens to the parent page and says `ready`; `None` when the page is not framed.
    /// `allowed`: the only parent origin obeyed (`?origin=`), if any.
    pub fn new(events: &Events, allowed: Option<String>) -> Option<EmbedBridge> {
        let window = web_sys::window()?;
        let parent = window.parent().ok()??;
        if js_sys::Object::is(&parent, &window) {
            return None;
        }
        let events = events.clone();
        let from = parent.clone();
        let origin = allowed.clone();
        let listener = EventListener::new(&window, "message", move |event| {
            let Some(event) = event.dyn_ref::<MessageEvent>() else {
                return;
            };
            if let Some(command) = command_in(event, &from, origin.as_deref()) {
                emit(&events, Event::Command(command));
            }
        });
        let bridge = EmbedBridge {
            parent,
            target_origin: allowed.unwrap_or_else(|| "*".into()),
            _listener: listener,
        };
        bridge.post(&json!({ "type": "streamtorrent:ready" }));
        Some(bridge)
    }

    pub fn post_state(&self, state: PlayerState, message: &str) {
        self.post(&json!({ "type": "streamtorrent:state", "state": state, "message": message }));
    }

    pub fn post_stats(&self, stats: &Snapshot) {
        self.post(&json!({ "type": "streamtorrent:stats", "stats": stats }));
    }

    fn post(&self, message: &Value) {
        // A parent of another origin than the allowed one is simply not sent to.
        let _ = self
            .parent
            .post_message(&to_js(message), &self.target_origin);
    }
}

/// The command a message carries, when it is ours and from the parent it should be.
fn command_in(event: &MessageEvent, parent: &Window, allowed: Option<&str>) -> Option<Command> {
    let from_parent = event
        .source()
        .is_some_and(|source| js_sys::Object::is(&source, parent));
    let data = event.data();
    let json = js_sys::JSON::stringify(&data)
        .ok()
        .and_then(|s| s.as_string())
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .unwrap_or(Value::Null);
    let parsed = parse_command(&json);
    if matches!(parsed, Ok(None)) {
        return None;
    }
    let refused = if !from_parent {
        Some("not from the parent page".to_owned())
    } else if allowed.is_some_and(|allowed| allowed != event.origin()) {
        Some(format!(
            "from {}, but this embed obeys only {}",
            event.origin(),
            allowed.unwrap_or_default()
        ))
    } else {
        parsed.as_ref().err().cloned()
    };
    match refused {
        Some(why) => {
            web_sys::console::warn_2(
                &format!("StreamTorrent embed: message ignored, {why}:").into(),
                &data,
            );
            None
        }
        None => parsed.ok().flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyPreset;

    #[test]
    fn commands_parse_with_their_values() {
        let ok = |v: Value| parse_command(&v).unwrap();
        assert_eq!(
            ok(json!({"type": "streamtorrent:command", "command": "pause"})),
            Some(Command::Pause)
        );
        assert_eq!(
            ok(json!({"type": "streamtorrent:command", "command": "volume", "value": 0.25})),
            Some(Command::Volume(0.25))
        );
        assert_eq!(
            ok(json!({"type": "streamtorrent:command", "command": "latency", "value": "high"})),
            Some(Command::Latency(LatencyPreset::High))
        );
    }

    #[test]
    fn messages_not_ours_are_ignored_quietly() {
        for other in [
            json!("hello"),
            json!(null),
            json!({"type": "webpackOk"}),
            json!({"command": "play"}),
        ] {
            assert_eq!(parse_command(&other), Ok(None), "{other}");
        }
    }

    #[test]
    fn malformed_commands_are_named() {
        let err = |v: Value| parse_command(&v).unwrap_err();
        assert!(err(json!({"type": "streamtorrent:cmd"})).contains("unknown message type"));
        assert!(err(json!({"type": "streamtorrent:command"})).contains("\"command\""));
        assert!(
            err(json!({"type": "streamtorrent:command", "command": "rewind"}))
                .contains("unknown command \"rewind\"")
        );
        assert!(
            err(json!({"type": "streamtorrent:command", "command": "volume", "value": 3}))
                .contains("from 0 to 1")
        );
        assert!(err(
            json!({"type": "streamtorrent:command", "command": "volume", "value": "loud"})
        )
        .contains("from 0 to 1"));
        assert!(
            err(json!({"type": "streamtorrent:command", "command": "latency", "value": "x"}))
                .contains("latency must be")
        );
    }
}
