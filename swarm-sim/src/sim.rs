//! The discrete-event engine: N real `Swarm`s, a modelled network, and the signal server's
//! part (introducing peers, preferring those with free slots), all on virtual time.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use protocol::{ClientMessage, PeerId, PeerMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use swarm::{
    BytesPerSec, Chunk, ChunkData, Config, Input, Millis, NeighbourReport, Output, Swarm,
    SwarmRole, SOURCE_MAX_LINKS, TARGET_LINKS,
};

use crate::metrics::{Metrics, Player};
use crate::network::{LinkEnd, Micros, Uplink, PACKET_FRAMING, PACKET_PAYLOAD};
use crate::queue::EventQueue;
use crate::{SimConfig, UPLOAD_CLASSES};

const SOURCE: usize = 0;
/// Links a viewer accepts at most: free slots steer introductions toward the target, and
/// this bounds the rest, so the swarm is never a full mesh.
const MAX_VIEWER_LINKS: usize = 2 * TARGET_LINKS;
/// Peers introduced to a viewer that asks while it has plenty of links (it is starving).
const STARVING_INTRODUCE: usize = 2;
/// Signalling a link through the server (offer and answer relayed) before ICE starts.
const SIGNALLING_US: Micros = 200_000;
/// A viewer that crashes rather than closing its tab is noticed this late (ICE consent).
const CRASH_NOTICE_US: Micros = 5_000_000;
/// A link whose queue falls to this many bytes reports it drained, as the browser
/// driver's `bufferedamountlow` threshold.
const DRAINED_BELOW: u64 = 16 * 1024;
/// Upload capacity of a viewer that serves nothing: enough for requests and the like.
const CONTROL_ONLY_UPLINK: f64 = 32_000.0;

#[derive(Debug)]
enum Event {
    Produce,
    Join,
    Churn,
    Tick(usize),
    Deliver {
        to: usize,
        from: PeerId,
        message: PeerMessage,
    },
    LinkOpen {
        a: usize,
        b: usize,
        rtt_ms: u64,
    },
    LinkClosed {
        to: usize,
        from: PeerId,
    },
    /// A link's queue fell to the low-water mark: the driver reports it at once, as the
    /// browser driver does on `bufferedamountlow`.
    Drained {
        node: usize,
        peer: PeerId,
    },
}

struct Node {
    swarm: Swarm,
    uplink: Uplink,
    links: BTreeMap<PeerId, LinkEnd>,
    /// Links introduced but not open yet: they count against free slots.
    pending: usize,
    report: NeighbourReport,
    free_slots: u16,
    joined: Micros,
    player: Player,
    /// Per chunk, which pieces arrived: another copy of one is a duplicate.
    received: BTreeMap<u64, Vec<bool>>,
    /// Links a message went out on since the last `Buffered` report.
    sent_since_report: Vec<PeerId>,
}

impl Node {
    fn max_links(&self, index: usize) -> usize {
        if index == SOURCE {
            SOURCE_MAX_LINKS
        } else {
            MAX_VIEWER_LINKS
        }
    }
}

