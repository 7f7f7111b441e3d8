//! What messages cost on the wire beyond their own bytes: the packets SCTP cuts them
//! into, each packet's framing, and the acknowledgements a receiver sends back. The upload
//! budget is charged with these (a budget that counts only message bytes overruns the
//! link it is set to fit), and the simulator's uplinks carry the same bytes.

/// User data per SCTP packet: the `webrtc` crate and Chromium's WebRTC both cap an SCTP
/// packet at 1,191 bytes (to fit a TURN-relayed IPv6 path), less the common header and
/// a DATA chunk header (28), rounded down to SCTP's 4-byte padding.
pub const PACKET_PAYLOAD: usize = 1160;

/// What a packet adds on the wire: SCTP common header and DATA chunk (28 bytes), a DTLS
/// 1.2 record with AES-GCM (37), UDP and IPv4 (28). Pieces fill their packets, and an
/// upload budget set below the link's rate leaves room for their framing; a small
/// control message pays this whole.
pub const CONTROL_PACKET_FRAMING: usize = 93;

/// A SACK on the wire: common header and SACK chunk (28 bytes, without gap reports),
/// DTLS (37), UDP and IPv4 (28).
pub const SACK_BYTES: usize = 93;

/// SACKs are not charged to a budget already this far in debt (a router queue's worth).
pub const ACK_DEBT_LIMIT_MS: u64 = 200;

/// Packets a message of `len` bytes takes.
pub fn packets(len: usize) -> usize {
    len.div_ceil(PACKET_PAYLOAD).max(1)
}

/// The acknowledgements a peer's uplink carries for what one association receives
/// (drivers and the core keep one per link). SCTP sends a SACK for every second packet
/// (RFC 4960 §6.2; both the `webrtc` crate and Chromium do), so a viewer downloading the stream and its neighbours' announcements sends about one
/// small packet for every two it gets: measured on a zero-upload native viewer, 1.1 MB
/// in 75 s (9,518 packets) for 8.8 MB of pieces and the announcements, 12% of the
/// stream's rate on its uplink, which no budget counted.
#[derive(Debug, Default, Clone)]
pub struct Acknowledgements {
    /// Packets received since the last SACK (0 or 1).
    unacked: usize,
}

impl Acknowledgements {
    /// Uplink bytes of the SACKs that receiving a message of `len` bytes sends.
    pub fn on_received(&mut self, len: usize) -> usize {
        let received = self.unacked + packets(len);
        self.unacked = received % 2;
        received / 2 * SACK_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sack_goes_for_every_second_packet() {
        let mut acks = Acknowledgements::default();
        assert_eq!(
            acks.on_received(10),
            0,
            "one packet: the SACK waits for a second"
        );
        assert_eq!(acks.on_received(10), SACK_BYTES);
        // A 16 KiB piece is 15 packets: 7 SACKs, one packet left over for the next.
        assert_eq!(packets(16 * 1024), 15);
        assert_eq!(acks.on_received(16 * 1024), 7 * SACK_BYTES);
        assert_eq!(acks.on_received(1), SACK_BYTES);
        assert_eq!(packets(0), 1, "an empty message still takes a packet");
    }
}
