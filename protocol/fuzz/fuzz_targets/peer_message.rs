//! Binary peer messages as a data channel delivers them: must never panic, and whatever
//! decodes must encode back to the same bytes, of the length `encoded_len` predicts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::PeerMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = PeerMessage::decode(data) {
        assert_eq!(message.encode(), data);
        assert_eq!(message.encoded_len(), data.len());
    }
});
