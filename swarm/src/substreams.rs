//! Push along substreams. Each chunk's blocks are striped over `Config::substreams`
//! substreams (block `b` of chunk `seq` is in substream `(seq + b) % count`). A viewer
//! subscribes to one parent per substream, and the parent forwards every block of it the
//! moment the block's first piece arrives there, unasked: a hop then costs a piece's time,
//! not an announcement and a request's round trip. Pull (`schedule.rs`) repairs what a
//! parent missed once the block turns urgent.
//!
//! A viewer's parents are chosen in `parents.rs`, by how soon each neighbour announces
//! the substream's blocks. A viewer that uploads nothing announces nothing and is never a
//! parent: it is a leaf. A parent admits children only while its upload budget carries
//! their substreams. The source pushes each substream's blocks to the same few
//! high-upload viewers, so each substream has stable roots.

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId};

use crate::config::SwarmRole;
use crate::{BytesPerSec, Millis, Swarm};

/// A parent commits at most this share of its upload budget to pushes; the rest serves
/// requests (newcomers, repairs).
const PUSH_SHARE_NUM: u64 = 2;
const PUSH_SHARE_DEN: u64 = 3;
/// A parent without an upload limit pushes at most this many streams' worth.
const UNLIMITED_PUSH_STREAMS: u64 = 4;

/// The substream of block `block` of chunk `seq`, with `count` substreams.
pub(crate) fn substream_of(count: usize, seq: ChunkSeq, block: usize) -> usize {
    let count = count.max(1);
    ((seq.0 % count as u64) as usize + block % count) % count
}

impl Swarm {
    /// A neighbour asks us to push it the substreams in `mask`: those already pushed stay,
    /// new ones are taken while the upload budget carries them.
    pub(crate) fn on_subscribe(&mut self, peer: PeerId, count: u8, mask: u16) {
        let takes_children = self.config.role() == SwarmRole::Viewer && self.serves();
        let accepted = match (takes_children, self.push_room(peer)) {
            (true, Some(mut room)) => {
                let kept = match self.peers[&peer].children {
                    Some((c, m)) if c == count => m & mask,
                    _ => 0,
                };
                let mut accepted = kept;
                let cost = 1.0 / f64::from(count);
                room -= f64::from(kept.count_ones()) * cost;
                for j in 0..count {
                    let bit = 1u16 << j;
                    if mask & bit != 0 && kept & bit == 0 && room >= cost - 1e-9 {
                        accepted |= bit;
                        room -= cost;
                    }
                }
                accepted
            }
            _ => 0,
        };
        self.peer_mut(peer).children = (accepted != 0).then_some((count, accepted));
        let answer = PeerMessage::Subscribed {
            count,
            mask: accepted,
        };
        self.send(peer, answer);
    }

    /// How many streams' worth of pushes this peer can still take on, leaving out what it
    /// pushes to `except`; `None` while the stream's rate is unknown.
    fn push_room(&self, except: PeerId) -> Option<f64> {
        let stream = self.viewer_stream_rate()?;
        let budget = match self.config.upload_limit {
            Some(limit) => {
                (limit.0 * PUSH_SHARE_NUM / PUSH_SHARE_DEN) as f64 / stream.0.max(1) as f64
            }
            None => UNLIMITED_PUSH_STREAMS as f64,
        };
        let committed: f64 = self
            .peers
            .iter()
            .filter(|(id, _)| **id != except)
            .filter_map(|(_, p)| p.children)
            .map(|(c, m)| f64::from(m.count_ones()) / f64::from(c.max(1)))
            .sum();
        Some(budget - committed)
    }

    /// The stream's rate as a viewer sees it: the signed sizes of recent chunks over the
    /// chunk duration.
    fn viewer_stream_rate(&self) -> Option<BytesPerSec> {
        let recent: Vec<u64> = self
            .store
            .manifests
            .values()
            .rev()
            .take(8)
            .map(|m| u64::from(m.total))
            .collect();
        if recent.is_empty() {
            return None;
        }
        let mean = recent.iter().sum::<u64>() / recent.len() as u64;
        Some(BytesPerSec(mean * 1000 / self.clock.chunk_ms().max(1)))
    }

    /// The first piece of block `block` of `seq` arrived here (from `from`): push the
    /// block to every child subscribed to its substream that does not hold it. Returns
    /// the children pushed to (they need no plain announcement of it).
    pub(crate) fn push_to_children(
        &mut self,
        now: Millis,
        from: PeerId,
        seq: ChunkSeq,
        block: usize,
    ) -> Vec<PeerId> {
        let Some(held) = self.store.chunks.get(&seq) else {
            return Vec::new();
        };
        let size = self.config.block_pieces.max(1);
        let first = block * size;
        let end = (first + size).min(held.piece_count());
        let deadline = self
            .clock
            .expected(seq, self.config.target_buffer_ms, now)
            .map_or(now + self.config.target_buffer_ms, |due| {
                due + self.config.skip_grace_ms
            });
        let children: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, _)| **id != from)
            .filter(|(_, p)| {
                p.children.is_some_and(|(count, mask)| {
                    mask & (1 << substream_of(usize::from(count), seq, block)) != 0
                })
            })
            .filter(|(_, p)| {
                p.has
                    .get(&seq)
                    .is_none_or(|a| !a.pieces.contains_all(first..end))
            })
            // Asked for it already: the request is served, a push would double it.
            .filter(|(_, p)| {
                !p.serving
                    .iter()
                    .any(|job| job.seq == seq && job.next < end && first < job.end)
            })
            .map(|(id, _)| *id)
            .collect();
        for &child in &children {
            self.queue_push(child, seq, first..end, deadline);
        }
        children
    }

    /// A child announced it holds pieces `first..end` of `seq`: pushes of those blocks
    /// not yet begun are dropped (one under way finishes: the child announced it because
    /// the rest was coming).
    pub(crate) fn drop_pushes_held(
        &mut self,
        peer: PeerId,
        seq: ChunkSeq,
        first: usize,
        end: usize,
    ) {
        let size = self.config.block_pieces.max(1);
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.children.is_none() {
            return;
        }
        state.serving.retain(|job| {
            let unstarted = job.next % size == 0;
            !(job.req == RequestId::PUSH
                && job.seq == seq
                && unstarted
                && first <= job.next
                && job.end <= end)
        });
    }
}
