//! The native driver: owns one `Swarm`, and feeds it from the signal server, the WebRTC
//! links, the broadcaster's input and a clock tick; carries out what it asks.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use protocol::{
    ChannelKey, ChannelName, ChunkSeq, ClientMessage, IceServer, PeerId, PeerMessage, Role,
    ServerMessage, SignalPayload,
};
use swarm::{Chunk, Config, Input, Millis, NeighbourReport, Output, Stats, Swarm};
use tokio::sync::mpsc;

use crate::identity::ChannelSecret;
use crate::link::{self, LinkCommand, LinkEvent, Outbox, Start};
use crate::{signalling, NativeError};

/// How often the swarm gets a `Tick` when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// After the broadcaster's input ends, how long it keeps serving the last chunks.
const END_GRACE: Duration = Duration::from_secs(3);
/// Reconnecting to the signal server: first wait, and the most it grows to.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

pub struct NodeOptions {
    /// WebSocket URL of the signal server, e.g. `ws://127.0.0.1:8080/ws`.
    pub server: String,
    pub channel: ChannelName,
    pub role: Role,
    /// Upload budget for serving chunks; `None` is unlimited.
    pub upload_limit: Option<swarm::BytesPerSec>,
    /// The channel's key: a broadcaster proves it to the signal server and signs the
    /// channel's content with it.
    pub key: Option<ChannelSecret>,
    /// Test only: flip a bit in every piece this peer serves, to play a polluter.
    pub corrupt_pieces: bool,
}

impl NodeOptions {
    fn join(&self) -> ClientMessage {
        ClientMessage::Join {
            channel: self.channel.clone(),
            role: self.role,
            key: self.key.as_ref().map(ChannelSecret::public),
        }
    }
}

/// What the broadcaster's input produced, numbered.
#[derive(Debug)]
pub enum Produced {
    Init { mime: String, data: Vec<u8> },
    Chunk(Chunk),
}

/// Where a viewer's played stream goes.
pub trait Sink {
    fn init(&mut self, mime: &str, data: &[u8]) -> Result<(), NativeError>;
    /// Returns true when the viewer has played all it wanted.
    fn play(&mut self, chunk: &Chunk) -> Result<bool, NativeError>;
    fn skipped(&mut self, seq: ChunkSeq);
}

/// A link as the node sees it.
struct LinkHandle {
    commands: mpsc::UnboundedSender<LinkCommand>,
    /// Set once the data channel is open.
    data: Option<Outbox>,
}

