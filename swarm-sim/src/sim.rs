//! The discrete-event engine: N real peer cores (`swarm::Node`, the very type both drivers
//! run), the real signal server's rooms, and a modelled network, all on virtual time. The
//! simulator is one more driver: it carries out each node's outputs — signalling frames,
//! link set-up, data-channel messages as encoded bytes — with modelled delays, and feeds
//! back what happened.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use protocol::{ChannelName, ChannelSigner, PeerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use swarm::{BytesPerSec, Chunk, ChunkData, LinkId, NodeInput};

use crate::driver::{SimLink, SimNode};
use crate::hostile::Behaviour;
use crate::metrics::Metrics;
use crate::network::{Micros, PACKET_FRAMING, PACKET_PAYLOAD};
use crate::queue::EventQueue;
use crate::server::Server;
use crate::SimConfig;

pub(crate) const SOURCE: usize = 0;
/// A link whose queue falls to this many bytes reports it drained, as the browser
/// driver's `bufferedamountlow` threshold.
pub(crate) const DRAINED_BELOW: u64 = swarm::LINK_DRAINED_BELOW;
/// Upload capacity of a viewer that serves nothing: enough for requests and the like.
pub const CONTROL_ONLY_UPLINK: f64 = 32_000.0;
/// Gathering host and server-reflexive candidates before a description goes out.
pub(crate) const GATHER_US: Micros = 50_000;

#[derive(Debug)]
pub(crate) enum Event {
    Produce,
    Join,
    Churn,
    /// A node's timer, as its `poll_timeout` last said; superseded ones are ignored.
    Timer {
        node: usize,
        at: Micros,
    },
    /// Something the node's driver reports: a signalling frame, a link event, a message.
    Input {
        node: usize,
        input: NodeInput,
    },
    /// A signalling frame reaches the server.
    ToServer {
        from: usize,
        text: String,
    },
    /// A link's queue fell to the low-water mark: the driver reports it at once, as the
    /// browser driver does on `bufferedamountlow`.
    Drained {
        node: usize,
        link: LinkId,
    },
    /// The server notices a crashed peer's connection is gone.
    ServerLeave {
        peer: PeerId,
    },
    /// A retransmission time-out on a node's link: SCTP resends a lost packet that too
    /// few later ones reported.
    LossTimeout {
        node: usize,
        link: LinkId,
    },
}

