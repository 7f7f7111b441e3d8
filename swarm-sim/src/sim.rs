//! The discrete-event engine: N real peer cores (`swarm::Node`, the very type both drivers
//! run), the real signal server's rooms, and a modelled network, all on virtual time. The
//! simulator is one more driver: it carries out each node's outputs — signalling frames,
//! link set-up, data-channel messages as encoded bytes — with modelled delays, and feeds
//! back what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use protocol::{ChannelName, ChannelSigner, PeerId, PeerMessage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use signal_server::Mailbox;
use swarm::{
    BytesPerSec, Chunk, ChunkData, LinkId, Millis, Node, NodeConfig, NodeInput, NodeOutput,
    SignalId,
};
use tokio::sync::mpsc;

use crate::hostile::{pollute, Behaviour};
use crate::metrics::{Metrics, Player};
use crate::network::{framing, LinkEnd, Micros, Uplink, PACKET_FRAMING, PACKET_PAYLOAD};
use crate::queue::EventQueue;
use crate::server::Server;
use crate::SimConfig;

pub(crate) const SOURCE: usize = 0;
/// A link whose queue falls to this many bytes reports it drained, as the browser
/// driver's `bufferedamountlow` threshold.
pub(crate) const DRAINED_BELOW: u64 = 16 * 1024;
/// Upload capacity of a viewer that serves nothing: enough for requests and the like.
pub(crate) const CONTROL_ONLY_UPLINK: f64 = 32_000.0;
/// Gathering host and server-reflexive candidates before a description goes out.
pub(crate) const GATHER_US: Micros = 50_000;
/// Signalled messages queued per peer at the server; drained at once by the simulator.
const MAILBOX_SLOTS: usize = 4096;

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
}

/// One end of a link, as the simulated driver keeps it.
#[derive(Debug)]
pub(crate) struct SimLink {
    /// The far end, once the answer paired them.
    pub(crate) remote: Option<(usize, LinkId)>,
    /// Our sending direction.
    pub(crate) end: LinkEnd,
    pub(crate) open: bool,
}