/// Runs until `stop` completes, the input ends (broadcaster) or the sink is satisfied.
pub async fn run(
    options: NodeOptions,
    mut feed: Option<mpsc::Receiver<Result<Produced, NativeError>>>,
    sink: &mut dyn Sink,
    stop: impl Future<Output = ()>,
) -> Result<Stats, NativeError> {
    let (mut signal_tx, mut signal_rx) = signalling::connect(&options.server).await?;
    let _ = signal_tx.send(options.join());
    let mut ice_servers: Vec<IceServer> = Vec::new();
    // While the signal server is away: when to try again, and the wait after that.
    let mut reconnect: Option<(Instant, Duration)> = None;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<LinkEvent>();
    let mut links: HashMap<PeerId, LinkHandle> = HashMap::new();
    tokio::pin!(stop);
    // A viewer accepts only what the channel's key signed, so its swarm starts once the
    // key is known; what the server said meanwhile is handled after.
    let mut early = Vec::new();
    let mut config = match (&options.key, options.role) {
        (Some(secret), Role::Broadcaster) => Config::source(secret.signer()),
        (None, Role::Broadcaster) => {
            return Err(NativeError::Key(
                "a broadcaster needs the channel's key".into(),
            ))
        }
        (_, Role::Viewer) => {
            let key = tokio::select! {
                key = channel_key(&mut signal_rx, &mut early) => key?,
                _ = &mut stop => return Ok(Stats::default()),
            };
            tracing::info!(%key, "channel key: content is checked against it");
            Config::viewer(key)
        }
    };
    let swarm_role = config.role();
    let mut early = early.into_iter();
    config.upload_limit = options.upload_limit;
    config.seed = rand::random();
    let mut swarm = Swarm::new(config);
    let origin = Instant::now();
    let now = || Millis(origin.elapsed().as_millis() as u64);
    let mut tick = tokio::time::interval(TICK);
    let mut welcomed = false;
    let mut signal_open = true;
    let mut ending: Option<Instant> = None;
    let mut neighbours = NeighbourReport::new(swarm_role);

    loop {
        tokio::select! {
            message = next_signal(&mut early, &mut signal_rx), if signal_open => match message {
                Some(ServerMessage::Challenge { nonce }) => match &options.key {
                    Some(key) => {
                        let signature = key.sign_claim(&options.channel, &nonce);
                        let _ = signal_tx.send(ClientMessage::Prove { signature });
                    }
                    None => tracing::warn!("the signal server asked for a channel key this peer does not have"),
                },
                Some(ServerMessage::Welcome { peer_id, channel, ice_servers: servers, channel_key, broadcaster }) => {
                    if channel_key.is_some_and(|key| !swarm.trusts(&key)) {
                        tracing::error!("the channel's key changed: content signed with the new key is refused");
                    }
                    swarm.handle_input(now(), Input::Broadcaster(broadcaster));
                    welcomed = true;
                    ice_servers = servers;
                    tracing::info!(%peer_id, %channel, ice_servers = ice_servers.len(), "joined");
                }
                Some(ServerMessage::Introduce { peers }) => {
                    for peer in peers.into_iter().filter(|p| !swarm.is_banned(*p)) {
                        links.entry(peer).or_insert_with(|| spawn_link(peer, Start::Offer, &ice_servers, &events_tx));
                    }
                }
                Some(ServerMessage::Signal { from, .. }) if swarm.is_banned(from) => {
                    tracing::debug!(peer = %from, "ignoring set-up from a banned peer");
                }
                Some(ServerMessage::Signal { from, signal: SignalPayload::Offer { sdp } }) => {
                    if let Some(old) = links.remove(&from) {
                        drop(old); // A fresh offer replaces a link that did not survive.
                        swarm.handle_input(now(), Input::PeerDisconnected(from));
                    }
                    links.insert(from, spawn_link(from, Start::Answer { sdp }, &ice_servers, &events_tx));
                }
                Some(ServerMessage::Signal { from, signal }) => {
                    if let Some(link) = links.get(&from) {
                        let _ = link.commands.send(LinkCommand::Remote(signal));
                    }
                }
                Some(ServerMessage::Claimed { channel_key, broadcaster }) => {
                    if !swarm.trusts(&channel_key) {
                        tracing::error!("the channel's key changed: content signed with the new key is refused");
                    }
                    swarm.handle_input(now(), Input::Broadcaster(Some(broadcaster)));
                }
                Some(ServerMessage::PeerLeft { peer }) => {
                    if links.remove(&peer).is_some() {
                        swarm.handle_input(now(), Input::PeerDisconnected(peer));
                    }
                }
                Some(ServerMessage::Error { code, message }) => {
                    if !welcomed {
                        return Err(NativeError::Refused(format!("{code:?}: {message}")));
                    }
                    tracing::warn!(?code, %message, "signal server reported an error");
                }
                None => {
                    // Existing links keep the stream flowing without the server.
                    tracing::warn!("signal server connection lost; keeping existing peer links and reconnecting");
                    signal_open = false;
                    reconnect = Some((Instant::now() + RECONNECT_FIRST, RECONNECT_FIRST));
                }
            },
            event = events_rx.recv() => {
                let event = event.expect("the node holds a sender, so the link event channel stays open");
                match event {
                    LinkEvent::Open(peer, data) => {
                        if let Some(link) = links.get_mut(&peer) {
                            link.data = Some(data);
                            tracing::info!(%peer, "data channel open");
                            swarm.handle_input(now(), Input::PeerConnected(peer));
                        }
                    }
                    LinkEvent::Message(peer, bytes) => match PeerMessage::decode(&bytes) {
                        Ok(message) => swarm.handle_input(now(), Input::Message(peer, message)),
                        Err(e) => {
                            // The swarm drops and bans it; its Disconnect closes the link.
                            tracing::warn!(%peer, error = %e, "dropping a peer that sent an invalid message");
                            swarm.handle_input(now(), Input::Malformed { peer, reason: e.to_string() });
                        }
                    },
                    LinkEvent::LocalSignal(peer, signal) => {
                        let _ = signal_tx.send(ClientMessage::Signal { to: peer, signal });
                    }
                    LinkEvent::Closed(peer) => {
                        if links.remove(&peer).is_some() {
                            tracing::info!(%peer, "link closed");
                            swarm.handle_input(now(), Input::PeerDisconnected(peer));
                        }
                    }
                }
            }
            produced = recv_feed(&mut feed) => match produced {
                Some(Ok(Produced::Init { mime, data })) => {
                    tracing::info!(%mime, bytes = data.len(), "init segment");
                    swarm.handle_input(now(), Input::InitProduced { mime, data });
                }
                Some(Ok(Produced::Chunk(chunk))) => {
                    tracing::debug!(seq = %chunk.seq, bytes = chunk.data.len(), keyframe = chunk.keyframe, "chunk cut");
                    swarm.handle_input(now(), Input::ChunkProduced(chunk));
                }
                Some(Err(e)) => return Err(e),
                None => {
                    tracing::info!("input ended; serving the last chunks for {END_GRACE:?}");
                    feed = None;
                    ending = Some(Instant::now());
                }
            },
            _ = tick.tick() => {
                if let Some((at, wait)) = reconnect {
                    if Instant::now() >= at {
                        match tokio::time::timeout(Duration::from_secs(5), signalling::connect(&options.server)).await {
                            Ok(Ok((tx, rx))) => {
                                tracing::info!("reconnected to the signal server; joining again");
                                (signal_tx, signal_rx) = (tx, rx);
                                                                let _ = signal_tx.send(options.join());
                                signal_open = true;
                                welcomed = false;
                                neighbours.forget();
                                reconnect = None;
                            }
                            _ => {
                                let next = (wait * 2).min(RECONNECT_MAX);
                                tracing::info!(retry_in = ?wait, "signal server still unreachable");
                                reconnect = Some((Instant::now() + wait, next));
                            }
                        }
                    }
                }
                                if signal_open && welcomed {
                    let starving = swarm.starving(now());
                    for message in neighbours.update(links.len(), starving, now()) {
                        let _ = signal_tx.send(message);
                    }
                }
                for (peer, link) in &links {
                    if let Some(outbox) = &link.data {
                        swarm.handle_input(now(), Input::Buffered { peer: *peer, bytes: outbox.queued() });
                    }
                }
                swarm.handle_input(now(), Input::Tick);
                if ending.is_some_and(|at| at.elapsed() >= END_GRACE) {
                    break;
                }
            }
            _ = &mut stop => break,
        }
        while let Some(output) = swarm.poll_output() {
            match output {
                Output::Send(peer, message) => {
                    if let Some(data) = links.get(&peer).and_then(|l| l.data.as_ref()) {
                        let mut bytes = message.encode();
                        if options.corrupt_pieces && matches!(message, PeerMessage::Piece { .. }) {
                            *bytes.last_mut().expect("a piece carries data") ^= 1;
                        }
                        data.send(bytes);
                    }
                }
                Output::Init { mime, data } => sink.init(&mime, &data)?,
                Output::Play { chunk, .. } => {
                    if sink.play(&chunk)? {
                        return Ok(swarm.stats());
                    }
                }
                Output::Skipped(seq) => sink.skipped(seq),
                Output::Disconnect { peer, reason } => {
                    tracing::warn!(%peer, %reason, "dropping peer");
                    links.remove(&peer);
                }
            }
        }
    }
    let _ = signal_tx.send(ClientMessage::Leave {});
    Ok(swarm.stats())
}