/// A simulation in progress. [`Sim::run`] runs one to its end.
pub struct Sim {
    pub(crate) config: SimConfig,
    pub(crate) rng: StdRng,
    pub(crate) now: Micros,
    pub(crate) end: Micros,
    pub(crate) events: EventQueue<Event>,
    pub(crate) nodes: Vec<Option<SimNode>>,
    pub(crate) live_viewers: Vec<usize>,
    pub(crate) next_seq: u64,
    pub(crate) metrics: Metrics,
    pub(crate) events_run: u64,
    /// Events run, by kind (messages by their type): where the simulator's time goes.
    pub(crate) events_by_kind: [u64; EVENT_KINDS.len()],
    pub(crate) server: Server,
    /// Offers waiting for their answer: the description's token → offerer and RTT.
    pub(crate) offers: BTreeMap<u64, (usize, LinkId, u64)>,
    pub(crate) next_token: u64,
    /// With `exact_classes`: every viewer's uplink, in joining order (else empty: drawn).
    pub(crate) exact_uplinks: Vec<f64>,
    /// The recent chunks as the source cut them, so a played piece that is the source's
    /// own memory is known good without reading it (see [`bad_bytes`]).
    pub(crate) cut: BTreeMap<u64, Bytes>,
    /// Content checks every node shares: each is computed once (`checks.rs`).
    pub(crate) checks: swarm::Checks,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let end = config.seconds * 1_000_000;
        let chunk_us = config.chunk_ms * 1000;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let signer = ChannelSigner::from_seed(&rng.gen());
        let channel: ChannelName = "sim".parse().expect("a valid channel name");
        let server = Server::new(channel, signer.public(), rng.gen());
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
            events_by_kind: [0; EVENT_KINDS.len()],
            server,
            offers: BTreeMap::new(),
            next_token: 0,
            exact_uplinks: if config.exact_classes {
                config.exact_uplinks()
            } else {
                Vec::new()
            },
            cut: BTreeMap::new(),
            checks: swarm::Checks::new(crate::checks::SharedChecks::default()),
            config,
        };
        let capacity = sim.config.source_upload * sim.config.bitrate_bytes();
        let source = sim.add_node(
            Some(signer),
            Some(budget(capacity)),
            capacity,
            Behaviour::Honest,
        );
        debug_assert_eq!(source, SOURCE);
        sim.input(
            SOURCE,
            NodeInput::InitProduced {
                mime: "video/mp4; codecs=\"avc1.64001f\"".into(),
                data: vec![0; 800],
            },
        );
        sim.schedule(chunk_us, Event::Produce);
        let ramp = sim.config.ramp_secs.min(sim.config.seconds) * 1_000_000;
        let peers = sim.config.peers as u64;
        for i in 0..peers {
            // After the source is in: it joins within a few server round trips.
            sim.schedule(500_000 + ramp * i / peers, Event::Join);
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
            self.events_by_kind[event_kind(&event)] += 1;
            self.handle(event);
        }
        let sim_wall_ms = started.elapsed().as_millis() as u64;
        for index in 0..self.nodes.len() {
            self.retire(index, self.end);
        }
        let mut report =
            crate::report::summarise(&self.config, self.metrics, self.events_run, sim_wall_ms);
        report.events_by_kind = EVENT_KINDS
            .into_iter()
            .zip(self.events_by_kind)
            .filter(|(_, count)| *count > 0)
            .collect();
        report
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
            Event::Timer { node, at } => self.timer(node, at),
            Event::Input { node, input } => {
                match &input {
                    NodeInput::LinkOpen(link) => {
                        let Some(l) = self.link_mut(node, *link) else {
                            return; // Closed on this side meanwhile.
                        };
                        l.open = true;
                    }
                    // The far end closed it: the driver forgets the link too.
                    NodeInput::LinkClosed(link) => {
                        if let Some(n) = self.nodes[node].as_mut() {
                            n.links.remove(link);
                        }
                    }
                    _ => {}
                }
                self.input(node, input);
            }
            Event::ToServer { from, text } => self.at_server(from, &text),
            Event::Drained { node, link } => self.drained(node, link),
            Event::ServerLeave { peer } => self.server_leave(peer),
            Event::LossTimeout { node, link } => self.loss_timeout(node, link),
        }
    }

    pub(crate) fn schedule(&mut self, at: Micros, event: Event) {
        self.events.push(at, event);
    }

    pub(crate) fn link_mut(&mut self, node: usize, link: LinkId) -> Option<&mut SimLink> {
        self.nodes[node].as_mut()?.links.get_mut(&link)
    }

    pub(crate) fn produce(&mut self) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = self.config.chunk_bytes();
        let data = Bytes::from((0..bytes).map(|i| pattern(seq, i)).collect::<Vec<u8>>());
        self.cut.insert(seq, data.clone());
        self.cut = self.cut.split_off(&seq.saturating_sub(CUT_KEPT_CHUNKS));
        let chunk = Chunk {
            seq: protocol::ChunkSeq(seq),
            keyframe: true,
            data: ChunkData::new(data),
        };
        self.input(SOURCE, NodeInput::ChunkProduced(chunk));
        let next = (self.next_seq + 1) * self.config.chunk_ms * 1000;
        self.schedule(next, Event::Produce);
    }
}

/// The kinds of event the report counts; an index into it is cheaper to count by than a
/// map lookup per event (that lookup was a tenth of the simulator's time).
const EVENT_KINDS: [&str; 20] = [
    "produce",
    "join",
    "churn",
    "timer",
    "message buffer_map",
    "message have",
    "message request",
    "message piece",
    "message absent",
    "message cancel",
    "message init",
    "message manifest",
    "message hello",
    "message subscribe",
    "message other",
    "signalling or link event",
    "to server",
    "drained",
    "server leave",
    "loss time-out",
];

