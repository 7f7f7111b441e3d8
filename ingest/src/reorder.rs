//! Puts RTP packets back in sequence order. A packet after a gap waits until the missing
//! one arrives (reordered on the way, or retransmitted after a NACK) or until [`HOLD`]
//! later packets came; then the gap is given up and the depacketiser sees it as a loss.

use std::collections::BTreeMap;

/// Packets held behind a gap before it is given up (at 1-2 Mbit/s, ~30-60 ms of video).
pub(crate) const HOLD: usize = 24;
/// A jump this far ahead is a restarted sender, not a gap to wait for.
const RESTART: u64 = 3000;

pub(crate) struct OwnedPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct Reorder {
    /// The extended sequence number expected next.
    next: Option<u64>,
    held: BTreeMap<u64, OwnedPacket>,
}

impl Reorder {
    /// One packet in; the packets now in order out.
    pub fn push(&mut self, packet: OwnedPacket) -> Vec<OwnedPacket> {
        let next = *self
            .next
            .get_or_insert(u64::from(packet.sequence) + (1 << 16));
        let step = i64::from(packet.sequence.wrapping_sub(next as u16) as i16);
        let Some(at) = next.checked_add_signed(step) else {
            return Vec::new();
        };
        if at < next || self.held.contains_key(&at) {
            return Vec::new(); // late or repeated: already given up or held
        }
        if at - next > RESTART {
            let mut out = self.flush();
            self.next = Some(at + 1);
            out.push(packet);
            return out;
        }
        self.held.insert(at, packet);
        let mut out = Vec::new();
        if self.held.len() > HOLD {
            // Give up the gap: resume from the oldest packet held.
            self.next = self.held.keys().next().copied();
        }
        let mut expected = self.next.expect("set above");
        while let Some(packet) = self.held.remove(&expected) {
            out.push(packet);
            expected += 1;
        }
        self.next = Some(expected);
        out
    }

    /// Everything held, in order (the stream ended).
    pub fn flush(&mut self) -> Vec<OwnedPacket> {
        let out: Vec<OwnedPacket> = std::mem::take(&mut self.held).into_values().collect();
        if let Some(last) = out.last() {
            let base = self.next.unwrap_or(0) & !0xffff;
            self.next = Some(base + u64::from(last.sequence) + 1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sequence: u16) -> OwnedPacket {
        OwnedPacket {
            sequence,
            timestamp: 0,
            marker: false,
            payload: vec![1],
        }
    }

    fn order(reorder: &mut Reorder, sequence: u16) -> Vec<u16> {
        reorder
            .push(packet(sequence))
            .iter()
            .map(|p| p.sequence)
            .collect()
    }

    #[test]
    fn a_late_packet_fills_its_gap_across_the_wrap() {
        let mut r = Reorder::default();
        assert_eq!(order(&mut r, 65534), [65534]);
        assert_eq!(order(&mut r, 0), Vec::<u16>::new());
        assert_eq!(order(&mut r, 1), Vec::<u16>::new());
        assert_eq!(order(&mut r, 65535), [65535, 0, 1]);
        assert_eq!(
            order(&mut r, 65535),
            Vec::<u16>::new(),
            "a repeat is dropped"
        );
    }

    #[test]
    fn a_gap_is_given_up_after_hold_packets() {
        let mut r = Reorder::default();
        assert_eq!(order(&mut r, 10), [10]);
        for s in 12..12 + HOLD as u16 {
            assert!(order(&mut r, s).is_empty());
        }
        let released = order(&mut r, 12 + HOLD as u16);
        assert_eq!(released.len(), HOLD + 1);
        assert_eq!(released[0], 12);
        assert!(order(&mut r, 11).is_empty(), "too late");
        assert_eq!(order(&mut r, 13 + HOLD as u16), [13 + HOLD as u16]);
    }
}
