//! The whole peer as one sans-IO state machine: the signalling session, the link table,
//! caps, bans, versions, reconnection, timers, and the [`Swarm`] inside. The browser
//! driver, the native driver and the simulator feed it [`NodeInput`]s and carry out its
//! [`NodeOutput`]s; they do I/O and nothing else (quinn-proto's `Connection`, str0m's
//! `Rtc`).
//!
//! Timers: [`Node::poll_timeout`] says when the node next needs the clock; the driver calls
//! [`Node::handle_timeout`] then (or later).

mod backoff;
mod experience;
mod io;
mod links;
mod peers;
mod signalling;

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::{ChannelName, ContentSigner, IceServer, PeerId, SessionId};

pub use backoff::{RECONNECT_FIRST_MS, RECONNECT_MAX_MS};
pub use experience::Playback;
pub use io::{FetchHandle, LinkStart, NodeEvent, NodeInput, NodeOutput, SignalId};
pub use links::LinkId;

use crate::neighbours::{NeighbourReport, MAX_VIEWER_LINKS, SOURCE_MAX_LINKS};
use crate::{BytesPerSec, Config, Millis, Swarm, SwarmRole};
use backoff::Backoff;
use experience::{ExperienceReports, Totals};
use links::LinkTable;

/// A signalling connection that has not opened by then is abandoned and retried.
pub const SIGNAL_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Our description goes to the peer by then, with the candidates gathered so far.
pub const GATHER_TIMEOUT_MS: u64 = 5_000;
/// A link whose data channel has not opened by then is closed, freeing its slot.
pub const LINK_CONNECT_TIMEOUT_MS: u64 = 15_000;
/// An open link whose peer's `Hello` has not come by then is closed (without blame).
pub const HELLO_TIMEOUT_MS: u64 = 5_000;
/// Least time between two repeats of our `Hello` on one link.
const HELLO_REPEAT_MS: u64 = 500;
/// A join not welcomed by then (no answer, or one that does not end it) is given up and
/// retried on a new connection.
pub const JOIN_TIMEOUT_MS: u64 = 15_000;
/// A session that lasted this long resets the reconnect back-off; one that ends sooner
/// (a server that welcomes and drops) keeps backing off.
const STABLE_SESSION_MS: u64 = 10_000;
/// Peers remembered from introductions before the swarm existed, to offer to then.
const MAX_MET_EARLY: usize = 64;

/// What a node is, and the swarm settings it starts its `Swarm` with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub channel: ChannelName,
    /// The broadcaster's key: it proves the channel to the server and signs content.
    /// `None`: a viewer, whose swarm starts once the server names the channel's key.
    pub signer: Option<Arc<dyn ContentSigner>>,
    /// Upload budget for serving chunks; `None` is unlimited.
    pub upload_limit: Option<BytesPerSec>,
    /// A viewer's playout delay behind the cut; `None` keeps the swarm's default.
    pub target_buffer_ms: Option<u64>,
    /// Substreams for pushing between viewers (`Config::substreams`); `None` keeps the
    /// swarm's default.
    pub substreams: Option<usize>,
    /// Seeds the swarm's tie-breaking and the reconnect jitter; drivers pass something
    /// random, tests a fixed value.
    pub seed: u64,
    /// Privacy mode: links use TURN relay candidates only, so no other peer learns this
    /// peer's address (at the cost of a relay carrying its video both ways).
    pub relay_only: bool,
    /// An HTTP edge (`streamtorrent edge`): the node hands over everything signed it
    /// verifies (`NodeOutput::Signed`), for serving to viewers who check it themselves,
    /// and sends no experience reports.
    pub edge: bool,
    /// How the swarm checks content; drivers keep the default, which computes every check
    /// (the simulator shares one that remembers, `swarm::ContentChecks`).
    pub checks: crate::Checks,
}

impl NodeConfig {
    pub fn role(&self) -> SwarmRole {
        match self.signer {
            Some(_) => SwarmRole::Source,
            None => SwarmRole::Viewer,
        }
    }
}

