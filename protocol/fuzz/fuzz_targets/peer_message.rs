//! Binary peer messages as a data channel delivers them: must never panic, and whatever
//! decodes must encode back to the same bytes, of the length `encoded_len` predicts — but
//! for `Hello`, whose bytes after the fields this build knows are a newer peer's
//! additions, ignored (and whose flags byte an older peer leaves out): its fields are
//! then what arrived, and its encoding reads back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::PeerMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = PeerMessage::decode(data) {
        let encoded = message.encode();
        assert_eq!(message.encoded_len(), encoded.len());
        match message {
            PeerMessage::Hello { .. } => {
                assert_eq!(encoded[..11], data[..11]);
                assert_eq!(PeerMessage::decode(&encoded).as_ref(), Ok(&message));
            }
            _ => assert_eq!(encoded, data),
        }
    }
});
