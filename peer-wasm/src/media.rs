//! Media Source Extensions playback of a live stream: ordered appends, starting when the
//! swarm's schedule says, staying inside buffered media near the live edge, and evicting
//! played media so memory stays bounded over hours.

use std::collections::VecDeque;

use gloo_events::EventListener;
use wasm_bindgen::JsCast;
use web_sys::{HtmlVideoElement, MediaSource, MediaSourceReadyState, SourceBuffer, Url};

use crate::event::{emit, Event, Events};
use crate::media_source::SourceKind;
use crate::WebError;

/// How far the player lets buffered media grow around the play position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaLimits {
    /// Played media kept behind the play position; older media is removed.
    pub keep_behind_s: f64,
    /// Playback further than this behind the newest buffered media jumps forward (a
    /// backstop: the swarm's schedule normally keeps the distance near its target).
    pub catch_up_after_s: f64,
    /// Where such a jump lands, behind the newest buffered media.
    pub target_behind_s: f64,
}

impl Default for MediaLimits {
    fn default() -> MediaLimits {
        MediaLimits {
            keep_behind_s: 30.0,
            catch_up_after_s: 6.0,
            target_behind_s: 2.0,
        }
    }
}

/// Playback may start this long before the swarm's planned time…
pub const EARLY_START_MS: f64 = 700.0;
/// …playing this much slower until it is back on the plan: the first frame comes sooner,
/// and the buffer (the margin against late chunks) is whole again a few seconds later.
/// Browsers keep the audio's pitch at this rate.
pub const SLOW_START_RATE: f64 = 0.9;

/// An early start being absorbed: when playback started, where, and the planned time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    pub started_at: f64,
    pub media_at: f64,
    pub planned: f64,
}

impl SlowStart {
    /// How far ahead of the plan playback still is (ms), given the clock and position now.
    pub fn ahead_ms(&self, now: f64, position: f64) -> f64 {
        let wall = now - self.started_at;
        let media = (position - self.media_at) * 1000.0;
        (self.planned - self.started_at) - (wall - media)
    }
}

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

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Drops the oldest appends beyond `max` (never the first when `keep_first`: the
    /// init segment, not yet appended); returns how many went.
    pub fn trim_to(&mut self, max: usize, keep_first: bool) -> usize {
        let keep = usize::from(keep_first && !self.items.is_empty());
        let excess = self.items.len().saturating_sub(max.max(keep));
        self.items.drain(keep..keep + excess);
        excess
    }
}

/// Appends held while a `ManagedMediaSource` does not want media (between `endstreaming`
/// and `startstreaming`): about half a minute of 1 s chunks. Older ones are dropped, as
/// they would be too late to play; the player then jumps the gap.
pub const MAX_HELD_APPENDS: usize = 30;

/// The range of played media to remove, if the oldest buffered media lies more than
/// `keep_behind` behind the play position. Removes down to half of it, so eviction runs
/// once every `keep_behind / 2` seconds of playback rather than on every tick.
pub fn eviction(oldest: f64, position: f64, keep_behind: f64) -> Option<(f64, f64)> {
    (position - oldest > keep_behind).then(|| (0.0, position - keep_behind / 2.0))
}

pub struct MediaPlayer {
    video: HtmlVideoElement,
    media_source: MediaSource,
    kind: SourceKind,
    /// The source wants media: always for the standard one; for a managed one, between
    /// `startstreaming` and `endstreaming`.
    streaming: bool,
    /// An append succeeded: the init segment is in.
    appended_any: bool,
    /// Media dropped while a managed source held appends past `MAX_HELD_APPENDS`.
    pub held_dropped: usize,
    /// The live-sync nudge now (`live_sync.rs`): 1.0, or a few percent off.
    sync_rate: f64,
    object_url: String,
    buffer: Option<SourceBuffer>,
    mime: Option<String>,
    queue: AppendQueue,
    limits: MediaLimits,
    /// When playback should start (page clock, ms): the swarm's planned time for the first
    /// chunk. The page starts playback itself, not `autoplay`, so it waits for that.
    start_at: Option<f64>,
    started: bool,
    /// The viewer paused (or has not pressed play, without autoplay): the planned start
    /// does not play, and nothing resumes until the viewer does.
    viewer_paused: bool,
    /// The viewer chose to be behind live (paused, then resumed): the catch-up backstop
    /// leaves playback where it is until Go live.
    behind_by_choice: bool,
    slow_start: Option<SlowStart>,
    /// Appends refused for lack of room and retried after an eviction.
    pub quota_recoveries: u32,
    listeners: Vec<EventListener>,
}

