//! Which chunk to fetch next, from whom, and when to give up on a request.

use std::collections::BTreeMap;

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId};

use crate::chunk_store::Download;
use crate::{Millis, Swarm};

impl Swarm {
    pub(crate) fn expire_requests(&mut self, now: Millis) {
        let timeout = self.config.request_timeout_ms;
        let expired: Vec<(ChunkSeq, PeerId, RequestId)> = self
            .store
            .downloads
            .iter()
            .filter(|(_, d)| now - d.started > timeout)
            .map(|(seq, d)| (*seq, d.from, d.req))
            .collect();
        for (seq, peer, req) in expired {
            self.store.downloads.remove(&seq);
            self.release_slot(peer);
            self.send(peer, PeerMessage::Cancel { req });
        }
    }

    /// A joining viewer starts at a recent keyframe chunk, not at the oldest one held.
    pub(crate) fn choose_start(&mut self) {
        if self.next_play.is_some() || self.init.is_none() {
            return;
        }
        let mut keyframes: Vec<ChunkSeq> = self
            .peers
            .values()
            .flat_map(|p| p.has.iter().filter(|(_, kf)| **kf).map(|(seq, _)| *seq))
            .chain(
                self.store
                    .complete
                    .values()
                    .filter(|c| c.keyframe)
                    .map(|c| c.seq),
            )
            .collect();
        keyframes.sort_unstable();
        keyframes.dedup();
        let behind = self
            .config
            .start_keyframes_behind
            .min(keyframes.len().saturating_sub(1));
        self.next_play = keyframes.iter().rev().nth(behind).copied();
    }

    pub(crate) fn schedule(&mut self, now: Millis) {
        let (Some(start), Some(newest)) = (self.next_play, self.newest_known) else {
            return;
        };
        let end = newest.0.min(start.0 + self.config.lookahead);
        for seq in (start.0..=end).map(ChunkSeq) {
            if self.store.has(seq) || self.store.downloads.contains_key(&seq) {
                continue;
            }
            let tried = self.tried.get(&seq).map(Vec::as_slice).unwrap_or_default();
            let max = self.config.max_requests_per_peer;
            // Viewers first so the source's upload is spent on fresh chunks; then peers
            // not yet tried for this chunk; then the least busy.
            let best = self
                .peers
                .iter()
                .filter(|(_, p)| p.inflight < max && p.has.contains_key(&seq))
                .min_by_key(|(id, p)| (p.is_source, tried.contains(id), p.inflight))
                .map(|(id, p)| (*id, p.has[&seq]));
            let Some((peer, keyframe)) = best else {
                continue;
            };
            let req = RequestId(self.next_req);
            self.next_req = self.next_req.wrapping_add(1);
            self.peers
                .get_mut(&peer)
                .expect("peer was just chosen from the map")
                .inflight += 1;
            self.tried.entry(seq).or_default().push(peer);
            self.store.downloads.insert(
                seq,
                Download {
                    from: peer,
                    req,
                    started: now,
                    keyframe,
                    data: Vec::new(),
                    received: 0,
                    pieces: BTreeMap::new(),
                },
            );
            self.send(peer, PeerMessage::Request { req, seq });
        }
    }
}
