//! The native driver: carries out what the peer core (`swarm::Node`) asks — the
//! signalling WebSocket, one task per WebRTC link, the broadcaster's input, the clock —
//! and feeds it what happened. Every decision is the core's.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{ChannelName, ChunkSeq, ContentSigner, PeerId, PiecesChannel, Role, SessionId};
use swarm::{
    Chunk, LinkId, Millis, Neighbour, Node, NodeConfig, NodeEvent, NodeInput, NodeOutput, SignalId,
    Signed, Stats,
};
use tokio::sync::mpsc;

use crate::fetch::Fetcher;
use crate::identity::ChannelSecret;
use crate::link::{self, LinkCommand, LinkEvent, Outbox};
use crate::signalling::{self, SignalSender};
use crate::NativeError;

/// After the broadcaster's input ends, how long it keeps serving the last chunks.
const END_GRACE: Duration = Duration::from_secs(3);

pub struct NodeOptions {
    /// WebSocket URL of the signal server, e.g. `ws://127.0.0.1:8080/ws`.
    pub server: String,
    pub channel: ChannelName,
    pub role: Role,
    /// Upload budget for serving chunks; `None` is unlimited.
    pub upload_limit: Option<swarm::BytesPerSec>,
    /// Substreams for pushing between viewers; `None` keeps the swarm's default.
    pub substreams: Option<usize>,
    /// The channel's key: a broadcaster proves it to the signal server and signs the
    /// channel's content with it.
    pub key: Option<ChannelSecret>,
    /// Privacy mode: TURN relay candidates only, so no peer learns this one's address.
    pub relay_only: bool,
    /// How links this node offers carry pieces.
    pub pieces_channel: PiecesChannel,
    /// An HTTP edge: the node hands every verified init segment and chunk, with its
    /// signature, to `Sink::signed`, and sends no experience reports.
    pub edge: bool,
    /// Test only: misbehaviour a test asks for (a polluter, a replayer).
    #[cfg(feature = "test-hooks")]
    pub hooks: crate::test_hooks::TestHooks,
}

/// What the broadcaster's input produced, numbered.
#[derive(Debug)]
pub enum Produced {
    Init { mime: String, data: Vec<u8> },
    Chunk(Chunk),
}

/// How a run ended, for a viewer's summary.
#[derive(Debug, Default)]
pub struct Report {
    pub stats: Stats,
    /// Our id with the signal server at the end (each reconnect brings a new one).
    pub peer: Option<PeerId>,
    /// The neighbours linked at the end, with the payload exchanged with each: who
    /// carried the stream to this viewer.
    pub neighbours: Vec<Neighbour>,
}

impl Report {
    /// Taken before the node stops, while its links are still there.
    fn of(node: &Node) -> Report {
        let swarm = node.swarm();
        Report {
            stats: swarm.map(|s| s.stats()).unwrap_or_default(),
            peer: node.peer_id(),
            neighbours: swarm.map(|s| s.neighbours().collect()).unwrap_or_default(),
        }
    }
}

/// Where a viewer's played stream goes.
pub trait Sink: Send {
    fn init(&mut self, mime: &str, data: &[u8]) -> Result<(), NativeError>;
    /// The chunk plays `starts_in` from now (at once when late). Returns true when the
    /// viewer has played all it wanted.
    fn play(&mut self, chunk: &Chunk, starts_in: Duration) -> Result<bool, NativeError>;
    fn skipped(&mut self, seq: ChunkSeq);
    /// An edge's (`NodeOptions::edge`): content of broadcast `session`, verified, with
    /// what the channel key signed.
    fn signed(&mut self, session: SessionId, content: Signed) {
        let _ = (session, content);
    }
}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<(SignalSender, mpsc::UnboundedReceiver<String>), NativeError>>
            + Send,
    >,
>;

/// The signalling connection, as far as I/O goes.
enum Socket {
    None,
    /// A connect in flight: polled by the loop, never awaited inside it.
    Connecting(SignalId, Connecting),
    Open(SignalId, SignalSender, mpsc::UnboundedReceiver<String>),
}

