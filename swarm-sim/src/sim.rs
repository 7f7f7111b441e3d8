//! The discrete-event engine: N real `Swarm`s, a modelled network, and the signal server's
//! part (introducing peers, preferring those with free slots), all on virtual time.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use protocol::{ChannelKey, ChannelSigner, ClientMessage, PeerId, PeerMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use swarm::{
    BytesPerSec, Chunk, ChunkData, Config, Input, Millis, NeighbourReport, Output, Swarm,
    SOURCE_MAX_LINKS, TARGET_LINKS,
};

use crate::hostile::{pollute, Behaviour};
use crate::membership::MAX_VIEWER_LINKS;
use crate::metrics::{Metrics, Player};
use crate::network::{framing, LinkEnd, Micros, Uplink, PACKET_FRAMING, PACKET_PAYLOAD};
use crate::queue::EventQueue;
use crate::SimConfig;

pub(crate) const SOURCE: usize = 0;
/// Peers introduced to a viewer that asks while it has plenty of links (it is starving).
pub(crate) const STARVING_INTRODUCE: usize = 2;
/// A link whose queue falls to this many bytes reports it drained, as the browser
/// driver's `bufferedamountlow` threshold.
pub(crate) const DRAINED_BELOW: u64 = 16 * 1024;
/// Upload capacity of a viewer that serves nothing: enough for requests and the like.
pub(crate) const CONTROL_ONLY_UPLINK: f64 = 32_000.0;

#[derive(Debug)]
pub(crate) enum Event {
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

pub(crate) struct Node {
    pub(crate) swarm: Swarm,
    pub(crate) uplink: Uplink,
    pub(crate) links: BTreeMap<PeerId, LinkEnd>,
    /// Links introduced but not open yet: they count against free slots.
    pub(crate) pending: usize,
    pub(crate) report: NeighbourReport,
    pub(crate) free_slots: u16,
    pub(crate) joined: Micros,
    pub(crate) player: Player,
    /// Per chunk, which pieces arrived: another copy of one is a duplicate.
    pub(crate) received: BTreeMap<u64, Vec<bool>>,
    /// Links a message went out on since the last `Buffered` report.
    pub(crate) sent_since_report: Vec<PeerId>,
    pub(crate) behaviour: Behaviour,
}

impl Node {
    pub(crate) fn max_links(&self, index: usize) -> usize {
        if index == SOURCE {
            SOURCE_MAX_LINKS
        } else {
            MAX_VIEWER_LINKS
        }
    }
}

/// A simulation in progress. [`Sim::run`] runs one to its end.
pub struct Sim {
    pub(crate) config: SimConfig,
    pub(crate) rng: StdRng,
    pub(crate) now: Micros,
    pub(crate) end: Micros,
    pub(crate) events: EventQueue<Event>,
    pub(crate) nodes: Vec<Option<Node>>,
    pub(crate) live_viewers: Vec<usize>,
    pub(crate) next_seq: u64,
    pub(crate) metrics: Metrics,
    pub(crate) events_run: u64,
    /// The channel's public key: viewers check every piece against the source's signed
    /// manifests, as real ones do.
    pub(crate) channel_key: ChannelKey,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let end = config.seconds * 1_000_000;
        let chunk_us = config.chunk_ms * 1000;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let signer = ChannelSigner::from_seed(&rng.gen());
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
            channel_key: signer.public(),
            config,
        };
        let mut source = Config::source(signer);
        let capacity = sim.config.source_upload * sim.config.bitrate_bytes();
        source.upload_limit = Some(budget(capacity));
        sim.add_node(source, capacity, Behaviour::Honest);
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

    pub(crate) fn handle(&mut self, event: Event) {
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

    pub(crate) fn schedule(&mut self, at: Micros, event: Event) {
        self.events.push(at, event);
    }

    pub(crate) fn add_node(
        &mut self,
        config: Config,
        capacity: f64,
        behaviour: Behaviour,
    ) -> usize {
        let index = self.nodes.len();
        let role = config.role();
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
            behaviour,
        }));
        // The signal server's `welcome` names the broadcaster.
        self.input(index, Input::Broadcaster(Some(PeerId(SOURCE as u64))));
        index
    }

    pub(crate) fn produce(&mut self) {
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

    pub(crate) fn drained(&mut self, index: usize, peer: PeerId) {
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

    pub(crate) fn tick(&mut self, index: usize) {
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
        if node.behaviour == Behaviour::Flooder {
            self.flood(index);
        }
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

    pub(crate) fn deliver(&mut self, to: usize, from: PeerId, message: PeerMessage) {
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
    pub(crate) fn input(&mut self, index: usize, input: Input) {
        let now = self.now;
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        node.swarm.handle_input(Millis(now / 1000), input);
        let mut closing = Vec::new();
        while let Some(output) = node.swarm.poll_output() {
            match output {
                Output::Send(peer, message) => {
                    let message = match node.behaviour {
                        Behaviour::Polluter => pollute(message),
                        _ => message,
                    };
                    let len = message.encoded_len();
                    self.metrics.message_bytes += len as u64;
                    self.metrics.framing_bytes += framing(len) as u64;
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
                // The figures are what honest viewers get.
                Output::Play { .. } if node.behaviour != Behaviour::Honest => {}
                Output::Play { chunk, due } => {
                    let bad = bad_bytes(&chunk);
                    if bad > 0 {
                        self.metrics.corrupt_chunks += 1;
                        self.metrics.bad_bytes_played += bad;
                    }
                    let planned = due.0 * 1000;
                    let joined = node.joined;
                    self.metrics
                        .played(&mut node.player, joined, now, chunk.seq.0, planned);
                }
                Output::Disconnect { peer, .. } => closing.push(peer),
                Output::Skipped(_) if node.behaviour != Behaviour::Honest => {}
                Output::Skipped(seq) => self.metrics.skipped(&mut node.player, now, seq.0),
                Output::Init { .. } => {}
            }
        }
        for peer in closing {
            self.close_link(index, peer);
        }
    }
}

/// The budget a viewer sets for an uplink of `capacity` bytes/s: the swarm counts message
/// bytes, the line also carries packet framing.
pub(crate) fn budget(capacity: f64) -> BytesPerSec {
    let share = PACKET_PAYLOAD as f64 / (PACKET_PAYLOAD + PACKET_FRAMING) as f64;
    BytesPerSec((capacity * share) as u64)
}

/// Chunk content: every byte depends on the chunk and its position, so a misplaced or
/// foreign piece shows.
fn pattern(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(131) ^ (i as u64 >> 8) ^ i as u64) as u8
}

/// Bytes of a played chunk that differ from what the source cut: every byte is checked.
fn bad_bytes(chunk: &Chunk) -> u64 {
    let mut offset = 0;
    let mut bad = 0;
    for piece in chunk.data.pieces() {
        for (i, byte) in piece.iter().enumerate() {
            bad += u64::from(*byte != pattern(chunk.seq.0, offset + i));
        }
        offset += piece.len();
    }
    bad
}
