//! H.264 as FLV carries it: the decoder configuration record (`avcC`, the same bytes MP4
//! stores), the picture size read from its sequence parameter set, and length-prefixed NAL
//! units checked to tile each sample exactly.

use crate::cursor::Cursor;
use crate::IngestError;

/// Largest picture side accepted (8K is 7680): a larger one is a corrupt or hostile SPS.
const MAX_SIDE: u32 = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AvcConfig {
    /// The `AVCDecoderConfigurationRecord`, written as-is into the init segment.
    pub record: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Bytes in each NAL unit's length prefix: 1, 2 or 4.
    pub length_size: usize,
    /// Parameter sets also travel in the samples (WebRTC input), so the track is `avc3`.
    pub in_band: bool,
}

fn avc_error(message: String) -> IngestError {
    IngestError::Avc(message)
}

impl AvcConfig {
    pub fn parse(record: &[u8]) -> Result<AvcConfig, IngestError> {
        let mut r = Cursor::new(record, "AVC decoder configuration", avc_error);
        let version = r.u8()?;
        if version != 1 {
            return Err(avc_error(format!(
                "decoder configuration version {version}, expected 1"
            )));
        }
        r.take(3)?; // profile, compatibility, level: repeated in the SPS
        let length_size = usize::from(r.u8()? & 0x03) + 1;
        if length_size == 3 {
            return Err(avc_error("NAL length size 3 is not allowed".into()));
        }
        let sps_count = r.u8()? & 0x1f;
        if sps_count == 0 {
            return Err(avc_error("decoder configuration has no SPS".into()));
        }
        let mut first_sps = None;
        for _ in 0..sps_count {
            let len = usize::from(r.u16()?);
            let sps = r.take(len)?;
            first_sps.get_or_insert(sps);
        }
        let pps_count = r.u8()?;
        if pps_count == 0 {
            return Err(avc_error("decoder configuration has no PPS".into()));
        }
        for _ in 0..pps_count {
            let len = usize::from(r.u16()?);
            r.take(len)?;
        }
        let (width, height) = picture_size(first_sps.expect("sps_count is at least 1"))?;
        Ok(AvcConfig {
            record: record.to_vec(),
            width,
            height,
            length_size,
            in_band: false,
        })
    }

    /// A configuration from in-band parameter sets (one SPS, one PPS, NAL headers included),
    /// with 4-byte NAL lengths.
    pub fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Result<AvcConfig, IngestError> {
        if sps.len() < 4 || sps.len() > 0xffff || pps.is_empty() || pps.len() > 0xffff {
            return Err(avc_error(format!(
                "parameter sets of {} and {} bytes",
                sps.len(),
                pps.len()
            )));
        }
        let mut record = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(sps);
        record.push(1);
        record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        record.extend_from_slice(pps);
        let mut config = AvcConfig::parse(&record)?;
        config.in_band = true;
        Ok(config)
    }

    /// Checks that `sample` is a whole number of non-empty length-prefixed NAL units.
    pub fn check_sample(&self, sample: &[u8]) -> Result<(), IngestError> {
        if sample.is_empty() {
            return Err(avc_error("empty video sample".into()));
        }
        let mut r = Cursor::new(sample, "video sample", avc_error);
        while r.remaining() > 0 {
            let len = match self.length_size {
                1 => usize::from(r.u8()?),
                2 => usize::from(r.u16()?),
                _ => r.u32()? as usize,
            };
            if len == 0 {
                return Err(avc_error("a NAL unit of length 0".into()));
            }
            if len > r.remaining() {
                return Err(avc_error(format!(
                    "a NAL unit of {len} bytes where {} remain in the sample",
                    r.remaining()
                )));
            }
            let nal = r.take(len)?;
            if nal[0] & 0x80 != 0 {
                return Err(avc_error("a NAL unit with its forbidden bit set".into()));
            }
        }
        Ok(())
    }
}