/// The signalling session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Waiting for the driver to open `id`; abandoned at `deadline`.
    Connecting { id: SignalId, deadline: Millis },
    /// Open; `welcomed` once the server took our join.
    Open { id: SignalId, welcomed: bool },
    /// Closed; the next attempt at `retry_at`.
    Waiting { retry_at: Millis },
    /// Refused for good, or stopped: nothing more is attempted.
    Stopped,
}

/// One peer: see the module docs.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    /// Created at once for the source; for a viewer once the channel's key and the
    /// broadcast are known, and anew for each new broadcast.
    swarm: Option<Swarm>,
    /// The broadcast carried: the source's own (fresh per node), or as the server names
    /// it to a viewer.
    session: Option<SessionId>,
    signal: Signal,
    next_signal: u32,
    /// A welcome came on some connection: from then on, refusals are retried.
    ever_welcomed: bool,
    /// While joining on the open connection: given up at this time.
    join_deadline: Option<Millis>,
    /// When the current session was welcomed.
    welcomed_at: Option<Millis>,
    /// Introduced while the swarm did not exist yet (the channel's key or broadcast
    /// unknown): offered to once it does, as the server will not introduce them again.
    met_early: Vec<PeerId>,
    /// Our id on the current (or last) signalling connection.
    peer_id: Option<PeerId>,
    ice_servers: Vec<IceServer>,
    backoff: Backoff,
    links: LinkTable,
    neighbours: NeighbourReport,
    /// The server knows no broadcaster for the channel, or ours went away.
    source_absent: bool,
    /// The latest time an input or time-out brought.
    now: Millis,
    /// Unknown peer-message tags received (a newer peer's additions), ignored.
    unknown_messages: u64,
    /// A viewer's experience reports to the server, when it asks for them.
    experience: ExperienceReports,
    /// Playback as the driver last told it; `None`: the swarm's playout model stands in.
    playback: Option<Playback>,
    /// The HTTP edges the server named in its last welcome.
    edges: Vec<protocol::EdgeUrl>,
    /// Counts swarms made (one per broadcast), so fetches answer only the one that asked.
    swarm_generation: u32,
    outputs: VecDeque<NodeOutput>,
}

impl Node {
    /// A node at `now`; its first output asks the driver to connect to the signal server.
    pub fn new(now: Millis, config: NodeConfig) -> Node {
        let role = config.role();
        let mut backoff = Backoff::new(config.seed ^ 0x5bd1_e995);
        // A fresh broadcast every time a broadcaster starts.
        let session = config.signer.as_ref().map(|_| SessionId(backoff.random()));
        let swarm = config.signer.clone().zip(session).map(|(signer, session)| {
            Swarm::new(Node::swarm_config(
                &config,
                session,
                Config::source_arc(signer),
            ))
        });
        let mut node = Node {
            backoff,
            config,
            swarm,
            session,
            signal: Signal::Stopped,
            next_signal: 0,
            ever_welcomed: false,
            join_deadline: None,
            welcomed_at: None,
            met_early: Vec::new(),
            peer_id: None,
            ice_servers: Vec::new(),
            links: LinkTable::default(),
            neighbours: NeighbourReport::new(role),
            source_absent: false,
            now,
            unknown_messages: 0,
            experience: ExperienceReports::default(),
            playback: None,
            edges: Vec::new(),
            swarm_generation: 0,
            outputs: VecDeque::new(),
        };
        node.connect(now);
        node
    }

    pub fn handle_input(&mut self, now: Millis, input: NodeInput) {
        self.now = self.now.max(now);
        self.on_input(now, input);
        self.report_neighbours(now);
    }

