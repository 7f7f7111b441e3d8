//! The browser driver: one owner of all state. It carries out what the peer core
//! (`swarm::Node`) asks — the signalling WebSocket, RTCPeerConnections and data
//! channels, MSE — feeds it what happened, and publishes a [`Snapshot`] for the JS API
//! and the page. Every decision about peers and the session is the core's.

use std::collections::HashMap;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::StreamExt;
use gloo_timers::callback::{Interval, Timeout};
use protocol::{ErrorCode, SignalPayload};
use swarm::{
    LinkId, LinkStart, Millis, Node, NodeConfig, NodeEvent, NodeInput, NodeOutput, Playback,
};
use web_sys::HtmlVideoElement;

use crate::controls::Command;
use crate::event::{emit, Event, Events};
use crate::latency::{media_limits, LatencyPreset};
use crate::link::Link;
use crate::media::MediaPlayer;
use crate::options::PlayerOptions;
use crate::report::Reporter;
use crate::signalling::Signalling;
use crate::snapshot::{
    state_of, AppendedChunk, PlayerState, RateMeter, Situation, APPENDED_LISTED,
};
use crate::WebError;

/// How links this page offers carry pieces: on an unordered channel of their own, so a
/// lost packet delays only its piece (docs/benchmarks.md, "Pieces on an unordered
/// channel").
const PIECES_CHANNEL: protocol::PiecesChannel = protocol::PiecesChannel::Unordered;

/// How often the player and the stats panel are updated.
const TICK_MS: u32 = 250;
/// Rates are measured over this long: shorter makes jumpy figures.
const RATE_INTERVAL_MS: f64 = 1000.0;

pub struct App {
    options: PlayerOptions,
    events: Events,
    /// The peer: session, links, swarm. Its viewer swarm starts once the server names
    /// the channel's key, and accepts only content that key signed.
    node: Node,
    signalling: Option<Signalling>,
    links: HashMap<LinkId, Link>,
    /// The node's next timer, as armed (dropping it cancels).
    node_timer: Option<(Millis, Timeout)>,
    media: MediaPlayer,
    _ticker: Interval,
    /// Fires when the first chunk is due to play; dropping it cancels.
    start_timer: Option<Timeout>,
    /// The newest chunk handed to the media player.
    last_played: Option<protocol::ChunkSeq>,
    created: Millis,
    stalls: u64,
    rates: RateMeter,
    reporter: Reporter,
    /// The last chunks handed to the media player (for `stats().appended`).
    appended: std::collections::VecDeque<AppendedChunk>,
    /// A latency change moved the schedule: jump to the new delay on the next tick, once
    /// the chunks it released are appended.
    go_live_due: bool,
}

impl App {
    /// Sets everything up; fails at once when the browser lacks what the player needs.
    /// `events` is the sending end of the app's inbox.
    pub fn new(
        video: HtmlVideoElement,
        options: PlayerOptions,
        reporter: Reporter,
        events: Events,
    ) -> Result<App, WebError> {
        let window = web_sys::window().ok_or(WebError::Unsupported("window"))?;
        if !js_sys::Reflect::has(&window, &"RTCPeerConnection".into()).unwrap_or(false) {
            return Err(WebError::Unsupported("WebRTC"));
        }
        // `MediaSource`, or Safari's `ManagedMediaSource` on iPhone and iPad.
        if crate::media_source::SourceKind::detect().is_none() {
            return Err(WebError::Unsupported("Media Source Extensions"));
        }
        video.set_muted(options.muted);
        let media = MediaPlayer::new(
            video,
            &events,
            media_limits(options.target_latency_ms),
            options.autoplay,
        )?;
        let node = Node::new(
            now(),
            NodeConfig {
                channel: options.channel.clone(),
                signer: None,
                upload_limit: options.max_upload,
                target_buffer_ms: Some(u64::from(options.target_latency_ms)),
                substreams: None,
                // Spreads this viewer's choices among equally good neighbours differently
                // from every other viewer's.
                seed: (js_sys::Math::random() * u64::MAX as f64) as u64,
                relay_only: options.relay_only,
                edge: false,
                checks: swarm::Checks::default(),
            },
        );
        let ticker = {
            let events = events.clone();
            Interval::new(TICK_MS, move || emit(&events, Event::Tick))
        };
        let app = App {
            options,
            events,
            node,
            signalling: None,
            links: HashMap::new(),
            node_timer: None,
            media,
            _ticker: ticker,
            start_timer: None,
            last_played: None,
            created: now(),
            stalls: 0,
            rates: RateMeter::new(RATE_INTERVAL_MS),
            reporter,
            appended: Default::default(),
            go_live_due: false,
        };
        Ok(app)
    }

