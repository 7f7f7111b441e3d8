//! The browser driver: one owner of all state. It feeds the `Swarm` from the signal
//! server, the data channels and a timer, carries out what the swarm asks, and publishes a
//! [`Snapshot`] for the JS API and the page.

use std::collections::HashMap;

use futures::channel::mpsc;
use futures::StreamExt;
use gloo_timers::callback::{Interval, Timeout};
use protocol::{
    ChannelKey, ClientMessage, IceServer, PeerId, PeerMessage, Role, ServerMessage, SignalPayload,
};
use swarm::{Config, Input, Millis, NeighbourReport, Output, Swarm, SwarmRole};
use web_sys::HtmlVideoElement;

use crate::event::{emit, Event, Events};
use crate::link::Link;
use crate::media::{MediaLimits, MediaPlayer};
use crate::options::PlayerOptions;
use crate::reconnect::Reconnector;
use crate::report::Reporter;
use crate::signalling::Signalling;
use crate::snapshot::{
    state_of, AppendedChunk, PlayerState, RateMeter, Situation, APPENDED_LISTED,
};
use crate::WebError;

/// How often the swarm and the player get a tick.
const TICK_MS: u32 = 250;
/// Rates are measured over this long: shorter makes jumpy figures.
const RATE_INTERVAL_MS: f64 = 1000.0;

pub struct App {
    options: PlayerOptions,
    events: Events,
    signalling: Signalling,
    links: HashMap<PeerId, Link>,
    /// Whether we offered on a link (and so send an offer, not an answer, once gathered).
    offered: HashMap<PeerId, bool>,
    /// Created once the channel's key is known (from `welcome`, or `claimed` for a channel
    /// nobody broadcast on yet): the swarm accepts only content that key signed.
    swarm: Option<Swarm>,
    media: MediaPlayer,
    _ticker: Interval,
    /// STUN/TURN servers from the signal server, for every new link.
    ice_servers: Vec<IceServer>,
    reconnector: Reconnector,
    /// Joined on the current signal connection: free slots and requests may be sent.
    joined: bool,
    neighbours: NeighbourReport,
    /// The signal server knows no broadcaster, or ours left.
    source_absent: bool,
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
}

impl App {
    /// Sets everything up; fails at once when the browser lacks what the player needs.
    pub fn new(
        video: HtmlVideoElement,
        options: PlayerOptions,
        reporter: Reporter,
    ) -> Result<(App, mpsc::UnboundedReceiver<Event>), WebError> {
        let window = web_sys::window().ok_or(WebError::Unsupported("window"))?;
        if !js_sys::Reflect::has(&window, &"RTCPeerConnection".into()).unwrap_or(false) {
            return Err(WebError::Unsupported("WebRTC"));
        }
        if !js_sys::Reflect::has(&window, &"MediaSource".into()).unwrap_or(false) {
            return Err(WebError::Unsupported("Media Source Extensions"));
        }
        video.set_muted(options.muted);
        let (events, inbox) = mpsc::unbounded::<Event>();
        let media = MediaPlayer::new(video, &events, MediaLimits::default())?;
        let signalling = Signalling::open(&options.signal_url, &events)?;
        let ticker = {
            let events = events.clone();
            Interval::new(TICK_MS, move || emit(&events, Event::Tick))
        };
        let app = App {
            options,
            events,
            signalling,
            links: HashMap::new(),
            offered: HashMap::new(),
            swarm: None,
            media,
            _ticker: ticker,
            ice_servers: Vec::new(),
            reconnector: Reconnector::default(),
            joined: false,
            neighbours: NeighbourReport::new(SwarmRole::Viewer),
            source_absent: false,
            start_timer: None,
            last_played: None,
            created: now(),
            stalls: 0,
            rates: RateMeter::new(RATE_INTERVAL_MS),
            reporter,
            appended: Default::default(),
        };
        Ok((app, inbox))
    }

