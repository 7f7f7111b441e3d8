//! Binary peer messages as a data channel delivers them: must never panic, and whatever
//! decodes must encode back to the same bytes, of the length `encoded_len` predicts — but
//! for `Hello`, whose bytes after the fields this build knows are a newer peer's
//! additions, ignored: its encoding is then a prefix of what arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::PeerMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = PeerMessage::decode(data) {
        let encoded = message.encode();
        assert_eq!(message.encoded_len(), encoded.len());
        match message {
            PeerMessage::Hello { .. } => assert!(data.starts_with(&encoded)),
            _ => assert_eq!(encoded, data),
        }
    }
});
