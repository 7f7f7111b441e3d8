//! Media Source Extensions playback of a live stream: ordered appends, staying near the
//! live edge, and evicting played media so memory stays bounded.

use std::collections::VecDeque;

use gloo_events::EventListener;
use wasm_bindgen::JsCast;
use web_sys::{HtmlVideoElement, MediaSource, MediaSourceReadyState, SourceBuffer, Url};

use crate::event::{emit, Event, Events};
use crate::WebError;

/// Media buffered ahead before playback starts. Chunks arrive once per chunk length, so
/// starting with less than one chunk's worth plays every chunk just in time and any jitter
/// stalls; 1.5 s leaves half a second of margin with 1 s chunks.
const START_BUFFER_S: f64 = 1.5;
/// Playback further than this behind the newest buffered media jumps forward.
const CATCH_UP_AFTER_S: f64 = 6.0;
/// Where a jump forward lands, behind the newest buffered media.
const TARGET_BEHIND_S: f64 = 2.0;
/// Played media kept behind the play position before it is removed.
const KEEP_BEHIND_S: f64 = 30.0;

/// Media waiting to be appended: a `SourceBuffer` takes one append at a time.
#[derive(Debug, Default)]
pub struct AppendQueue {
    items: VecDeque<Vec<u8>>,
}

impl AppendQueue {
    pub fn push(&mut self, data: Vec<u8>) {
        self.items.push_back(data);
    }

    /// The next append, if the buffer is free to take it.
    pub fn next(&mut self, buffer_busy: bool) -> Option<Vec<u8>> {
        if buffer_busy {
            None
        } else {
            self.items.pop_front()
        }
    }

    /// Puts back an append the buffer refused for lack of room, to retry first.
    pub fn retry(&mut self, data: Vec<u8>) {
        self.items.push_front(data);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

pub struct Player {
    video: HtmlVideoElement,
    media_source: MediaSource,
    object_url: String,
    buffer: Option<SourceBuffer>,
    mime: Option<String>,
    queue: AppendQueue,
    /// Whether playback was started; the page starts it, not `autoplay`, so that it waits
    /// for [`START_BUFFER_S`].
    started: bool,
    listeners: Vec<EventListener>,
}

impl Player {
    pub fn new(video: HtmlVideoElement, events: &Events) -> Result<Player, WebError> {
        let media_source =
            MediaSource::new().map_err(|_| WebError::Unsupported("Media Source Extensions"))?;
        let object_url = Url::create_object_url_with_source(&media_source)?;
        let on_open = {
            let events = events.clone();
            EventListener::new(&media_source, "sourceopen", move |_| {
                emit(&events, Event::SourceOpen)
            })
        };
        video.set_src(&object_url);
        Ok(Player {
            video,
            media_source,
            object_url,
            buffer: None,
            mime: None,
            queue: AppendQueue::default(),
            started: false,
            listeners: vec![on_open],
        })
    }

    pub fn video(&self) -> &HtmlVideoElement {
        &self.video
    }

    /// The stream's type and init segment; must come before any media.
    pub fn set_init(&mut self, mime: &str, init: Vec<u8>, events: &Events) -> Result<(), WebError> {
        if !MediaSource::is_type_supported(mime) {
            return Err(WebError::CodecUnsupported(mime.to_owned()));
        }
        self.mime = Some(mime.to_owned());
        self.queue.push(init);
        self.ensure_buffer(events)
    }

    pub fn on_source_open(&mut self, events: &Events) -> Result<(), WebError> {
        self.ensure_buffer(events)
    }

    pub fn append(&mut self, media: Vec<u8>) -> Result<(), WebError> {
        self.queue.push(media);
        self.pump()
    }

    /// Appends the next queued media if the buffer is idle; call after each `updateend`.
    pub fn pump(&mut self) -> Result<(), WebError> {
        let Some(buffer) = &self.buffer else {
            return Ok(());
        };
        let Some(mut data) = self.queue.next(buffer.updating()) else {
            return Ok(());
        };
        match buffer.append_buffer_with_u8_array(&mut data) {
            Ok(()) => Ok(()),
            Err(e) if is_quota_exceeded(&e) => {
                // Full: free played media now and try this append again after it.
                self.queue.retry(data);
                let now = self.video.current_time();
                buffer.remove(0.0, (now - 1.0).max(0.0))?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Seconds of media buffered ahead of the play position.
    pub fn buffer_ahead(&self) -> f64 {
        let ranges = self.video.buffered();
        match ranges.length() {
            0 => 0.0,
            n => (ranges.end(n - 1).unwrap_or(0.0) - self.video.current_time()).max(0.0),
        }
    }

    /// Keeps playback inside buffered media and near the live edge; evicts old media.
    pub fn tick(&mut self) {
        let ranges = self.video.buffered();
        let count = ranges.length();
        if count == 0 {
            return;
        }
        let now = self.video.current_time();
        let starts: Vec<f64> = (0..count).filter_map(|i| ranges.start(i).ok()).collect();
        let ends: Vec<f64> = (0..count).filter_map(|i| ranges.end(i).ok()).collect();
        let newest = ends.last().copied().unwrap_or(0.0);
        let inside = starts
            .iter()
            .zip(&ends)
            .any(|(s, e)| *s <= now + 0.05 && now < *e);
        if !inside {
            // Before the first range (a live join starts mid-stream) or in a gap left by
            // a skipped chunk: go to where media resumes.
            if let Some(next) = starts.iter().find(|s| **s > now - 0.05) {
                self.video.set_current_time(*next + 0.01);
            }
        } else if newest - now > CATCH_UP_AFTER_S {
            self.video.set_current_time(newest - TARGET_BEHIND_S);
        }
        if !self.started && newest - self.video.current_time() >= START_BUFFER_S {
            self.started = true;
            if let Ok(promise) = self.video.play() {
                // Autoplay may be refused until the viewer clicks; that is not an error.
                wasm_bindgen_futures::spawn_local(async move {
                    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
                });
            }
        }
        if let Some(buffer) = &self.buffer {
            let played = self.video.current_time();
            if !buffer.updating() && played - starts[0] > KEEP_BEHIND_S {
                let _ = buffer.remove(0.0, played - KEEP_BEHIND_S / 2.0);
            }
        }
    }

    fn ensure_buffer(&mut self, events: &Events) -> Result<(), WebError> {
        if self.buffer.is_some() || self.media_source.ready_state() != MediaSourceReadyState::Open {
            return Ok(());
        }
        let Some(mime) = &self.mime else {
            return Ok(());
        };
        let buffer = self.media_source.add_source_buffer(mime)?;
        let events = events.clone();
        self.listeners
            .push(EventListener::new(&buffer, "updateend", move |_| {
                emit(&events, Event::UpdateEnd)
            }));
        self.buffer = Some(buffer);
        self.pump()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.listeners.clear();
        let _ = Url::revoke_object_url(&self.object_url);
    }
}

fn is_quota_exceeded(error: &wasm_bindgen::JsValue) -> bool {
    error
        .dyn_ref::<web_sys::DomException>()
        .is_some_and(|e| e.name() == "QuotaExceededError")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_queue_waits_for_an_idle_buffer_and_keeps_order() {
        let mut queue = AppendQueue::default();
        queue.push(vec![1]);
        queue.push(vec![2]);
        assert_eq!(queue.next(true), None);
        assert_eq!(queue.next(false), Some(vec![1]));
        queue.retry(vec![1]);
        assert_eq!(queue.next(false), Some(vec![1]));
        assert_eq!(queue.next(false), Some(vec![2]));
        assert!(queue.is_empty());
    }
}
