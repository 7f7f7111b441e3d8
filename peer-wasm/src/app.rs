//! The browser driver: one owner of all state. It feeds the `Swarm` from the signal
//! server, the data channels and a timer, and carries out what the swarm asks.

use std::collections::HashMap;

use futures::channel::mpsc;
use futures::StreamExt;
use gloo_events::EventListener;
use gloo_timers::callback::{Interval, Timeout};
use protocol::{
    ChannelName, ClientMessage, IceServer, PeerId, PeerMessage, Role, ServerMessage, SignalPayload,
};
use swarm::{Config, Input, Millis, NeighbourReport, Output, Swarm, SwarmRole};
use wasm_bindgen::JsCast;
use web_sys::HtmlVideoElement;

use crate::event::{emit, Event, Events};
use crate::link::Link;
use crate::page;
use crate::player::Player;
use crate::reconnect::Backoff;
use crate::signalling::Signalling;
use crate::WebError;

/// How often the swarm and the player get a tick.
const TICK_MS: u32 = 250;

pub struct App {
    channel: ChannelName,
    events: Events,
    signalling: Signalling,
    links: HashMap<PeerId, Link>,
    /// Whether we offered on a link (and so send an offer, not an answer, once gathered).
    offered: HashMap<PeerId, bool>,
    swarm: Swarm,
    player: Player,
    playing: bool,
    _ticker: Interval,
    _unmute: Option<EventListener>,
    /// STUN/TURN servers from the signal server, for every new link.
    ice_servers: Vec<IceServer>,
    backoff: Backoff,
    /// Joined on the current signal connection: free slots and requests may be sent.
    joined: bool,
    neighbours: NeighbourReport,
    /// A pending reconnect to the signal server; dropping it cancels.
    retry: Option<Timeout>,
}

impl App {
    pub async fn run(channel: ChannelName, embed: bool) -> Result<(), WebError> {
        page::set_embed(embed);
        page::show("player");
        page::set_status("Connecting…");
        let window = web_sys::window().ok_or(WebError::Unsupported("window"))?;
        if !js_sys::Reflect::has(&window, &"RTCPeerConnection".into()).unwrap_or(false) {
            return Err(WebError::Unsupported("WebRTC"));
        }
        let document = window.document().ok_or(WebError::Unsupported("document"))?;
        let video: HtmlVideoElement = document
            .get_element_by_id("video")
            .ok_or(WebError::Js("page has no #video element".into()))?
            .dyn_into()
            .map_err(|_| WebError::Js("#video is not a video element".into()))?;
        let (events, mut inbox) = mpsc::unbounded::<Event>();
        let player = Player::new(video.clone(), &events)?;
        let signalling = Signalling::open(&events)?;
        let ticker = {
            let events = events.clone();
            Interval::new(TICK_MS, move || emit(&events, Event::Tick))
        };
        // Muted autoplay is allowed everywhere; sound needs one click.
        let unmute = document.get_element_by_id("unmute").map(|button| {
            let button_ref = button.clone();
            EventListener::new(&button, "click", move |_| {
                video.set_muted(false);
                if let Some(el) = button_ref.dyn_ref::<web_sys::HtmlElement>() {
                    el.set_hidden(true);
                }
            })
        });
        let mut app = App {
            channel,
            events,
            signalling,
            links: HashMap::new(),
            offered: HashMap::new(),
            swarm: Swarm::new(viewer_config()),
            player,
            playing: false,
            _ticker: ticker,
            _unmute: unmute,
            ice_servers: Vec::new(),
            backoff: Backoff::default(),
            joined: false,
            neighbours: NeighbourReport::new(SwarmRole::Viewer),
            retry: None,
        };
        while let Some(event) = inbox.next().await {
            if let Err(e) = app.handle(event).await {
                if matches!(e, WebError::CodecUnsupported(_) | WebError::Unsupported(_)) {
                    return Err(e);
                }
                web_sys::console::warn_1(&e.to_string().into());
            }
        }
        Ok(())
    }

