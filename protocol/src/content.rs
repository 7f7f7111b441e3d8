//! Signed content: the channel key authenticates the init segment and every chunk, so a
//! viewer checks each piece before it stores, forwards or plays it. A chunk's manifest
//! lists the SHA-256 of every piece and is signed once; a piece is then checked on its own
//! as it arrives, from whichever neighbour, without waiting for the rest of the chunk.

use sha2::{Digest, Sha256};

#[cfg(test)]
use crate::ChannelSigner;
use crate::{
    ChannelKey, ChannelName, ChunkSeq, ContentSigner, KeySignature, ProtocolError, SessionId,
    PIECE_BYTES,
};

/// Which broadcast content belongs to: every signature covers it, so content of another
/// channel or of an earlier broadcast of this one never verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub channel: ChannelName,
    pub session: SessionId,
}

impl Default for Broadcast {
    /// A fixed broadcast, for tests and the simulator, which play one broadcast only.
    fn default() -> Broadcast {
        Broadcast {
            channel: "unnamed".parse().expect("a valid channel name"),
            session: SessionId(0),
        }
    }
}

impl Broadcast {
    /// The channel and session, as every signed message starts after its context.
    fn write(&self, message: &mut Vec<u8>) {
        message.extend_from_slice(self.channel.as_str().as_bytes());
        message.push(b'\n');
        message.extend_from_slice(&self.session.0.to_be_bytes());
    }
}

/// SHA-256 of one piece.
pub type PieceHash = [u8; 32];

/// Bytes of a manifest on the wire besides its piece hashes: tag, seq, flags, total,
/// hash count, signature.
pub(crate) const MANIFEST_FIXED_BYTES: usize = 1 + 8 + 1 + 4 + 2 + 64;
/// Piece hashes one manifest holds: as many as fit a peer message. This bounds a chunk to
/// `MAX_MANIFEST_PIECES × PIECE_BYTES` (8.3 MB, 33 s at 2 Mbit/s).
pub const MAX_MANIFEST_PIECES: usize = (crate::MAX_PEER_MESSAGE_BYTES - MANIFEST_FIXED_BYTES) / 32;

pub fn hash_piece(piece: &[u8]) -> PieceHash {
    Sha256::digest(piece).into()
}

/// A chunk's signed list of piece hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkManifest {
    pub seq: ChunkSeq,
    pub keyframe: bool,
    /// The chunk's size in bytes.
    pub total: u32,
    /// One per piece of [`PIECE_BYTES`], in order.
    pub hashes: Vec<PieceHash>,
    pub signature: KeySignature,
}

impl ChunkManifest {
    /// Hashes and signs a chunk given as its pieces (each `PIECE_BYTES`, the last shorter).
    pub fn sign<'a>(
        signer: &dyn ContentSigner,
        broadcast: &Broadcast,
        seq: ChunkSeq,
        keyframe: bool,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<ChunkManifest, ProtocolError> {
        let mut total = 0usize;
        let mut hashes = Vec::new();
        for piece in pieces {
            total += piece.len();
            hashes.push(hash_piece(piece));
        }
        if hashes.len() > MAX_MANIFEST_PIECES || total.div_ceil(PIECE_BYTES) != hashes.len() {
            return Err(ProtocolError::Invalid {
                field: "chunk",
                reason: format!(
                    "a {total}-byte chunk in {} pieces cannot be signed: at most \
                     {MAX_MANIFEST_PIECES} pieces of {PIECE_BYTES} bytes (use shorter \
                     keyframe intervals or a lower bitrate)",
                    hashes.len()
                ),
            });
        }
        let total = u32::try_from(total).expect("at most MAX_MANIFEST_PIECES pieces");
        let message = manifest_message(broadcast, seq, keyframe, total, &hashes);
        Ok(ChunkManifest {
            seq,
            keyframe,
            total,
            hashes,
            signature: signer.sign(&message),
        })
    }

    /// Whether the channel key signed this manifest for `broadcast`.
    pub fn verify(&self, key: &ChannelKey, broadcast: &Broadcast) -> Result<(), ProtocolError> {
        let message =
            manifest_message(broadcast, self.seq, self.keyframe, self.total, &self.hashes);
        if key.verify(&message, &self.signature) {
            Ok(())
        } else {
            Err(ProtocolError::Invalid {
                field: "signature",
                reason: format!(
                    "the manifest of chunk {} is not signed by the channel key for {} {}",
                    self.seq, broadcast.channel, broadcast.session
                ),
            })
        }
    }

