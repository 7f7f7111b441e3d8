//! The WebSocket to the signal server.

use gloo_events::EventListener;
use swarm::SignalId;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, WebSocket};

use crate::event::{emit, Event, Events};
use crate::WebError;

pub struct Signalling {
    pub id: SignalId,
    socket: WebSocket,
    _listeners: [EventListener; 3],
}

impl Signalling {
    /// Opens `url` (`ws(s)://host/ws`); a failure to connect arrives as `SocketClosed`.
    /// Events carry `id`, so those of an abandoned socket are told apart.
    pub fn open(url: &str, id: SignalId, events: &Events) -> Result<Signalling, WebError> {
        let socket = WebSocket::new(url)?;
        let on_open = {
            let events = events.clone();
            EventListener::new(&socket, "open", move |_| {
                emit(&events, Event::SocketOpen(id))
            })
        };
        let on_message = {
            let events = events.clone();
            EventListener::new(&socket, "message", move |event| {
                let text = event
                    .dyn_ref::<MessageEvent>()
                    .and_then(|m| m.data().as_string());
                if let Some(text) = text {
                    emit(&events, Event::SocketText(id, text));
                }
            })
        };
        let on_close = {
            let events = events.clone();
            EventListener::new(&socket, "close", move |_| {
                emit(&events, Event::SocketClosed(id))
            })
        };
        Ok(Signalling {
            id,
            socket,
            _listeners: [on_open, on_message, on_close],
        })
    }

    pub fn send(&self, text: &str) {
        if let Err(e) = self.socket.send_with_str(text) {
            web_sys::console::warn_2(&"signal send failed".into(), &e);
        }
    }
}

impl Drop for Signalling {
    fn drop(&mut self) {
        let _ = self.socket.close();
    }
}