    fn on_input(&mut self, now: Millis, input: NodeInput) {
        match input {
            NodeInput::SignalOpen(id) => self.on_signal_open(now, id),
            NodeInput::SignalText(id, text) => self.on_signal_text(now, id, &text),
            NodeInput::SignalClosed(id) => self.on_signal_closed(now, id),
            NodeInput::LocalDescription(link, sdp) => self.on_local_description(link, sdp),
            NodeInput::LinkOpen(link) => self.on_link_open(now, link),
            NodeInput::LinkData(link, frame) => self.on_link_data(now, link, &frame),
            NodeInput::LinkBuffered(link, bytes) => {
                if let Some(peer) = self.open_peer(link) {
                    self.feed(now, crate::Input::Buffered { peer, bytes });
                }
            }
            NodeInput::LinkClosed(link) => self.on_link_closed(now, link),
            NodeInput::InitProduced { mime, data } => {
                self.feed(now, crate::Input::InitProduced { mime, data })
            }
            NodeInput::ChunkProduced(chunk) => self.feed(now, crate::Input::ChunkProduced(chunk)),
            NodeInput::Fetched(fetch, outcome) if fetch.generation == self.swarm_generation => {
                let input = crate::Input::Fetched {
                    id: fetch.id,
                    outcome,
                };
                self.feed(now, input)
            }
            // An earlier broadcast's fetch.
            NodeInput::Fetched(..) => {}
        }
    }

    pub fn poll_output(&mut self) -> Option<NodeOutput> {
        self.outputs.pop_front()
    }