/// A simulation in progress. [`Sim::run`] runs one to its end.
pub struct Sim {
    config: SimConfig,
    rng: StdRng,
    now: Micros,
    end: Micros,
    events: EventQueue<Event>,
    nodes: Vec<Option<Node>>,
    live_viewers: Vec<usize>,
    next_seq: u64,
    pub(crate) metrics: Metrics,
    pub(crate) events_run: u64,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let end = config.seconds * 1_000_000;
        let chunk_us = config.chunk_ms * 1000;
        let rng = StdRng::seed_from_u64(config.seed);
        let mut sim = Sim {
            rng,
            now: 0,
            end,
            events: EventQueue::new(),
            nodes: Vec::new(),
            live_viewers: Vec::new(),
            next_seq: 0,
            metrics: Metrics::new(chunk_us, end),
            events_run: 0,
            config,
        };
        let mut source = Config::new(SwarmRole::Source);
        let capacity = sim.config.source_upload * sim.config.bitrate_bytes();
        source.upload_limit = Some(budget(capacity));
        sim.add_node(source, capacity);
        sim.input(
            SOURCE,
            Input::InitProduced {
                mime: "video/mp4; codecs=\"avc1.64001f\"".into(),
                data: vec![0; 800],
            },
        );
        sim.schedule(chunk_us, Event::Produce);
        sim.schedule(0, Event::Tick(SOURCE));
        let ramp = sim.config.ramp_secs.min(sim.config.seconds) * 1_000_000;
        let peers = sim.config.peers as u64;
        for i in 0..peers {
            sim.schedule(ramp * i / peers, Event::Join);
        }
        if sim.config.churn > 0.0 {
            let first = sim.churn_gap();
            sim.schedule(first, Event::Churn);
        }
        sim
    }

    /// Runs to the end and returns what was measured, with the wall time it took.
    pub fn run(mut self) -> crate::Report {
        let started = Instant::now();
        while let Some((at, event)) = self.events.pop() {
            if at > self.end {
                break;
            }
            self.now = at;
            self.events_run += 1;
            self.handle(event);
        }
        let sim_wall_ms = started.elapsed().as_millis() as u64;
        for index in 0..self.nodes.len() {
            self.retire(index, self.end);
        }
        crate::report::summarise(&self.config, self.metrics, self.events_run, sim_wall_ms)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Produce => self.produce(),
            Event::Join => self.join(),
            Event::Churn => {
                if !self.live_viewers.is_empty() {
                    let pick = self.rng.gen_range(0..self.live_viewers.len());
                    let leaving = self.live_viewers.swap_remove(pick);
                    self.leave(leaving);
                    self.join();
                }
                let gap = self.churn_gap();
                self.schedule(self.now + gap, Event::Churn);
            }
            Event::Tick(index) => self.tick(index),
            Event::Deliver { to, from, message } => self.deliver(to, from, message),
            Event::LinkOpen { a, b, rtt_ms } => self.open_link(a, b, rtt_ms),
            Event::Drained { node, peer } => self.drained(node, peer),
            Event::LinkClosed { to, from } => {
                let Some(node) = self.nodes[to].as_mut() else {
                    return;
                };
                if node.links.remove(&from).is_some() {
                    self.input(to, Input::PeerDisconnected(from));
                }
            }
        }
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        self.events.push(at, event);
    }

    /// Exponential gaps: churn arrives as a Poisson process.
    fn churn_gap(&mut self) -> Micros {
        let per_second = self.config.churn * self.config.peers as f64 / 60.0;
        let uniform: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        (-uniform.ln() / per_second * 1e6) as Micros
    }

    fn add_node(&mut self, config: Config, capacity: f64) -> usize {
        let index = self.nodes.len();
        let role = config.role;
        self.nodes.push(Some(Node {
            swarm: Swarm::new(config),
            uplink: Uplink::new(capacity),
            links: BTreeMap::new(),
            pending: 0,
            report: NeighbourReport::new(role),
            free_slots: 0,
            joined: self.now,
            player: Player::default(),
            received: BTreeMap::new(),
            sent_since_report: Vec::new(),
        }));
        index
    }

    fn produce(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = self.config.chunk_bytes();
        let data: Vec<u8> = (0..bytes).map(|i| pattern(seq, i)).collect();
        let chunk = Chunk {
            seq: protocol::ChunkSeq(seq),
            keyframe: true,
            data: ChunkData::new(Bytes::from(data)),
        };
        self.input(SOURCE, Input::ChunkProduced(chunk));
        let next = (self.next_seq + 1) * self.config.chunk_ms * 1000;
        self.schedule(next, Event::Produce);
    }

    fn join(&mut self) {
        let mut config = Config::new(SwarmRole::Viewer);
        config.seed = self.rng.gen();
        let draw: f64 = self.rng.gen();
        let mean_weight: f64 = UPLOAD_CLASSES.iter().map(|(s, w)| s * w).sum();
        let mut cumulative = 0.0;
        let mut weight = UPLOAD_CLASSES[UPLOAD_CLASSES.len() - 1].1;
        for (share, w) in UPLOAD_CLASSES {
            cumulative += share;
            if draw < cumulative {
                weight = w;
                break;
            }
        }
        let capacity =
            weight / mean_weight * self.config.upload_ratio * self.config.bitrate_bytes();
        let uplink = if capacity > 0.0 {
            config.upload_limit = Some(budget(capacity));
            capacity
        } else {
            config.upload_limit = Some(BytesPerSec(0));
            CONTROL_ONLY_UPLINK
        };
        let index = self.add_node(config, uplink);
        self.metrics.viewers_joined += 1;
        self.live_viewers.push(index);
        self.introduce(index, TARGET_LINKS);
        let phase = self.rng.gen_range(0..self.config.tick_ms * 1000);
        self.schedule(self.now + phase, Event::Tick(index));
    }

    /// The signal server's part: up to `want` peers with free slots, the source among
    /// them only while it has room. Random draws keep this O(want) at any swarm size.
    fn introduce(&mut self, index: usize, want: usize) {
        let mut chosen: Vec<usize> = Vec::new();
        let source_has_room = self.nodes[SOURCE]
            .as_ref()
            .is_some_and(|s| s.free_slots > 0);
        if source_has_room && !self.linked(index, SOURCE) {
            chosen.push(SOURCE);
        }
        // As the signal server does: a random sample, those with free slots first.
        let mut sample: Vec<usize> = Vec::new();
        for _ in 0..16 * want {
            if self.live_viewers.len() <= 1 {
                break;
            }
            let pick = self.live_viewers[self.rng.gen_range(0..self.live_viewers.len())];
            if pick != index && !sample.contains(&pick) && !self.linked(index, pick) {
                sample.push(pick);
            }
        }
        sample.sort_by_key(|&i| self.nodes[i].as_ref().is_none_or(|n| n.free_slots == 0));
        let room = want.saturating_sub(chosen.len());
        chosen.extend(sample.into_iter().take(room));
        for other in chosen {
            let (min, max) = (self.config.rtt.min, self.config.rtt.max);
            let rtt_ms = self.rng.gen_range(min..=max);
            for end in [index, other] {
                let node = self.nodes[end].as_mut().expect("chosen peers are live");
                node.pending += 1;
                node.free_slots = node.free_slots.saturating_sub(1);
            }
            // ICE checks, the DTLS handshake and SCTP set-up: about four round trips.
            let at = self.now + SIGNALLING_US + 4 * rtt_ms * 1000;
            self.schedule(
                at,
                Event::LinkOpen {
                    a: index,
                    b: other,
                    rtt_ms,
                },
            );
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        self.nodes[a]
            .as_ref()
            .is_some_and(|n| n.links.contains_key(&PeerId(b as u64)))
    }

    fn open_link(&mut self, a: usize, b: usize, rtt_ms: u64) {
        for end in [a, b] {
            if let Some(node) = self.nodes[end].as_mut() {
                node.pending = node.pending.saturating_sub(1);
            }
        }
        let room = |sim: &Sim, i: usize| {
            sim.nodes[i]
                .as_ref()
                .is_some_and(|n| n.links.len() < n.max_links(i))
        };
        if !room(self, a) || !room(self, b) || self.linked(a, b) {
            return;
        }
        for (this, other) in [(a, b), (b, a)] {
            let node = self.nodes[this].as_mut().expect("checked live above");
            node.links
                .insert(PeerId(other as u64), LinkEnd::new(rtt_ms));
        }
        self.input(a, Input::PeerConnected(PeerId(b as u64)));
        self.input(b, Input::PeerConnected(PeerId(a as u64)));
    }

    fn drained(&mut self, index: usize, peer: PeerId) {
        let now = self.now;
        let Some(link) = self.nodes[index]
            .as_mut()
            .and_then(|node| node.links.get_mut(&peer))
        else {
            return;
        };
        link.drain_pending = false;
        let bytes = link.buffered(now);
        link.reported = bytes;
        if let Some(at) = link.drained_at(DRAINED_BELOW) {
            // More was queued since: wait for that to drain too.
            link.drain_pending = true;
            self.events.push(at, Event::Drained { node: index, peer });
            return;
        }
        self.input(index, Input::Buffered { peer, bytes });
    }

    fn tick(&mut self, index: usize) {
        let now = self.now;
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        // Links that sent since the last report, or still had data queued then.
        let mut reports = Vec::new();
        for (peer, link) in &mut node.links {
            let sent = node.sent_since_report.contains(peer);
            if sent || link.reported > 0 {
                let bytes = link.buffered(now);
                link.reported = bytes;
                reports.push((*peer, bytes));
            }
        }
        node.sent_since_report.clear();
        for (peer, bytes) in reports {
            self.input(index, Input::Buffered { peer, bytes });
        }
        self.input(index, Input::Tick);
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        let open = node.links.len() + node.pending;
        let starving = node.swarm.starving(Millis(now / 1000));
        let mut more = false;
        for message in node.report.update(open, starving, Millis(now / 1000)) {
            match message {
                ClientMessage::Status { free_slots } => node.free_slots = free_slots,
                ClientMessage::MorePeers {} => more = true,
                _ => {}
            }
        }
        let held = node.swarm.chunks_held();
        self.metrics.max_chunks_held = self.metrics.max_chunks_held.max(held);
        if more {
            self.introduce(
                index,
                TARGET_LINKS.saturating_sub(open).max(STARVING_INTRODUCE),
            );
        }
        self.schedule(now + self.config.tick_ms * 1000, Event::Tick(index));
    }

    fn deliver(&mut self, to: usize, from: PeerId, message: PeerMessage) {
        let Some(node) = self.nodes[to].as_mut() else {
            return;
        };
        if !node.links.contains_key(&from) {
            return;
        }
        if let PeerMessage::Piece {
            seq, offset, data, ..
        } = &message
        {
            if to != SOURCE {
                let len = data.len() as u64;
                if from == PeerId(SOURCE as u64) {
                    self.metrics.from_source += len;
                } else {
                    self.metrics.from_peers += len;
                }
                let index = *offset as usize / protocol::PIECE_BYTES;
                let seen = node.received.entry(seq.0).or_default();
                if seen.len() <= index {
                    seen.resize(index + 1, false);
                }
                if std::mem::replace(&mut seen[index], true) {
                    self.metrics.duplicate += len;
                }
                if node.received.len() > 64 {
                    node.received.pop_first();
                }
            }
        }
        self.input(to, Input::Message(from, message));
    }

    /// Feed one input to a node and carry out everything it asks for.
    fn input(&mut self, index: usize, input: Input) {
        let now = self.now;
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        node.swarm.handle_input(Millis(now / 1000), input);
        let mut closing = Vec::new();
        while let Some(output) = node.swarm.poll_output() {
            match output {
                Output::Send(peer, message) => {
                    let len = message.encoded_len();
                    self.metrics.message_bytes += len as u64;
                    self.metrics.framing_bytes +=
                        (len.div_ceil(PACKET_PAYLOAD).max(1) * PACKET_FRAMING) as u64;
                    if let PeerMessage::Piece { data, .. } = &message {
                        self.metrics.payload_sent += data.len() as u64;
                        if index == SOURCE {
                            self.metrics.source_payload_sent += data.len() as u64;
                        }
                    }
                    let Some(link) = node.links.get_mut(&peer) else {
                        continue;
                    };
                    let bulk = matches!(message, PeerMessage::Piece { .. });
                    let arrives =
                        node.uplink
                            .transmit(now, link, len, bulk, self.config.loss, &mut self.rng);
                    if !node.sent_since_report.contains(&peer) {
                        node.sent_since_report.push(peer);
                    }
                    if bulk && !link.drain_pending {
                        if let Some(at) = link.drained_at(DRAINED_BELOW) {
                            link.drain_pending = true;
                            self.events.push(at, Event::Drained { node: index, peer });
                        }
                    }
                    self.events.push(
                        arrives,
                        Event::Deliver {
                            to: peer.0 as usize,
                            from: PeerId(index as u64),
                            message,
                        },
                    );
                }
                Output::Play { chunk, due } => {
                    if !intact(&chunk) {
                        self.metrics.corrupt_chunks += 1;
                    }
                    let planned = due.0 * 1000;
                    let joined = node.joined;
                    self.metrics
                        .played(&mut node.player, joined, now, chunk.seq.0, planned);
                }
                Output::Disconnect { peer, .. } => closing.push(peer),
                Output::Skipped(seq) => self.metrics.skipped(&mut node.player, now, seq.0),
                Output::Init { .. } => {}
            }
        }
        for peer in closing {
            self.close_link(index, peer);
        }
    }

    fn close_link(&mut self, index: usize, peer: PeerId) {
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        if let Some(link) = node.links.remove(&peer) {
            let at = self.now + link.rtt_ms * 500;
            self.schedule(
                at,
                Event::LinkClosed {
                    to: peer.0 as usize,
                    from: PeerId(index as u64),
                },
            );
        }
    }

    fn leave(&mut self, index: usize) {
        let Some(node) = self.nodes[index].as_ref() else {
            return;
        };
        let links: Vec<(PeerId, u64)> = node.links.iter().map(|(p, l)| (*p, l.rtt_ms)).collect();
        for (peer, rtt_ms) in links {
            // Half close their tab (the far end hears at once), half crash or lose power.
            let notice = if self.rng.gen_bool(0.5) {
                rtt_ms * 500
            } else {
                CRASH_NOTICE_US
            };
            self.schedule(
                self.now + notice,
                Event::LinkClosed {
                    to: peer.0 as usize,
                    from: PeerId(index as u64),
                },
            );
        }
        self.retire(index, self.now);
    }

    /// Take a viewer out and book its playback.
    fn retire(&mut self, index: usize, end: Micros) {
        let Some(mut node) = self.nodes[index].take() else {
            return;
        };
        self.metrics.capacity_bytes += node.uplink.capacity * (end - node.joined) as f64 / 1e6;
        if index != SOURCE {
            self.metrics.finish(&mut node.player, node.joined, end);
        }
        let stats = node.swarm.stats();
        self.metrics.peers_dropped += stats.peers_dropped;
        self.metrics.requests_refused += stats.requests_refused;
    }
}

/// The budget a viewer sets for an uplink of `capacity` bytes/s: the swarm counts message
/// bytes, the line also carries packet framing.
fn budget(capacity: f64) -> BytesPerSec {
    let share = PACKET_PAYLOAD as f64 / (PACKET_PAYLOAD + PACKET_FRAMING) as f64;
    BytesPerSec((capacity * share) as u64)
}

/// Chunk content: every byte depends on the chunk and its position, so a misplaced or
/// foreign piece shows.
fn pattern(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(131) ^ (i as u64 >> 8) ^ i as u64) as u8
}

/// Spot-checks the first and last byte of every piece against the pattern.
fn intact(chunk: &Chunk) -> bool {
    let mut offset = 0;
    for piece in chunk.data.pieces() {
        let last = piece.len() - 1;
        if piece[0] != pattern(chunk.seq.0, offset)
            || piece[last] != pattern(chunk.seq.0, offset + last)
        {
            return false;
        }
        offset += piece.len();
    }
    true
}
