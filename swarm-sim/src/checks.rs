//! One memo of content checks, shared by every node of a simulation. Every viewer hashes
//! every piece it receives and checks every manifest's signature; in the simulator those
//! are the same few buffers and manifests again and again, since a forwarded piece is
//! its sender's buffer. The core's checks are pure, so a remembered answer is the
//! computed one: the nodes run exactly as they would computing each.
//!
//! A piece is known by its buffer: its address and length, with the memo holding a clone
//! so the memory cannot be freed and reused for other bytes while the entry lives
//! (`Bytes` never changes under a reader). A polluter's altered piece is a copy, so it is
//! hashed for itself. A manifest is known by its content, compared whole.

use std::collections::HashMap;
use std::mem;
use std::sync::Mutex;

use bytes::Bytes;
use protocol::{hash_piece, Broadcast, ChannelKey, ChunkManifest, PieceHash, ProtocolError};
use swarm::ContentChecks;

/// Entries per generation: when the newest fills, the older is dropped. A piece is
/// received within seconds of its cut; 1,024 pieces is a minute of a 2 Mbit/s stream.
/// Each entry keeps its whole chunk's buffer alive, so this also bounds that memory
/// (at most 2,048 pieces' chunks, about 32 MB at 2 Mbit/s). A polluter's copies take
/// entries too: honest ones are then computed again sooner, never answered wrongly.
const GENERATION_ENTRIES: usize = 1_024;

#[derive(Default)]
pub(crate) struct SharedChecks {
    memo: Mutex<Memo>,
}

impl ContentChecks for SharedChecks {
    fn piece_hash(&self, piece: &Bytes) -> PieceHash {
        let key = (piece.as_ptr() as usize, piece.len());
        let mut memo = self
            .memo
            .lock()
            .expect("no check panics while holding the memo");
        if let Some((_, hash)) = memo.pieces.get(&key) {
            return *hash;
        }
        let hash = hash_piece(piece);
        memo.pieces.insert(key, (piece.clone(), hash));
        hash
    }

    fn manifest_signed(
        &self,
        manifest: &ChunkManifest,
        key: &ChannelKey,
        broadcast: &Broadcast,
    ) -> Result<(), ProtocolError> {
        let signature = manifest.signature.to_bytes();
        let mut memo = self
            .memo
            .lock()
            .expect("no check panics while holding the memo");
        let signed =
            |entry: &Signed| entry.0 == *manifest && entry.1 == *key && entry.2 == *broadcast;
        if memo.manifests.get(&signature).is_some_and(signed) {
            return Ok(());
        }
        // Only what verified is remembered: a forgery is checked (and fails) every time.
        manifest.verify(key, broadcast)?;
        let entry = (manifest.clone(), *key, broadcast.clone());
        memo.manifests.insert(signature, entry);
        Ok(())
    }
}

/// A manifest that verified, with the key and broadcast it verified for.
type Signed = (ChunkManifest, ChannelKey, Broadcast);

#[derive(Default)]
struct Memo {
    pieces: Generations<(usize, usize), (Bytes, PieceHash)>,
    manifests: Generations<[u8; 64], Signed>,
}

/// A map bounded by dropping its older half at once, keeping what is still used.
struct Generations<K, V> {
    newest: HashMap<K, V>,
    older: HashMap<K, V>,
}

impl<K, V> Default for Generations<K, V> {
    fn default() -> Self {
        Generations {
            newest: HashMap::new(),
            older: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy, V> Generations<K, V> {
    /// The entry for `key`, moved to the newest generation if it was in the older.
    fn get(&mut self, key: &K) -> Option<&V> {
        if let Some(value) = self.older.remove(key) {
            self.insert(*key, value);
        }
        self.newest.get(key)
    }

    fn insert(&mut self, key: K, value: V) {
        if self.newest.len() >= GENERATION_ENTRIES {
            self.older = mem::take(&mut self.newest);
        }
        self.newest.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use protocol::{ChannelSigner, ChunkSeq, SessionId};

    use super::*;

    #[test]
    fn a_remembered_hash_is_the_computed_one_and_a_copy_is_hashed_for_itself() {
        let checks = SharedChecks::default();
        let piece = Bytes::from(vec![1u8; 1_000]);
        assert_eq!(checks.piece_hash(&piece), hash_piece(&piece));
        assert_eq!(
            checks.piece_hash(&piece.clone()),
            hash_piece(&piece),
            "remembered"
        );
        // A polluter's copy: same length, other bytes, other memory.
        let mut altered = piece.to_vec();
        altered[999] ^= 1;
        let altered = Bytes::from(altered);
        assert_eq!(checks.piece_hash(&altered), hash_piece(&altered));
        assert_ne!(checks.piece_hash(&altered), checks.piece_hash(&piece));
        // A slice of the same buffer is other bytes too.
        let tail = piece.slice(1..);
        assert_eq!(checks.piece_hash(&tail), hash_piece(&tail));
    }

    #[test]
    fn the_memo_stays_bounded_and_right_past_a_generation() {
        let checks = SharedChecks::default();
        let kept = Bytes::from(vec![9u8; 100]);
        checks.piece_hash(&kept);
        let pieces: Vec<Bytes> = (0..2 * GENERATION_ENTRIES + 10)
            .map(|i| Bytes::from((i as u32).to_le_bytes().to_vec()))
            .collect();
        for piece in &pieces {
            assert_eq!(checks.piece_hash(piece), hash_piece(piece));
        }
        let memo = checks.memo.lock().expect("not poisoned");
        let held = memo.pieces.newest.len() + memo.pieces.older.len();
        assert!(held <= 2 * GENERATION_ENTRIES, "{held} entries kept");
        drop(memo);
        assert_eq!(checks.piece_hash(&kept), hash_piece(&kept));
    }

    #[test]
    fn only_a_manifest_that_verified_for_this_key_and_broadcast_is_remembered() {
        let signer = ChannelSigner::from_seed(&[7; 32]);
        let key = signer.public();
        let broadcast = Broadcast {
            channel: "sim".parse().expect("a valid channel name"),
            session: SessionId(1),
        };
        let piece = [5u8; 300];
        let manifest = ChunkManifest::sign(&signer, &broadcast, ChunkSeq(3), true, [&piece[..]])
            .expect("one piece fits a manifest");
        let checks = SharedChecks::default();
        assert!(checks.manifest_signed(&manifest, &key, &broadcast).is_ok());
        assert!(checks.manifest_signed(&manifest, &key, &broadcast).is_ok());
        // The same signature over other hashes, for another broadcast, by another key.
        let mut forged = manifest.clone();
        forged.hashes[0][0] ^= 1;
        assert!(checks.manifest_signed(&forged, &key, &broadcast).is_err());
        let later = Broadcast {
            session: SessionId(2),
            ..broadcast.clone()
        };
        assert!(checks.manifest_signed(&manifest, &key, &later).is_err());
        let other = ChannelSigner::from_seed(&[8; 32]).public();
        assert!(checks
            .manifest_signed(&manifest, &other, &broadcast)
            .is_err());
        assert!(checks.manifest_signed(&manifest, &key, &broadcast).is_ok());
    }
}
