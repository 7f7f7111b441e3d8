//! Writes fragmented MP4: the init segment (`ftyp` + `moov` with an `avc1` and/or `mp4a`
//! track) and fragments (`moof` + `mdat`), each track's samples with explicit durations,
//! sizes, flags and (video) composition offsets.

use crate::aac::AacConfig;
use crate::avc::AvcConfig;
use crate::opus::{OPUS_RATE, PRE_SKIP};
use crate::remux::AudioConfig;

pub(crate) const VIDEO_TRACK: u32 = 1;
pub(crate) const AUDIO_TRACK: u32 = 2;
/// Video timescale: 90 kHz, the convention; FLV's milliseconds convert exactly.
pub(crate) const VIDEO_TIMESCALE: u32 = 90_000;

const SYNC_SAMPLE: u32 = 0x0200_0000; // depends on no other sample
const NON_SYNC_SAMPLE: u32 = 0x0101_0000; // depends on others, not a sync sample

pub(crate) struct Sample {
    pub duration: u32,
    pub keyframe: bool,
    /// Presentation minus decode time, in the track's timescale.
    pub composition: i32,
    pub data: Vec<u8>,
}

pub(crate) struct TrackRun<'a> {
    pub track: u32,
    pub decode_time: u64,
    pub samples: &'a [Sample],
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

pub(crate) fn init_segment(video: Option<&AvcConfig>, audio: Option<&AudioConfig>) -> Vec<u8> {
    let mut out = Vec::new();
    bx(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        o.extend_from_slice(&0x200u32.to_be_bytes());
        for brand in [b"isom", b"iso6", b"avc1", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    bx(&mut out, b"moov", |o| {
        full(o, b"mvhd", 0, 0, |o| {
            put32(o, &[0, 0, 1000, 0, 0x0001_0000]);
            o.extend_from_slice(&0x0100u16.to_be_bytes());
            o.extend_from_slice(&[0; 10]);
            put32(o, &MATRIX);
            o.extend_from_slice(&[0; 24]);
            put32(o, &[AUDIO_TRACK + 1]);
        });
        if let Some(v) = video {
            trak(
                o,
                VIDEO_TRACK,
                VIDEO_TIMESCALE,
                (v.width, v.height),
                |o| {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                },
                |o| avc1(o, v),
            );
        }
        if let Some(a) = audio {
            trak(
                o,
                AUDIO_TRACK,
                a.sample_rate(),
                (0, 0),
                |o| {
                    full(o, b"smhd", 0, 0, |o| o.extend_from_slice(&[0; 4]));
                },
                |o| match a {
                    AudioConfig::Aac(aac) => mp4a(o, aac),
                    AudioConfig::Opus { channels } => opus(o, *channels),
                },
            );
        }
        bx(o, b"mvex", |o| {
            for (track, present) in [
                (VIDEO_TRACK, video.is_some()),
                (AUDIO_TRACK, audio.is_some()),
            ] {
                if present {
                    full(o, b"trex", 0, 0, |o| put32(o, &[track, 1, 0, 0, 0]));
                }
            }
        });
    });
    out
}

/// One `moof` + `mdat`, the tracks' samples in `runs` order.
pub(crate) fn fragment(sequence: u32, runs: &[TrackRun<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset_fields = Vec::new();
    bx(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| put32(o, &[sequence]));
        for run in runs {
            bx(o, b"traf", |o| {
                // default-base-is-moof: data offsets count from the moof's first byte.
                full(o, b"tfhd", 0, 0x02_0000, |o| put32(o, &[run.track]));
                full(o, b"tfdt", 1, 0, |o| {
                    o.extend_from_slice(&run.decode_time.to_be_bytes())
                });
                // data offset, then per sample: duration, size, flags, composition offset.
                full(o, b"trun", 1, 0x0f01, |o| {
                    put32(o, &[run.samples.len() as u32]);
                    offset_fields.push(o.len());
                    put32(o, &[0]);
                    for s in run.samples {
                        let flags = if s.keyframe {
                            SYNC_SAMPLE
                        } else {
                            NON_SYNC_SAMPLE
                        };
                        put32(
                            o,
                            &[s.duration, s.data.len() as u32, flags, s.composition as u32],
                        );
                    }
                });
            });
        }
    });
    let mut data_at = out.len() + 8;
    for (field, run) in offset_fields.into_iter().zip(runs) {
        out[field..field + 4].copy_from_slice(&(data_at as u32).to_be_bytes());
        data_at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    bx(&mut out, b"mdat", |o| {
        for run in runs {
            for s in run.samples {
                o.extend_from_slice(&s.data);
            }
        }
    });
    out
}

fn trak(
    o: &mut Vec<u8>,
    track: u32,
    timescale: u32,
    (width, height): (u32, u32),
    media_header: impl FnOnce(&mut Vec<u8>),
    sample_entry: impl FnOnce(&mut Vec<u8>),
) {
    let video = track == VIDEO_TRACK;
    bx(o, b"trak", |o| {
        // enabled, in movie
        full(o, b"tkhd", 0, 3, |o| {
            put32(o, &[0, 0, track, 0, 0, 0, 0]);
            o.extend_from_slice(&[0, 0, 0, 0]); // layer, alternate group
            let volume: u16 = if video { 0 } else { 0x0100 };
            o.extend_from_slice(&volume.to_be_bytes());
            o.extend_from_slice(&[0, 0]);
            put32(o, &MATRIX);
            put32(o, &[width << 16, height << 16]);
        });
        bx(o, b"mdia", |o| {
            full(o, b"mdhd", 0, 0, |o| {
                put32(o, &[0, 0, timescale, 0]);
                o.extend_from_slice(&[0x55, 0xc4, 0, 0]); // language "und"
            });
            full(o, b"hdlr", 0, 0, |o| {
                put32(o, &[0]);
                o.extend_from_slice(if video { b"vide" } else { b"soun" });
                put32(o, &[0, 0, 0]);
                o.extend_from_slice(if video {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            bx(o, b"minf", |o| {
                media_header(o);
                bx(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        put32(o, &[1]);
                        full(o, b"url ", 0, 1, |_| {}); // media in this file
                    });
                });
                bx(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        put32(o, &[1]);
                        sample_entry(o);
                    });
                    for kind in [b"stts", b"stsc", b"stco"] {
                        full(o, kind, 0, 0, |o| put32(o, &[0]));
                    }
                    full(o, b"stsz", 0, 0, |o| put32(o, &[0, 0]));
                });
            });
        });
    });
}

