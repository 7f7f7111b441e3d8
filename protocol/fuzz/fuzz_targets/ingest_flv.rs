//! FLV files (a recording to ingest) read and remuxed: nothing may panic, whatever the
//! remuxer writes must cut, and reading in pieces must give the same tags as all at once.
#![no_main]

use ingest::{FlvReader, Remuxer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut whole = FlvReader::new();
    let at_once = whole.push(stream);
    let mut pieces = FlvReader::new();
    let mut tags = Vec::new();
    for piece in stream.chunks(usize::from(split) + 1) {
        match pieces.push(piece) {
            Ok(mut more) => tags.append(&mut more),
            Err(_) => return,
        }
    }
    if let Ok(expected) = &at_once {
        assert_eq!(&tags, expected, "read differently in pieces");
    }
    let mut remuxer = Remuxer::new();
    let mut cutter = fmp4::Cutter::new();
    for (kind, timestamp, payload) in tags {
        if remuxer.push(kind, timestamp, &payload).is_err() {
            return;
        }
        if let Err(e) = cutter.push(&remuxer.take_output()) {
            panic!("the remuxer wrote what the cutter refuses: {e}");
        }
    }
    remuxer.finish();
    if let Err(e) = cutter.push(&remuxer.take_output()) {
        panic!("the remuxer's last fragment is refused by the cutter: {e}");
    }
});