    /// Whether `data` is piece `index` of this chunk.
    pub fn piece_matches(&self, index: usize, data: &[u8]) -> bool {
        self.hash_matches(index, &hash_piece(data))
    }

    /// Whether `hash` is piece `index`'s: for a caller that hashed the piece its own way.
    pub fn hash_matches(&self, index: usize, hash: &PieceHash) -> bool {
        self.hashes.get(index) == Some(hash)
    }
}

/// What the channel key signs for a chunk: a fixed context, so the signature means nothing
/// anywhere else, the broadcast, then its number, keyframe flag, size and every piece's hash.
fn manifest_message(
    broadcast: &Broadcast,
    seq: ChunkSeq,
    keyframe: bool,
    total: u32,
    hashes: &[PieceHash],
) -> Vec<u8> {
    let mut message = b"streamtorrent chunk v2\n".to_vec();
    broadcast.write(&mut message);
    message.extend_from_slice(&seq.0.to_be_bytes());
    message.push(u8::from(keyframe));
    message.extend_from_slice(&total.to_be_bytes());
    for hash in hashes {
        message.extend_from_slice(hash);
    }
    message
}

/// What the channel key signs for the init segment (codec set-up, needed before any
/// chunk): the broadcast, its MSE type and bytes.
pub fn init_message(broadcast: &Broadcast, mime: &str, data: &[u8]) -> Vec<u8> {
    let mut message = b"streamtorrent init v2\n".to_vec();
    broadcast.write(&mut message);
    message.push(b'\n');
    message.extend_from_slice(mime.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(data);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ChannelSigner {
        ChannelSigner::from_seed(&[7; 32])
    }

    fn b() -> Broadcast {
        Broadcast {
            channel: "news".parse().unwrap(),
            session: SessionId(1),
        }
    }

    fn chunk(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_signed_manifest_verifies_and_checks_each_piece() {
        let data = chunk(2 * PIECE_BYTES + 10);
        let manifest =
            ChunkManifest::sign(&signer(), &b(), ChunkSeq(4), true, data.chunks(PIECE_BYTES))
                .unwrap();
        assert_eq!(manifest.total as usize, data.len());
        assert_eq!(manifest.hashes.len(), 3);
        manifest.verify(&signer().public(), &b()).unwrap();
        assert!(manifest.piece_matches(2, &data[2 * PIECE_BYTES..]));
        let mut bad = data[..PIECE_BYTES].to_vec();
        bad[100] ^= 1;
        assert!(!manifest.piece_matches(0, &bad));
        assert!(
            !manifest.piece_matches(3, &data[..10]),
            "past the last piece"
        );
    }

    #[test]
    fn any_change_to_a_manifest_or_another_key_fails_verification() {
        let data = chunk(PIECE_BYTES + 1);
        let good =
            ChunkManifest::sign(&signer(), &b(), ChunkSeq(4), true, data.chunks(PIECE_BYTES))
                .unwrap();
        let other_key = ChannelSigner::from_seed(&[8; 32]).public();
        assert!(good.verify(&other_key, &b()).is_err());
        let mut changes = vec![good.clone(); 4];
        changes[0].seq = ChunkSeq(5);
        changes[1].keyframe = false;
        changes[2].total -= 1;
        changes[3].hashes[1][0] ^= 1;
        for changed in changes {
            assert!(
                changed.verify(&signer().public(), &b()).is_err(),
                "{changed:?}"
            );
        }
    }

    #[test]
    fn content_of_another_broadcast_or_channel_never_verifies() {
        let data = chunk(PIECE_BYTES + 1);
        let manifest =
            ChunkManifest::sign(&signer(), &b(), ChunkSeq(4), true, data.chunks(PIECE_BYTES))
                .unwrap();
        let key = signer().public();
        let restarted = Broadcast {
            session: SessionId(2),
            ..b()
        };
        let elsewhere = Broadcast {
            channel: "sports".parse().unwrap(),
            ..b()
        };
        for other in [&restarted, &elsewhere] {
            assert!(manifest.verify(&key, other).is_err(), "{other:?}");
            let init = init_message(other, "video/mp4", b"init");
            assert_ne!(init, init_message(&b(), "video/mp4", b"init"));
        }
    }

    #[test]
    fn a_chunk_too_large_for_one_manifest_is_refused_with_the_limit() {
        let data = chunk((MAX_MANIFEST_PIECES + 1) * PIECE_BYTES);
        let err = ChunkManifest::sign(&signer(), &b(), ChunkSeq(0), true, data.chunks(PIECE_BYTES))
            .unwrap_err();
        assert!(err.to_string().contains("cannot be signed"), "{err}");
    }
}
