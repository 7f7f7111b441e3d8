//! The simulated driver of one node: what a real driver does with the I/O — the
//! signalling socket, WebRTC links, data-channel sends with back-pressure, the timer —
//! done on the modelled network, feeding back what happened.

use std::collections::BTreeMap;
use std::sync::Arc;

use protocol::{ChannelSigner, Frame, PeerId};
use rand::Rng;
use signal_server::{Mailbox, Outbox};
use swarm::{BytesPerSec, LinkId, Millis, Node, NodeConfig, NodeInput, NodeOutput, SignalId};

use crate::hostile::{pollute, Behaviour};
use crate::metrics::Player;
use crate::network::{framing, LinkEnd, Loss, Micros, Sent, Uplink};
use crate::sim::{bad_bytes, Event, Sim, DRAINED_BELOW, SOURCE};

/// Signalled messages queued per peer at the server; drained at once by the simulator.
const MAILBOX_SLOTS: usize = 4096;

/// One end of a link, as the simulated driver keeps it.
#[derive(Debug)]
pub(crate) struct SimLink {
    /// The far end, once the answer paired them.
    pub(crate) remote: Option<(usize, LinkId)>,
    /// Our sending direction, with the messages waiting on it for a loss's recovery.
    pub(crate) end: LinkEnd<NodeInput>,
    pub(crate) open: bool,
    /// The SACKs this end sends for what it receives.
    pub(crate) acks: swarm::Acknowledgements,
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
    pub(crate) inbox: Outbox,
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

impl Sim {
    /// A peer core joins the simulation; it asks to connect to the server at once.
    pub(crate) fn add_node(
        &mut self,
        signer: Option<ChannelSigner>,
        upload_limit: Option<BytesPerSec>,
        capacity: f64,
        behaviour: Behaviour,
    ) -> usize {
        let index = self.nodes.len();
        // A player's latency preset is the viewer's; the broadcaster keeps its own.
        let target_buffer_ms = self.config.target_buffer_ms.filter(|_| signer.is_none());
        let config = NodeConfig {
            channel: self.server.channel().clone(),
            signer: signer.map(|s| Arc::new(s) as _),
            upload_limit,
            target_buffer_ms,
            substreams: self.config.substreams,
            seed: self.rng.gen(),
            relay_only: false,
            edge: false,
            checks: self.checks.clone(),
        };
        let (mailbox, inbox) = Mailbox::new(MAILBOX_SLOTS);
        let (min, max) = (self.config.rtt.min, self.config.rtt.max);
        let server_delay_us = self.rng.gen_range(min..=max) * 500;
        self.nodes.push(Some(SimNode {
            node: Node::new(Millis(self.now / 1000), config),
            uplink: match self.config.uplink_queue_ms {
                Some(ms) => {
                    Uplink::with_queue(capacity, ms * 1000, self.config.drop_recovery_ms * 1000)
                }
                None => Uplink::new(capacity),
            },
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
        // The receiving association's SCTP acknowledges what arrives, on this node's own
        // uplink (flooders' messages included).
        if let NodeInput::LinkData(link, frame) = &input {
            if let Some(l) = node.links.get_mut(link) {
                let acks = l.acks.on_received(frame.len());
                let queued = node.uplink.acknowledge(self.now, acks);
                self.metrics.framing_bytes += queued as u64;
            }
        }
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
            NodeOutput::Send { link, frame } => self.send(index, link, frame),
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
            // The simulator runs no edge, and its server names none.
            NodeOutput::Init { .. }
            | NodeOutput::Signed { .. }
            | NodeOutput::Fetch { .. }
            | NodeOutput::Event(_) => {}
            // The figures are what honest viewers get.
            NodeOutput::Play { .. } | NodeOutput::Skipped(_)
                if node.behaviour != Behaviour::Honest => {}
            NodeOutput::Play { chunk, due } => {
                let bad = bad_bytes(&chunk, self.cut.get(&chunk.seq.0));
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
    /// Carries a frame as it is: a piece's data stays the sender's buffer (one copy of
    /// each chunk for the whole simulation), and the receiver decodes the frame.
    fn send(&mut self, index: usize, link: LinkId, mut frame: Frame) {
        let now = self.now;
        let node = self.nodes[index]
            .as_mut()
            .expect("callers check the node is live");
        let piece = frame.peek_piece();
        if piece.is_some() && node.behaviour == Behaviour::Polluter {
            frame = pollute(frame);
        }
        let len = frame.len();
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
        let input = NodeInput::LinkData(remote_link, frame);
        let sent = node.uplink.transmit(
            now,
            &mut l.end,
            len,
            piece.is_some(),
            Loss {
                rate: self.config.loss,
                tail_recovery: self.config.tail_loss_recovery_ms * 1000,
                fast_retransmit: self.config.fast_retransmit,
            },
            &mut self.rng,
            input,
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
        let released = l.end.take_released();
        self.deliver(remote, released);
        match sent {
            Sent::Arrives(at, input) => self.deliver(remote, [(at, input)]),
            Sent::Waits(timeout) => {
                if let Some(at) = timeout {
                    self.metrics.tail_losses += 1;
                    self.events
                        .push(at, Event::LossTimeout { node: index, link });
                }
            }
            Sent::GivenUp => {
                // Given up by its channel: the receiver's request times out and asks again.
                self.metrics.pieces_given_up += 1;
                return;
            }
        }
        if let Some((seq, offset, payload)) = piece.filter(|_| remote != SOURCE) {
            self.count_received(remote, index, seq.0, offset, payload);
        }
    }

    /// A retransmission time-out on `link` of node `index` fires: what its lost packets
    /// held back arrives.
    pub(crate) fn loss_timeout(&mut self, index: usize, link: LinkId) {
        let now = self.now;
        let Some(l) = self.link_mut(index, link) else {
            return; // The link, and what waited on it, is gone.
        };
        let timed_out = l.end.expire(now) as u64;
        let released = l.end.take_released();
        let Some((remote, _)) = l.remote else {
            return;
        };
        self.metrics.tail_losses_timed_out += timed_out;
        self.deliver(remote, released);
    }

    /// Messages to node `remote` whose arrival is now known.
    fn deliver(&mut self, remote: usize, arrivals: impl IntoIterator<Item = (Micros, NodeInput)>) {
        for (at, input) in arrivals {
            debug_assert!(at >= self.now, "a message arrives at {at}, before now");
            self.events.push(
                at,
                Event::Input {
                    node: remote,
                    input,
                },
            );
        }
    }
}
