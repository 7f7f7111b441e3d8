//! Publishes what the app knows: the [`Snapshot`] that `player.stats()` reads, `state` and
//! `stats` events for the JS API, and the page's status line and stats panel.

use std::cell::{Ref, RefCell};
use std::rc::Rc;

use wasm_bindgen::JsValue;
use web_sys::{CustomEvent, CustomEventInit, EventTarget};

use crate::page::PageUi;
use crate::snapshot::{PlayerState, Rates, Snapshot};

/// `stats` events go out this often, in ticks.
const STATS_EVERY_TICKS: u32 = 4;

pub struct Reporter {
    shared: Rc<RefCell<Snapshot>>,
    target: EventTarget,
    page: Option<PageUi>,
    ticks: u32,
}

impl Reporter {
    pub fn new(shared: Rc<RefCell<Snapshot>>, target: EventTarget, page: Option<PageUi>) -> Self {
        Reporter {
            shared,
            target,
            page,
            ticks: 0,
        }
    }

    pub fn snapshot(&self) -> Ref<'_, Snapshot> {
        self.shared.borrow()
    }

    /// Changes the snapshot; a new state is announced at once.
    pub fn update(&mut self, state: PlayerState, change: impl FnOnce(&mut Snapshot)) {
        let old = {
            let mut snapshot = self.shared.borrow_mut();
            change(&mut snapshot);
            std::mem::replace(&mut snapshot.state, state)
        };
        if old != state {
            self.announce_state(state, None);
        }
    }

    /// Changes what the controls show, and shows it now.
    pub fn update_controls(&mut self, change: impl FnOnce(&mut Snapshot)) {
        change(&mut self.shared.borrow_mut());
        let snapshot = self.shared.borrow();
        if let Some(page) = &mut self.page {
            page.render_controls(&snapshot);
        }
    }

    /// What fullscreen should show, on the pages; `None` for the JS API (the video).
    pub fn fullscreen_target(&self) -> Option<web_sys::Element> {
        self.page.as_ref()?.fullscreen_target()
    }

    pub fn toggle_stats(&mut self) {
        if let Some(page) = &mut self.page {
            page.toggle_stats();
        }
    }

    pub fn first_frame(&mut self, startup_ms: u64) {
        self.shared.borrow_mut().startup_ms = Some(startup_ms);
        self.update(PlayerState::Playing, |_| {});
    }

    /// The player stopped for good; `message` says why.
    pub fn fatal(&mut self, state: PlayerState, message: &str) {
        self.shared.borrow_mut().state = state;
        self.announce_state(state, Some(message));
    }

    /// Once a tick: the page's panel, and every few ticks a `stats` event.
    pub fn tick(&mut self, rates: &Rates, retry_in_ms: Option<f64>) {
        let snapshot = self.shared.borrow().clone();
        if let Some(page) = &mut self.page {
            page.render(&snapshot, rates, retry_in_ms);
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(STATS_EVERY_TICKS) {
            self.dispatch("stats", &to_js(&snapshot));
            if let Some(page) = &self.page {
                page.post_stats(&snapshot);
            }
        }
    }

    fn announce_state(&mut self, state: PlayerState, message: Option<&str>) {
        if let Some(page) = &mut self.page {
            page.show_state(state, message);
        }
        let detail =
            serde_json::json!({ "state": state, "message": message.unwrap_or(state.describe()) });
        self.dispatch("state", &to_js(&detail));
    }

    fn dispatch(&self, kind: &str, detail: &JsValue) {
        let init = CustomEventInit::new();
        init.set_detail(detail);
        if let Ok(event) = CustomEvent::new_with_event_init_dict(kind, &init) {
            // A listener that throws must not stop the player.
            let _ = self.target.dispatch_event(&event);
        }
    }
}

/// A plain JS object from anything serializable (through JSON, which every field fits).
pub fn to_js(value: &impl serde::Serialize) -> JsValue {
    serde_json::to_string(value)
        .ok()
        .and_then(|json| js_sys::JSON::parse(&json).ok())
        .unwrap_or(JsValue::NULL)
}
