//! Signature envelopes: channel keys, signatures and nonces as they arrive in signalling
//! JSON, and checking a claim or a chunk manifest with whatever they hold. Must never panic; whatever parses
//! must print back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{ChannelKey, ChannelName, KeySignature, Nonce, PeerMessage, MAX_MANIFEST_PIECES};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = text.parse::<ChannelKey>() {
            assert_eq!(key.to_string(), text.to_ascii_lowercase());
        }
        if let Ok(signature) = text.parse::<KeySignature>() {
            assert_eq!(signature.to_string(), text.to_ascii_lowercase());
        }
        if let Ok(nonce) = text.parse::<Nonce>() {
            assert_eq!(nonce.to_string(), text.to_ascii_lowercase());
        }
    }
    // Raw bytes as key, signature and nonce: verification refuses, never panics.
    if data.len() >= 128 {
        let key: [u8; 32] = data[..32].try_into().expect("32 bytes");
        let signature: [u8; 64] = data[32..96].try_into().expect("64 bytes");
        let nonce: [u8; 32] = data[96..128].try_into().expect("32 bytes");
        if let Ok(key) = ChannelKey::from_bytes(&key) {
            let channel: ChannelName = "fuzz".parse().expect("a valid name");
            let _ = key.verify_claim(&channel, &Nonce(nonce), &KeySignature::from_bytes(&signature));
            let _ = key.verify(&data[128..], &KeySignature::from_bytes(&signature));
            // A chunk manifest from the wire, checked against the key and its pieces.
            if let Ok(PeerMessage::Manifest(manifest)) = PeerMessage::decode(&data[128..]) {
                assert!(manifest.verify(&key, &protocol::Broadcast::default()).is_err() || manifest.hashes.len() <= MAX_MANIFEST_PIECES);
                for index in 0..manifest.hashes.len() + 1 {
                    let _ = manifest.piece_matches(index, &data[..index.min(data.len())]);
                }
            }
        }
    }
});
