//! An RTMP publisher's bytes (after a handshake, so the input reaches the chunk stream and
//! commands), any publish accepted, the media remuxed: nothing may panic, and whatever the
//! remuxer writes, the broadcaster's cutter must be able to cut.
#![no_main]

use ingest::{Remuxer, RtmpSession, SessionEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut session = RtmpSession::new("live");
    let mut handshake = vec![3u8];
    handshake.resize(1 + 2 * 1536, 0);
    if session.handle_input(&handshake).is_err() {
        panic!("a valid handshake was refused");
    }
    let mut remuxer = Remuxer::new();
    let mut cutter = fmp4::Cutter::new();
    for piece in data.chunks(97) {
        let result = session.handle_input(piece);
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Publish(_) => session.accept_publish(),
                SessionEvent::Media {
                    kind,
                    timestamp,
                    payload,
                } => {
                    if remuxer.push(kind, timestamp, &payload).is_err() {
                        return;
                    }
                    let out = remuxer.take_output();
                    if let Err(e) = cutter.push(&out) {
                        panic!("the remuxer wrote what the cutter refuses: {e}");
                    }
                }
                SessionEvent::Unpublished => {}
            }
        }
        let _ = session.take_output();
        if result.is_err() {
            return;
        }
    }
    remuxer.finish();
    if let Err(e) = cutter.push(&remuxer.take_output()) {
        panic!("the remuxer's last fragment is refused by the cutter: {e}");
    }
});
