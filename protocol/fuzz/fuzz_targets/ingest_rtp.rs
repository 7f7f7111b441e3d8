//! WebRTC input (WHIP): any sequence of H.264 and Opus RTP packets, with sequence numbers
//! and timestamps that jump, repeat and wrap. Nothing may panic, and whatever the remuxer
//! writes, the broadcaster's cutter must be able to cut.
#![no_main]

use ingest::{RtpIngest, RtpPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ingest = RtpIngest::new(Some(2));
    let mut cutter = fmp4::Cutter::new();
    let (mut sequence, mut timestamp, mut now) = (65_500u16, u32::MAX - 90_000, 0u64);
    let mut rest = data;
    // Each packet: flags (bit 0 video, bit 1 marker), a sequence step, a timestamp step,
    // a payload length, the payload.
    while let [flags, step, time_hi, time_lo, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        sequence = sequence.wrapping_add(u16::from(*step)).wrapping_sub(2);
        timestamp = timestamp.wrapping_add(u32::from(u16::from_be_bytes([*time_hi, *time_lo])) * 4);
        now += u64::from(*step);
        let packet = RtpPacket {
            sequence,
            timestamp,
            marker: flags & 2 != 0,
            payload,
        };
        let result = if flags & 1 != 0 {
            ingest.handle_video(now, packet)
        } else {
            ingest.handle_audio(now, packet)
        };
        if result.is_err() {
            return;
        }
        let _ = ingest.poll_keyframe_request(now);
        if let Err(e) = cutter.push(&ingest.take_output()) {
            panic!("the remuxer wrote what the cutter refuses: {e}");
        }
    }
    ingest.finish(now);
    if let Err(e) = cutter.push(&ingest.take_output()) {
        panic!("the remuxer's last fragment is refused by the cutter: {e}");
    }
});
