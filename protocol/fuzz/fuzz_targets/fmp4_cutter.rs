//! The broadcaster's fMP4 cutter on arbitrary input (a file or a pipe is untrusted): must
//! never panic, and must cut the same way however the bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut whole = fmp4::Cutter::new();
    let at_once = whole.push(stream);
    let _ = whole.finish();
    // The same bytes in pieces of `split + 1` bytes.
    let mut pieces = fmp4::Cutter::new();
    let mut segments = Vec::new();
    let mut failed = false;
    for piece in stream.chunks(usize::from(split) + 1) {
        match pieces.push(piece) {
            Ok(mut more) => segments.append(&mut more),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if let (Ok(expected), false) = (at_once, failed) {
        assert_eq!(segments, expected, "cut differently when fed in pieces");
    }
});
