//! What the swarm's integration tests share: the channel's key pair and swarm configs.

#![allow(dead_code)] // Each test file uses its own part.

use protocol::{ChannelKey, ChannelSigner};
use swarm::Config;

pub fn signer() -> ChannelSigner {
    ChannelSigner::from_seed(&[42; 32])
}

pub fn channel_key() -> ChannelKey {
    signer().public()
}

pub fn source_config() -> Config {
    Config::source(signer())
}

pub fn viewer_config() -> Config {
    Config::viewer(channel_key())
}

/// The bytes of test chunk `seq`: a pattern that differs per chunk and per byte.
pub fn chunk_bytes(seq: u64, total: usize) -> Vec<u8> {
    (0..total).map(|i| (i as u64 * 31 + seq) as u8).collect()
}

/// The channel key's manifest for test chunk `seq` of `total` bytes (keyframe).
pub fn manifest(seq: u64, total: usize) -> protocol::ChunkManifest {
    let data = chunk_bytes(seq, total);
    let pieces = data.chunks(protocol::PIECE_BYTES);
    protocol::ChunkManifest::sign(
        &signer(),
        &protocol::Broadcast::default(),
        protocol::ChunkSeq(seq),
        true,
        pieces,
    )
    .expect("test chunks are small enough to sign")
}

/// The channel key's init segment message (a test MIME type and 100 bytes).
pub fn init() -> protocol::PeerMessage {
    let (mime, data) = ("video/mp4".to_owned(), vec![1u8; 100]);
    let message = protocol::init_message(&protocol::Broadcast::default(), &mime, &data);
    let signature = signer().sign(&message);
    protocol::PeerMessage::Init {
        mime,
        data,
        signature,
    }
}
