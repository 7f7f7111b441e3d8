//! FLV audio and video payloads (what RTMP audio/video messages and FLV file tags carry):
//! H.264 (codec 7) and AAC (sound format 10). Other codecs get a clear refusal naming them.
//! [`FlvReader`] reads FLV files, for tests and for ingesting a recording.

use crate::cursor::Cursor;
use crate::IngestError;

/// Largest tag accepted from a file: a keyframe of high-bitrate 4K video is a few MiB.
const MAX_TAG_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VideoPacket<'a> {
    /// `AVCDecoderConfigurationRecord`.
    Config(&'a [u8]),
    Frame {
        keyframe: bool,
        /// Presentation minus decode time, in ms.
        composition_ms: i32,
        data: &'a [u8],
    },
    /// End of sequence, or a video info/command frame: nothing to play.
    Nothing,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AudioPacket<'a> {
    /// `AudioSpecificConfig`.
    Config(&'a [u8]),
    Frame(&'a [u8]),
}

fn flv_error(message: String) -> IngestError {
    IngestError::Flv(message)
}

pub(crate) fn video_packet(payload: &[u8]) -> Result<VideoPacket<'_>, IngestError> {
    let mut r = Cursor::new(payload, "video tag", flv_error);
    let first = r.u8()?;
    if first & 0x80 != 0 {
        return Err(IngestError::Unsupported(
            "Enhanced RTMP video (HEVC, AV1 or VP9); set the encoder to H.264".into(),
        ));
    }
    let (frame_type, codec) = (first >> 4, first & 0x0f);
    if frame_type == 5 {
        return Ok(VideoPacket::Nothing);
    }
    if codec != 7 {
        let name = match codec {
            2 => "Sorenson H.263",
            3 => "Screen video",
            4 => "On2 VP6",
            5 => "On2 VP6 with alpha",
            6 => "Screen video 2",
            12 => "HEVC (non-standard FLV)",
            _ => "unknown",
        };
        return Err(IngestError::Unsupported(format!(
            "video codec {codec} ({name}); set the encoder to H.264"
        )));
    }
    let packet_type = r.u8()?;
    let composition = r.u24()?;
    // Sign-extend the 24-bit composition time.
    let composition_ms = ((composition << 8) as i32) >> 8;
    match packet_type {
        0 => Ok(VideoPacket::Config(r.rest())),
        1 => Ok(VideoPacket::Frame {
            keyframe: frame_type == 1,
            composition_ms,
            data: r.rest(),
        }),
        2 => Ok(VideoPacket::Nothing),
        other => Err(flv_error(format!("AVC packet type {other}"))),
    }
}

pub(crate) fn audio_packet(payload: &[u8]) -> Result<AudioPacket<'_>, IngestError> {
    let mut r = Cursor::new(payload, "audio tag", flv_error);
    let format = r.u8()? >> 4;
    if format != 10 {
        let name = match format {
            0 | 3 => "linear PCM",
            1 => "ADPCM",
            2 | 14 => "MP3",
            4..=6 => "Nellymoser",
            7 | 8 => "G.711",
            9 => "Enhanced RTMP audio",
            11 => "Speex",
            _ => "unknown",
        };
        return Err(IngestError::Unsupported(format!(
            "audio format {format} ({name}); set the encoder to AAC"
        )));
    }
    match r.u8()? {
        0 => Ok(AudioPacket::Config(r.rest())),
        1 => Ok(AudioPacket::Frame(r.rest())),
        other => Err(flv_error(format!("AAC packet type {other}"))),
    }
}

/// Reads an FLV file's tags as the bytes arrive: header first, then audio and video tags
/// (script tags, e.g. `onMetaData`, are skipped).
#[derive(Default)]
pub struct FlvReader {
    buf: Vec<u8>,
    header_read: bool,
}

impl FlvReader {
    pub fn new() -> FlvReader {
        FlvReader::default()
    }

    /// Feeds more bytes; returns each audio or video tag they completed: its kind, its
    /// timestamp in ms and its payload.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<(MediaKind, u32, Vec<u8>)>, IngestError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut pos = 0;
        if !self.header_read {
            if self.buf.len() < 13 {
                return Ok(out);
            }
            if &self.buf[..3] != b"FLV" {
                return Err(flv_error("not an FLV file (no \"FLV\" signature)".into()));
            }
            let header_len =
                u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) as usize;
            if !(9..=1024).contains(&header_len) {
                return Err(flv_error(format!("header length {header_len}")));
            }
            if self.buf.len() < header_len + 4 {
                return Ok(out);
            }
            pos = header_len + 4; // the header, then PreviousTagSize0
            self.header_read = true;
        }
        while self.buf.len() - pos >= 11 {
            let mut r = Cursor::new(&self.buf[pos..pos + 11], "FLV tag header", flv_error);
            let kind = r.u8()? & 0x1f;
            let size = r.u24()? as usize;
            let low = r.u24()?;
            let timestamp = low | (u32::from(r.u8()?) << 24);
            if size > MAX_TAG_BYTES {
                return Err(IngestError::TooLarge {
                    what: "FLV tag",
                    size,
                    limit: MAX_TAG_BYTES,
                });
            }
            let whole = 11 + size + 4;
            if self.buf.len() - pos < whole {
                break;
            }
            let payload = &self.buf[pos + 11..pos + 11 + size];
            match kind {
                8 => out.push((MediaKind::Audio, timestamp, payload.to_vec())),
                9 => out.push((MediaKind::Video, timestamp, payload.to_vec())),
                18 => {}
                other => return Err(flv_error(format!("tag type {other}"))),
            }
            pos += whole;
        }
        self.buf.drain(..pos);
        Ok(out)
    }

    /// Whether the input ended between tags, as a whole file does.
    pub fn finish(&self) -> Result<(), IngestError> {
        if self.buf.is_empty() && self.header_read {
            Ok(())
        } else {
            Err(flv_error(format!(
                "file ends inside a tag ({} bytes left over)",
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_time_is_signed() {
        let packet = video_packet(&[0x27, 1, 0xff, 0xff, 0xdf, 0, 0, 0, 1, 0x41]).unwrap();
        assert_eq!(
            packet,
            VideoPacket::Frame {
                keyframe: false,
                composition_ms: -33,
                data: &[0, 0, 0, 1, 0x41]
            }
        );
    }

    #[test]
    fn other_codecs_are_named() {
        let err = video_packet(&[0x12, 0]).unwrap_err().to_string();
        assert!(err.contains("Sorenson H.263"), "{err}");
        let err = audio_packet(&[0x2f, 0]).unwrap_err().to_string();
        assert!(err.contains("MP3"), "{err}");
        let err = video_packet(&[0x9c, 0]).unwrap_err().to_string();
        assert!(err.contains("Enhanced RTMP"), "{err}");
    }

    #[test]
    fn truncated_tags_are_errors_not_panics() {
        for payload in [&[][..], &[0x17], &[0x17, 1, 0]] {
            assert!(video_packet(payload).is_err());
        }
        assert!(audio_packet(&[0xaf]).is_err());
    }
}
