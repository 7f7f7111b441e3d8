//! Receiving chunks: pieces into the store, pushes, refusals, and requests that stopped
//! moving.

use bytes::Bytes;
use protocol::{ChunkSeq, PeerId, RequestId, PIECE_BYTES};

use crate::chunk_store::{piece_count, piece_len, Held};
use crate::early::EarlyPiece;
use crate::hostile::DropCause;
use crate::peer::Download;
use crate::substreams::substream_of;
use crate::{Millis, Swarm};

/// How long a neighbour that refused a request is not asked again.
const BUSY_BACKOFF_MS: u64 = 300;

/// Downloads are keyed by chunk and block index.
pub(crate) type BlockKey = (ChunkSeq, usize);

impl Swarm {
    pub(crate) fn block_of(&self, piece: usize) -> usize {
        piece / self.config.block_pieces.max(1)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_piece(
        &mut self,
        now: Millis,
        peer: PeerId,
        req: RequestId,
        seq: ChunkSeq,
        offset: u32,
        total: u32,
        data: Bytes,
    ) {
        let (offset, total) = (offset as usize, total as usize);
        let index = offset / PIECE_BYTES;
        if offset % PIECE_BYTES != 0 || data.len() != piece_len(total, index) {
            let reason = format!(
                "piece of {seq} at {offset} with {} bytes is not piece-aligned in a {total}-byte chunk",
                data.len()
            );
            self.drop_peer(peer, DropCause::Violation, reason);
            return;
        }
        let key = (seq, self.block_of(index));
        let from_source = self.peers.get(&peer).is_some_and(|p| p.is_source);
        let requested = self
            .downloads
            .get(&key)
            .is_some_and(|d| d.from == peer && d.req == req);
        // Pushed unasked: by the source, or by a viewer we subscribed to (one we just left
        // may still be sending what it had begun; a piece not held is kept all the same).
        let pushed = req == RequestId::PUSH;
        if !(requested || pushed) {
            // A late piece of a cancelled or finished request.
            self.stats.bytes_duplicate += data.len() as u64;
            return;
        }
        // The manifest goes right before a chunk's first piece, but on the ordered
        // channel: a piece on the unordered one overtakes it when its packet is lost.
        let Some(manifest) = self.store.manifests.get(&seq) else {
            // Held only from those who may send unasked (the source, a parent for the
            // substream) or what we asked this neighbour for: anyone else pushing pieces
            // nobody vouched for breaks the protocol, as before.
            let substream = substream_of(self.parents.count(), seq, self.block_of(index));
            if pushed && !from_source && !self.parents.pushes(peer, substream) {
                let reason = format!("pushed a piece of {seq} nobody vouched for");
                self.drop_peer(peer, DropCause::Violation, reason);
                return;
            }
            self.stats.pieces_held_early += 1;
            self.stats.bytes_given_up_early += self.early.hold(EarlyPiece {
                peer,
                req,
                seq,
                offset: offset as u32,
                total: total as u32,
                data,
            });
            return;
        };
        if manifest.total as usize != total {
            let reason = format!(
                "piece of {seq} claims {total} bytes, its signed manifest says {}",
                manifest.total
            );
            self.drop_peer(peer, DropCause::Violation, reason);
            return;
        }
        let len = data.len() as u64;
        let held = self.store.chunks.get(&seq);
        if held.is_some_and(|h| h.piece(index).is_some()) {
            self.stats.bytes_duplicate += len;
            return;
        }
        // Checked before it is stored: nothing unverified is forwarded or played.
        if !self.config.checks.piece_matches(manifest, index, &data) {
            self.stats.bytes_rejected += len;
            let reason = format!("piece {index} of {seq} does not match its signed hash");
            self.drop_peer(peer, DropCause::Polluting, reason);
            return;
        }
        let keyframe = manifest.keyframe;
        let held = self
            .store
            .chunks
            .entry(seq)
            .or_insert_with(|| Held::new(keyframe, total));
        held.insert(index, data);
        let block = self.config.block_pieces.max(1);
        let block_start = index / block * block;
        let block_end = (block_start + block).min(held.piece_count());
        let block_done = held.first_missing(block_start..block_end).is_none();
        let block_started = (block_start..block_end)
            .filter(|&i| held.piece(i).is_some())
            .count()
            == 1;
        if held.is_complete() {
            self.export_chunk(seq);
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.bytes_down += len;
        }
        if from_source {
            self.stats.bytes_from_source += len;
        } else {
            self.stats.bytes_from_peers += len;
            if req == RequestId::PUSH {
                self.stats.bytes_pushed += len;
            }
        }
        let rest_coming = self.downloads.contains_key(&key);
        if self.serves() && block_started && (block_done || rest_coming) {
            // Children subscribed to the block's substream get it pushed, piece by piece
            // as it arrives here.
            let pushed_to = self.push_to_children(now, peer, seq, key.1);
            // Everyone else hears of it as its first piece arrives with the rest on its
            // way: it is forwarded a hop further piece by piece, while it still arrives.
            self.announce(seq, block_start..block_end, &pushed_to);
        } else if self.serves() && block_done {
            self.announce(seq, block_start..block_end, &[]);
        } else if block_done {
            self.tell_parent(seq, block_start..block_end);
        }
        let Some(download) = self.downloads.get_mut(&key) else {
            return;
        };
        if download.first_piece.is_none() {
            download.first_piece = Some((now, len as usize));
        }
        download.last_progress = now;
        let download = *download;
        let held = &self.store.chunks[&seq];
        if held.first_missing(download.first..download.end).is_some() {
            return;
        }
        self.downloads.remove(&key);
        if download.from != peer {
            // The source's push filled a block asked of someone else.
            self.abandon(download);
            return;
        }
        self.release_slot(peer, download.req);
        if let Some(state) = self.peers.get_mut(&peer) {
            state.strikes = 0;
            // Latency (request to first piece) and rate (the pieces after it) apart: with
            // small blocks a round trip would otherwise pass for a slow uplink.
            let (first_at, first_len) = download.first_piece.unwrap_or((now, 0));
            let latency = first_at - download.started;
            if download.req != RequestId::PUSH {
                self.stats.pull_first_piece_ms.record(latency);
                self.stats.pull_complete_ms.record(now - download.started);
            }
            state.latency_ms = Some(state.latency_ms.map_or(latency, |l| (3 * l + latency) / 4));
            let bytes: usize = (download.first..download.end)
                .map(|i| piece_len(total, i))
                .sum();
            let spread = now - first_at;
            if spread > 0 && bytes > first_len {
                let sample = (bytes - first_len) as u64 * 1000 / spread;
                state.rate = Some(state.rate.map_or(sample, |r| (3 * r + sample) / 4));
            }
        }
    }

    /// The source or a parent announced pieces it is pushing to us: every block of them not
    /// already on its way is expected from it, so nobody else is asked for them.
    pub(crate) fn expect_push(
        &mut self,
        now: Millis,
        source: PeerId,
        seq: ChunkSeq,
        pushed: std::ops::Range<usize>,
    ) {
        let Some(announced) = self.peers[&source].has.get(&seq).cloned() else {
            return;
        };
        let pieces = piece_count(announced.total).min(pushed.end);
        let block = self.config.block_pieces.max(1);
        let from_parent = !self.peers[&source].is_source;
        for first in (pushed.start..pieces).step_by(block) {
            let key = (seq, first / block);
            if let Some(asked) = self.downloads.get(&key).copied() {
                // A parent's push is under way, piece by piece: a request elsewhere that
                // has delivered nothing yet is dropped for it rather than doubled.
                let idle = asked.first_piece.is_none() && asked.req != RequestId::PUSH;
                if !(from_parent && idle) {
                    continue;
                }
                self.downloads.remove(&key);
                self.abandon(asked);
            }
            // Pieces travel on an unordered channel and may come before the announcement:
            // only what is still missing is expected (a download for a block already here
            // would time out and be held against the pusher).
            let end = (first + block).min(pieces);
            let Some(missing) = self.first_missing(seq, first..end) else {
                continue;
            };
            let download = Download::new(source, RequestId::PUSH, missing..end, now);
            self.downloads.insert(key, download);
        }
    }

    pub(crate) fn on_absent(&mut self, now: Millis, peer: PeerId, req: RequestId, seq: ChunkSeq) {
        let refused: Vec<BlockKey> = self
            .downloads
            .range((seq, 0)..=(seq, usize::MAX))
            .filter(|(_, d)| d.from == peer && d.req == req)
            .map(|(key, _)| *key)
            .collect();
        for key in refused {
            self.downloads.remove(&key);
            self.release_slot(peer, req);
            self.tried.entry(seq).or_default().push(peer);
        }
        // Refused: busy, most likely; ask others for a while.
        self.peer_mut(peer).busy_until = now + BUSY_BACKOFF_MS;
    }

    /// Requests that delivered nothing for a while are tried elsewhere; a neighbour that
    /// keeps timing out is dropped as dead or too slow.
    pub(crate) fn expire_requests(&mut self, now: Millis) {
        let timeout = self.config.request_timeout_ms;
        let expired: Vec<(BlockKey, Download)> = self
            .downloads
            .iter()
            .filter(|(_, d)| now - d.last_progress > timeout)
            .map(|(key, d)| (*key, *d))
            .collect();
        for ((seq, block), download) in expired {
            self.downloads.remove(&(seq, block));
            self.abandon(download);
            self.tried.entry(seq).or_default().push(download.from);
            let Some(state) = self.peers.get_mut(&download.from) else {
                continue;
            };
            state.strikes += 1;
            if state.strikes >= self.config.max_strikes {
                let reason = format!("{} requests in a row timed out", state.strikes);
                self.drop_peer(download.from, DropCause::Unresponsive, reason);
            }
        }
    }

    /// Tell neighbours that do not hold them yet (and are not in `except`: they were told
    /// with a push) that we can serve these pieces.
    pub(crate) fn announce(
        &mut self,
        seq: ChunkSeq,
        pieces: std::ops::Range<usize>,
        except: &[PeerId],
    ) {
        let Some(held) = self.store.chunks.get(&seq) else {
            return;
        };
        let have = held.have(seq, pieces.clone(), false);
        let to: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                !except.contains(id)
                    && p.has
                        .get(&seq)
                        .is_none_or(|a| !a.pieces.contains_all(pieces.clone()))
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in to {
            self.send(peer, have.clone());
        }
    }
}
