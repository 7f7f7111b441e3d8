//! Which pieces to fetch and from whom. A chunk is fetched as blocks of a few pieces, each
//! from the neighbour expected to deliver it soonest, so a chunk arrives at the combined
//! rate of several neighbours. Chunks near their deadline go first and may come from the
//! source; chunks further ahead go rarest first, from viewers only, so the source's upload
//! is spent where only it can help.

use std::ops::{Range, RangeInclusive};

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId};

use crate::chunk_store::piece_count;
use crate::download::BlockKey;
use crate::peer::{Download, PeerState};
use crate::piece_set::PieceSet;
use crate::substreams::substream_of;
use crate::{Millis, Swarm};

/// Added to the source's estimated delivery time: viewers are asked first when they are
/// about as fast.
const SOURCE_PENALTY_MS: u64 = 1_000;
/// Added for a neighbour that already failed this chunk.
const RETRY_PENALTY_MS: u64 = 5_000;
/// How much later than expected a pull from a viewer may be before it moves: well under
/// the second a piece lost at a link's tail waits for SCTP's retransmission, well over
/// what a viewer serving others beside us keeps us waiting (docs/benchmarks.md,
/// "Overdue pulls from any neighbour").
const VIEWER_OVERDUE_MARGIN_MS: u64 = 300;

/// SplitMix64's finaliser: a cheap, well-spread hash for tie-breaking.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A block to fetch: not urgent, how many hold it, chunk, first and end piece. Sorts
/// urgent first, then rarest.
type Wanted = (bool, usize, ChunkSeq, usize, usize);

fn holds(peer: &PeerState, seq: ChunkSeq, pieces: Range<usize>) -> bool {
    peer.has
        .get(&seq)
        .is_some_and(|a| a.pieces.contains_all(pieces))
}

impl Swarm {
    /// A full pass over the look-ahead window: on ticks, and when a download ended.
    pub(crate) fn schedule(&mut self, now: Millis) {
        let Some(window) = self.fetch_window() else {
            return;
        };
        self.move_overdue_pulls(now, window.clone());
        let block = self.config.block_pieces.max(1);
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut holders: Vec<&PieceSet> = Vec::new();
        for seq in window.map(ChunkSeq) {
            if self.store.is_complete(seq) {
                continue;
            }
            let Some(total) = self.chunk_total(seq) else {
                continue;
            };
            // Most rounds find every block of a chunk here or asked for: then nobody's
            // announcements need reading (that lookup was most of a large run's rounds).
            let pieces = piece_count(total);
            let mut blocks = (0..pieces).step_by(block);
            if !blocks.any(|first| self.block_needed(seq, first, pieces)) {
                continue;
            }
            // Who announced anything of this chunk, looked up once for all its blocks.
            holders.clear();
            holders.extend(
                self.peers
                    .values()
                    .filter_map(|p| Some(&p.has.get(&seq)?.pieces)),
            );
            if holders.is_empty() {
                continue;
            }
            for first in (0..piece_count(total)).step_by(block) {
                wanted.extend(self.wanted_block(now, seq, first, total, &holders));
            }
        }
        // Urgent first, by deadline; then rarest first.
        wanted.sort_unstable();
        self.request_each(now, wanted);
    }

    fn request_each(&mut self, now: Millis, wanted: Vec<Wanted>) {
        for (not_urgent, _, seq, first, end) in wanted {
            if let Some(peer) = self.best_holder(now, seq, first..end, !not_urgent) {
                self.request(now, peer, seq, first, end);
            }
        }
    }

    /// A neighbour announced `pieces` of `seq`: request them if wanted, and move overdue
    /// pulls of the chunk to the best other holder (it, maybe). Announcements are the most
    /// frequent message, so this looks at their blocks only.
    pub(crate) fn schedule_announced(&mut self, now: Millis, seq: ChunkSeq, pieces: Range<usize>) {
        if !self.fetch_window().is_some_and(|w| w.contains(&seq.0)) {
            return;
        }
        let Some(total) = self.chunk_total(seq) else {
            return;
        };
        let block = self.config.block_pieces.max(1);
        let first_block = pieces.start / block * block;
        let end = pieces.end.min(piece_count(total));
        self.move_overdue_pulls(now, seq.0..=seq.0);
        // Most announcements are of blocks already here or on their way.
        let mut blocks = (first_block..end).step_by(block);
        if !blocks.any(|first| self.block_needed(seq, first, end)) {
            return;
        }
        let wanted: Vec<Wanted> = {
            let holders: Vec<&PieceSet> = self
                .peers
                .values()
                .filter_map(|p| Some(&p.has.get(&seq)?.pieces))
                .collect();
            (first_block..end)
                .step_by(block)
                .filter_map(|first| self.wanted_block(now, seq, first, total, &holders))
                .collect()
        };
        self.request_each(now, wanted);
    }