/// `avc1`, or `avc3` when parameter sets also come in band (they may change mid-stream).
fn avc1(o: &mut Vec<u8>, v: &AvcConfig) {
    bx(o, if v.in_band { b"avc3" } else { b"avc1" }, |o| {
        o.extend_from_slice(&[0; 6]);
        o.extend_from_slice(&1u16.to_be_bytes()); // data reference index
        o.extend_from_slice(&[0; 16]);
        o.extend_from_slice(&(v.width as u16).to_be_bytes());
        o.extend_from_slice(&(v.height as u16).to_be_bytes());
        put32(o, &[0x0048_0000, 0x0048_0000, 0]); // 72 dpi
        o.extend_from_slice(&1u16.to_be_bytes()); // frame count
        o.extend_from_slice(&[0; 32]); // compressor name
        o.extend_from_slice(&[0x00, 0x18, 0xff, 0xff]); // depth 24, pre-defined -1
        bx(o, b"avcC", |o| o.extend_from_slice(&v.record));
    });
}

/// The fields every audio sample entry starts with.
fn audio_entry_start(o: &mut Vec<u8>, channels: u16, sample_rate: u32) {
    o.extend_from_slice(&[0; 6]);
    o.extend_from_slice(&1u16.to_be_bytes());
    o.extend_from_slice(&[0; 8]);
    o.extend_from_slice(&channels.to_be_bytes());
    o.extend_from_slice(&16u16.to_be_bytes()); // sample size
    o.extend_from_slice(&[0; 4]);
    // 16.16 fixed point; rates above 65535 Hz do not fit, and the timescale carries it.
    put32(o, &[(sample_rate.min(65535)) << 16]);
}

/// Opus in ISO BMFF ("Encapsulation of Opus in ISO Base Media File Format"): `Opus` with
/// its `dOps` box.
fn opus(o: &mut Vec<u8>, channels: u16) {
    bx(o, b"Opus", |o| {
        audio_entry_start(o, channels, OPUS_RATE);
        bx(o, b"dOps", |o| {
            o.push(0); // version
            o.push(channels as u8);
            o.extend_from_slice(&PRE_SKIP.to_be_bytes());
            o.extend_from_slice(&OPUS_RATE.to_be_bytes()); // input sample rate
            o.extend_from_slice(&[0, 0, 0]); // output gain, channel mapping family 0
        });
    });
}

fn mp4a(o: &mut Vec<u8>, a: &AacConfig) {
    bx(o, b"mp4a", |o| {
        audio_entry_start(o, a.channels, a.sample_rate);
        full(o, b"esds", 0, 0, |o| {
            let mut decoder_specific = Vec::new();
            descriptor(&mut decoder_specific, 0x05, &a.config);
            let mut decoder_config = vec![0x40, 0x15, 0, 0, 0];
            decoder_config.extend_from_slice(&[0; 8]); // max and average bitrate: unknown
            decoder_config.extend_from_slice(&decoder_specific);
            let mut es = vec![0, AUDIO_TRACK as u8, 0];
            descriptor(&mut es, 0x04, &decoder_config);
            descriptor(&mut es, 0x06, &[0x02]);
            descriptor(o, 0x03, &es);
        });
    });
}

/// An MPEG-4 descriptor: tag, length in four 7-bit groups, body.
fn descriptor(o: &mut Vec<u8>, tag: u8, body: &[u8]) {
    let len = body.len() as u32;
    o.push(tag);
    o.extend_from_slice(&[
        0x80 | ((len >> 21) & 0x7f) as u8,
        0x80 | ((len >> 14) & 0x7f) as u8,
        0x80 | ((len >> 7) & 0x7f) as u8,
        (len & 0x7f) as u8,
    ]);
    o.extend_from_slice(body);
}

fn bx(o: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = o.len();
    o.extend_from_slice(&[0; 4]);
    o.extend_from_slice(kind);
    body(o);
    let size = (o.len() - start) as u32;
    o[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn full(o: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Vec<u8>)) {
    bx(o, kind, |o| {
        o.extend_from_slice(&((u32::from(version) << 24) | flags).to_be_bytes());
        body(o);
    });
}

fn put32(o: &mut Vec<u8>, values: &[u32]) {
    for v in values {
        o.extend_from_slice(&v.to_be_bytes());
    }
}