/// Viewer: waits for the channel's key (in `Welcome`, or `Claimed` once a broadcaster
/// first proves it), keeping every other message for the main loop.
async fn channel_key(
    signal_rx: &mut mpsc::UnboundedReceiver<ServerMessage>,
    early: &mut Vec<ServerMessage>,
) -> Result<ChannelKey, NativeError> {
    loop {
        match signal_rx.recv().await {
            Some(message @ ServerMessage::Claimed { channel_key, .. }) => {
                // Kept too: the main loop learns the broadcaster from it.
                early.push(message);
                return Ok(channel_key);
            }
            Some(ServerMessage::Error { code, message }) => {
                return Err(NativeError::Refused(format!("{code:?}: {message}")))
            }
            Some(message) => {
                let key = match &message {
                    ServerMessage::Welcome { channel_key, .. } => *channel_key,
                    _ => None,
                };
                early.push(message);
                if let Some(key) = key {
                    return Ok(key);
                }
                tracing::info!("the channel has no key yet: waiting for its broadcaster");
            }
            None => {
                return Err(NativeError::Refused(
                    "the signal server closed before the channel's key was known".into(),
                ))
            }
        }
    }
}

/// The server's messages kept while waiting for the key first, then the live ones.
async fn next_signal(
    early: &mut std::vec::IntoIter<ServerMessage>,
    signal_rx: &mut mpsc::UnboundedReceiver<ServerMessage>,
) -> Option<ServerMessage> {
    match early.next() {
        Some(message) => Some(message),
        None => signal_rx.recv().await,
    }
}

async fn recv_feed(
    feed: &mut Option<mpsc::Receiver<Result<Produced, NativeError>>>,
) -> Option<Result<Produced, NativeError>> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn spawn_link(
    peer: PeerId,
    start: Start,
    ice_servers: &[IceServer],
    events: &mpsc::UnboundedSender<LinkEvent>,
) -> LinkHandle {
    let (commands, commands_rx) = mpsc::unbounded_channel();
    tokio::spawn(link::run(
        peer,
        start,
        ice_servers.to_vec(),
        commands_rx,
        events.clone(),
    ));
    LinkHandle {
        commands,
        data: None,
    }
}
