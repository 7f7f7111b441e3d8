//! Cuts a byte stream of fragmented MP4 into an init segment and media fragments, as the
//! bytes arrive (a live pipe delivers them in arbitrary pieces).

use std::collections::HashMap;

use super::boxes::{fourcc, header};
use super::{codec, keyframe};
use crate::Fmp4Error;

/// Largest box accepted. A fragment of a few seconds of HD video is a few MiB; anything far
/// bigger is a broken or hostile input, refused before it is buffered.
const MAX_BOX_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `ftyp`+`moov`, with the MSE type derived from it.
    Init { mime: String, data: Vec<u8> },
    /// One `moof`+`mdat` pair.
    Media { keyframe: bool, data: Vec<u8> },
}

#[derive(Default)]
pub struct Cutter {
    buf: Vec<u8>,
    init: Vec<u8>,
    moov_seen: bool,
    video_track: Option<u32>,
    trex: HashMap<u32, u32>,
    /// A `moof` waiting for its `mdat`, with its keyframe flag.
    pending_moof: Option<(Vec<u8>, bool)>,
}

impl Cutter {
    pub fn new() -> Cutter {
        Cutter::default()
    }

    /// Feeds more bytes; returns every segment they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Segment>, Fmp4Error> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(h) = header(&self.buf[pos..])? {
            if h.size > MAX_BOX_BYTES {
                return Err(Fmp4Error::Invalid(format!(
                    "box {} is {} bytes, over the {MAX_BOX_BYTES}-byte limit",
                    fourcc(h.kind),
                    h.size
                )));
            }
            let size = h.size as usize;
            if self.buf.len() - pos < size {
                break;
            }
            let whole = &self.buf[pos..pos + size];
            let payload = &whole[h.header_len..];
            match &h.kind {
                b"ftyp" if !self.moov_seen => self.init.extend_from_slice(whole),
                b"moov" => {
                    if self.moov_seen {
                        return Err(Fmp4Error::Invalid(
                            "a second moov: the stream changed mid-way".into(),
                        ));
                    }
                    let tracks = codec::tracks(payload)?;
                    self.video_track = tracks.iter().find(|t| t.is_video).map(|t| t.track_id);
                    self.trex = keyframe::trex_defaults(payload)?;
                    self.init.extend_from_slice(whole);
                    self.moov_seen = true;
                    out.push(Segment::Init {
                        mime: codec::mime_type(&tracks),
                        data: self.init.clone(),
                    });
                }
                b"moof" => {
                    if !self.moov_seen {
                        return Err(Fmp4Error::Invalid(
                            "moof before moov: not a fragmented MP4 with an init segment".into(),
                        ));
                    }
                    let keyframe = match self.video_track {
                        Some(track) => keyframe::starts_with_keyframe(payload, track, &self.trex)?,
                        None => true, // Audio only: every fragment is a start point.
                    };
                    self.pending_moof = Some((whole.to_vec(), keyframe));
                }
                b"mdat" => {
                    let (mut data, keyframe) = self.pending_moof.take().ok_or_else(|| {
                        Fmp4Error::Invalid("mdat without a preceding moof".into())
                    })?;
                    data.extend_from_slice(whole);
                    out.push(Segment::Media { keyframe, data });
                }
                // styp, sidx, prft, free, ...: not needed by MSE for playback.
                _ => {}
            }
            pos += size;
        }
        self.buf.drain(..pos);
        Ok(out)
    }

    /// Call at end of input: leftover bytes mean the stream was cut mid-box.
    pub fn finish(&self) -> Result<(), Fmp4Error> {
        if self.buf.is_empty() && self.pending_moof.is_none() {
            Ok(())
        } else {
            Err(Fmp4Error::Invalid(format!(
                "input ended inside a box ({} bytes left over)",
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture exists")
    }

    fn cut_all(bytes: &[u8], step: usize) -> Vec<Segment> {
        let mut cutter = Cutter::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            out.extend(cutter.push(piece).unwrap());
        }
        cutter.finish().unwrap();
        out
    }

    #[test]
    fn h264_aac_cuts_into_init_and_keyframe_fragments() {
        let bytes = fixture("h264-aac.mp4");
        let segments = cut_all(&bytes, 1000);
        let Segment::Init { mime, data } = &segments[0] else {
            panic!("init first")
        };
        assert_eq!(mime, r#"video/mp4; codecs="avc1.64000b,mp4a.40.2""#);
        assert_eq!(&data[4..8], b"ftyp");
        // 3 s at one keyframe a second: 3 fragments, each on a keyframe.
        let mut joined = data.clone();
        for segment in &segments[1..] {
            let Segment::Media { keyframe, data } = segment else {
                panic!("one init")
            };
            assert!(*keyframe);
            joined.extend_from_slice(data);
        }
        assert_eq!(segments.len(), 4);
        // Nothing lost or altered: the segments are the file, up to ffmpeg's trailing
        // random-access index (`mfra`), which a live stream does not need.
        assert_eq!(joined, bytes[..joined.len()]);
        assert_eq!(&bytes[joined.len() + 4..joined.len() + 8], b"mfra");
    }

    #[test]
    fn vp9_opus_has_its_codec_string() {
        let segments = cut_all(&fixture("vp9-opus.mp4"), 4096);
        let Segment::Init { mime, .. } = &segments[0] else {
            panic!("init first")
        };
        assert_eq!(mime, r#"video/mp4; codecs="vp09.00.10.08,opus""#);
        assert!(segments.len() >= 4);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_cut() {
        let bytes = fixture("h264-aac.mp4");
        assert_eq!(cut_all(&bytes, 1), cut_all(&bytes, 1 << 20));
    }

    #[test]
    fn truncated_or_hostile_input_is_a_clear_error() {
        let bytes = fixture("h264-aac.mp4");
        let mut cutter = Cutter::new();
        cutter.push(&bytes[..bytes.len() - 10]).unwrap();
        assert!(cutter.finish().is_err());

        let huge = [0x7f, 0xff, 0xff, 0xff, b'm', b'd', b'a', b't'];
        assert!(Cutter::new()
            .push(&huge)
            .unwrap_err()
            .to_string()
            .contains("limit"));
        let zero = [0, 0, 0, 0, b'm', b'o', b'o', b'f'];
        assert!(Cutter::new().push(&zero).is_err());
        let tiny = [0, 0, 0, 3, b'm', b'o', b'o', b'f'];
        assert!(Cutter::new().push(&tiny).is_err());
        let moof_first = [0, 0, 0, 8, b'm', b'o', b'o', b'f'];
        assert!(Cutter::new().push(&moof_first).is_err());
    }

    #[test]
    fn corrupted_moov_never_panics() {
        let bytes = fixture("h264-aac.mp4");
        let init_len = 28 + 1228;
        for i in (0..init_len).step_by(3) {
            let mut broken = bytes[..init_len].to_vec();
            broken[i] ^= 0xa5;
            let _ = Cutter::new().push(&broken);
        }
    }
}
