//! WebRTC input (WHIP) without I/O: RTP packets of one H.264 and one Opus track in,
//! fragmented MP4 out, and when to ask the sender for a keyframe (RTCP PLI): at the start,
//! after a loss, and each [`KEYFRAME_INTERVAL_MS`] so that chunks stay about that long
//! (a browser's encoder otherwise sends keyframes only when asked).

use crate::avc::AvcConfig;
use crate::remux::Remuxer;
use crate::reorder::{OwnedPacket, Reorder};
use crate::rtp_h264::{AccessUnit, H264Depacketizer};
use crate::IngestError;

/// How often a keyframe is asked for: the chunk length.
pub const KEYFRAME_INTERVAL_MS: u64 = 1000;
/// The least time between two requests while one is awaited.
const REQUEST_AGAIN_MS: u64 = 500;
const VIDEO_CLOCK: i64 = 90_000;
const AUDIO_CLOCK: i64 = 48_000;

/// An RTP packet as the WebRTC stack hands it over.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

pub struct RtpIngest {
    remuxer: Remuxer,
    video: H264Depacketizer,
    video_order: Reorder,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    video_clock: RtpClock,
    audio_clock: RtpClock,
    audio_last_sequence: Option<u16>,
    /// Frames are dropped until a keyframe (at the start, and after a loss).
    awaiting_keyframe: bool,
    last_keyframe_ms: Option<u64>,
    last_request_ms: Option<u64>,
}

impl RtpIngest {
    /// Input with an H.264 track and, with `opus_channels`, an Opus track.
    pub fn new(opus_channels: Option<u16>) -> RtpIngest {
        RtpIngest {
            remuxer: Remuxer::for_webrtc(opus_channels),
            video: H264Depacketizer::default(),
            video_order: Reorder::default(),
            sps: None,
            pps: None,
            video_clock: RtpClock::new(VIDEO_CLOCK),
            audio_clock: RtpClock::new(AUDIO_CLOCK),
            audio_last_sequence: None,
            awaiting_keyframe: true,
            last_keyframe_ms: None,
            last_request_ms: None,
        }
    }

    /// A video packet that arrived at `now_ms` (any clock in ms, the same for both tracks).
    pub fn handle_video(&mut self, now_ms: u64, packet: RtpPacket<'_>) -> Result<(), IngestError> {
        let in_order = self.video_order.push(OwnedPacket {
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload: packet.payload.to_vec(),
        });
        self.depacketize(now_ms, in_order)
    }

    fn depacketize(&mut self, now_ms: u64, packets: Vec<OwnedPacket>) -> Result<(), IngestError> {
        for p in packets {
            let units = self
                .video
                .push(p.sequence, p.timestamp, p.marker, &p.payload)?;
            for unit in units {
                self.access_unit(now_ms, unit)?;
            }
        }
        Ok(())
    }

    /// An audio (Opus) packet that arrived at `now_ms`.
    pub fn handle_audio(&mut self, now_ms: u64, packet: RtpPacket<'_>) -> Result<(), IngestError> {
        if let Some(last) = self.audio_last_sequence {
            if (packet.sequence.wrapping_sub(last) as i16) <= 0 {
                return Ok(()); // old or repeated
            }
        }
        self.audio_last_sequence = Some(packet.sequence);
        if packet.payload.is_empty() {
            return Ok(()); // padding only
        }
        let ms = self.audio_clock.ms(now_ms, packet.timestamp);
        self.remuxer.audio_frame(ms, packet.payload)
    }

    /// Whether to send the sender a keyframe request now. Call after each packet and now
    /// and then (a few times a second).
    pub fn poll_keyframe_request(&mut self, now_ms: u64) -> bool {
        let since = |at: Option<u64>| at.map_or(u64::MAX, |at| now_ms.saturating_sub(at));
        let due = if self.awaiting_keyframe {
            since(self.last_request_ms) >= REQUEST_AGAIN_MS
        } else {
            since(self.last_keyframe_ms) >= KEYFRAME_INTERVAL_MS
                && since(self.last_request_ms) >= KEYFRAME_INTERVAL_MS
        };
        if due {
            self.last_request_ms = Some(now_ms);
        }
        due
    }

    /// The fragmented MP4 produced so far (and not taken before).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.remuxer.take_output()
    }

    /// The stream ended at `now_ms`: what was held goes in, the last fragment goes out.
    pub fn finish(&mut self, now_ms: u64) {
        let held = self.video_order.flush();
        // Whatever is wrong with the tail is dropped with it: the stream is over.
        let _ = self.depacketize(now_ms, held);
        self.remuxer.finish();
    }

    fn access_unit(&mut self, now_ms: u64, unit: AccessUnit) -> Result<(), IngestError> {
        let ms = self.video_clock.ms(now_ms, unit.timestamp);
        if unit.broken {
            self.awaiting_keyframe = true;
            return Ok(());
        }
        let mut keyframe = false;
        let mut sample = Vec::new();
        for nal in &unit.nals {
            match nal[0] & 0x1f {
                5 => keyframe = true,
                7 => self.sps = Some(nal.clone()),
                8 => self.pps = Some(nal.clone()),
                9 => continue, // access unit delimiter: nothing MP4 needs
                _ => {}
            }
            sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            sample.extend_from_slice(nal);
        }
        if keyframe {
            if !self.remuxer.has_video() {
                let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
                    return Ok(()); // A keyframe without parameter sets cannot start.
                };
                self.remuxer
                    .set_video_if_unset(AvcConfig::from_parameter_sets(sps, pps)?);
            }
            self.awaiting_keyframe = false;
            self.last_keyframe_ms = Some(now_ms);
        }
        if self.awaiting_keyframe || sample.is_empty() {
            return Ok(());
        }
        self.remuxer.video_frame(ms, keyframe, 0, &sample)
    }
}

/// Maps a track's RTP timestamps to ms on the arrival clock: its first packet is stamped
/// with its arrival, later ones by their RTP distance from it (wrapping taken the short
/// way). Lip sync is as good as the two first packets' arrival (tens of ms); RTCP sender
/// reports would do better.
struct RtpClock {
    rate: i64,
    first: Option<(u64, u32)>,
    last: Option<(u32, i64)>,
}

impl RtpClock {
    fn new(rate: i64) -> RtpClock {
        RtpClock {
            rate,
            first: None,
            last: None,
        }
    }

    fn ms(&mut self, now_ms: u64, timestamp: u32) -> i64 {
        let (arrival, _) = *self.first.get_or_insert((now_ms, timestamp));
        let ticks = match self.last {
            Some((raw, ticks)) => {
                ticks.saturating_add(i64::from(timestamp.wrapping_sub(raw) as i32))
            }
            None => 0,
        };
        self.last = Some((timestamp, ticks));
        (arrival as i64).saturating_add(ticks.saturating_mul(1000) / self.rate)
    }
}
