//! Opus as WebRTC carries it: one packet per RTP payload, 48 kHz clock. Its duration is
//! read from the packet's TOC byte (RFC 6716 §3.1), so the last packet of a fragment needs
//! no successor to know how long it plays.

use crate::IngestError;

/// Opus always runs at 48 kHz in RTP and MP4.
pub(crate) const OPUS_RATE: u32 = 48_000;
/// Samples at 48 kHz a decoder skips at the start (the encoder's look-ahead, libopus's 312).
pub(crate) const PRE_SKIP: u16 = 312;

/// Samples (at 48 kHz) one Opus packet plays.
pub(crate) fn packet_samples(packet: &[u8]) -> Result<u32, IngestError> {
    let toc = *packet
        .first()
        .ok_or_else(|| IngestError::Unsupported("an empty Opus packet".into()))?;
    let config = u32::from(toc >> 3);
    // Frame sizes in units of 2.5 ms (120 samples).
    let frame_units = match config {
        0..=11 => [4, 8, 16, 24][(config % 4) as usize],
        12..=15 => [4, 8][(config % 2) as usize],
        _ => [1, 2, 4, 8][(config % 4) as usize],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(
            *packet.get(1).ok_or_else(|| {
                IngestError::Unsupported("an Opus packet without its frame count".into())
            })? & 0x3f,
        ),
    };
    let samples = frames * frame_units * 120;
    // At most 120 ms per packet (RFC 6716 §3.2.5).
    if samples == 0 || samples > 5760 {
        return Err(IngestError::Unsupported(format!(
            "an Opus packet of {samples} samples (1 to 5760)"
        )));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_durations_from_the_toc() {
        assert_eq!(packet_samples(&[0xfc]).unwrap(), 960); // CELT FB 20 ms, one frame
        assert_eq!(packet_samples(&[0x70 | 1]).unwrap(), 960); // Hybrid FB 10 ms ×2
        assert_eq!(packet_samples(&[0x08]).unwrap(), 960); // SILK NB 20 ms
        assert_eq!(packet_samples(&[0x03 | 0xf8, 3]).unwrap(), 2880); // 3 × 20 ms
        assert!(packet_samples(&[0x03 | 0xf8, 0]).is_err());
        assert!(packet_samples(&[0x03 | 0x18, 63]).is_err()); // 63 × 60 ms
        assert!(packet_samples(&[]).is_err());
    }
}