pub(crate) struct SimNode {
    pub(crate) node: Node,
    pub(crate) uplink: Uplink,
    pub(crate) links: BTreeMap<LinkId, SimLink>,
    /// The id the server gave it.
    pub(crate) peer_id: Option<PeerId>,
    pub(crate) signal: Option<SignalId>,
    /// Its place at the server: what the server posts for it, read by the simulator.
    pub(crate) mailbox: Mailbox,
    pub(crate) inbox: mpsc::Receiver<Box<str>>,
    /// One way to the signal server.
    pub(crate) server_delay_us: Micros,
    /// The timer event queued for it, if any.
    pub(crate) timer_at: Option<Micros>,
    pub(crate) joined: Micros,
    pub(crate) player: Player,
    /// Links a message went out on since the last `LinkBuffered` report.
    pub(crate) sent_since_report: Vec<LinkId>,
    pub(crate) behaviour: Behaviour,
    /// Per chunk, which pieces arrived: another copy of one is a duplicate.
    pub(crate) received: BTreeMap<u64, Vec<bool>>,
    /// A flooder floods at most this often.
    pub(crate) next_flood: Micros,
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
    pub(crate) server: Server,
    /// Offers waiting for their answer: the description's token → offerer and RTT.
    pub(crate) offers: BTreeMap<u64, (usize, LinkId, u64)>,
    pub(crate) next_token: u64,
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
            server,
            offers: BTreeMap::new(),
            next_token: 0,
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
        }
    }

    pub(crate) fn schedule(&mut self, at: Micros, event: Event) {
        self.events.push(at, event);
    }

    pub(crate) fn link_mut(&mut self, node: usize, link: LinkId) -> Option<&mut SimLink> {
        self.nodes[node].as_mut()?.links.get_mut(&link)
    }

    /// A peer core joins the simulation; it asks to connect to the server at once.
    pub(crate) fn add_node(
        &mut self,
        signer: Option<ChannelSigner>,
        upload_limit: Option<BytesPerSec>,
        capacity: f64,
        behaviour: Behaviour,
    ) -> usize {
        let index = self.nodes.len();
        let config = NodeConfig {
            channel: self.server.channel().clone(),
            signer: signer.map(|s| Arc::new(s) as _),
            upload_limit,
            target_buffer_ms: None,
            seed: self.rng.gen(),
        };
        let (tx, inbox) = mpsc::channel(MAILBOX_SLOTS);
        let mailbox = Mailbox {
            tx,
            kick: Arc::new(tokio::sync::Notify::new()),
        };
        let (min, max) = (self.config.rtt.min, self.config.rtt.max);
        let server_delay_us = self.rng.gen_range(min..=max) * 500;
        self.nodes.push(Some(SimNode {
            node: Node::new(Millis(self.now / 1000), config),
            uplink: Uplink::new(capacity),
            links: BTreeMap::new(),
            peer_id: None,
            signal: None,
            mailbox,
            inbox,
            server_delay_us,
            timer_at: None,
            joined: self.now,
            player: Player::default(),
            sent_since_report: Vec::new(),
            behaviour,
            received: BTreeMap::new(),
            next_flood: 0,
        }));
        self.carry_out(index);
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
        self.input(SOURCE, NodeInput::ChunkProduced(chunk));
        let next = (self.next_seq + 1) * self.config.chunk_ms * 1000;
        self.schedule(next, Event::Produce);
    }

    pub(crate) fn drained(&mut self, index: usize, link: LinkId) {
        let now = self.now;
        let Some(l) = self.link_mut(index, link) else {
            return;
        };
        l.end.drain_pending = false;
        let bytes = l.end.buffered(now);
        l.end.reported = bytes;
        if let Some(at) = l.end.drained_at(DRAINED_BELOW) {
            // More was queued since: wait for that to drain too.
            l.end.drain_pending = true;
            self.events.push(at, Event::Drained { node: index, link });
            return;
        }
        self.input(index, NodeInput::LinkBuffered(link, bytes));
    }

    /// The node's timer: queue reports as a driver does before `handle_timeout`.
    pub(crate) fn timer(&mut self, index: usize, at: Micros) {
        let now = self.now;
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        if node.timer_at != Some(at) {
            return; // Superseded by an earlier deadline, handled already.
        }
        node.timer_at = None;
        let mut reports = Vec::new();
        for (link, l) in &mut node.links {
            let sent = node.sent_since_report.contains(link);
            if l.open && (sent || l.end.reported > 0) {
                let bytes = l.end.buffered(now);
                l.end.reported = bytes;
                reports.push((*link, bytes));
            }
        }
        node.sent_since_report.clear();
        let ms = Millis(now / 1000);
        for (link, bytes) in reports {
            node.node
                .handle_input(ms, NodeInput::LinkBuffered(link, bytes));
        }
        node.node.handle_timeout(ms);
        let held = node.node.swarm().map_or(0, |s| s.chunks_held());
        self.metrics.max_chunks_held = self.metrics.max_chunks_held.max(held);
        if node.behaviour == Behaviour::Flooder && now >= node.next_flood {
            node.next_flood = now + crate::hostile::FLOOD_EVERY_US;
            self.flood(index);
        }
        self.carry_out(index);
    }

    /// Feeds one input to a node and carries out everything it asks for.
    pub(crate) fn input(&mut self, index: usize, input: NodeInput) {
        let now = Millis(self.now / 1000);
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        node.node.handle_input(now, input);
        self.carry_out(index);
    }

    /// Carries out a node's outputs, then arms its timer.
    pub(crate) fn carry_out(&mut self, index: usize) {
        loop {
            let Some(node) = self.nodes[index].as_mut() else {
                return;
            };
            let Some(output) = node.node.poll_output() else {
                break;
            };
            self.output(index, output);
        }
        let now = self.now;
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        if let Some(due) = node.node.poll_timeout() {
            let at = (due.0 * 1000).max(now);
            if node.timer_at.is_none_or(|armed| at < armed) {
                node.timer_at = Some(at);
                self.schedule(at, Event::Timer { node: index, at });
            }
        }
    }

    fn output(&mut self, index: usize, output: NodeOutput) {
        let now = self.now;
        let node = self.nodes[index]
            .as_mut()
            .expect("callers check the node is live");
        match output {
            NodeOutput::Connect(id) => {
                node.signal = Some(id);
                // TCP and the WebSocket handshake: a round trip to the server and back.
                let at = now + 2 * node.server_delay_us;
                self.schedule(
                    at,
                    Event::Input {
                        node: index,
                        input: NodeInput::SignalOpen(id),
                    },
                );
            }
            NodeOutput::CloseSignal(_) => {}
            NodeOutput::SendSignal(text) => {
                let at = now + node.server_delay_us;
                self.schedule(at, Event::ToServer { from: index, text });
            }
            NodeOutput::OpenLink {
                link, peer, start, ..
            } => self.open_link(index, link, peer, start),
            NodeOutput::RemoteSignal { link, .. } => self.answered(index, link),
            // Descriptions go out after `GATHER_US`, well within the node's patience.
            NodeOutput::FlushDescription(_) => {}
            NodeOutput::Send { link, bytes } => self.send(index, link, bytes),
            NodeOutput::CloseLink(link) => {
                let Some(l) = node.links.remove(&link) else {
                    return;
                };
                if let Some((remote, remote_link)) = l.remote {
                    let at = now + l.end.rtt_ms * 500;
                    let input = NodeInput::LinkClosed(remote_link);
                    self.schedule(
                        at,
                        Event::Input {
                            node: remote,
                            input,
                        },
                    );
                }
            }
            NodeOutput::Init { .. } | NodeOutput::Event(_) => {}
            // The figures are what honest viewers get.
            NodeOutput::Play { .. } | NodeOutput::Skipped(_)
                if node.behaviour != Behaviour::Honest => {}
            NodeOutput::Play { chunk, due } => {
                let bad = bad_bytes(&chunk);
                if bad > 0 {
                    self.metrics.corrupt_chunks += 1;
                    self.metrics.bad_bytes_played += bad;
                }
                let joined = node.joined;
                self.metrics
                    .played(&mut node.player, joined, now, chunk.seq.0, due.0 * 1000);
            }
            NodeOutput::Skipped(seq) => self.metrics.skipped(&mut node.player, now, seq.0),
        }
    }

    /// One data-channel message onto the sender's uplink, to arrive at the far end.
    fn send(&mut self, index: usize, link: LinkId, mut bytes: Vec<u8>) {
        let now = self.now;
        let node = self.nodes[index]
            .as_mut()
            .expect("callers check the node is live");
        let piece = PeerMessage::peek_piece(&bytes);
        if piece.is_some() && node.behaviour == Behaviour::Polluter {
            pollute(&mut bytes);
        }
        let len = bytes.len();
        self.metrics.message_bytes += len as u64;
        self.metrics.framing_bytes += framing(len) as u64;
        if let Some((_, _, payload)) = piece {
            self.metrics.payload_sent += payload as u64;
            if index == SOURCE {
                self.metrics.source_payload_sent += payload as u64;
            }
        }
        let Some(l) = node.links.get_mut(&link) else {
            return;
        };
        let Some((remote, remote_link)) = l.remote.filter(|_| l.open) else {
            return;
        };
        let arrives = node.uplink.transmit(
            now,
            &mut l.end,
            len,
            piece.is_some(),
            self.config.loss,
            &mut self.rng,
        );
        if !node.sent_since_report.contains(&link) {
            node.sent_since_report.push(link);
        }
        if piece.is_some() && !l.end.drain_pending {
            if let Some(at) = l.end.drained_at(DRAINED_BELOW) {
                l.end.drain_pending = true;
                self.events.push(at, Event::Drained { node: index, link });
            }
        }
        if let Some((seq, offset, payload)) = piece.filter(|_| remote != SOURCE) {
            self.count_received(remote, index, seq.0, offset, payload);
        }
        let input = NodeInput::LinkData(remote_link, Bytes::from(bytes));
        self.events.push(
            arrives,
            Event::Input {
                node: remote,
                input,
            },
        );
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
