//! H.264 from RTP (RFC 6184, packetization mode 1 as browsers send it): single NAL unit
//! packets, STAP-A aggregates and FU-A fragments, assembled into access units by RTP
//! timestamp and marker bit. A lost packet marks its access unit broken rather than
//! guessing; the caller then waits for the next keyframe.

use crate::IngestError;

/// Largest access unit: a 4K keyframe at a high bitrate.
const MAX_ACCESS_UNIT_BYTES: usize = 8 * 1024 * 1024;
/// NAL units in one access unit (slices, SEI, parameter sets).
const MAX_NALS: usize = 1024;

pub(crate) struct AccessUnit {
    pub timestamp: u32,
    /// NAL units, headers included, without start codes or lengths.
    pub nals: Vec<Vec<u8>>,
    /// A packet of it was lost (or its start was): it cannot be decoded as is.
    pub broken: bool,
}

#[derive(Default)]
pub(crate) struct H264Depacketizer {
    last_sequence: Option<u16>,
    current: Option<AccessUnit>,
    bytes: usize,
    /// The NAL unit being reassembled from FU-A fragments.
    fragment: Option<Vec<u8>>,
}

fn error(message: String) -> IngestError {
    IngestError::Avc(format!("RTP: {message}"))
}

impl H264Depacketizer {
    /// One RTP packet; returns the access units it completed (a timestamp change completes
    /// the previous one even when its marker packet was lost).
    pub fn push(
        &mut self,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Vec<AccessUnit>, IngestError> {
        let mut done = Vec::new();
        let lost = match self.last_sequence {
            // Old or repeated: already past it.
            Some(last) if (sequence.wrapping_sub(last) as i16) <= 0 => return Ok(done),
            Some(last) => sequence != last.wrapping_add(1),
            None => false,
        };
        self.last_sequence = Some(sequence);
        if payload.is_empty() {
            // Padding (browsers send it to probe bandwidth): it takes a sequence number and
            // carries nothing.
            if lost {
                self.mark_broken();
            }
            return Ok(done);
        }
        if self
            .current
            .as_ref()
            .is_some_and(|au| au.timestamp != timestamp)
        {
            if lost {
                // The lost packet may have ended the previous access unit.
                self.mark_broken();
            }
            done.extend(self.complete());
        }
        let au = self.current.get_or_insert_with(|| AccessUnit {
            timestamp,
            nals: Vec::new(),
            broken: false,
        });
        if lost {
            au.broken = true;
            self.fragment = None;
        }
        self.unpack(payload)?;
        if marker {
            done.extend(self.complete());
        }
        Ok(done)
    }

    fn mark_broken(&mut self) {
        if let Some(au) = &mut self.current {
            au.broken = true;
        }
    }

    fn complete(&mut self) -> Option<AccessUnit> {
        let mut au = self.current.take()?;
        if self.fragment.take().is_some() {
            au.broken = true; // a fragmented NAL unit never got its end
        }
        self.bytes = 0;
        Some(au)
    }

    fn unpack(&mut self, payload: &[u8]) -> Result<(), IngestError> {
        let Some(&header) = payload.first() else {
            return Ok(()); // padding: `push` skips it before this
        };
        if header & 0x80 != 0 {
            return Err(error("a NAL unit with its forbidden bit set".into()));
        }
        match header & 0x1f {
            1..=23 => self.nal(payload.to_vec()),
            24 => {
                let mut rest = &payload[1..];
                while !rest.is_empty() {
                    let [a, b, tail @ ..] = rest else {
                        return Err(error("a STAP-A cut inside a size".into()));
                    };
                    let size = usize::from(u16::from_be_bytes([*a, *b]));
                    if size == 0 || size > tail.len() {
                        return Err(error(format!(
                            "a STAP-A unit of {size} bytes where {} remain",
                            tail.len()
                        )));
                    }
                    self.nal(tail[..size].to_vec())?;
                    rest = &tail[size..];
                }
                Ok(())
            }
            28 => {
                let [indicator, fu_header, body @ ..] = payload else {
                    return Err(error("an FU-A without its header".into()));
                };
                let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
                if start {
                    let mut nal = vec![(indicator & 0xe0) | (fu_header & 0x1f)];
                    nal.extend_from_slice(body);
                    self.fragment = Some(nal);
                } else if let Some(nal) = &mut self.fragment {
                    nal.extend_from_slice(body);
                } else {
                    // Its start was lost.
                    self.mark_broken();
                    return Ok(());
                }
                let held = self.fragment.as_ref().map_or(0, Vec::len);
                if self.bytes + held > MAX_ACCESS_UNIT_BYTES {
                    return Err(IngestError::TooLarge {
                        what: "H.264 access unit",
                        size: self.bytes + held,
                        limit: MAX_ACCESS_UNIT_BYTES,
                    });
                }
                if end {
                    if let Some(nal) = self.fragment.take() {
                        self.nal(nal)?;
                    }
                }
                Ok(())
            }
            other => Err(error(format!(
                "NAL unit type {other} (STAP-B, MTAP and FU-B are not sent in packetization mode 1)"
            ))),
        }
    }

    fn nal(&mut self, nal: Vec<u8>) -> Result<(), IngestError> {
        let au = self
            .current
            .as_mut()
            .expect("push opens an access unit before unpacking into it");
        self.bytes += nal.len();
        if self.bytes > MAX_ACCESS_UNIT_BYTES {
            return Err(IngestError::TooLarge {
                what: "H.264 access unit",
                size: self.bytes,
                limit: MAX_ACCESS_UNIT_BYTES,
            });
        }
        if au.nals.len() >= MAX_NALS {
            return Err(error(format!(
                "more than {MAX_NALS} NAL units in one frame"
            )));
        }
        au.nals.push(nal);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_stap_a_and_fu_a_into_one_access_unit() {
        let mut d = H264Depacketizer::default();
        // STAP-A: SPS and PPS.
        let stap = [24, 0, 2, 0x67, 1, 0, 2, 0x68, 2];
        assert!(d.push(1, 900, false, &stap).unwrap().is_empty());
        // An IDR slice in three fragments.
        assert!(d
            .push(2, 900, false, &[0x7c, 0x85, 1, 2])
            .unwrap()
            .is_empty());
        assert!(d.push(3, 900, false, &[0x7c, 0x05, 3]).unwrap().is_empty());
        let aus = d.push(4, 900, true, &[0x7c, 0x45, 4]).unwrap();
        assert_eq!(aus.len(), 1);
        assert!(!aus[0].broken);
        assert_eq!(
            aus[0].nals,
            vec![vec![0x67, 1], vec![0x68, 2], vec![0x65, 1, 2, 3, 4]]
        );
    }

    #[test]
    fn a_lost_fragment_breaks_its_access_unit_and_a_new_timestamp_ends_it() {
        let mut d = H264Depacketizer::default();
        d.push(1, 900, false, &[0x7c, 0x85, 1]).unwrap();
        // Sequence 2 lost; 3 ends the fragment, then the marker is lost too.
        d.push(3, 900, false, &[0x7c, 0x45, 3]).unwrap();
        let aus = d.push(5, 3900, true, &[0x41, 9]).unwrap();
        assert_eq!(aus.len(), 2);
        assert!(aus[0].broken, "the first frame lost a fragment");
        assert!(
            aus[1].broken,
            "a packet before the second frame was lost too"
        );
        let next = d.push(6, 6900, true, &[0x41, 9]).unwrap();
        assert!(!next[0].broken);
    }

    #[test]
    fn padding_takes_a_sequence_number_and_nothing_else() {
        let mut d = H264Depacketizer::default();
        d.push(1, 900, true, &[0x65, 1]).unwrap();
        assert!(d.push(2, 900, false, &[]).unwrap().is_empty());
        let aus = d.push(3, 3900, true, &[0x41, 2]).unwrap();
        assert_eq!(aus.len(), 1);
        assert!(!aus[0].broken, "padding is not a loss");
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for payload in [&[0x80][..], &[24, 0, 5, 1], &[24, 0], &[0x7c], &[25, 0]] {
            let mut d = H264Depacketizer::default();
            assert!(d.push(1, 0, true, payload).is_err(), "{payload:?}");
        }
    }
}
