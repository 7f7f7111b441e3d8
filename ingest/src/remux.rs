//! FLV payloads in, fragmented MP4 out: the init segment once the tracks are known, then a
//! fragment per keyframe (or per [`MAX_FRAGMENT_MS`] when keyframes are further apart, or
//! for audio alone).

use crate::aac::{AacConfig, FRAME_SAMPLES};
use crate::avc::AvcConfig;
use crate::flv::{audio_packet, video_packet, AudioPacket, MediaKind, VideoPacket};
use crate::mp4_writer::{
    fragment, init_segment, Sample, TrackRun, AUDIO_TRACK, VIDEO_TIMESCALE, VIDEO_TRACK,
};
use crate::opus::{packet_samples, OPUS_RATE};
use crate::IngestError;

/// The longest fragment: an encoder with keyframes further apart still gets fragments this
/// long (not starting on a keyframe), so chunks stay small enough to share in time.
pub const MAX_FRAGMENT_MS: i64 = 2000;
/// Samples held for one fragment: 2 s of 240 fps video, or an input that never cuts.
const MAX_PENDING_SAMPLES: usize = 1024;
/// Bytes held for one fragment: 2 s at 64 Mbit/s.
const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// One publisher's stream, remuxed. Feed it with [`Remuxer::push`]; take the fMP4 bytes
/// it produced with [`Remuxer::take_output`].
#[derive(Default)]
pub struct Remuxer {
    video: Option<AvcConfig>,
    audio: Option<AudioConfig>,
    /// Audio waits for video (time zero is its first keyframe) even before video's
    /// configuration is known.
    video_expected: bool,
    /// Whether the init segment is out (the tracks are fixed from then on).
    started: bool,
    clock: Clock,
    /// Time zero, in extended ms: the first keyframe (or, without video, the first audio).
    zero: Option<i64>,
    pending_video: Vec<(i64, Sample)>,
    pending_audio: Vec<(u64, Sample)>,
    pending_bytes: usize,
    next_audio: Option<u64>,
    last_video: Option<i64>,
    last_video_duration: u32,
    sequence: u32,
    out: Vec<u8>,
}

impl Remuxer {
    pub fn new() -> Remuxer {
        Remuxer::default()
    }

    /// A remuxer for WebRTC input: Opus audio known from the start, H.264 video whose
    /// parameter sets arrive in band (so they may change, and the track is `avc3`).
    pub(crate) fn for_webrtc(opus_channels: Option<u16>) -> Remuxer {
        Remuxer {
            audio: opus_channels.map(|channels| AudioConfig::Opus { channels }),
            video_expected: true,
            ..Remuxer::default()
        }
    }

    /// Sets the video configuration from in-band parameter sets, unless one is set.
    pub(crate) fn set_video_if_unset(&mut self, config: AvcConfig) {
        if self.video.is_none() && !self.started {
            self.video = Some(config);
        }
    }

    pub(crate) fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// One FLV audio or video payload with its timestamp (ms).
    pub fn push(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), IngestError> {
        let ms = self.clock.extend(timestamp);
        match kind {
            MediaKind::Video => match video_packet(payload)? {
                VideoPacket::Config(record) => {
                    let config = AvcConfig::parse(record)?;
                    replace_config(&mut self.video, config, self.started)
                }
                VideoPacket::Frame {
                    keyframe,
                    composition_ms,
                    data,
                } => self.video_frame(ms, keyframe, composition_ms, data),
                VideoPacket::Nothing => Ok(()),
            },
            MediaKind::Audio => match audio_packet(payload)? {
                AudioPacket::Config(config) => {
                    let config = AudioConfig::Aac(AacConfig::parse(config)?);
                    replace_config(&mut self.audio, config, self.started)
                }
                AudioPacket::Frame(data) => self.audio_frame(ms, data),
            },
        }
    }

    /// The stream ended: the last fragment goes out.
    pub fn finish(&mut self) {
        // A fragment of a video stream must have video (the cutter reads its keyframe flag).
        if self.video.is_none() || !self.pending_video.is_empty() {
            self.cut(i64::MAX);
        }
    }