    /// When a pull of `seq` counts as overdue: a round trip after its remaining pieces
    /// were expected at the latency and rate measured from the neighbour asked, and from
    /// a viewer `VIEWER_OVERDUE_MARGIN_MS` more (a viewer serves others beside us, in
    /// deadline order, so its pieces come less evenly). `None` for pushes.
    pub(crate) fn overdue_at(&self, seq: ChunkSeq, asked: &Download) -> Option<Millis> {
        let peer = self.peers.get(&asked.from)?;
        if asked.req == RequestId::PUSH {
            return None;
        }
        let missing = self.first_missing(seq, asked.first..asked.end)?;
        let bytes = ((asked.end - missing) * protocol::PIECE_BYTES) as u64;
        let moving = match asked.first_piece {
            Some(_) => asked.last_progress,
            None => asked.started + peer.latency(),
        };
        let margin = if peer.is_source {
            0
        } else {
            VIEWER_OVERDUE_MARGIN_MS
        };
        Some(moving + bytes * 1000 / peer.rate() + peer.latency() + margin)
    }

    /// Whether chunk `seq` is due within `urgent_ms`. The first chunk is urgent however
    /// far its planned start: playback cannot begin without it, and waiting for a viewer
    /// to hold it only delays the first frame.
    fn is_urgent(&self, now: Millis, seq: ChunkSeq) -> bool {
        let due = self.clock.expected(seq, self.config.target_buffer_ms, now);
        let first_to_play = !self.clock.started() && self.next_play == Some(seq);
        first_to_play || due.is_none_or(|due| due - now <= self.config.urgent_ms)
    }

    /// The first of `pieces` of chunk `seq` not here yet, if any.
    pub(crate) fn first_missing(&self, seq: ChunkSeq, pieces: Range<usize>) -> Option<usize> {
        match self.store.chunks.get(&seq) {
            Some(held) => held.first_missing(pieces),
            None => Some(pieces.start),
        }
    }

    /// Overdue pulls of chunks in `seqs` move to another viewer that holds what is
    /// missing, if one can take it. From the source, as soon as they are overdue: it is
    /// asked only for blocks no viewer held when they turned urgent; asked for repairs, it
    /// is the most loaded peer of all, and a viewer once missed a chunk waiting on it
    /// while two neighbours held the block (`native_e2e`'s polluter test). From a viewer,
    /// once the chunk is urgent too: a piece lost at the tail of what a link sends waits
    /// for SCTP's 1 s retransmission time-out, and a loaded viewer falls behind; moved at
    /// once, a pull paid in duplicates what it won (docs/benchmarks.md, "Overdue pulls
    /// from any neighbour"). Only overdue pulls: one on time is usually faster where it
    /// is (moving every pull from the source was no better in the simulator).
    pub(crate) fn move_overdue_pulls(&mut self, now: Millis, seqs: RangeInclusive<u64>) {
        if seqs.is_empty() {
            return; // The next to play is past the newest known (a range would panic).
        }
        let overdue: Vec<(BlockKey, Download)> = self
            .downloads
            .range((ChunkSeq(*seqs.start()), 0)..=(ChunkSeq(*seqs.end()), usize::MAX))
            .filter(|((seq, _), d)| self.overdue_at(*seq, d).is_some_and(|at| at <= now))
            .filter(|((seq, _), d)| {
                let from_source = self.peers.get(&d.from).is_some_and(|p| p.is_source);
                from_source || self.is_urgent(now, *seq)
            })
            .map(|(key, d)| (*key, *d))
            .collect();
        for ((seq, block), asked) in overdue {
            let Some(missing) = self.first_missing(seq, asked.first..asked.end) else {
                continue;
            };
            // Not urgent: viewers only, and another than the one that is late (tried: so
            // it is picked only if nobody else can take it, and then it is not moved).
            let tried = self.tried.entry(seq).or_default();
            if !tried.contains(&asked.from) {
                tried.push(asked.from);
            }
            let Some(viewer) = self
                .best_holder(now, seq, missing..asked.end, false)
                .filter(|&v| v != asked.from)
            else {
                continue;
            };
            self.downloads.remove(&(seq, block));
            self.abandon(asked);
            self.stats.pulls_moved += 1;
            self.request(now, viewer, seq, missing, asked.end);
        }
    }

