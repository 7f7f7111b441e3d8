//! What comes back from an edge: the index steers, and the init segment, manifests and
//! chunk bytes are checked against the channel key exactly as a neighbour's before any of
//! it is kept.

use bytes::Bytes;
use protocol::{ChunkSeq, EdgeIndex, PeerMessage, PIECE_BYTES};

use super::{Listing, Part};
use crate::chunk_store::{piece_count, Held};
use crate::config::Trust;
use crate::content::SignedInit;
use crate::{Millis, Swarm};

impl Swarm {
    pub(super) fn on_body(
        &mut self,
        now: Millis,
        edge: usize,
        part: Part,
        first_piece: usize,
        body: Bytes,
    ) {
        match part {
            Part::Index => match EdgeIndex::parse(&body) {
                Ok(index) => self.on_edge_index(now, &index),
                Err(e) => {
                    self.fallback.index_missed();
                    self.edge_failed(now, edge, e.to_string())
                }
            },
            Part::Init => self.on_edge_init(now, edge, &body),
            Part::Manifest(seq) => {
                let manifest = match PeerMessage::decode(&body) {
                    Ok(PeerMessage::Manifest(manifest)) if manifest.seq == seq => manifest,
                    _ => {
                        let reason = format!("the body for chunk {seq}'s manifest is not it");
                        return self.edge_forged(now, edge, reason);
                    }
                };
                if let Err(reason) = self.keep_manifest(manifest) {
                    return self.edge_forged(now, edge, reason);
                }
                self.on_edge_manifest(now, seq);
            }
            Part::Chunk(seq) if self.store.manifests.contains_key(&seq) => {
                self.store_fetched(now, edge, seq, first_piece, body)
            }
            // Bounded: only chunks asked for land here, and only while wanted.
            Part::Chunk(seq) => {
                self.fallback.early.insert(seq, (edge, first_piece, body));
            }
        }
    }

    /// A signed manifest of this broadcast from an edge: its chunk was cut, so it counts
    /// toward the live edge; the listing's newest also places the live edge in time.
    fn on_edge_manifest(&mut self, now: Millis, seq: ChunkSeq) {
        self.newest_known = self.newest_known.max(Some(seq));
        if let Some(listing) = self.fallback.listing.filter(|l| l.newest == seq) {
            let age = listing.newest_age_ms + (now - listing.read_at);
            self.clock.observe_aged_edge(now, seq, age);
        }
        if let Some((edge, first_piece, body)) = self.fallback.early.remove(&seq) {
            self.store_fetched(now, edge, seq, first_piece, body);
        }
    }

    fn on_edge_index(&mut self, now: Millis, index: &EdgeIndex) {
        if index.session().ok() != Some(self.config.broadcast.session) {
            // Another broadcast: the signal server will say which is on.
            self.fallback.index_missed();
            return;
        }
        let newest = ChunkSeq(index.newest);
        // Not signed: believed only as far as what peers say allows, when they say anything.
        let ahead = self.config.window;
        if self
            .newest_known
            .is_some_and(|known| newest.0 > known.0.saturating_add(ahead))
        {
            self.fallback.index_missed();
            return;
        }
        self.fallback.index_misses = 0;
        self.fallback.holds_broadcast = true;
        let start = index
            .keyframes
            .iter()
            .rev()
            .find(|&&k| k <= index.newest && k.saturating_add(ahead) >= index.newest)
            .map(|&k| ChunkSeq(k));
        self.fallback.listing = Some(Listing {
            newest,
            start,
            newest_age_ms: index.newest_age_ms,
            read_at: now,
        });
    }

    fn on_edge_init(&mut self, now: Millis, edge: usize, body: &[u8]) {
        let Trust::Verifies(key) = &self.config.trust else {
            return;
        };
        let init = match PeerMessage::decode(body) {
            Ok(PeerMessage::Init {
                mime,
                data,
                signature,
            }) => SignedInit {
                mime,
                data,
                signature,
            },
            _ => {
                let reason = "the init body is not an init segment".to_owned();
                return self.edge_forged(now, edge, reason);
            }
        };
        if !init.signed_by(key, &self.config.broadcast) {
            let reason = "init segment not signed by the channel key".to_owned();
            return self.edge_forged(now, edge, reason);
        }
        self.learn_init(init);
    }

    /// Bytes of chunk `seq` from an edge, from piece `first_piece` on (the whole chunk if
    /// the edge ignored the range), its manifest here: kept only if every piece matches.
    pub(super) fn store_fetched(
        &mut self,
        now: Millis,
        edge: usize,
        seq: ChunkSeq,
        first_piece: usize,
        body: Bytes,
    ) {
        let Some(manifest) = self.store.manifests.get(&seq) else {
            return;
        };
        let (total, keyframe) = (manifest.total as usize, manifest.keyframe);
        // A cache may answer a range with the whole chunk.
        let first_piece = if body.len() == total { 0 } else { first_piece };
        let start = first_piece * PIECE_BYTES;
        let end = start + body.len();
        let forged =
            if body.is_empty() || end > total || (!end.is_multiple_of(PIECE_BYTES) && end != total)
            {
                Some(format!(
                    "{} bytes from byte {start} of chunk {seq} do not end a piece of its {total}",
                    body.len()
                ))
            } else {
                let pieces = (end - start).div_ceil(PIECE_BYTES);
                (0..pieces)
                    .find(|&j| {
                        let piece =
                            body.slice(j * PIECE_BYTES..((j + 1) * PIECE_BYTES).min(body.len()));
                        !self
                            .config
                            .checks
                            .piece_matches(manifest, first_piece + j, &piece)
                    })
                    .map(|j| {
                        let index = first_piece + j;
                        format!("piece {index} of {seq} does not match its signed hash")
                    })
            };
        if let Some(reason) = forged {
            self.stats.bytes_rejected += body.len() as u64;
            return self.edge_forged(now, edge, reason);
        }
        let pieces: Vec<(usize, Bytes)> = (0..body.len().div_ceil(PIECE_BYTES))
            .map(|j| {
                let piece = body.slice(j * PIECE_BYTES..((j + 1) * PIECE_BYTES).min(body.len()));
                (first_piece + j, piece)
            })
            .collect();
        let held = self
            .store
            .chunks
            .entry(seq)
            .or_insert_with(|| Held::new(keyframe, total));
        let block = self.config.block_pieces.max(1);
        let count = piece_count(total);
        let blocks = |held: &Held| -> Vec<bool> {
            (0..count)
                .step_by(block)
                .map(|first| {
                    held.first_missing(first..(first + block).min(count))
                        .is_none()
                })
                .collect()
        };
        let before = blocks(held);
        let mut fresh = 0;
        for (index, piece) in pieces {
            if held.piece(index).is_none() {
                fresh += piece.len() as u64;
                held.insert(index, piece);
            }
        }
        let after = blocks(held);
        self.stats.bytes_from_http += fresh;
        self.stats.bytes_duplicate += body.len() as u64 - fresh;
        // Blocks completed here are asked of neighbours no more, and are forwarded like
        // any verified block.
        for (b, (was, is)) in before.into_iter().zip(after).enumerate() {
            if was || !is {
                continue;
            }
            if let Some(download) = self.downloads.remove(&(seq, b)) {
                self.abandon(download);
            }
            if self.serves() {
                let first = b * block;
                self.announce(seq, first..(first + block).min(count), &[]);
            }
        }
        self.clock.observe_edge(now, seq, true);
        self.newest_known = self.newest_known.max(Some(seq));
        self.export_chunk(seq);
    }
}