impl MediaPlayer {
    /// `autoplay`: start when the first chunk is due; otherwise wait for [`play`](Self::play).
    pub fn new(
        video: HtmlVideoElement,
        events: &Events,
        limits: MediaLimits,
        autoplay: bool,
    ) -> Result<MediaPlayer, WebError> {
        let kind = SourceKind::detect().ok_or(WebError::Unsupported("Media Source Extensions"))?;
        let media_source = kind.create(&video)?;
        let object_url = Url::create_object_url_with_source(&media_source)?;
        let forward = |target: &web_sys::EventTarget, name: &'static str, event: fn() -> Event| {
            let events = events.clone();
            EventListener::new(target, name, move |_| emit(&events, event()))
        };
        let mut listeners = vec![
            forward(&media_source, "sourceopen", || Event::SourceOpen),
            forward(&video, "playing", || Event::VideoPlaying),
            forward(&video, "waiting", || Event::VideoWaiting),
            // Also from the browser's own UI (the picture-in-picture window, media keys).
            forward(&video, "pause", || Event::VideoPaused),
            forward(&video, "play", || Event::VideoPlay),
            forward(&video, "volumechange", || Event::VideoChanged),
        ];
        if kind == SourceKind::Managed {
            listeners.push(forward(&media_source, "startstreaming", || {
                Event::Streaming(true)
            }));
            listeners.push(forward(&media_source, "endstreaming", || {
                Event::Streaming(false)
            }));
        }
        video.set_src(&object_url);
        let streaming = kind.streaming(&media_source);
        Ok(MediaPlayer {
            video,
            media_source,
            kind,
            streaming,
            appended_any: false,
            held_dropped: 0,
            sync_rate: 1.0,
            object_url,
            buffer: None,
            mime: None,
            queue: AppendQueue::default(),
            limits,
            start_at: None,
            started: false,
            viewer_paused: !autoplay,
            behind_by_choice: false,
            slow_start: None,
            quota_recoveries: 0,
            listeners,
        })
    }

    pub fn video(&self) -> &HtmlVideoElement {
        &self.video
    }

    /// The stream's type and init segment; must come before any media.
    pub fn set_init(&mut self, mime: &str, init: Vec<u8>, events: &Events) -> Result<(), WebError> {
        if !self.kind.is_type_supported(mime) {
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
        if !self.streaming {
            self.held_dropped += self.queue.trim_to(MAX_HELD_APPENDS, !self.appended_any);
        }
        self.pump()
    }

    /// A managed source asked for media again (`startstreaming`), or to hold it
    /// (`endstreaming`).
    pub fn set_streaming(&mut self, streaming: bool) -> Result<(), WebError> {
        self.streaming = streaming;
        self.pump()
    }

    /// Appends waiting for the `SourceBuffer`.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Appends the next queued media if the buffer is idle; call after each `updateend`.
    pub fn pump(&mut self) -> Result<(), WebError> {
        let Some(buffer) = self.buffer.as_ref().filter(|_| self.streaming) else {
            return Ok(());
        };
        let Some(mut data) = self.queue.next(buffer.updating()) else {
            return Ok(());
        };
        match buffer.append_buffer_with_u8_array(&mut data) {
            Ok(()) => {
                self.appended_any = true;
                Ok(())
            }
            Err(e) if is_quota_exceeded(&e) => {
                // Full: free played media now and try this append again after it (the
                // `updateend` of the removal pumps again).
                self.queue.retry(data);
                self.quota_recoveries += 1;
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

    /// Starts playback at `at` (page clock, ms) or as soon as media is buffered after it.
    pub fn start_at(&mut self, at: f64) {
        if self.start_at.is_none() {
            self.start_at = Some(at);
        }
    }

    /// Whether playback was started.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The viewer paused (or, without autoplay, has not pressed play yet).
    pub fn viewer_paused(&self) -> bool {
        self.viewer_paused
    }

    pub fn limits(&self) -> MediaLimits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: MediaLimits) {
        self.limits = limits;
    }

    /// The viewer pressed play: resume where playback was (still behind live, if paused
    /// long), or start now if the planned start already passed.
    pub fn play(&self, events: &Events) {
        if self.started {
            play(&self.video, events);
        }
    }

    pub fn pause(&mut self) {
        let _ = self.video.pause();
        self.on_pause();
    }

    /// The video paused, by our controls or the browser's.
    pub fn on_pause(&mut self) {
        self.viewer_paused = true;
        self.behind_by_choice = true;
        self.slow_start = None;
        self.video.set_playback_rate(1.0);
    }

    /// The video plays again, by our controls or the browser's.
    pub fn on_play(&mut self) {
        self.viewer_paused = false;
    }

    /// Jumps to `behind_s` behind the newest buffered media and plays from there.
    pub fn go_live(&mut self, behind_s: f64, events: &Events) {
        self.behind_by_choice = false;
        self.viewer_paused = false;
        if let Some((_, newest)) = self.buffered_span() {
            self.video.set_current_time((newest - behind_s).max(0.0));
        }
        self.play(events);
    }

    /// Nudges the playback rate so the delay behind live (`lag_ms`) stays at the target;
    /// not while paused, behind by the viewer's choice, or absorbing an early start.
    pub fn sync_to_live(&mut self, lag_ms: f64, target_ms: f64) {
        let free = self.started
            && !self.viewer_paused
            && !self.behind_by_choice
            && self.slow_start.is_none()
            && !self.video.paused();
        let rate = if free {
            crate::live_sync::live_sync_rate(lag_ms, target_ms, self.sync_rate)
        } else {
            1.0
        };
        // An early start's slow-down owns the rate until it ends.
        if rate != self.sync_rate && self.slow_start.is_none() {
            self.sync_rate = rate;
            self.video.set_playback_rate(rate);
        }
    }

    /// The oldest and newest buffered media, in seconds of the video's clock.
    pub fn buffered_span(&self) -> Option<(f64, f64)> {
        let ranges = self.video.buffered();
        let n = ranges.length();
        (n > 0).then(|| {
            (
                ranges.start(0).unwrap_or(0.0),
                ranges.end(n - 1).unwrap_or(0.0),
            )
        })
    }

    /// Keeps playback inside buffered media and near the live edge, starts it when due,
    /// and evicts old media. `now` is the page clock in ms.
    pub fn tick(&mut self, now: f64, events: &Events) {
        let ranges = self.video.buffered();
        let count = ranges.length();
        if count == 0 {
            return;
        }
        let position = self.video.current_time();
        let starts: Vec<f64> = (0..count).filter_map(|i| ranges.start(i).ok()).collect();
        let ends: Vec<f64> = (0..count).filter_map(|i| ranges.end(i).ok()).collect();
        let newest = ends.last().copied().unwrap_or(0.0);
        let inside = starts
            .iter()
            .zip(&ends)
            .any(|(s, e)| *s <= position + 0.05 && position < *e);
        let mut seeked = true;
        if !inside {
            // Before the first range (a live join starts mid-stream) or in a gap left by
            // a skipped chunk: go to where media resumes.
            if let Some(next) = starts.iter().find(|s| **s > position - 0.05) {
                self.video.set_current_time(*next + 0.01);
            }
        } else if self.viewer_paused && newest - position > self.limits.keep_behind_s {
            // Paused for long: the swarm keeps filling the buffer, which must stay
            // bounded, so the paused position moves up behind the newest media.
            self.video
                .set_current_time(newest - self.limits.keep_behind_s / 2.0);
        } else if !self.behind_by_choice && newest - position > self.limits.catch_up_after_s {
            self.video
                .set_current_time(newest - self.limits.target_behind_s);
        } else {
            seeked = false;
        }
        if let Some(slow) = self.slow_start {
            // Back on the plan (or a jump made the plan moot): normal speed.
            if seeked || slow.ahead_ms(now, self.video.current_time()) <= 0.0 {
                self.video.set_playback_rate(1.0);
                self.slow_start = None;
            }
        }
        let planned = self.start_at;
        if !self.started && planned.is_some_and(|at| now >= at - EARLY_START_MS) {
            self.started = true;
            if let Some(planned) = planned.filter(|at| now < *at) {
                self.video.set_playback_rate(SLOW_START_RATE);
                self.slow_start = Some(SlowStart {
                    started_at: now,
                    media_at: self.video.current_time(),
                    planned,
                });
            }
            if !self.viewer_paused {
                play(&self.video, events);
            }
        }
        if let Some(buffer) = &self.buffer {
            let range = eviction(
                starts[0],
                self.video.current_time(),
                self.limits.keep_behind_s,
            );
            if let (false, Some((from, to))) = (buffer.updating(), range) {
                let _ = buffer.remove(from, to);
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

impl Drop for MediaPlayer {
    fn drop(&mut self) {
        self.listeners.clear();
        let _ = Url::revoke_object_url(&self.object_url);
    }
}

/// Plays `video`; a refusal (autoplay with sound before any click) comes back as
/// `PlayRefused`, for the app to retry muted.
fn play(video: &HtmlVideoElement, events: &Events) {
    let Ok(promise) = video.play() else {
        return;
    };
    let events = events.clone();
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = wasm_bindgen_futures::JsFuture::from(promise).await {
            let name = e
                .dyn_ref::<web_sys::DomException>()
                .map(|e| e.name())
                .unwrap_or_default();
            emit(&events, Event::PlayRefused(name));
        }
    });
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

    #[test]
    fn held_appends_keep_the_newest_and_an_unappended_init() {
        let mut queue = AppendQueue::default();
        for i in 0..5 {
            queue.push(vec![i]);
        }
        assert_eq!(queue.trim_to(3, true), 2);
        let order: Vec<u8> = std::iter::from_fn(|| queue.next(false))
            .map(|d| d[0])
            .collect();
        assert_eq!(
            order,
            [0, 3, 4],
            "the init (first) stays, the oldest media go"
        );
        for i in 0..5 {
            queue.push(vec![i]);
        }
        assert_eq!(queue.trim_to(3, false), 2);
        assert_eq!(queue.next(false), Some(vec![2]));
        assert_eq!(queue.trim_to(10, true), 0);
    }

    #[test]
    fn a_slow_start_ends_when_playback_is_back_on_the_plan() {
        // Started 700 ms early at 0.9×: 100 ms of lead absorbed per second played.
        let slow = SlowStart {
            started_at: 1_000.0,
            media_at: 10.0,
            planned: 1_700.0,
        };
        assert_eq!(slow.ahead_ms(1_000.0, 10.0), 700.0);
        assert!((slow.ahead_ms(2_000.0, 10.9) - 600.0).abs() < 1e-6);
        assert!(slow.ahead_ms(8_000.0, 16.299) <= 0.0);
        // A stall spends the lead at once.
        assert!(slow.ahead_ms(2_000.0, 10.2) < 0.0);
    }

    #[test]
    fn eviction_waits_for_keep_behind_then_removes_half_of_it() {
        assert_eq!(eviction(0.0, 29.0, 30.0), None);
        assert_eq!(eviction(0.0, 31.0, 30.0), Some((0.0, 16.0)));
        // After that removal the oldest media is 16 s: nothing more until 46 s.
        assert_eq!(eviction(16.0, 45.0, 30.0), None);
    }
}
