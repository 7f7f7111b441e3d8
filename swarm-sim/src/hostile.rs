//! Hostile viewers: polluters, whose every piece served has a bit flipped, and request
//! flooders, which ask each neighbour for far more than an honest peer keeps outstanding.
//! Both otherwise run the real swarm like everyone else; they are left out of the
//! playback figures, which measure what honest viewers get.

use protocol::{ChunkSeq, Frame, PeerMessage, RequestId};
use rand::Rng;
use swarm::{LinkId, NodeInput};

use crate::network::Micros;
use crate::sim::{Event, Sim};

/// Requests a flooder sends each neighbour every [`FLOOD_EVERY_US`] (an honest peer keeps
/// at most 4 outstanding per neighbour).
const FLOOD_PER_TICK: usize = 32;
pub(crate) const FLOOD_EVERY_US: Micros = 250_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Honest,
    Polluter,
    Flooder,
}

impl Sim {
    /// What a joining viewer is, by the scenario's shares. Honest scenarios draw nothing,
    /// so their runs stay identical to those before hostile viewers existed.
    pub(crate) fn draw_behaviour(&mut self) -> Behaviour {
        let (polluters, flooders) = (self.config.polluters, self.config.flooders);
        if polluters + flooders == 0.0 {
            return Behaviour::Honest;
        }
        let draw: f64 = self.rng.gen();
        if draw < polluters {
            Behaviour::Polluter
        } else if draw < polluters + flooders {
            Behaviour::Flooder
        } else {
            Behaviour::Honest
        }
    }

    /// A flooder's tick: requests for blocks of the newest chunk to every neighbour.
    pub(crate) fn flood(&mut self, index: usize) {
        let Some(newest) = self.next_seq.checked_sub(1) else {
            return;
        };
        let pieces = self.config.chunk_bytes().div_ceil(protocol::PIECE_BYTES);
        let Some(node) = self.nodes[index].as_ref() else {
            return;
        };
        // Straight onto its open links, past its own core: the neighbours' cores decode
        // every request as from any peer.
        let links: Vec<(usize, LinkId, u64)> = node
            .links
            .values()
            .filter(|l| l.open)
            .filter_map(|l| l.remote.map(|(n, link)| (n, link, l.end.rtt_ms)))
            .collect();
        for (remote, link, rtt_ms) in links {
            for _ in 0..FLOOD_PER_TICK {
                let first = self.rng.gen_range(0..pieces) as u16;
                let request = PeerMessage::Request {
                    req: RequestId(self.rng.gen_range(0..u32::MAX - 1)),
                    seq: ChunkSeq(newest),
                    first,
                    count: 1,
                    deadline_ms: 1000,
                };
                let frame = request.frame();
                self.metrics.message_bytes += frame.len() as u64;
                let input = NodeInput::LinkData(link, frame);
                self.schedule(
                    self.now + rtt_ms * 500,
                    Event::Input {
                        node: remote,
                        input,
                    },
                );
            }
        }
    }
}

/// A polluter's piece: one bit of its data flipped (in a copy), otherwise well formed.
pub(crate) fn pollute(piece: Frame) -> Frame {
    piece.with_changed_data(|data| {
        if let Some(byte) = data.first_mut() {
            *byte ^= 0x01;
        }
    })
}
