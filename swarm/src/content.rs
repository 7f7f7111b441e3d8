//! Signed content in the swarm: the source signs each chunk's manifest and the init
//! segment; a viewer keeps only manifests and an init segment the channel key signed,
//! and checks every piece against its manifest before it is stored (so before it can be
//! forwarded or played). Every signature covers the broadcast (channel and session), so
//! content replayed from an earlier broadcast never verifies. Links join peers of one
//! broadcast only (the node compares sessions in `Hello`), so a neighbour that sends
//! anything signed wrongly or a piece that does not match is a polluter: dropped and
//! banned.

use protocol::{
    init_message, Broadcast, ChannelKey, ChunkManifest, ChunkSeq, KeySignature, PeerId, PeerMessage,
};

use crate::config::Trust;
use crate::early::EarlyPiece;
use crate::hostile::DropCause;
use crate::{Chunk, Millis, Output, Swarm};

/// Manifests kept, in windows of chunks: those of the window, and of chunks announced
/// ahead of the newest known one (up to a window), with room to spare.
const MANIFESTS_PER_WINDOW: usize = 3;

/// The stream's init segment with the channel key's signature.
#[derive(Debug, Clone)]
pub(crate) struct SignedInit {
    pub mime: String,
    pub data: Vec<u8>,
    pub signature: KeySignature,
}

/// Content with what the channel key signed, as an HTTP edge serves it: a viewer that
/// fetches it checks it exactly as content from a neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    Init {
        mime: String,
        data: Vec<u8>,
        signature: KeySignature,
    },
    /// A complete chunk, every piece of which matched its manifest.
    Chunk {
        manifest: ChunkManifest,
        chunk: Chunk,
    },
}

impl SignedInit {
    pub(crate) fn signed_by(&self, key: &ChannelKey, broadcast: &Broadcast) -> bool {
        key.verify(
            &init_message(broadcast, &self.mime, &self.data),
            &self.signature,
        )
    }

    fn message(&self) -> PeerMessage {
        PeerMessage::Init {
            mime: self.mime.clone(),
            data: self.data.clone(),
            signature: self.signature,
        }
    }
}

impl Swarm {
    /// Source: the signed manifest of a chunk it produced; `None` (and the chunk is not
    /// sent) if the chunk is too large for one manifest — drivers refuse such chunks first.
    pub(crate) fn sign_chunk(&self, chunk: &Chunk) -> Option<ChunkManifest> {
        let Trust::Signs(signer) = &self.config.trust else {
            return None;
        };
        let pieces = chunk.data.pieces().iter().map(|p| p.as_ref());
        ChunkManifest::sign(
            signer.as_ref(),
            &self.config.broadcast,
            chunk.seq,
            chunk.keyframe,
            pieces,
        )
        .ok()
    }

    /// Source: signs the init segment it produced and offers it to every neighbour.
    pub(crate) fn produce_init(&mut self, mime: String, data: Vec<u8>) {
        let Trust::Signs(signer) = &self.config.trust else {
            return;
        };
        let signature = signer.sign(&init_message(&self.config.broadcast, &mime, &data));
        self.learn_init(SignedInit {
            mime,
            data,
            signature,
        });
    }

    /// A neighbour's init segment: kept (and passed on) only if the channel key signed it.
    pub(crate) fn on_init(&mut self, peer: PeerId, init: SignedInit) {
        let Trust::Verifies(key) = &self.config.trust else {
            return;
        };
        if self.init.is_some() {
            return;
        }
        if !init.signed_by(key, &self.config.broadcast) {
            let reason = "init segment not signed by the channel key".to_owned();
            self.drop_peer(peer, DropCause::Polluting, reason);
            return;
        }
        self.learn_init(init);
    }

    pub(crate) fn learn_init(&mut self, init: SignedInit) {
        if self.init.is_some() {
            return;
        }
        for peer in self.peers.keys().copied().collect::<Vec<_>>() {
            self.send(peer, init.message());
        }
        if self.config.exports_signed {
            self.outputs.push_back(Output::Signed(Signed::Init {
                mime: init.mime.clone(),
                data: init.data.clone(),
                signature: init.signature,
            }));
        }
        self.init = Some(init);
    }

    /// Sends the init segment to a new neighbour, if this peer has it.
    pub(crate) fn offer_init(&mut self, peer: PeerId) {
        if let Some(init) = &self.init {
            let message = init.message();
            self.send(peer, message);
        }
    }