    async fn handle(&mut self, event: Event) -> Result<(), WebError> {
        let now = now();
        match event {
            Event::SocketOpen => {
                self.backoff.reset();
                self.signalling.send(&ClientMessage::Join {
                    channel: self.channel.clone(),
                    role: Role::Viewer,
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
                let delay = self.backoff.next_delay_ms();
                page::set_status(&format!(
                    "{} — reconnecting in {:.1} s",
                    if self.playing {
                        "Playing; signal server unreachable"
                    } else {
                        "Cannot reach the signal server"
                    },
                    f64::from(delay) / 1000.0
                ));
                let events = self.events.clone();
                self.retry = Some(Timeout::new(delay, move || emit(&events, Event::Reconnect)));
            }
            Event::Reconnect => {
                self.retry = None;
                self.signalling = Signalling::open(&self.events)?;
            }
            Event::DataChannel(peer, channel) => {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.attach_channel(peer, channel, &self.events);
                }
            }
            Event::ChannelOpen(peer) => self.swarm.handle_input(now, Input::PeerConnected(peer)),
            Event::ChannelMessage(peer, bytes) => match PeerMessage::decode(&bytes) {
                Ok(message) => self.swarm.handle_input(now, Input::Message(peer, message)),
                Err(e) => {
                    web_sys::console::warn_1(&format!("dropping {peer}: {e}").into());
                    self.drop_link(now, peer);
                }
            },
            Event::ChannelClosed(peer) | Event::LinkFailed(peer) => self.drop_link(now, peer),
            Event::ChannelDrained(peer) => self.report_buffered(now, peer),
            Event::GatheringComplete(peer) => self.send_local_description(peer),
            Event::SourceOpen => self.player.on_source_open(&self.events)?,
            Event::UpdateEnd => self.player.pump()?,
            Event::Tick => {
                let peers: Vec<PeerId> = self.links.keys().copied().collect();
                for peer in peers {
                    self.report_buffered(now, peer);
                }
                if self.joined {
                    let starving = self.swarm.starving(now);
                    for message in self.neighbours.update(self.links.len(), starving, now) {
                        self.signalling.send(&message);
                    }
                }
                self.swarm.handle_input(now, Input::Tick);
                self.player.tick();
                let buffer = self.player.buffer_ahead();
                page::render_stats(self.swarm.peer_count(), &self.swarm.stats(), buffer);
                if self.playing {
                    let state = if buffer < 0.1 {
                        "Buffering…"
                    } else {
                        "Playing"
                    };
                    // Peer links keep the video going; say so while the server is away.
                    let server = if self.joined {
                        ""
                    } else {
                        " · signal server unreachable, reconnecting…"
                    };
                    page::set_status(&format!("{state}{server}"));
                }
            }
        }
        self.carry_out()
    }

    async fn on_server(&mut self, message: ServerMessage) -> Result<(), WebError> {
        match message {
            ServerMessage::Welcome { ice_servers, .. } => {
                self.ice_servers = ice_servers;
                self.joined = true;
                self.neighbours.forget();
                if !self.playing {
                    page::set_status("Joined; connecting to peers…");
                }
            }
            ServerMessage::Introduce { peers } => {
                // While video plays over existing links the channel is not offline, even if
                // the server (e.g. just restarted) knows no other peer yet.
                if peers.is_empty() && !self.playing {
                    page::set_status("Channel offline: waiting for the broadcaster…");
                }
                for peer in peers {
                    if self.links.contains_key(&peer) {
                        continue; // Introduced again (e.g. after asking for more peers).
                    }
                    let mut link = Link::new(peer, &self.ice_servers, &self.events)?;
                    link.offer(peer, &self.events).await?;
                    self.links.insert(peer, link);
                    self.offered.insert(peer, true);
                }
            }
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
            ServerMessage::Error { message, .. } => page::set_status(&message),
        }
        Ok(())
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
            self.swarm
                .handle_input(now, Input::Buffered { peer, bytes });
        }
    }

    fn drop_link(&mut self, now: Millis, peer: PeerId) {
        self.offered.remove(&peer);
        if self.links.remove(&peer).is_some() {
            self.swarm.handle_input(now, Input::PeerDisconnected(peer));
        }
    }

    fn carry_out(&mut self) -> Result<(), WebError> {
        while let Some(output) = self.swarm.poll_output() {
            match output {
                Output::Send(peer, message) => {
                    if let Some(link) = self.links.get(&peer) {
                        link.send(&message.encode());
                    }
                }
                Output::Init { mime, data } => self.player.set_init(&mime, data, &self.events)?,
                Output::Play { chunk, .. } => {
                    self.player.append(chunk.data.to_vec())?;
                    if !self.playing {
                        self.playing = true;
                        page::set_status("Playing");
                    }
                }
                Output::Skipped(seq) => {
                    web_sys::console::log_1(&format!("chunk {seq} missed its deadline").into())
                }
                Output::Disconnect { peer, reason } => {
                    web_sys::console::warn_1(&format!("dropping {peer}: {reason}").into());
                    self.drop_link(now(), peer);
                }
            }
        }
        Ok(())
    }
}

/// Milliseconds on the page's monotonic clock.
fn now() -> Millis {
    let ms = web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now());
    Millis(ms as u64)
}

/// A viewer's swarm settings; the seed spreads this viewer's choices among equally good
/// neighbours differently from every other viewer's.
fn viewer_config() -> Config {
    let mut config = Config::new(SwarmRole::Viewer);
    config.seed = (js_sys::Math::random() * u64::MAX as f64) as u64;
    config
}
