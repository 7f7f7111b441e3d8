//! What authenticating content costs per chunk, for the two schemes the design weighed:
//! one signature per chunk (what StreamTorrent does) against one signed root over a batch
//! of chunk hashes. Run natively by `cargo run --release -p protocol --example
//! content_cost` and in Chromium by peer-wasm's browser tests, each with its own clock.

use sha2::{Digest, Sha256};

use crate::{hash_piece, ChannelSigner, ChunkManifest, ChunkSeq, PIECE_BYTES};

/// Microseconds per chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContentCost {
    pub chunk_bytes: usize,
    /// Hashing every piece (both schemes do this).
    pub hash_us: f64,
    /// Per chunk: hash its pieces and sign (broadcaster) / verify (viewer) its manifest.
    pub sign_per_chunk_us: f64,
    pub verify_per_chunk_us: f64,
    /// Per chunk, batch scheme: hash its pieces, hash the hashes, and a `batch`th of one
    /// signature over the batch's root.
    pub sign_batched_us: f64,
    pub verify_batched_us: f64,
    pub batch: usize,
}

/// Times both schemes over `rounds` chunks of `chunk_bytes`; `now` is a millisecond clock.
pub fn measure(
    mut now: impl FnMut() -> f64,
    chunk_bytes: usize,
    rounds: usize,
    batch: usize,
) -> ContentCost {
    let signer = ChannelSigner::from_seed(&[1; 32]);
    let key = signer.public();
    let data: Vec<u8> = (0..chunk_bytes).map(|i| (i * 7 % 251) as u8).collect();
    let pieces = || data.chunks(PIECE_BYTES);
    let per = |start: f64, end: f64| (end - start) * 1000.0 / rounds as f64;

    let start = now();
    for _ in 0..rounds {
        for piece in pieces() {
            std::hint::black_box(hash_piece(piece));
        }
    }
    let hash_us = per(start, now());

    let start = now();
    let mut manifest = None;
    for seq in 0..rounds {
        manifest = Some(
            ChunkManifest::sign(
                &signer,
                &crate::Broadcast::default(),
                ChunkSeq(seq as u64),
                true,
                pieces(),
            )
            .expect("a small chunk"),
        );
    }
    let sign_per_chunk_us = per(start, now());
    let manifest = manifest.expect("at least one round");

    let start = now();
    for _ in 0..rounds {
        manifest
            .verify(&key, &crate::Broadcast::default())
            .expect("signed just now");
        for (index, piece) in pieces().enumerate() {
            assert!(manifest.piece_matches(index, piece));
        }
    }
    let verify_per_chunk_us = per(start, now());

    // Batch scheme: a chunk's hash is the hash of its piece hashes; every `batch` chunks
    // the root (hash of those chunk hashes) is signed once.
    let chunk_hash = || {
        let mut h = Sha256::new();
        for piece in pieces() {
            h.update(hash_piece(piece));
        }
        <[u8; 32]>::from(h.finalize())
    };
    let start = now();
    let mut root = Sha256::new();
    let mut signature = None;
    for round in 0..rounds {
        root.update(chunk_hash());
        if (round + 1) % batch == 0 {
            let digest = std::mem::take(&mut root).finalize();
            signature = Some(signer.sign(&digest));
        }
    }
    let sign_batched_us = per(start, now());
    let digest = {
        let mut r = Sha256::new();
        for _ in 0..batch {
            r.update(chunk_hash());
        }
        r.finalize()
    };
    let signature = signature.unwrap_or_else(|| signer.sign(&digest));
    let start = now();
    for round in 0..rounds {
        std::hint::black_box(chunk_hash());
        if (round + 1) % batch == 0 {
            assert!(key.verify(&digest, &signature));
        }
    }
    let verify_batched_us = per(start, now());
    ContentCost {
        chunk_bytes,
        hash_us,
        sign_per_chunk_us,
        verify_per_chunk_us,
        sign_batched_us,
        verify_batched_us,
        batch,
    }
}