    /// When the node next needs [`Node::handle_timeout`]; `None` once stopped.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let signal = match self.signal {
            Signal::Connecting { deadline, .. } => Some(deadline),
            Signal::Waiting { retry_at } => Some(retry_at),
            Signal::Open {
                welcomed: false, ..
            } => self.join_deadline,
            Signal::Open { .. } => None,
            Signal::Stopped if self.swarm.is_none() => return None,
            Signal::Stopped => None,
        };
        let links = self.links.unordered().filter_map(|link| match link.state {
            links::LinkState::Connecting {
                describe_by,
                connect_by,
            } => Some(describe_by.map_or(connect_by, |at| at.min(connect_by))),
            links::LinkState::Open {
                hello: false,
                hello_by,
                said_at,
            } => Some(hello_by.min(said_at + HELLO_REPEAT_MS)),
            links::LinkState::Open { .. } => None,
        });
        let swarm = self.swarm.as_ref().and_then(Swarm::poll_timeout);
        links
            .chain(signal)
            .chain(swarm)
            .chain(self.report_due())
            .chain(self.experience.due().filter(|_| self.joined()))
            .min()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.now = self.now.max(now);
        self.signal_timers(now);
        self.link_timers(now);
        if let Some(swarm) = &mut self.swarm {
            if swarm.poll_timeout().is_some_and(|due| due <= now) {
                swarm.handle_timeout(now);
                self.carry_swarm_outputs();
            }
        }
        self.report_neighbours(now);
        self.report_experience(now);
    }

    /// Ends the session: leaves the channel, closes every link and the signalling
    /// connection. Nothing is attempted afterwards.
    pub fn stop(&mut self) {
        if let Signal::Open { id, welcomed } = self.signal {
            if welcomed {
                self.send_signal(&protocol::ClientMessage::Leave {});
            }
            self.outputs.push_back(NodeOutput::CloseSignal(id));
        }
        if let Signal::Connecting { id, .. } = self.signal {
            self.outputs.push_back(NodeOutput::CloseSignal(id));
        }
        self.signal = Signal::Stopped;
        let ids: Vec<LinkId> = self.links.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.links.remove(id);
            self.outputs.push_back(NodeOutput::CloseLink(id));
        }
    }

    /// A viewer's new playout delay (a latency preset), for its swarm now and any swarm
    /// it starts later (a new broadcast).
    pub fn set_target_buffer(&mut self, ms: u64) {
        self.config.target_buffer_ms = Some(ms);
        if let Some(swarm) = &mut self.swarm {
            swarm.set_target_buffer(ms);
        }
    }

    /// What the viewer's player knows of playback (stalls, first frame, delay), for its
    /// experience reports; a driver that never tells is reported by the swarm's model.
    pub fn set_playback(&mut self, playback: Playback) {
        self.playback = Some(playback);
    }

    /// The swarm, once it exists (its stats, neighbours, clock).
    pub fn swarm(&self) -> Option<&Swarm> {
        self.swarm.as_ref()
    }

    /// Joined on the current signalling connection.
    pub fn joined(&self) -> bool {
        matches!(self.signal, Signal::Open { welcomed: true, .. })
    }

    /// Refused for good, or stopped.
    pub fn stopped(&self) -> bool {
        self.signal == Signal::Stopped
    }

    /// The broadcast this node carries, once known.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// Our id with the signal server, once welcomed.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer_id
    }

    /// The channel has no broadcaster now, or ours went away.
    pub fn source_absent(&self) -> bool {
        self.source_absent
    }

    /// While the signal server is away: milliseconds until the next attempt.
    pub fn reconnect_in(&self, now: Millis) -> Option<u64> {
        match self.signal {
            Signal::Waiting { retry_at } => Some(retry_at - now),
            _ => None,
        }
    }

    /// Open links, for the driver's `LinkBuffered` reports.
    pub fn open_links(&self) -> impl Iterator<Item = (LinkId, PeerId)> + '_ {
        self.links
            .iter()
            .filter(|(_, link)| link.is_open())
            .map(|(id, link)| (id, link.peer))
    }

    /// Links being set up or open.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Peer messages with a tag this build does not know, ignored (a newer peer's).
    pub fn unknown_messages(&self) -> u64 {
        self.unknown_messages
    }

    /// The most links this node takes: viewers are never a full mesh, and the source
    /// feeds a bounded number of viewers.
    pub fn max_links(&self) -> usize {
        match self.config.role() {
            SwarmRole::Source => SOURCE_MAX_LINKS,
            SwarmRole::Viewer => MAX_VIEWER_LINKS,
        }
    }

    fn swarm_config(config: &NodeConfig, session: SessionId, mut swarm: Config) -> Config {
        swarm.broadcast = protocol::Broadcast {
            channel: config.channel.clone(),
            session,
        };
        swarm.seed = config.seed;
        swarm.upload_limit = config.upload_limit;
        if let Some(ms) = config.target_buffer_ms {
            swarm.target_buffer_ms = ms;
        }
        if let Some(count) = config.substreams {
            swarm.substreams = count.min(usize::from(protocol::MAX_SUBSTREAMS));
        }
        swarm.exports_signed = config.edge;
        swarm.checks = config.checks.clone();
        swarm
    }

    /// Tells the server what changed about our links (free slots, a need for more
    /// peers); run after every input and time-out, so it is said as soon as it is true.
    fn report_neighbours(&mut self, now: Millis) {
        let Some(swarm) = &self.swarm else {
            return;
        };
        if swarm.neighbours().any(|n| n.is_source) {
            self.source_absent = false;
        }
        if self.joined() {
            let starving = swarm.starving(now);
            for message in self.neighbours.update(self.links.len(), starving, now) {
                self.send_signal(&message);
            }
        }
    }

    /// The running totals experience reports are differences of.
    fn experience_totals(&self) -> Totals {
        let stats = self.swarm.as_ref().map(Swarm::stats).unwrap_or_default();
        Totals::of(&stats, self.playback.as_ref())
    }

    /// Sends the experience report due at `now`, if one is and we are joined.
    fn report_experience(&mut self, now: Millis) {
        if !self.joined() || self.experience.due().is_none_or(|due| now < due) {
            return;
        }
        let totals = self.experience_totals();
        let (startup_ms, delay_ms) = match (&self.playback, &self.swarm) {
            (Some(p), _) => (p.startup_ms, p.delay_ms),
            (None, Some(swarm)) => (swarm.stats().startup_ms, swarm.delay_behind_live(now)),
            (None, None) => (None, None),
        };
        if let Some(report) = self.experience.take_due(now, totals, startup_ms, delay_ms) {
            self.send_signal(&protocol::ClientMessage::Report(report));
        }
    }

    /// When the neighbour report next has something to say without new input: asking
    /// for more peers again, or the swarm starting to starve.
    fn report_due(&self) -> Option<Millis> {
        let swarm = self.swarm.as_ref().filter(|_| self.joined())?;
        let starving = swarm.starving(self.now);
        let ask = self.neighbours.ask_due(self.links.len(), starving);
        let starve = swarm.starving_from().filter(|_| !starving);
        ask.into_iter().chain(starve).min()
    }
}