/// Width and height in pixels from a sequence parameter set NAL unit (header included).
fn picture_size(nal: &[u8]) -> Result<(u32, u32), IngestError> {
    let rbsp = unescape(nal);
    let mut b = BitReader::new(&rbsp);
    let header = b.bits(8)?;
    if header & 0x1f != 7 {
        return Err(avc_error(format!(
            "expected an SPS (NAL type 7), found NAL type {}",
            header & 0x1f
        )));
    }
    let profile = b.bits(8)?;
    b.bits(16)?; // constraint flags, level
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = b.ue()?;
        if chroma_format > 3 {
            return Err(avc_error(format!("chroma_format_idc {chroma_format}")));
        }
        if chroma_format == 3 {
            b.bits(1)?; // separate_colour_plane_flag
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if b.bits(1)? == 1 {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if b.bits(1)? == 1 {
                    skip_scaling_list(&mut b, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            b.bits(1)?; // delta_pic_order_always_zero_flag
            b.se()?; // offset_for_non_ref_pic
            b.se()?; // offset_for_top_to_bottom_field
            let cycle = b.ue()?;
            if cycle > 255 {
                return Err(avc_error(format!("{cycle} frames in the POC cycle")));
            }
            for _ in 0..cycle {
                b.se()?;
            }
        }
        2 => {}
        other => return Err(avc_error(format!("pic_order_cnt_type {other}"))),
    }
    b.ue()?; // max_num_ref_frames
    b.bits(1)?; // gaps_in_frame_num_value_allowed_flag
                // In u64: a hostile SPS's sizes near u32::MAX must not overflow the arithmetic below.
    let width_mbs = u64::from(b.ue()?) + 1;
    let height_units = u64::from(b.ue()?) + 1;
    let frame_mbs_only = u64::from(b.bits(1)?);
    if frame_mbs_only == 0 {
        b.bits(1)?; // mb_adaptive_frame_field_flag
    }
    b.bits(1)?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0, 0);
    if b.bits(1)? == 1 {
        let mut edge = || b.ue().map(u64::from);
        let (left, right, top, bottom) = (edge()?, edge()?, edge()?, edge()?);
        let (sub_w, sub_h) = match chroma_format {
            0 => (1, 1),
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let unit_y = sub_h * (2 - frame_mbs_only);
        crop_x = sub_w * (left + right);
        crop_y = unit_y * (top + bottom);
    }
    let width = (width_mbs * 16).checked_sub(crop_x);
    let height = (height_units * 16 * (2 - frame_mbs_only)).checked_sub(crop_y);
    match (width, height) {
        (Some(w), Some(h))
            if (1..=u64::from(MAX_SIDE)).contains(&w) && (1..=u64::from(MAX_SIDE)).contains(&h) =>
        {
            Ok((w as u32, h as u32))
        }
        _ => Err(avc_error(format!(
            "SPS gives an impossible picture size ({width_mbs} × {height_units} macroblocks, \
             cropped by {crop_x} × {crop_y})"
        ))),
    }
}

fn skip_scaling_list(b: &mut BitReader<'_>, size: usize) -> Result<(), IngestError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + b.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// The RBSP of a NAL unit: every `00 00 03` emulation-prevention byte removed.
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

struct BitReader<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, bit: 0 }
    }

    fn bits(&mut self, n: u32) -> Result<u32, IngestError> {
        let mut out = 0u32;
        for _ in 0..n {
            let byte = self
                .bytes
                .get(self.bit / 8)
                .ok_or_else(|| avc_error("SPS truncated".into()))?;
            out = (out << 1) | u32::from((byte >> (7 - self.bit % 8)) & 1);
            self.bit += 1;
        }
        Ok(out)
    }

    /// Unsigned Exp-Golomb; values that need more than 31 bits are refused.
    fn ue(&mut self) -> Result<u32, IngestError> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(avc_error("SPS has an Exp-Golomb code over 32 bits".into()));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Result<i64, IngestError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's SPS for 426×240, High profile (27 × 15 macroblocks, cropped by 6 pixels).
    const SPS_426X240: &[u8] = &[
        0x67, 0x64, 0x00, 0x15, 0xac, 0xb2, 0x03, 0x63, 0xfc, 0x9e, 0x02, 0x20, 0x00, 0x00, 0x03,
        0x00, 0x20, 0x00, 0x00, 0x07, 0x91, 0xe2, 0xc5, 0xc9,
    ];

    #[test]
    fn reads_the_picture_size_through_cropping() {
        assert_eq!(picture_size(SPS_426X240).unwrap(), (426, 240));
    }

    #[test]
    fn a_truncated_sps_is_an_error() {
        // The size fields end in the 10th byte; the VUI after them is not read.
        for len in 0..9 {
            assert!(picture_size(&SPS_426X240[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn nal_units_must_tile_the_sample() {
        let config = AvcConfig {
            record: vec![],
            width: 1,
            height: 1,
            length_size: 4,
            in_band: false,
        };
        assert!(config.check_sample(&[0, 0, 0, 2, 0x65, 1]).is_ok());
        assert!(config.check_sample(&[0, 0, 0, 3, 0x65, 1]).is_err());
        assert!(config.check_sample(&[0, 0, 0, 0]).is_err());
        assert!(config.check_sample(&[0, 0, 0, 1, 0x65, 0]).is_err());
        assert!(config.check_sample(&[0, 0, 0, 1, 0xe5]).is_err());
        assert!(config.check_sample(&[]).is_err());
    }
}