    /// Handles events until `destroy()` or a fatal error.
    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = inbox.next().await {
            if matches!(event, Event::Stop) {
                break;
            }
            match self.handle(event).await {
                Ok(()) => {}
                Err(WebError::CodecUnsupported(mime)) => {
                    self.reporter.fatal(
                        PlayerState::CodecUnsupported,
                        &format!("cannot play {mime}"),
                    );
                    return;
                }
                Err(WebError::Refused(message)) => {
                    self.reporter.fatal(PlayerState::Stopped, &message);
                    return;
                }
                Err(e @ WebError::Unsupported(_)) => {
                    self.reporter
                        .fatal(PlayerState::Unsupported, &e.to_string());
                    return;
                }
                Err(e) => web_sys::console::warn_1(&e.to_string().into()),
            }
        }
        self.reporter.fatal(PlayerState::Stopped, "stopped");
    }

    async fn handle(&mut self, event: Event) -> Result<(), WebError> {
        let now = now();
        let input = match event {
            Event::SocketOpen(id) => Some(NodeInput::SignalOpen(id)),
            Event::SocketText(id, text) => Some(NodeInput::SignalText(id, text)),
            Event::SocketClosed(id) => {
                if self.signalling.as_ref().is_some_and(|s| s.id == id) {
                    self.signalling = None;
                }
                Some(NodeInput::SignalClosed(id))
            }
            Event::ChannelOpen(link) => Some(NodeInput::LinkOpen(link)),
            Event::ChannelMessage(link, bytes) => {
                Some(NodeInput::LinkData(link, Bytes::from(bytes).into()))
            }
            Event::ChannelClosed(link) | Event::LinkFailed(link) => {
                self.links.remove(&link);
                Some(NodeInput::LinkClosed(link))
            }
            Event::Fetched(fetch, outcome) => Some(NodeInput::Fetched(fetch, outcome)),
            Event::ChannelDrained(link) => self
                .links
                .get(&link)
                .map(|l| NodeInput::LinkBuffered(link, l.buffered())),
            Event::GatheringComplete(link) => self.local_description(link),
            Event::NodeTimer => {
                self.node_timer = None;
                self.report_buffered(now);
                self.node.handle_timeout(now);
                None
            }
            Event::SourceOpen => {
                self.media.on_source_open(&self.events)?;
                None
            }
            Event::Streaming(streaming) => {
                self.media.set_streaming(streaming)?;
                None
            }
            Event::UpdateEnd => {
                self.media.pump()?;
                // The first media may have landed after its start time.
                if !self.media.started() {
                    self.media.tick(now.0 as f64, &self.events);
                }
                None
            }
            Event::StartDue => {
                self.start_timer = None;
                self.media.tick(now.0 as f64, &self.events);
                None
            }
            Event::VideoPaused => {
                self.media.on_pause();
                self.refresh_controls();
                None
            }
            Event::VideoPlay => {
                self.media.on_play();
                self.refresh_controls();
                None
            }
            Event::VideoChanged => {
                self.refresh_controls();
                None
            }
            Event::PlayRefused(name) => {
                let video = self.media.video();
                if name == "NotAllowedError" && !video.muted() {
                    // Autoplay with sound needs a click first; muted it may start now,
                    // and the "Click for sound" button unmutes.
                    video.set_muted(true);
                    self.media.play(&self.events);
                } else {
                    web_sys::console::warn_1(&format!("play() refused: {name}").into());
                }
                self.refresh_controls();
                None
            }
            Event::Command(command) => {
                self.command(now, command);
                self.refresh_controls();
                None
            }
            Event::VideoPlaying => {
                if self.reporter.snapshot().startup_ms.is_none() {
                    self.reporter.first_frame(now - self.created);
                }
                None
            }
            Event::VideoWaiting => {
                if self.reporter.snapshot().startup_ms.is_some() {
                    self.stalls += 1;
                }
                None
            }
            Event::Tick => {
                self.tick(now);
                None
            }
            Event::Stop => None,
        };
        if let Some(input) = input {
            self.node.handle_input(now, input);
        }
        self.carry_out(now).await?;
        self.arm_node_timer(now);
        Ok(())
    }

    /// Schedules `NodeTimer` for the node's next deadline (re-armed only when it moves).
    fn arm_node_timer(&mut self, now: Millis) {
        let Some(due) = self.node.poll_timeout() else {
            self.node_timer = None;
            return;
        };
        if self.node_timer.as_ref().is_some_and(|(at, _)| *at == due) {
            return;
        }
        let events = self.events.clone();
        let wait = (due - now).min(u64::from(u32::MAX)) as u32;
        let timeout = Timeout::new(wait, move || emit(&events, Event::NodeTimer));
        self.node_timer = Some((due, timeout));
    }

    /// The link's description with every candidate gathered so far.
    fn local_description(&self, link: LinkId) -> Option<NodeInput> {
        let sdp = self.links.get(&link)?.local_sdp()?;
        Some(NodeInput::LocalDescription(link, sdp))
    }

    fn report_buffered(&mut self, now: Millis) {
        let open: Vec<LinkId> = self.node.open_links().map(|(link, _)| link).collect();
        for link in open {
            if let Some(l) = self.links.get(&link) {
                self.node
                    .handle_input(now, NodeInput::LinkBuffered(link, l.buffered()));
            }
        }
    }

    /// Carries out a viewer's (or the host page's) command.
    fn command(&mut self, now: Millis, command: Command) {
        let video = self.media.video().clone();
        match command {
            Command::Play => self.play(now),
            Command::Pause => self.media.pause(),
            Command::TogglePlay if self.media.viewer_paused() => self.play(now),
            Command::TogglePlay => self.media.pause(),
            Command::Mute => video.set_muted(true),
            Command::Unmute => video.set_muted(false),
            Command::ToggleMute => video.set_muted(!video.muted()),
            Command::Volume(v) => set_volume(&video, v),
            Command::VolumeBy(dv) => set_volume(&video, video.volume() + dv),
            Command::GoLive => self.go_live(now),
            Command::Latency(preset) => self.set_latency(preset),
            Command::ToggleFullscreen => {
                let target = self.reporter.fullscreen_target();
                crate::page::toggle_fullscreen(target.as_ref().unwrap_or(&video));
            }
            Command::TogglePictureInPicture => crate::page::toggle_picture_in_picture(&video),
            Command::ToggleStats => self.reporter.toggle_stats(),
        }
    }

    /// Play pressed: resumes where it paused; before the planned start (no autoplay),
    /// the start plays as planned.
    fn play(&mut self, now: Millis) {
        self.media.on_play();
        if self.media.started() {
            self.media.play(&self.events);
        } else {
            self.media.tick(now.0 as f64, &self.events);
        }
    }

    /// To the live edge at the target delay: the newest media handed over was cut at
    /// `cut`, so playing `behind` seconds before its end is `now - cut + behind` late.
    fn go_live(&mut self, now: Millis) {
        let since_cut = self
            .last_played
            .and_then(|seq| self.node.swarm()?.cut_at(seq))
            .map_or(0, |cut| now - cut);
        let planned = self.planned_delay_ms();
        let behind_s = (planned.saturating_sub(since_cut) as f64 / 1000.0).max(MIN_BEHIND_NEWEST_S);
        self.media.go_live(behind_s, &self.events);
    }

    /// The delay behind live the playout plan gives: each chunk starts playing the target
    /// delay after it was cut, and its first frame was captured a chunk before that. Go
    /// live lands here and live sync holds playback here: a chunk's margin against a
    /// late one.
    fn planned_delay_ms(&self) -> u64 {
        let chunk_ms = self.node.swarm().map_or(1_000, |s| s.chunk_ms());
        u64::from(self.options.target_latency_ms) + chunk_ms
    }

    fn set_latency(&mut self, preset: LatencyPreset) {
        let target_ms = preset.target_ms();
        self.options.latency = preset;
        self.options.target_latency_ms = target_ms;
        self.node.set_target_buffer(u64::from(target_ms));
        self.media.set_limits(media_limits(target_ms));
        self.go_live_due = true;
    }

    /// Shows a command's effect at once, not at the next tick.
    fn refresh_controls(&mut self) {
        let video = self.media.video();
        let (paused, muted, volume) = (self.media.viewer_paused(), video.muted(), video.volume());
        let (latency, target) = (self.options.latency, self.options.target_latency_ms);
        self.reporter.update_controls(|s| {
            s.paused = paused;
            s.muted = muted;
            s.volume = volume;
            s.latency = latency;
            s.target_latency_ms = u64::from(target);
        });
    }

    fn tick(&mut self, now: Millis) {
        self.media.tick(now.0 as f64, &self.events);
        if std::mem::take(&mut self.go_live_due) {
            self.go_live(now);
        }
        let swarm = self.node.swarm();
        let starving = swarm.is_some_and(|s| s.starving(now));
        let (stats, peers) = swarm.map_or_else(Default::default, |s| (s.stats(), s.peer_count()));
        let source_linked = swarm.is_some_and(|s| s.neighbours().any(|n| n.is_source));
        let buffer_s = self.media.buffer_ahead();
        if let Some(swarm) = swarm {
            self.rates.sample(now.0 as f64, &stats, swarm.neighbours());
        }
        let paused = self.media.viewer_paused();
        let state = state_of(&Situation {
            started: self.reporter.snapshot().startup_ms.is_some(),
            paused,
            buffer_s,
            source_linked,
            source_absent: self.node.source_absent(),
            starving,
            peers,
        });
        // Delay behind live: the newest media handed over was cut at `cut`; what plays
        // now is `buffer_s` older than that.
        let lag_ms = self
            .last_played
            .filter(|_| self.media.started())
            .and_then(|seq| self.node.swarm()?.cut_at(seq))
            .map(|cut| (now - cut) + (buffer_s * 1000.0) as u64);
        if let Some(lag) = lag_ms {
            let planned = self.planned_delay_ms();
            self.media.sync_to_live(lag as f64, planned as f64);
        }
        let (stalls, joined, rates) = (self.stalls, self.node.joined(), self.rates.rates.clone());
        // The viewer's experience reports tell what the <video> saw, not the swarm's model.
        self.node.set_playback(Playback {
            stalls,
            startup_ms: self.reporter.snapshot().startup_ms,
            delay_ms: lag_ms,
        });
        let appended = self.appended.iter().cloned().collect();
        let video = self.media.video();
        let (muted, volume) = (video.muted(), video.volume());
        let (latency, target) = (self.options.latency, self.options.target_latency_ms);
        self.reporter.update(state, |s| {
            s.paused = paused;
            s.muted = muted;
            s.volume = volume;
            s.latency = latency;
            s.target_latency_ms = u64::from(target);
            s.appended = appended;
            s.set_counters(&stats, peers);
            s.stalls = stalls;
            s.buffer_ms = (buffer_s * 1000.0) as u64;
            s.lag_ms = lag_ms;
            s.download_kbps = rates.from_peers_kbps + rates.from_source_kbps;
            s.upload_kbps = rates.upload_kbps;
            s.signal_connected = joined;
            s.neighbours = rates.neighbours;
        });
        let retry_in_ms = self.node.reconnect_in(now).map(|ms| ms as f64);
        self.reporter.tick(&self.rates.rates, retry_in_ms);
    }

    /// Carries out everything the node asked.
    async fn carry_out(&mut self, now: Millis) -> Result<(), WebError> {
        while let Some(output) = self.node.poll_output() {
            match output {
                NodeOutput::Connect(id) => {
                    self.signalling = Some(Signalling::open(
                        &self.options.signal_url,
                        id,
                        &self.events,
                    )?);
                }
                NodeOutput::CloseSignal(id) => {
                    if self.signalling.as_ref().is_some_and(|s| s.id == id) {
                        self.signalling = None;
                    }
                }
                NodeOutput::SendSignal(text) => {
                    if let Some(signalling) = &self.signalling {
                        signalling.send(&text);
                    }
                }
                NodeOutput::OpenLink {
                    link,
                    start,
                    ice_servers,
                    relay_only,
                    ..
                } => {
                    if let Err(e) = self.open_link(link, start, &ice_servers, relay_only).await {
                        web_sys::console::warn_1(&format!("link set-up failed: {e}").into());
                        self.links.remove(&link);
                        self.node.handle_input(now, NodeInput::LinkClosed(link));
                    }
                }
                NodeOutput::RemoteSignal { link, signal } => {
                    let Some(l) = self.links.get(&link) else {
                        continue;
                    };
                    let applied = match signal {
                        SignalPayload::Answer { sdp } => l.accept_answer(&sdp).await,
                        SignalPayload::Candidate {
                            candidate,
                            sdp_mid,
                            sdp_m_line_index,
                        } => {
                            l.add_candidate(&candidate, sdp_mid.as_deref(), sdp_m_line_index)
                                .await
                        }
                        SignalPayload::Offer { .. } | SignalPayload::Decline {} => Ok(()),
                    };
                    if let Err(e) = applied {
                        web_sys::console::warn_1(&format!("remote set-up refused: {e}").into());
                    }
                }
                NodeOutput::FlushDescription(link) => {
                    if let Some(input) = self.local_description(link) {
                        self.node.handle_input(now, input);
                    }
                }
                NodeOutput::Send { link, frame } => {
                    if let Some(l) = self.links.get(&link) {
                        l.send(&frame.to_vec(), frame.is_piece());
                    }
                }
                NodeOutput::CloseLink(link) => {
                    self.links.remove(&link);
                }
                NodeOutput::Init { mime, data } => {
                    self.media.set_init(&mime, data, &self.events)?
                }
                // The page is no edge (`NodeConfig::edge` is off).
                NodeOutput::Signed { .. } => {}
                NodeOutput::Fetch { fetch, url, range } => {
                    crate::fetch::start(fetch, url, range, &self.events)
                }
                NodeOutput::Play { chunk, due } => {
                    let data = chunk.data.to_vec();
                    if self.options.audit {
                        if self.appended.len() == APPENDED_LISTED {
                            self.appended.pop_front();
                        }
                        self.appended.push_back(AppendedChunk::of(chunk.seq, &data));
                    }
                    self.media.append(data)?;
                    self.last_played = Some(chunk.seq);
                    if self.start_timer.is_none() && !self.media.started() {
                        // The one start-up buffer is the swarm's: play when it planned (a
                        // little sooner, slowed until on the plan; see `media`).
                        self.media.start_at(due.0 as f64);
                        let early = crate::media::EARLY_START_MS as u64;
                        let wait = due.0.saturating_sub(early).saturating_sub(now.0);
                        let events = self.events.clone();
                        self.start_timer = Some(Timeout::new(wait as u32, move || {
                            emit(&events, Event::StartDue)
                        }));
                    }
                }
                NodeOutput::Skipped(seq) => {
                    web_sys::console::log_1(&format!("chunk {seq} missed its deadline").into())
                }
                NodeOutput::Event(NodeEvent::Refused { code, message }) => {
                    return Err(WebError::Refused(match code {
                        ErrorCode::UpgradeRequired => {
                            format!("this page is out of date: reload to update ({message})")
                        }
                        _ => format!("the signal server refused this viewer: {message}"),
                    }));
                }
                NodeOutput::Event(NodeEvent::NewBroadcast { session }) => {
                    // The broadcaster restarted: its chunks start over with a new init
                    // segment, so the player does too (without a reload).
                    web_sys::console::log_1(&format!("a new broadcast began ({session})").into());
                    let video = self.media.video().clone();
                    self.media = MediaPlayer::new(
                        video,
                        &self.events,
                        self.media.limits(),
                        !self.media.viewer_paused(),
                    )?;
                    self.start_timer = None;
                    self.last_played = None;
                    self.appended.clear();
                }
                NodeOutput::Event(event) => log(&event),
            }
        }
        Ok(())
    }

    async fn open_link(
        &mut self,
        link: LinkId,
        start: LinkStart,
        ice_servers: &[protocol::IceServer],
        relay_only: bool,
    ) -> Result<(), WebError> {
        let mut l = Link::new(link, ice_servers, relay_only, &self.events)?;
        match start {
            LinkStart::Offer => l.offer(link, PIECES_CHANNEL, &self.events).await?,
            LinkStart::Answer { sdp } => l.answer(link, &sdp, &self.events).await?,
        }
        self.links.insert(link, l);
        Ok(())
    }
}