    /// Where to send events for this app (e.g. `Event::Stop`).
    pub fn events(&self) -> Events {
        self.events.clone()
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
        match event {
            Event::SocketOpen => {
                self.reconnector.opened();
                self.signalling.send(&ClientMessage::Join {
                    channel: self.options.channel.clone(),
                    role: Role::Viewer,
                    key: None,
                });
            }
            Event::SocketText(text) => match ServerMessage::from_json(&text) {
                Ok(message) => self.on_server(message).await?,
                Err(e) => {
                    web_sys::console::warn_1(&format!("bad message from signal server: {e}").into())
                }
            },
            Event::SocketClosed => {
                self.joined = false;
                // Existing peer links keep playing; only new introductions wait.
                self.reconnector.closed(&self.events);
            }
            Event::Reconnect => {
                self.reconnector.attempting();
                self.signalling = Signalling::open(&self.options.signal_url, &self.events)?;
            }
            Event::DataChannel(peer, channel) => {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.attach_channel(peer, channel, &self.events);
                }
            }
            Event::ChannelOpen(peer) => self.feed_swarm(now, Input::PeerConnected(peer)),
            Event::ChannelMessage(peer, bytes) => match PeerMessage::decode(&bytes) {
                Ok(message) => self.feed_swarm(now, Input::Message(peer, message)),
                Err(e) => {
                    // The swarm drops and bans it; its Disconnect closes the link.
                    let reason = e.to_string();
                    self.feed_swarm(now, Input::Malformed { peer, reason });
                }
            },
            Event::ChannelClosed(peer) | Event::LinkFailed(peer) => self.drop_link(now, peer),
            Event::ChannelDrained(peer) => self.report_buffered(now, peer),
            Event::GatheringComplete(peer) => self.send_local_description(peer),
            Event::SourceOpen => self.media.on_source_open(&self.events)?,
            Event::UpdateEnd => {
                self.media.pump()?;
                // The first media may have landed after its start time.
                if !self.media.started() {
                    self.media.tick(now.0 as f64);
                }
            }
            Event::StartDue => {
                self.start_timer = None;
                self.media.tick(now.0 as f64);
            }
            Event::VideoPlaying => {
                if self.reporter.snapshot().startup_ms.is_none() {
                    self.reporter.first_frame(now - self.created);
                }
            }
            Event::VideoWaiting => {
                if self.reporter.snapshot().startup_ms.is_some() {
                    self.stalls += 1;
                }
            }
            Event::Tick => self.tick(now),
            Event::Stop => {}
        }
        self.carry_out(now)
    }

    fn tick(&mut self, now: Millis) {
        let peers: Vec<PeerId> = self.links.keys().copied().collect();
        for peer in peers {
            self.report_buffered(now, peer);
        }
        let starving = self.swarm.as_ref().is_some_and(|s| s.starving(now));
        if self.joined && self.swarm.is_some() {
            for message in self.neighbours.update(self.links.len(), starving, now) {
                self.signalling.send(&message);
            }
        }
        self.feed_swarm(now, Input::Tick);
        self.media.tick(now.0 as f64);
        let (stats, peers) = self
            .swarm
            .as_ref()
            .map_or_else(Default::default, |s| (s.stats(), s.peer_count()));
        let source_linked = self
            .swarm
            .as_ref()
            .is_some_and(|s| s.neighbours().any(|n| n.is_source));
        if source_linked {
            self.source_absent = false;
        }
        let buffer_s = self.media.buffer_ahead();
        if let Some(swarm) = &self.swarm {
            self.rates.sample(now.0 as f64, &stats, swarm.neighbours());
        }
        let state = state_of(&Situation {
            started: self.reporter.snapshot().startup_ms.is_some(),
            buffer_s,
            source_linked,
            source_absent: self.source_absent,
            starving,
            peers,
        });
        // Delay behind live: the newest media handed over was cut at `cut`; what plays
        // now is `buffer_s` older than that.
        let lag_ms = self
            .last_played
            .filter(|_| self.media.started())
            .and_then(|seq| self.swarm.as_ref()?.cut_at(seq))
            .map(|cut| (now - cut) + (buffer_s * 1000.0) as u64);
        let (stalls, joined, rates) = (self.stalls, self.joined, self.rates.rates.clone());
        let appended = self.appended.iter().cloned().collect();
        self.reporter.update(state, |s| {
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
        self.reporter.tick(
            &self.rates.rates,
            self.reconnector.retry_in_ms(now.0 as f64),
        );
    }

    async fn on_server(&mut self, message: ServerMessage) -> Result<(), WebError> {
        match message {
            ServerMessage::Welcome {
                ice_servers,
                channel_key,
                broadcaster,
                ..
            } => {
                self.ice_servers = ice_servers;
                self.joined = true;
                self.neighbours.forget();
                match channel_key {
                    Some(key) => self.trust(key),
                    // Nobody ever broadcast here: offline until a broadcaster claims it.
                    None => self.source_absent = true,
                }
                self.feed_swarm(now(), Input::Broadcaster(broadcaster));
            }
            ServerMessage::Claimed {
                channel_key,
                broadcaster,
            } => {
                self.trust(channel_key);
                self.feed_swarm(now(), Input::Broadcaster(Some(broadcaster)));
            }
            // Without the key nothing could be checked, so nobody is linked: the channel
            // was never claimed, so nobody has anything to play yet.
            ServerMessage::Introduce { .. } | ServerMessage::Signal { .. }
                if self.swarm.is_none() => {}
            ServerMessage::Introduce { peers } => {
                // An empty introduction to a newcomer: nobody, broadcaster included, is
                // on this channel.
                if peers.is_empty() && self.links.is_empty() {
                    self.source_absent = true;
                }
                for peer in peers {
                    if self.links.contains_key(&peer) || self.is_banned(peer) {
                        continue; // Introduced again (e.g. after asking for more peers).
                    }
                    let mut link = Link::new(peer, &self.ice_servers, &self.events)?;
                    link.offer(peer, &self.events).await?;
                    self.links.insert(peer, link);
                    self.offered.insert(peer, true);
                }
            }
            ServerMessage::Signal { from, .. } if self.is_banned(from) => {}
            ServerMessage::Signal { from, signal } => match signal {
                SignalPayload::Offer { sdp } => {
                    self.drop_link(now(), from);
                    let mut link = Link::new(from, &self.ice_servers, &self.events)?;
                    link.answer(from, &sdp, &self.events).await?;
                    self.links.insert(from, link);
                    self.offered.insert(from, false);
                }
                SignalPayload::Answer { sdp } => {
                    if let Some(link) = self.links.get(&from) {
                        link.accept_answer(&sdp).await?;
                    }
                }
                SignalPayload::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_m_line_index,
                } => {
                    if let Some(link) = self.links.get(&from) {
                        link.add_candidate(&candidate, sdp_mid.as_deref(), sdp_m_line_index)
                            .await?;
                    }
                }
            },
            ServerMessage::PeerLeft { peer } => self.drop_link(now(), peer),
            // Only broadcasters are challenged.
            ServerMessage::Challenge { .. } => {}
            ServerMessage::Error { message, .. } => {
                web_sys::console::warn_1(&format!("signal server: {message}").into())
            }
        }
        Ok(())
    }

    /// The channel's key is known: the swarm starts, accepting only what it signed.
    fn trust(&mut self, key: ChannelKey) {
        match &self.swarm {
            None => {
                let mut config = Config::viewer(key);
                // Spreads this viewer's choices among equally good neighbours differently
                // from every other viewer's.
                config.seed = (js_sys::Math::random() * u64::MAX as f64) as u64;
                config.upload_limit = self.options.max_upload;
                config.target_buffer_ms = u64::from(self.options.target_latency_ms);
                self.swarm = Some(Swarm::new(config));
                self.source_absent = false;
            }
            Some(swarm) if !swarm.trusts(&key) => web_sys::console::error_1(
                &"the channel's key changed: content signed with the new key is refused".into(),
            ),
            Some(_) => {}
        }
    }

    fn feed_swarm(&mut self, now: Millis, input: Input) {
        if let Some(swarm) = &mut self.swarm {
            swarm.handle_input(now, input);
        }
    }

    fn is_banned(&self, peer: PeerId) -> bool {
        self.swarm.as_ref().is_some_and(|s| s.is_banned(peer))
    }

    /// Sends our description once ICE gathering finished, candidates included, so the
    /// peer never gets a candidate before the description it belongs to.
    fn send_local_description(&mut self, peer: PeerId) {
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        if link.local_sent {
            return;
        }
        let Some(sdp) = link.local_sdp() else { return };
        link.local_sent = true;
        let signal = if self.offered.get(&peer).copied().unwrap_or(false) {
            SignalPayload::Offer { sdp }
        } else {
            SignalPayload::Answer { sdp }
        };
        self.signalling
            .send(&ClientMessage::Signal { to: peer, signal });
    }

    fn report_buffered(&mut self, now: Millis, peer: PeerId) {
        if let Some(link) = self.links.get(&peer) {
            let bytes = link.buffered();
            self.feed_swarm(now, Input::Buffered { peer, bytes });
        }
    }

    fn drop_link(&mut self, now: Millis, peer: PeerId) {
        self.offered.remove(&peer);
        let was_source = self
            .swarm
            .as_ref()
            .is_some_and(|s| s.neighbours().any(|n| n.peer == peer && n.is_source));
        if was_source {
            self.source_absent = true;
        }
        if self.links.remove(&peer).is_some() {
            self.feed_swarm(now, Input::PeerDisconnected(peer));
        }
    }

    fn carry_out(&mut self, now: Millis) -> Result<(), WebError> {
        while let Some(output) = self.swarm.as_mut().and_then(Swarm::poll_output) {
            match output {
                Output::Send(peer, message) => {
                    if let Some(link) = self.links.get(&peer) {
                        link.send(&message.encode());
                    }
                }
                Output::Init { mime, data } => self.media.set_init(&mime, data, &self.events)?,
                Output::Play { chunk, due } => {
                    let data = chunk.data.to_vec();
                    let appended = AppendedChunk::of(chunk.seq, &data);
                    self.media.append(data)?;
                    if self.appended.len() == APPENDED_LISTED {
                        self.appended.pop_front();
                    }
                    self.appended.push_back(appended);
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
                Output::Skipped(seq) => {
                    web_sys::console::log_1(&format!("chunk {seq} missed its deadline").into())
                }
                Output::Disconnect { peer, reason } => {
                    web_sys::console::warn_1(&format!("dropping {peer}: {reason}").into());
                    self.drop_link(now, peer);
                }
            }
        }
        Ok(())
    }
}

/// Milliseconds on the page's monotonic clock.
pub fn now() -> Millis {
    let ms = web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now());
    Millis(ms as u64)
}