    /// A neighbour's chunk manifest: kept if the channel key signed it, so the chunk's
    /// pieces can be checked as they come; the neighbour is then known to hold it (no
    /// need to send it back).
    pub(crate) fn on_manifest(&mut self, now: Millis, peer: PeerId, manifest: ChunkManifest) {
        if !matches!(self.config.trust, Trust::Verifies(_)) {
            return;
        }
        let seq = manifest.seq;
        if self.evicted_below.is_some_and(|oldest| seq < oldest) {
            return; // Out of the window already: of no use.
        }
        if let Some(lie) = self.implausible_announcement(peer, seq) {
            self.drop_peer(peer, DropCause::Lying, lie);
            return;
        }
        if let Err(reason) = self.keep_manifest(manifest) {
            self.drop_peer(peer, DropCause::Polluting, reason);
            return;
        }
        let cap = self.manifests_cap();
        let known = &mut self.peer_mut(peer).manifests_known;
        known.insert(seq);
        while known.len() > cap {
            known.pop_first();
        }
        // Pieces that overtook it are taken now, as if they came after it; those from a
        // neighbour gone meanwhile are not.
        for piece in self.early.take(seq) {
            if self.peers.contains_key(&piece.peer) {
                let EarlyPiece {
                    peer,
                    req,
                    seq,
                    offset,
                    total,
                    data,
                } = piece;
                self.on_piece(now, peer, req, seq, offset, total, data);
            }
        }
    }

    /// Keeps a chunk's manifest if the channel key signed it (a neighbour's, or an
    /// edge's); the reason otherwise.
    pub(crate) fn keep_manifest(&mut self, manifest: ChunkManifest) -> Result<(), String> {
        let Trust::Verifies(key) = &self.config.trust else {
            return Ok(());
        };
        // Verified once per chunk: the same manifest again costs a comparison.
        let seq = manifest.seq;
        if self.store.manifests.get(&seq) != Some(&manifest) {
            self.config
                .checks
                .manifest_signed(&manifest, key, &self.config.broadcast)
                .map_err(|err| err.to_string())?;
            // Two valid manifests for one chunk mean the source re-signed it; the first
            // one stays, as pieces were already checked against it.
            self.store.manifests.entry(seq).or_insert(manifest);
        }
        // Bounded even before eviction starts (a newcomer has no live edge yet): genuine
        // but old manifests replayed by a neighbour push out the oldest.
        let cap = self.manifests_cap();
        while self.store.manifests.len() > cap {
            self.store.manifests.pop_first();
        }
        Ok(())
    }

    fn manifests_cap(&self) -> usize {
        MANIFESTS_PER_WINDOW * self.config.window.max(1) as usize
    }

    /// Whether a neighbour's announcement of chunk `seq` can be used: unless it
    /// contradicts the chunk's signed manifest (if here yet), when the neighbour is
    /// dropped. Announcements are taken before the manifest (it comes with the first
    /// piece fetched): they only steer requests, and every piece is checked.
    pub(crate) fn announcement_usable(
        &mut self,
        peer: PeerId,
        seq: ChunkSeq,
        keyframe: bool,
        total: u32,
    ) -> bool {
        let Some(manifest) = self.store.manifests.get(&seq) else {
            return true;
        };
        if manifest.total == total && manifest.keyframe == keyframe {
            return true;
        }
        let reason = format!(
            "announced chunk {seq} as {total} bytes (keyframe {keyframe}); its signed \
             manifest says {} (keyframe {})",
            manifest.total, manifest.keyframe
        );
        self.drop_peer(peer, DropCause::Violation, reason);
        false
    }

    /// With `Config::exports_signed`: hands over chunk `seq`, just completed, with its
    /// manifest.
    pub(crate) fn export_chunk(&mut self, seq: ChunkSeq) {
        if !self.config.exports_signed {
            return;
        }
        let manifest = self.store.manifests.get(&seq).cloned();
        if let Some((manifest, chunk)) = manifest.zip(self.store.complete(seq)) {
            let content = Signed::Chunk { manifest, chunk };
            self.outputs.push_back(Output::Signed(content));
        }
    }

    /// Before the first piece of chunk `seq` goes to `peer`, the neighbour gets the chunk's
    /// manifest (once per neighbour), so it can check each piece as it arrives. Sent with
    /// pieces rather than announcements: a viewer fetches a chunk from a few neighbours
    /// but hears it announced by all of them (sending it with every announcement cost
    /// 2.7% overhead instead of 0.9% and delayed newcomers' buffer maps behind a window of
    /// manifests; measured in the simulator).
    pub(crate) fn send_manifest(&mut self, peer: PeerId, seq: ChunkSeq) {
        let Some(manifest) = self.store.manifests.get(&seq) else {
            return;
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.manifests_known.insert(seq) {
            let message = PeerMessage::Manifest(manifest.clone());
            state.buffered += message.encoded_len() as u64;
            self.send(peer, message);
        }
    }
}