    /// The fragmented MP4 produced so far (and not taken before).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.out
                .extend_from_slice(&init_segment(self.video.as_ref(), self.audio.as_ref()));
        }
    }

    /// One access unit of H.264 (length-prefixed NAL units) decoded at `ms`.
    pub(crate) fn video_frame(
        &mut self,
        ms: i64,
        keyframe: bool,
        composition_ms: i32,
        data: &[u8],
    ) -> Result<(), IngestError> {
        let Some(config) = &self.video else {
            return Ok(()); // No configuration yet: undecodable.
        };
        config.check_sample(data)?;
        if self.zero.is_none() {
            if !keyframe {
                return Ok(()); // Nothing before the first keyframe can be decoded.
            }
            self.zero = Some(ms);
            self.start();
        }
        // Decode times only go forward.
        let ms = match self.last_video {
            Some(last) if ms <= last => last.saturating_add(1),
            _ => ms,
        };
        let zero = self.zero.expect("set above");
        if ms < zero {
            return Ok(());
        }
        // The previous frame lasts until this one.
        if let Some((last_ms, last)) = self.pending_video.last_mut() {
            last.duration = to_video_units(ms.saturating_sub(*last_ms));
            self.last_video_duration = last.duration;
        }
        if let Some((first, _)) = self.pending_video.first() {
            if keyframe || ms.saturating_sub(*first) >= MAX_FRAGMENT_MS {
                self.cut(ms);
            }
        }
        self.last_video = Some(ms);
        self.hold(data.len())?;
        self.pending_video.push((
            ms,
            Sample {
                duration: self.last_video_duration,
                keyframe,
                composition: composition_ms.saturating_mul(90),
                data: data.to_vec(),
            },
        ));
        Ok(())
    }

    /// One AAC or Opus frame stamped `ms`.
    pub(crate) fn audio_frame(&mut self, ms: i64, data: &[u8]) -> Result<(), IngestError> {
        let Some(config) = &self.audio else {
            return Ok(());
        };
        if data.is_empty() {
            return Err(IngestError::Aac("empty audio frame".into()));
        }
        let duration = config.frame_samples(data)?;
        let rate = config.sample_rate();
        if self.zero.is_none() {
            if self.video.is_some() || self.video_expected {
                return Ok(()); // Audio starts with the first keyframe.
            }
            self.zero = Some(ms);
            self.start();
        }
        let since_zero = ms.saturating_sub(self.zero.expect("set above"));
        if since_zero < 0 {
            return Ok(());
        }
        if !self.started {
            return Ok(());
        }
        // Timestamps in ms jitter by up to a millisecond against the sample clock: follow the
        // sample count unless the stream skipped ahead by more than a frame (never back:
        // decode times only go forward).
        let stamped = ms_to_units(since_zero, rate);
        let decode = match self.next_audio {
            Some(next) if stamped <= next.saturating_add(u64::from(duration)) => next,
            _ => stamped,
        };
        self.next_audio = Some(decode.saturating_add(u64::from(duration)));
        // After a gap (a lost packet, a dropped frame) the sample before it lasts until this
        // one: a fragment's samples play back to back, so the gap must be in a duration.
        if let Some((last_decode, last)) = self.pending_audio.last_mut() {
            let gap = decode.saturating_sub(*last_decode);
            if gap > u64::from(last.duration) {
                last.duration = u32::try_from(gap).unwrap_or(u32::MAX);
            }
        }
        if self.video.is_none() {
            let first = self.pending_audio.first().map(|(t, _)| *t);
            if first
                .is_some_and(|f| decode.saturating_sub(f) >= ms_to_units(MAX_FRAGMENT_MS / 2, rate))
            {
                self.cut(i64::MAX);
            }
        }
        self.hold(data.len())?;
        self.pending_audio.push((
            decode,
            Sample {
                duration,
                keyframe: true,
                composition: 0,
                data: data.to_vec(),
            },
        ));
        Ok(())
    }

    fn hold(&mut self, bytes: usize) -> Result<(), IngestError> {
        self.pending_bytes += bytes;
        let samples = self.pending_video.len() + self.pending_audio.len();
        if self.pending_bytes > MAX_PENDING_BYTES {
            return Err(IngestError::TooLarge {
                what: "one fragment's media",
                size: self.pending_bytes,
                limit: MAX_PENDING_BYTES,
            });
        }
        if samples >= MAX_PENDING_SAMPLES {
            return Err(IngestError::Flv(format!(
                "{samples} frames without a cut: timestamps do not advance"
            )));
        }
        Ok(())
    }

    /// Writes a fragment of the video before `until_ms` (extended ms) and the audio that
    /// plays before it.
    fn cut(&mut self, until_ms: i64) {
        let video: Vec<(i64, Sample)> = std::mem::take(&mut self.pending_video);
        let zero = self.zero.unwrap_or(0);
        let audio_until = match &self.audio {
            Some(a) if until_ms != i64::MAX => {
                ms_to_units(until_ms.saturating_sub(zero), a.sample_rate())
            }
            _ => u64::MAX,
        };
        let split = self
            .pending_audio
            .partition_point(|(t, _)| *t < audio_until);
        let audio: Vec<(u64, Sample)> = self.pending_audio.drain(..split).collect();
        self.pending_bytes = self.pending_audio.iter().map(|(_, s)| s.data.len()).sum();
        if video.is_empty() && audio.is_empty() {
            return;
        }
        // 64-bit: a day-long stream passes u32::MAX at 90 kHz after 13 hours.
        let video_start = video
            .first()
            .map(|(t, _)| ms_to_units(t.saturating_sub(zero), VIDEO_TIMESCALE));
        let audio_start = audio.first().map(|(t, _)| *t);
        let video_samples: Vec<Sample> = video.into_iter().map(|(_, s)| s).collect();
        let audio_samples: Vec<Sample> = audio.into_iter().map(|(_, s)| s).collect();
        let mut runs = Vec::new();
        if let Some(decode_time) = video_start {
            runs.push(TrackRun {
                track: VIDEO_TRACK,
                decode_time,
                samples: &video_samples,
            });
        }
        if let Some(decode_time) = audio_start {
            runs.push(TrackRun {
                track: AUDIO_TRACK,
                decode_time,
                samples: &audio_samples,
            });
        }
        self.sequence += 1;
        self.out.extend_from_slice(&fragment(self.sequence, &runs));
    }
}