/// A link as the driver sees it.
struct LinkHandle {
    commands: mpsc::UnboundedSender<LinkCommand>,
    /// Set once the data channel is open.
    data: Option<Outbox>,
}

/// Runs until `stop` completes, the input ends (broadcaster), the sink is satisfied or
/// the server refuses us for good.
pub async fn run(
    options: NodeOptions,
    mut feed: Option<mpsc::Receiver<Result<Produced, NativeError>>>,
    sink: &mut dyn Sink,
    stop: impl Future<Output = ()>,
) -> Result<Report, NativeError> {
    let signer: Option<Arc<dyn ContentSigner>> = match (&options.key, options.role) {
        (Some(secret), Role::Broadcaster) => Some(Arc::new(secret.signer())),
        (None, Role::Broadcaster) => {
            return Err(NativeError::Key(
                "a broadcaster needs the channel's key".into(),
            ))
        }
        (_, Role::Viewer) => None,
    };
    let origin = Instant::now();
    let now = || Millis(origin.elapsed().as_millis() as u64);
    let mut node = Node::new(
        now(),
        NodeConfig {
            channel: options.channel.clone(),
            signer,
            upload_limit: options.upload_limit,
            target_buffer_ms: None,
            substreams: options.substreams,
            seed: rand::random(),
            relay_only: options.relay_only,
            edge: options.edge,
            checks: swarm::Checks::default(),
        },
    );
    let (fetched_tx, mut fetched) = mpsc::unbounded_channel();
    let mut driver = Driver {
        server: options.server.clone(),
        pieces_channel: options.pieces_channel,
        fetcher: Fetcher::new(fetched_tx)?,
        #[cfg(feature = "test-hooks")]
        misbehaviour: crate::test_hooks::Misbehaviour::new(options.hooks),
        socket: Socket::None,
        links: HashMap::new(),
        events: mpsc::unbounded_channel(),
    };
    tokio::pin!(stop);
    let mut ending: Option<Instant> = None;
    loop {
        if let Some(done) = driver.carry_out(&mut node, sink, now())? {
            return Ok(done);
        }
        let node_wake = node
            .poll_timeout()
            .map(|at| origin + Duration::from_millis(at.0));
        // Once the input ended the node stops END_GRACE later, even if nothing else is due
        // (a broadcaster may have no timer at all).
        let end_at = ending.map(|at| at + END_GRACE);
        let wake = match (node_wake, end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let input = tokio::select! {
            input = signal_event(&mut driver.socket) => input,
            event = driver.events.1.recv() => {
                match event.expect("the driver holds a sender, so link events never end") {
                    LinkEvent::Open(link, outbox) => {
                        if let Some(handle) = driver.links.get_mut(&link) {
                            handle.data = Some(outbox);
                        }
                        NodeInput::LinkOpen(link)
                    }
                    LinkEvent::Message(link, bytes) => {
                        #[cfg(feature = "test-hooks")]
                        driver.misbehaviour.received(&bytes);
                        NodeInput::LinkData(link, bytes.into())
                    }
                    LinkEvent::Drained(link) => {
                        let queued = driver.links.get(&link).and_then(|l| l.data.as_ref()).map(Outbox::queued);
                        NodeInput::LinkBuffered(link, queued.unwrap_or(0))
                    }
                    LinkEvent::LocalDescription(link, sdp) => NodeInput::LocalDescription(link, sdp),
                    LinkEvent::Closed(link) => {
                        #[cfg(feature = "test-hooks")]
                        driver.misbehaviour.closed(link);
                        driver.links.remove(&link);
                        NodeInput::LinkClosed(link)
                    }
                }
            }
            produced = recv_feed(&mut feed) => match produced {
                Some(Ok(Produced::Init { mime, data })) => {
                    tracing::info!(%mime, bytes = data.len(), "init segment");
                    NodeInput::InitProduced { mime, data }
                }
                Some(Ok(Produced::Chunk(chunk))) => {
                    tracing::debug!(seq = %chunk.seq, bytes = chunk.data.len(), keyframe = chunk.keyframe, "chunk cut");
                    NodeInput::ChunkProduced(chunk)
                }
                Some(Err(e)) => return Err(e),
                None => {
                    tracing::info!("input ended; serving the last chunks for {END_GRACE:?}");
                    feed = None;
                    ending = Some(Instant::now());
                    continue;
                }
            },
            done = fetched.recv() => {
                let (fetch, outcome) = done.expect("the driver holds a sender, so fetches never end");
                NodeInput::Fetched(fetch, outcome)
            }
            _ = sleep_until(wake) => {
                driver.report_buffered(&mut node, now());
                node.handle_timeout(now());
                if ending.is_some_and(|at| at.elapsed() >= END_GRACE) {
                    break;
                }
                continue;
            }
            _ = &mut stop => break,
        };
        node.handle_input(now(), input);
    }
    let report = Report::of(&node);
    node.stop();
    driver.carry_out(&mut node, sink, now())?;
    Ok(report)
}

/// The I/O half: sockets, link tasks and their events.
struct Driver {
    server: String,
    pieces_channel: PiecesChannel,
    fetcher: Fetcher,
    #[cfg(feature = "test-hooks")]
    misbehaviour: crate::test_hooks::Misbehaviour,
    socket: Socket,
    links: HashMap<LinkId, LinkHandle>,
    events: (
        mpsc::UnboundedSender<LinkEvent>,
        mpsc::UnboundedReceiver<LinkEvent>,
    ),
}

impl Driver {
    /// Carries out everything the node asked; `Some(report)` when the run is over.
    fn carry_out(
        &mut self,
        node: &mut Node,
        sink: &mut dyn Sink,
        now: Millis,
    ) -> Result<Option<Report>, NativeError> {
        while let Some(output) = node.poll_output() {
            match output {
                NodeOutput::Connect(id) => {
                    self.socket =
                        Socket::Connecting(id, Box::pin(signalling::connect(self.server.clone())));
                }
                NodeOutput::CloseSignal(_) => self.socket = Socket::None,
                NodeOutput::SendSignal(text) => {
                    if let Socket::Open(_, tx, _) = &self.socket {
                        let _ = tx.send(text);
                    }
                }
                NodeOutput::OpenLink {
                    link,
                    peer,
                    start,
                    ice_servers,
                    relay_only,
                } => {
                    tracing::debug!(%peer, %link, "opening a link");
                    let (commands, commands_rx) = mpsc::unbounded_channel();
                    tokio::spawn(link::run(
                        link,
                        start,
                        link::LinkConfig {
                            ice_servers,
                            relay_only,
                            pieces: self.pieces_channel,
                        },
                        commands_rx,
                        self.events.0.clone(),
                    ));
                    self.links.insert(
                        link,
                        LinkHandle {
                            commands,
                            data: None,
                        },
                    );
                }
                NodeOutput::RemoteSignal { link, signal } => {
                    self.command(link, LinkCommand::Remote(signal))
                }
                NodeOutput::FlushDescription(link) => self.command(link, LinkCommand::Flush),
                NodeOutput::Send { link, frame } => {
                    if let Some(data) = self.links.get(&link).and_then(|l| l.data.as_ref()) {
                        let is_piece = frame.is_piece();
                        #[cfg(feature = "test-hooks")]
                        for bytes in self.misbehaviour.outgoing(link, frame) {
                            data.send(bytes, is_piece);
                        }
                        #[cfg(not(feature = "test-hooks"))]
                        data.send(frame.to_vec(), is_piece);
                    }
                }
                // Dropping the command sender ends the link's task.
                NodeOutput::CloseLink(link) => {
                    self.links.remove(&link);
                }
                NodeOutput::Init { mime, data } => sink.init(&mime, &data)?,
                NodeOutput::Play { chunk, due } => {
                    if sink.play(&chunk, Duration::from_millis(due - now))? {
                        let report = Report::of(node);
                        node.stop();
                        return Ok(Some(report));
                    }
                }
                NodeOutput::Skipped(seq) => sink.skipped(seq),
                NodeOutput::Fetch { fetch, url, range } => {
                    tracing::debug!(%url, ?range, "fetching from an edge");
                    self.fetcher.spawn(fetch, url, range);
                }
                NodeOutput::Signed { session, content } => sink.signed(session, content),
                NodeOutput::Event(NodeEvent::Refused { code, message }) => {
                    return Err(NativeError::Refused(format!("{code:?}: {message}")));
                }
                NodeOutput::Event(event) => {
                    #[cfg(feature = "test-hooks")]
                    self.misbehaviour.event(&event);
                    log(&event)
                }
            }
        }
        Ok(None)
    }

    fn command(&self, link: LinkId, command: LinkCommand) {
        if let Some(handle) = self.links.get(&link) {
            let _ = handle.commands.send(command);
        }
    }

    fn report_buffered(&self, node: &mut Node, now: Millis) {
        let open: Vec<LinkId> = node.open_links().map(|(link, _)| link).collect();
        for link in open {
            if let Some(outbox) = self.links.get(&link).and_then(|l| l.data.as_ref()) {
                node.handle_input(now, NodeInput::LinkBuffered(link, outbox.queued()));
            }
        }
    }
}

fn log(event: &NodeEvent) {
    match event {
        NodeEvent::Joined { peer, again: false } => tracing::info!(%peer, "joined"),
        NodeEvent::Joined { peer, again: true } => {
            tracing::info!(%peer, "reconnected to the signal server; joined again")
        }
        NodeEvent::Trusting(key) => {
            tracing::info!(%key, "channel key: content is checked against it")
        }
        NodeEvent::SignalLost { retry_in_ms } => tracing::warn!(
            retry_in_ms,
            "signal server connection lost; keeping existing peer links and reconnecting"
        ),
        NodeEvent::ServerError { code, message } => {
            tracing::warn!(?code, %message, "signal server reported an error")
        }
        NodeEvent::KeyChanged => {
            tracing::error!("the channel's key changed: content signed with the new key is refused")
        }
        NodeEvent::NoRelay => tracing::error!(
            "relay-only, but the signal server offers no TURN server: no peer link can open \
             (the server needs --turn and --turn-secret)"
        ),
        NodeEvent::LinkUp { peer } => tracing::info!(%peer, "data channel open"),
        NodeEvent::LinkDown { peer } => tracing::info!(%peer, "link closed"),
        NodeEvent::LinkRefused { peer, reason } => tracing::info!(%peer, %reason, "link refused"),
        NodeEvent::Dropped { peer, reason } => tracing::warn!(%peer, %reason, "dropping peer"),
        NodeEvent::Refused { code, message } => tracing::error!(?code, %message, "refused"),
        NodeEvent::EdgeTrouble { edge, reason } => {
            tracing::warn!(%edge, %reason, "HTTP edge failed; not asked for a while")
        }
        NodeEvent::NewBroadcast { session } => {
            tracing::info!(%session, "a new broadcast began: following it")
        }
    }
}

/// What the signalling connection does next: a connect in flight finishes, or a frame
/// (or the end) arrives. Pending without a connection. Cancel-safe: a connect in flight
/// stays in `socket` and is polled again on the next turn.
async fn signal_event(socket: &mut Socket) -> NodeInput {
    match socket {
        Socket::Connecting(id, future) => {
            let id = *id;
            match future.await {
                Ok((tx, rx)) => {
                    *socket = Socket::Open(id, tx, rx);
                    NodeInput::SignalOpen(id)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "signal server unreachable");
                    *socket = Socket::None;
                    NodeInput::SignalClosed(id)
                }
            }
        }
        Socket::Open(id, _, rx) => {
            let id = *id;
            match rx.recv().await {
                Some(text) => NodeInput::SignalText(id, text),
                None => {
                    *socket = Socket::None;
                    NodeInput::SignalClosed(id)
                }
            }
        }
        Socket::None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
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
