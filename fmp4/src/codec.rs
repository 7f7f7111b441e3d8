//! The MSE type of a stream, e.g. `video/mp4; codecs="avc1.64001f,mp4a.40.2"`, read from
//! the sample entries in `moov`.

use super::boxes::{child, children, fourcc, Bytes};
use crate::Fmp4Error;

/// What the rest of the broadcaster needs to know about one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub track_id: u32,
    pub is_video: bool,
    /// RFC 6381 codec string.
    pub codec: String,
}

/// Sample entry bytes before child boxes: 8 common, plus 70 for video or 20 for audio.
const VISUAL_ENTRY_FIELDS: usize = 78;
const AUDIO_ENTRY_FIELDS: usize = 28;

/// Tracks of a `moov` payload.
pub(crate) fn tracks(moov: &[u8]) -> Result<Vec<TrackInfo>, Fmp4Error> {
    let mut out = Vec::new();
    for (kind, trak) in children(moov)? {
        if &kind != b"trak" {
            continue;
        }
        let tkhd =
            child(trak, b"tkhd")?.ok_or_else(|| Fmp4Error::Invalid("trak without tkhd".into()))?;
        let mut r = Bytes::new(tkhd, "tkhd");
        let version = r.u8()?;
        r.take(3 + if version == 1 { 16 } else { 8 })?;
        let track_id = r.u32()?;
        let mdia =
            child(trak, b"mdia")?.ok_or_else(|| Fmp4Error::Invalid("trak without mdia".into()))?;
        let hdlr =
            child(mdia, b"hdlr")?.ok_or_else(|| Fmp4Error::Invalid("mdia without hdlr".into()))?;
        let handler = Bytes::new(hdlr, "hdlr").take(12)?[8..12].to_vec();
        if handler != b"vide" && handler != b"soun" {
            continue; // Subtitles, metadata: not played through MSE here.
        }
        let stsd = [b"minf", b"stbl", b"stsd"]
            .iter()
            .try_fold(mdia, |payload, kind| {
                child(payload, kind)?.ok_or_else(|| {
                    Fmp4Error::Invalid(format!("track {track_id} has no {}", fourcc(**kind)))
                })
            })?;
        let entries = Bytes::new(stsd, "stsd").take(8).map(|_| &stsd[8..])?;
        let (entry_kind, entry) = *children(entries)?
            .first()
            .ok_or_else(|| Fmp4Error::Invalid(format!("track {track_id} has no sample entry")))?;
        let is_video = handler == b"vide";
        let fields = if is_video {
            VISUAL_ENTRY_FIELDS
        } else {
            AUDIO_ENTRY_FIELDS
        };
        let boxes = entry
            .get(fields..)
            .ok_or_else(|| Fmp4Error::Invalid("sample entry truncated".into()))?;
        out.push(TrackInfo {
            track_id,
            is_video,
            codec: codec_string(entry_kind, boxes)?,
        });
    }
    if out.is_empty() {
        return Err(Fmp4Error::Invalid(
            "moov has no audio or video track".into(),
        ));
    }
    Ok(out)
}

/// `video/mp4` when any track is video, else `audio/mp4`, with every track's codec.
pub fn mime_type(tracks: &[TrackInfo]) -> String {
    let major = if tracks.iter().any(|t| t.is_video) {
        "video"
    } else {
        "audio"
    };
    let codecs: Vec<&str> = tracks.iter().map(|t| t.codec.as_str()).collect();
    format!("{major}/mp4; codecs=\"{}\"", codecs.join(","))
}

fn codec_string(entry_kind: [u8; 4], boxes: &[u8]) -> Result<String, Fmp4Error> {
    let name = fourcc(entry_kind);
    let missing = |what: &str| Fmp4Error::Invalid(format!("{name} sample entry has no {what}"));
    match &entry_kind {
        b"avc1" | b"avc3" => {
            let avcc = child(boxes, b"avcC")?.ok_or_else(|| missing("avcC"))?;
            let b = Bytes::new(avcc, "avcC").take(4)?;
            Ok(format!("{name}.{:02x}{:02x}{:02x}", b[1], b[2], b[3]))
        }
        b"vp09" => {
            let vpcc = child(boxes, b"vpcC")?.ok_or_else(|| missing("vpcC"))?;
            let b = Bytes::new(vpcc, "vpcC").take(7)?;
            Ok(format!("vp09.{:02}.{:02}.{:02}", b[4], b[5], b[6] >> 4))
        }
        b"av01" => {
            let av1c = child(boxes, b"av1C")?.ok_or_else(|| missing("av1C"))?;
            let b = Bytes::new(av1c, "av1C").take(3)?;
            let profile = b[1] >> 5;
            let level = b[1] & 0x1f;
            let tier = if b[2] & 0x80 != 0 { 'H' } else { 'M' };
            let depth = match (b[2] & 0x40 != 0, b[2] & 0x20 != 0) {
                (true, true) => 12,
                (true, false) => 10,
                _ => 8,
            };
            Ok(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
        }
        b"mp4a" => {
            let esds = child(boxes, b"esds")?.ok_or_else(|| missing("esds"))?;
            mp4a_codec(esds)
        }
        b"Opus" => Ok("opus".into()),
        b"fLaC" => Ok("flac".into()),
        _ => Err(Fmp4Error::UnsupportedCodec(name)),
    }
}

/// `mp4a.OO[.A]` from the ES descriptor: object type, and for AAC the audio object type.
fn mp4a_codec(esds: &[u8]) -> Result<String, Fmp4Error> {
    let mut r = Bytes::new(esds, "esds");
    r.take(4)?; // version and flags
    expect_descriptor(&mut r, 0x03)?;
    r.take(2)?; // ES_ID
    let flags = r.u8()?;
    if flags & 0x80 != 0 {
        r.take(2)?;
    }
    if flags & 0x40 != 0 {
        let len = usize::from(r.u8()?);
        r.take(len)?;
    }
    if flags & 0x20 != 0 {
        r.take(2)?;
    }
    expect_descriptor(&mut r, 0x04)?;
    let object_type = r.u8()?;
    r.take(12)?;
    if object_type != 0x40 {
        return Ok(format!("mp4a.{object_type:02x}"));
    }
    expect_descriptor(&mut r, 0x05)?;
    let audio_object_type = r.u8()? >> 3;
    Ok(format!("mp4a.40.{audio_object_type}"))
}

fn expect_descriptor(r: &mut Bytes<'_>, tag: u8) -> Result<(), Fmp4Error> {
    let found = r.u8()?;
    if found != tag {
        return Err(Fmp4Error::Invalid(format!(
            "esds: expected descriptor {tag:#04x}, found {found:#04x}"
        )));
    }
    // Length: up to four bytes of 7 bits, high bit meaning "more follows".
    for _ in 0..4 {
        if r.u8()? & 0x80 == 0 {
            break;
        }
    }
    Ok(())
}
