//! AAC as FLV carries it: the `AudioSpecificConfig` (copied into the init segment's `esds`)
//! and what the MP4 sample entry needs from it.

use crate::IngestError;

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Samples per AAC frame (per channel): every AAC-LC and HE-AAC core frame.
pub(crate) const FRAME_SAMPLES: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AacConfig {
    /// The `AudioSpecificConfig` as sent.
    pub config: Vec<u8>,
    pub sample_rate: u32,
    pub channels: u16,
}

fn aac_error(message: String) -> IngestError {
    IngestError::Aac(message)
}

impl AacConfig {
    pub fn parse(config: &[u8]) -> Result<AacConfig, IngestError> {
        if config.len() < 2 {
            return Err(aac_error(format!(
                "AudioSpecificConfig of {} bytes, needs at least 2",
                config.len()
            )));
        }
        if config.len() > 64 {
            return Err(IngestError::TooLarge {
                what: "AudioSpecificConfig",
                size: config.len(),
                limit: 64,
            });
        }
        let bits = u64::from_be_bytes({
            let mut b = [0u8; 8];
            let n = config.len().min(8);
            b[..n].copy_from_slice(&config[..n]);
            b
        });
        let field = |at: u32, len: u32| ((bits >> (64 - at - len)) & ((1 << len) - 1)) as u32;
        let mut at = 5;
        let object_type = match field(0, 5) {
            0 => return Err(aac_error("audio object type 0".into())),
            31 => {
                at += 6;
                32 + field(5, 6)
            }
            t => t,
        };
        let sample_rate = match field(at, 4) {
            15 => {
                let rate = field(at + 4, 24);
                at += 28;
                rate
            }
            i => {
                at += 4;
                *SAMPLE_RATES
                    .get(i as usize)
                    .ok_or_else(|| aac_error(format!("sampling frequency index {i} is reserved")))?
            }
        };
        if !(7350..=96000).contains(&sample_rate) {
            return Err(aac_error(format!("sample rate {sample_rate} Hz")));
        }
        if config.len() * 8 < at as usize + 4 {
            return Err(aac_error("AudioSpecificConfig truncated".into()));
        }
        let channels = match field(at, 4) {
            // Defined in a program config element: stereo is what players assume.
            0 => 2,
            c @ 1..=6 => c as u16,
            7 => 8,
            c => return Err(aac_error(format!("channel configuration {c} is reserved"))),
        };
        let _ = object_type;
        Ok(AacConfig {
            config: config.to_vec(),
            sample_rate,
            channels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lc_stereo_44100() {
        let c = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!((c.sample_rate, c.channels), (44100, 2));
    }

    #[test]
    fn refuses_reserved_and_short_configs() {
        assert!(AacConfig::parse(&[0x12]).is_err());
        assert!(AacConfig::parse(&[0x16, 0x90]).is_err()); // index 13
        assert!(AacConfig::parse(&[0x00, 0x10]).is_err()); // object type 0
        assert!(AacConfig::parse(&[0x12, 0x78]).is_err()); // channel configuration 15
    }
}