    /// Chunks a viewer fetches: from the next to play, `lookahead` ahead, up to the newest.
    pub(crate) fn fetch_window(&self) -> Option<std::ops::RangeInclusive<u64>> {
        let (start, newest) = (self.next_play?, self.newest_known?);
        let end = newest.0.min(start.0.saturating_add(self.config.lookahead));
        Some(start.0..=end)
    }

    /// Whether the block starting at piece `first` (ending at `end` at the latest) is
    /// neither asked for nor all here.
    fn block_needed(&self, seq: ChunkSeq, first: usize, end: usize) -> bool {
        let block = self.config.block_pieces.max(1);
        let block_end = (first + block).min(end);
        !self.downloads.contains_key(&(seq, first / block))
            && self
                .store
                .chunks
                .get(&seq)
                .is_none_or(|h| h.first_missing(first..block_end).is_some())
    }

    /// The block starting at piece `first`, if some of it is still needed, nobody is asked
    /// for it yet, and one of `holders` (the neighbours' piece sets) holds it.
    fn wanted_block(
        &self,
        now: Millis,
        seq: ChunkSeq,
        first: usize,
        total: usize,
        holders: &[&PieceSet],
    ) -> Option<Wanted> {
        let block = self.config.block_pieces.max(1);
        if self.downloads.contains_key(&(seq, first / block)) {
            return None;
        }
        let block_end = (first + block).min(piece_count(total));
        let missing = self.first_missing(seq, first..block_end)?;
        let holding = holders
            .iter()
            .filter(|pieces| pieces.contains_all(missing..block_end))
            .count();
        if holding == 0 {
            return None;
        }
        let urgent = self.is_urgent(now, seq);
        let substream = substream_of(self.parents.count(), seq, first / block);
        if !urgent && self.parents.covered(substream) {
            // Its parent pushes it; pulled only if that has not begun once it is urgent.
            return None;
        }
        let rarity = if urgent { 0 } else { holding };
        Some((!urgent, rarity, seq, missing, block_end))
    }

    /// The size of a chunk: from holding part of it, or a neighbour's announcement.
    fn chunk_total(&self, seq: ChunkSeq) -> Option<usize> {
        if let Some(held) = self.store.chunks.get(&seq) {
            return Some(held.total);
        }
        self.peers
            .values()
            .find_map(|p| Some(p.has.get(&seq)?.total))
    }

    /// The neighbour expected to deliver `pieces` of `seq` soonest, given what is already
    /// asked of it.
    fn best_holder(
        &self,
        now: Millis,
        seq: ChunkSeq,
        pieces: Range<usize>,
        urgent: bool,
    ) -> Option<PeerId> {
        let size = (pieces.len() * protocol::PIECE_BYTES) as u64;
        let tried = self.tried.get(&seq).map(Vec::as_slice).unwrap_or_default();
        self.peers
            .iter()
            .filter(|(_, p)| holds(p, seq, pieces.clone()) && p.forwards() > 0)
            .filter(|(_, p)| p.inflight < self.config.max_requests_per_peer)
            .filter(|(_, p)| p.busy_until <= now)
            .filter(|(_, p)| urgent || !p.is_source)
            .min_by_key(|(id, p)| {
                let mut ms = p.latency() + (p.inflight as u64 + 1) * size * 1000 / p.rate();
                if p.is_source {
                    ms += SOURCE_PENALTY_MS;
                }
                if tried.contains(id) {
                    ms += RETRY_PENALTY_MS;
                }
                (ms, mix(self.config.seed ^ id.0.rotate_left(32) ^ seq.0))
            })
            .map(|(id, _)| *id)
    }

    fn request(&mut self, now: Millis, peer: PeerId, seq: ChunkSeq, first: usize, end: usize) {
        let req = self.new_request_id();
        let block = self.block_of(first);
        let state = self.peer_mut(peer);
        state.inflight += 1;
        let download = Download::new(peer, req, first..end, now);
        self.downloads.insert((seq, block), download);
        let first = u16::try_from(first).expect("chunk sizes cap piece indices below 65536");
        let count = u16::try_from(end - usize::from(first)).expect("a block is a few pieces");
        let play_by = self
            .clock
            .expected(seq, self.config.target_buffer_ms, now)
            .map_or(u64::from(u16::MAX), |due| {
                (due + self.config.skip_grace_ms) - now
            });
        let deadline_ms = u16::try_from(play_by).unwrap_or(u16::MAX);
        self.send(
            peer,
            PeerMessage::Request {
                req,
                seq,
                first,
                count,
                deadline_ms,
            },
        );
    }
}
