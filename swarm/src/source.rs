//! The broadcaster's side: pushing each fresh chunk to a few rotating viewers, so that
//! viewers fetch most copies from each other rather than from the source.

use protocol::PeerId;

use crate::chunk_store::Held;
use crate::substreams::substream_of;
use crate::{BytesPerSec, Chunk, Millis, Swarm};

/// The stream's rate is measured over this many recent chunks.
const RATE_OVER_CHUNKS: usize = 8;

impl Swarm {
    pub(crate) fn produce(&mut self, now: Millis, chunk: Chunk) {
        let (seq, keyframe) = (chunk.seq, chunk.keyframe);
        if chunk.data.is_empty() {
            return;
        }
        let Some(manifest) = self.sign_chunk(&chunk) else {
            return;
        };
        self.store.manifests.insert(seq, manifest);
        self.newest_known = self.newest_known.max(Some(seq));
        let held = Held::whole(keyframe, &chunk.data);
        let pieces = held.piece_count();
        self.store.chunks.insert(seq, held);
        // The fastest forwarders: a copy pushed to a viewer that uploads nothing reaches no
        // one else, one pushed to a fast uploader reaches many quickly.
        let mut candidates: Vec<(u64, PeerId)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.forwards() > 0 && !p.is_source)
            .map(|(id, p)| (p.forwards(), *id))
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        self.produced.push_back((now, chunk.data.len() as u64));
        if self.produced.len() > RATE_OVER_CHUNKS {
            self.produced.pop_front();
        }
        // Never two copies of a block to the same viewer.
        let fanout = self.push_fanout().min(candidates.len());
        let substreams = self.config.substreams;
        let pushes = match substreams {
            0 => pieces.div_ceil(self.config.block_pieces.max(1)) * fanout,
            // Each substream always to the same viewers: the roots its subscriptions
            // grow from.
            k => k * fanout,
        };
        let candidates: Vec<PeerId> = candidates
            .into_iter()
            .take(pushes.max(1))
            .map(|(_, id)| id)
            .collect();
        // Striped: each block goes to different viewers, so a fresh chunk has many first
        // holders, one or two per block, and no single viewer is everyone's only source.
        let block = self.config.block_pieces.max(1);
        if !candidates.is_empty() {
            for first in (0..pieces).step_by(block) {
                let end = (first + block).min(pieces);
                for copy in 0..fanout {
                    let peer = if substreams == 0 {
                        let peer = candidates[self.fanout_cursor % candidates.len()];
                        self.fanout_cursor = (self.fanout_cursor + 1) % candidates.len();
                        peer
                    } else {
                        let j = substream_of(substreams, seq, first / block);
                        candidates[(j * fanout + copy) % candidates.len()]
                    };
                    let deadline = now + self.config.target_buffer_ms;
                    self.queue_push(peer, seq, first..end, deadline);
                }
            }
        }
        self.unannounced.push_back((seq, now));
    }

    /// Copies of each block to push: `source_fanout`, or fewer when the upload budget could
    /// not carry them. Pushes are served before requests, so pushing more than the budget
    /// moves would queue every push behind the last and delay the whole stream; a third
    /// of the budget stays for requests (newcomers, repairs).
    fn push_fanout(&self) -> usize {
        let (Some(limit), Some(stream)) = (self.config.upload_limit, self.stream_rate()) else {
            return self.config.source_fanout;
        };
        let affordable = (limit.0 * 2 / 3) / stream.0.max(1);
        (affordable as usize).clamp(1, self.config.source_fanout.max(1))
    }

    /// The stream's rate, from the chunks produced recently (`None` until two are).
    fn stream_rate(&self) -> Option<BytesPerSec> {
        let (first, _) = self.produced.front()?;
        let (last, _) = self.produced.back()?;
        let span = *last - *first;
        if span == 0 {
            return None;
        }
        // The first chunk's bytes were made before `first`: count the ones after it.
        let bytes: u64 = self.produced.iter().skip(1).map(|(_, len)| len).sum();
        Some(BytesPerSec(bytes * 1000 / span))
    }

    /// Source: tell every other viewer about chunks old enough that the mesh had its chance.
    pub(crate) fn announce_due(&mut self, now: Millis) {
        while let Some((_, cut_at)) = self.unannounced.front() {
            if now - *cut_at < self.config.source_announce_delay_ms {
                break;
            }
            let (seq, _) = self
                .unannounced
                .pop_front()
                .expect("front was just looked at");
            let Some(held) = self.store.chunks.get(&seq) else {
                continue;
            };
            let have = held.have(seq, 0..held.piece_count(), false);
            // Pushed viewers got a block or two; they learn of the rest now too.
            let rest: Vec<PeerId> = self.peers.keys().copied().collect();
            for peer in rest {
                self.send(peer, have.clone());
            }
        }
    }
}