fn log(event: &NodeEvent) {
    // Why a link went away, so a swarm that split can be read from the console.
    let info = match event {
        NodeEvent::LinkDown { peer } => Some(format!("link to {peer} closed")),
        NodeEvent::LinkRefused { peer, reason } => {
            Some(format!("link to {peer} refused: {reason}"))
        }
        _ => None,
    };
    if let Some(line) = info {
        web_sys::console::info_1(&line.into());
        return;
    }
    let line = match event {
        NodeEvent::Dropped { peer, reason } => format!("dropping {peer}: {reason}"),
        NodeEvent::KeyChanged => {
            "the channel's key changed: content signed with the new key is refused".into()
        }
        NodeEvent::ServerError { message, .. } => format!("signal server: {message}"),
        NodeEvent::NoRelay => "relay-only, but the signal server offers no TURN server: \
                               no peer link can open"
            .into(),
        NodeEvent::EdgeTrouble { edge, reason } => {
            format!("HTTP edge {edge} failed, not asked for a while: {reason}")
        }
        _ => return,
    };
    web_sys::console::warn_1(&line.into());
}

/// Go live never lands closer than this to the newest buffered media: a little margin
/// for the next chunk's append.
const MIN_BEHIND_NEWEST_S: f64 = 0.3;

fn set_volume(video: &HtmlVideoElement, volume: f64) {
    let volume = volume.clamp(0.0, 1.0);
    video.set_volume(volume);
    if volume > 0.0 {
        video.set_muted(false);
    }
}

/// Milliseconds on the page's monotonic clock.
pub fn now() -> Millis {
    let ms = web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now());
    Millis(ms as u64)
}
