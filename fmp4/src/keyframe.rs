//! Whether a fragment starts with a sync sample, from its `moof`: the first sample's flags
//! come from `trun`, else `tfhd`'s defaults, else `trex`'s defaults in `moov`.

use std::collections::HashMap;

use super::boxes::{child, children, Bytes};
use crate::Fmp4Error;

const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

/// `trex` default sample flags by track id, from `moov/mvex`.
pub(crate) fn trex_defaults(moov: &[u8]) -> Result<HashMap<u32, u32>, Fmp4Error> {
    let mut out = HashMap::new();
    if let Some(mvex) = child(moov, b"mvex")? {
        for (kind, trex) in children(mvex)? {
            if &kind == b"trex" {
                let mut r = Bytes::new(trex, "trex");
                r.take(4)?;
                let track_id = r.u32()?;
                r.take(12)?;
                out.insert(track_id, r.u32()?);
            }
        }
    }
    Ok(out)
}

/// Whether the `moof` payload's fragment of `video_track` starts with a keyframe.
pub(crate) fn starts_with_keyframe(
    moof: &[u8],
    video_track: u32,
    trex: &HashMap<u32, u32>,
) -> Result<bool, Fmp4Error> {
    for (kind, traf) in children(moof)? {
        if &kind != b"traf" {
            continue;
        }
        let tfhd =
            child(traf, b"tfhd")?.ok_or_else(|| Fmp4Error::Invalid("traf without tfhd".into()))?;
        let mut r = Bytes::new(tfhd, "tfhd");
        let flags = r.u32()? & 0x00ff_ffff;
        if r.u32()? != video_track {
            continue;
        }
        let mut default_flags = trex.get(&video_track).copied().unwrap_or(0);
        for (bit, len) in [(0x01, 8), (0x02, 4), (0x08, 4), (0x10, 4)] {
            if flags & bit != 0 {
                r.take(len)?;
            }
        }
        if flags & 0x20 != 0 {
            default_flags = r.u32()?;
        }
        let Some(trun) = child(traf, b"trun")? else {
            return Ok(default_flags & SAMPLE_IS_NON_SYNC == 0);
        };
        let mut r = Bytes::new(trun, "trun");
        let flags = r.u32()? & 0x00ff_ffff;
        r.take(4)?; // sample count
        if flags & 0x01 != 0 {
            r.take(4)?;
        }
        let first = if flags & 0x04 != 0 {
            r.u32()?
        } else if flags & 0x400 != 0 {
            for (bit, len) in [(0x100, 4), (0x200, 4)] {
                if flags & bit != 0 {
                    r.take(len)?;
                }
            }
            r.u32()?
        } else {
            default_flags
        };
        return Ok(first & SAMPLE_IS_NON_SYNC == 0);
    }
    Err(Fmp4Error::Invalid(format!(
        "moof has no fragment of video track {video_track}"
    )))
}
