//! The broadcaster's side: announcing fresh chunks so that viewers fetch most copies from
//! each other rather than from the source.

use protocol::{PeerId, PeerMessage};

use crate::{Chunk, Millis, Swarm};

impl Swarm {
    pub(crate) fn produce(&mut self, now: Millis, chunk: Chunk) {
        let (seq, keyframe) = (chunk.seq, chunk.keyframe);
        self.newest_known = self.newest_known.max(Some(seq));
        self.store.complete.insert(seq, chunk);
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        if peers.is_empty() {
            return;
        }
        let fanout = self.config.source_fanout.min(peers.len());
        for i in 0..fanout {
            let peer = peers[(self.fanout_cursor + i) % peers.len()];
            self.send(peer, PeerMessage::Have { seq, keyframe });
        }
        self.fanout_cursor = (self.fanout_cursor + fanout) % peers.len();
        if fanout < peers.len() {
            self.unannounced.push_back((seq, keyframe, now));
        }
    }

    /// Source: tell every viewer about chunks old enough that the mesh had its chance.
    pub(crate) fn announce_due(&mut self, now: Millis) {
        while let Some(&(seq, keyframe, cut_at)) = self.unannounced.front() {
            if now - cut_at < self.config.source_announce_delay_ms {
                break;
            }
            self.unannounced.pop_front();
            // A peer that already had the Have just updates a map entry; simpler than
            // remembering which viewers were in the fan-out.
            for peer in self.peers.keys().copied().collect::<Vec<_>>() {
                self.send(peer, PeerMessage::Have { seq, keyframe });
            }
        }
    }
}
