//! The checks a viewer runs on content from the network per piece and per chunk: a piece
//! against its hash in the signed manifest, and a manifest against the channel key's
//! signature (the init segment's, once per broadcast, is computed where it is read).
//! Both are pure functions of their inputs, so a driver may hand the core a
//! [`ContentChecks`] that remembers what it computed. The simulator does: all its nodes
//! receive the very same piece buffers and manifests, and hashing and checking them in
//! every node took a sixth of its time (docs/benchmarks.md, "Simulator speed: shared
//! content checks"). Real drivers compute every check ([`Checks::default`]): each of
//! their pieces arrives in fresh memory, so a memo could only cost them.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use protocol::{hash_piece, Broadcast, ChannelKey, ChunkManifest, PieceHash, ProtocolError};

/// How content is checked. An implementation must answer exactly as computing would; it
/// may only save the work.
pub trait ContentChecks: Send + Sync {
    /// SHA-256 of `piece`.
    fn piece_hash(&self, piece: &Bytes) -> PieceHash;

    /// Whether `key` signed `manifest` for `broadcast` (the reason when not).
    fn manifest_signed(
        &self,
        manifest: &ChunkManifest,
        key: &ChannelKey,
        broadcast: &Broadcast,
    ) -> Result<(), ProtocolError>;
}

/// The checks a node's swarm runs; cheap to clone (shared).
#[derive(Clone)]
pub struct Checks(Arc<dyn ContentChecks>);

impl Checks {
    pub fn new(checks: impl ContentChecks + 'static) -> Checks {
        Checks(Arc::new(checks))
    }

    /// Whether `data` is piece `index` of the chunk `manifest` signs.
    pub(crate) fn piece_matches(
        &self,
        manifest: &ChunkManifest,
        index: usize,
        data: &Bytes,
    ) -> bool {
        manifest.hash_matches(index, &self.0.piece_hash(data))
    }

    pub(crate) fn manifest_signed(
        &self,
        manifest: &ChunkManifest,
        key: &ChannelKey,
        broadcast: &Broadcast,
    ) -> Result<(), ProtocolError> {
        self.0.manifest_signed(manifest, key, broadcast)
    }
}

impl Default for Checks {
    /// Computes every check.
    fn default() -> Checks {
        Checks::new(Compute)
    }
}

impl fmt::Debug for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Checks")
    }
}

/// Computes every check, every time.
struct Compute;

impl ContentChecks for Compute {
    fn piece_hash(&self, piece: &Bytes) -> PieceHash {
        hash_piece(piece)
    }

    fn manifest_signed(
        &self,
        manifest: &ChunkManifest,
        key: &ChannelKey,
        broadcast: &Broadcast,
    ) -> Result<(), ProtocolError> {
        manifest.verify(key, broadcast)
    }
}