/// What an event is, for the count by kind in the report: its index in `EVENT_KINDS`.
fn event_kind(event: &Event) -> usize {
    match event {
        Event::Produce => 0,
        Event::Join => 1,
        Event::Churn => 2,
        Event::Timer { .. } => 3,
        Event::Input {
            input: NodeInput::LinkData(_, frame),
            ..
        } => match frame.tag() {
            Some(0x01) => 4,
            Some(0x02) => 5,
            Some(0x03) => 6,
            Some(0x04) => 7,
            Some(0x05) => 8,
            Some(0x06) => 9,
            Some(0x07) => 10,
            Some(0x08) => 11,
            Some(0x09) => 12,
            Some(0x0a | 0x0b) => 13,
            _ => 14,
        },
        Event::Input { .. } => 15,
        Event::ToServer { .. } => 16,
        Event::Drained { .. } => 17,
        Event::ServerLeave { .. } => 18,
        Event::LossTimeout { .. } => 19,
    }
}

/// How many of the newest chunks `Sim::cut` keeps: more than any viewer's window, so a
/// played chunk is almost always among them.
const CUT_KEPT_CHUNKS: u64 = 64;

/// The budget a viewer sets for an uplink of `capacity` bytes/s: the swarm counts message
/// bytes, the line also carries packet framing.
pub fn budget(capacity: f64) -> BytesPerSec {
    let share = PACKET_PAYLOAD as f64 / (PACKET_PAYLOAD + PACKET_FRAMING) as f64;
    BytesPerSec((capacity * share) as u64)
}

/// Chunk content: every byte depends on the chunk and its position, so a misplaced or
/// foreign piece shows.
fn pattern(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(131) ^ (i as u64 >> 8) ^ i as u64) as u8
}

/// Bytes of a played chunk that differ from what the source cut. A piece that is a view
/// of the source's own buffer at its own offset holds those very bytes (`Bytes` never
/// change, and `cut` keeps the buffer alive, so its address cannot be reused): only the
/// rest (a polluter's copy, a chunk older than `cut` keeps) is read byte by byte. Reading
/// every byte was a tenth of a large run's time.
pub(crate) fn bad_bytes(chunk: &Chunk, cut: Option<&Bytes>) -> u64 {
    let mut offset = 0;
    let mut bad = 0;
    for piece in chunk.data.pieces() {
        let original = cut.and_then(|whole| whole.get(offset..offset + piece.len()));
        let shared = original.is_some_and(|o| o.as_ptr() == piece.as_ptr());
        if !shared {
            for (i, byte) in piece.iter().enumerate() {
                bad += u64::from(*byte != pattern(chunk.seq.0, offset + i));
            }
        }
        offset += piece.len();
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(seq: u64, bytes: usize) -> Bytes {
        Bytes::from((0..bytes).map(|i| pattern(seq, i)).collect::<Vec<u8>>())
    }

    fn chunk(seq: u64, data: Bytes) -> Chunk {
        Chunk {
            seq: protocol::ChunkSeq(seq),
            keyframe: true,
            data: ChunkData::new(data),
        }
    }

    #[test]
    fn a_chunk_of_the_sources_own_pieces_is_good_and_a_copy_is_read_byte_by_byte() {
        let bytes = 3 * protocol::PIECE_BYTES + 100;
        let original = cut(7, bytes);
        assert_eq!(bad_bytes(&chunk(7, original.clone()), Some(&original)), 0);

        let mut altered = original.to_vec();
        altered[2 * protocol::PIECE_BYTES + 5] ^= 1;
        altered[bytes - 1] ^= 0x80;
        let altered = Bytes::from(altered);
        assert_eq!(bad_bytes(&chunk(7, altered.clone()), Some(&original)), 2);
        assert_eq!(bad_bytes(&chunk(7, altered), None), 2);

        let copy = Bytes::from(original.to_vec());
        assert_eq!(bad_bytes(&chunk(7, copy), Some(&original)), 0);
        // Another chunk's bytes, even the source's own, are not this chunk's.
        let other = cut(8, bytes);
        assert_eq!(
            bad_bytes(&chunk(7, other.clone()), Some(&original)),
            bytes as u64 - matching_bytes(7, &other)
        );
    }

    /// How many of `data`'s bytes happen to match chunk `seq`'s pattern.
    fn matching_bytes(seq: u64, data: &[u8]) -> u64 {
        data.iter()
            .enumerate()
            .filter(|(i, b)| **b == pattern(seq, *i))
            .count() as u64
    }
}