/// An audio track's codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AudioConfig {
    Aac(AacConfig),
    Opus { channels: u16 },
}

impl AudioConfig {
    pub fn sample_rate(&self) -> u32 {
        match self {
            AudioConfig::Aac(aac) => aac.sample_rate,
            AudioConfig::Opus { .. } => OPUS_RATE,
        }
    }

    /// Samples `frame` plays.
    fn frame_samples(&self, frame: &[u8]) -> Result<u32, IngestError> {
        match self {
            AudioConfig::Aac(_) => Ok(FRAME_SAMPLES as u32),
            AudioConfig::Opus { .. } => packet_samples(frame),
        }
    }
}

/// Takes a track's first configuration; the same again is a repeat (OBS resends it), a
/// different one after the stream started cannot be followed (it would need a new init
/// segment), and a track that was not there at the start cannot join.
fn replace_config<T: PartialEq>(
    slot: &mut Option<T>,
    config: T,
    started: bool,
) -> Result<(), IngestError> {
    match slot {
        Some(old) if *old == config => Ok(()),
        Some(_) if started => Err(IngestError::Unsupported(
            "the encoder changed its settings mid-stream; stop and publish again".into(),
        )),
        _ if started => Ok(()),
        _ => {
            *slot = Some(config);
            Ok(())
        }
    }
}

/// A sample duration in video units (saturating: a duration never nears it).
fn to_video_units(ms: i64) -> u32 {
    u32::try_from(ms_to_units(ms, VIDEO_TIMESCALE)).unwrap_or(u32::MAX)
}

/// Milliseconds (0 if negative) in units of `rate` per second, without overflow.
fn ms_to_units(ms: i64, rate: u32) -> u64 {
    let units = i128::from(ms.max(0)) * i128::from(rate) / 1000;
    u64::try_from(units).unwrap_or(u64::MAX)
}

/// FLV and RTMP timestamps are 32-bit milliseconds that wrap after 49.7 days; this extends
/// them to 64 bits, taking each step as the shortest way round.
#[derive(Default)]
struct Clock {
    last: Option<(u32, i64)>,
}

impl Clock {
    fn extend(&mut self, raw: u32) -> i64 {
        let extended = match self.last {
            Some((last_raw, last)) => {
                last.saturating_add(i64::from(raw.wrapping_sub(last_raw) as i32))
            }
            None => i64::from(raw),
        };
        self.last = Some((raw, extended));
        extended
    }
}
