//! Signalling JSON as the server and clients receive it: must never panic, and whatever
//! parses must survive a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{ClientMessage, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = ClientMessage::from_json(text) {
        assert_eq!(ClientMessage::from_json(&message.to_json()), Ok(message));
    }
    if let Ok(message) = ServerMessage::from_json(text) {
        assert_eq!(ServerMessage::from_json(&message.to_json()), Ok(message));
    }
});
