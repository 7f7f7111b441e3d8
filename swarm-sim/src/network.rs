//! The modelled network: each peer's uplink is one FIFO at its capacity; links add
//! propagation delay; a link's control channel is reliable and ordered, so a lost packet
//! delays its message (and everything behind it on that channel) by a retransmission.
//! Pieces travel as the offerer's [`PiecesChannel`] says: on that channel too (shared),
//! on an unordered reliable channel of their own (a loss delays only its piece), or one
//! whose messages are given up after a lifetime (a piece whose retransmission, or whose
//! wait in the sender's queue, would outlast it never arrives). Downlinks are assumed
//! wider than uplinks and are not modelled.

use std::collections::VecDeque;

use protocol::PiecesChannel;
use rand::Rng;

use crate::recovery::{Recovery, GAP_REPORTS};

/// Bytes of data per packet, and the framing each packet adds (the core charges its
/// budget with the same figures).
pub use swarm::{CONTROL_PACKET_FRAMING as PACKET_FRAMING, PACKET_PAYLOAD};

/// Packet framing a message of `len` bytes pays on the wire.
pub fn framing(len: usize) -> usize {
    swarm::packets(len) * PACKET_FRAMING
}

/// SACKs are not queued behind more than this much of an uplink (a router's queue): the
/// core's limit on charging them to its budget.
pub const ACK_BACKLOG_LIMIT: Micros = swarm::ACK_DEBT_LIMIT_MS * 1000;

/// Time in microseconds since the simulation began.
pub type Micros = u64;

/// A lost packet among a message's last this many is not followed by enough of the
/// message's own packets for SCTP's fast retransmit.
const TAIL_PACKETS: usize = GAP_REPORTS;

/// Random packet loss on every link, and what a loss costs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loss {
    /// Share of packets lost.
    pub rate: f64,
    /// How long a lost packet at a message's tail waits: SCTP's retransmission time-out
    /// (RTO.min is 1 s in the `webrtc` crate). 0: a round trip, as an earlier one.
    pub tail_recovery: Micros,
    /// Which later packets report a gap at a message's tail.
    pub fast_retransmit: FastRetransmit,
}

/// Which packets count towards the three reports of a gap that make SCTP retransmit a
/// lost packet before its time-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FastRetransmit {
    /// Every later packet of the association, on any channel (what SCTP does): a loss near
    /// a message's end waits for what the link sends next (`recovery.rs`).
    #[default]
    Association,
    /// The message's own packets only: a loss among its last three always waits for the
    /// time-out (the model before 2026-12-08, pessimistic on a busy link).
    Message,
}

/// What became of a message handed to [`Uplink::transmit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Sent<T> {
    /// It arrives then.
    Arrives(Micros, T),
    /// Held by its link until a lost packet's recovery settles when it arrives
    /// ([`LinkEnd::take_released`] hands it over then). With a time-out: it lost the
    /// packet, and [`LinkEnd::expire`] is due then at the latest; without: it waits
    /// behind such a message on the ordered channel.
    Waits(Option<Micros>),
    /// Its channel gave it up (`PiecesChannel::Lifetime`).
    GivenUp,
}

/// One direction of a link, kept by its sender, with the messages `T` that wait on it.
#[derive(Debug)]
pub struct LinkEnd<T> {
    pub rtt_ms: u64,
    /// How this link carries pieces (its offerer's choice).
    pub pieces: PiecesChannel,
    /// When the last message on the ordered control channel arrives.
    last_arrival: Micros,
    /// Messages not yet fully sent: when each leaves the uplink, and its size.
    queued: VecDeque<(Micros, u64)>,
    queued_bytes: u64,
    /// What the driver last told the swarm was queued.
    pub reported: u64,
    /// A drain report is scheduled (the browser's `bufferedamountlow` event).
    pub drain_pending: bool,
    /// Messages waiting for a lost packet to be recovered.
    recovery: Recovery<T>,
}

impl<T> LinkEnd<T> {
    pub fn new(rtt_ms: u64, pieces: PiecesChannel) -> LinkEnd<T> {
        LinkEnd {
            rtt_ms,
            pieces,
            last_arrival: 0,
            queued: VecDeque::new(),
            queued_bytes: 0,
            reported: 0,
            drain_pending: false,
            recovery: Recovery::default(),
        }
    }

    /// Retransmission time-outs due by `now` fire; returns how many did. What that lets
    /// arrive is in [`LinkEnd::take_released`].
    pub fn expire(&mut self, now: Micros) -> usize {
        let expired = self.recovery.expire(now);
        self.recovery.release(&mut self.last_arrival);
        expired
    }

    /// Messages that waited for a recovery and now arrive, with when.
    pub fn take_released(&mut self) -> Vec<(Micros, T)> {
        self.recovery.take_released()
    }

    /// Bytes still waiting in the uplink at `now` (what `bufferedAmount` reports).
    pub fn buffered(&mut self, now: Micros) -> u64 {
        while let Some(&(departs, bytes)) = self.queued.front() {
            if departs > now {
                break;
            }
            self.queued.pop_front();
            self.queued_bytes -= bytes;
        }
        self.queued_bytes
    }

    /// When the queue will have drained to at most `low_water` bytes, if it is above now.
    pub fn drained_at(&self, low_water: u64) -> Option<Micros> {
        let mut remaining = self.queued_bytes;
        if remaining <= low_water {
            return None;
        }
        for &(departs, bytes) in &self.queued {
            remaining -= bytes;
            if remaining <= low_water {
                return Some(departs);
            }
        }
        None
    }
}

/// A peer's uplink.
#[derive(Debug)]
pub struct Uplink {
    /// Capacity in bytes per second.
    pub capacity: f64,
    free_at: Micros,
    /// The router queue's length in time at capacity; `None`: unbounded.
    queue_limit: Option<Micros>,
    /// How long a piece that lost packets at the full queue waits to be recovered.
    recovery: Micros,
    /// Packets dropped at the full queue.
    pub dropped_packets: u64,
}

impl Uplink {
    pub fn new(capacity: f64) -> Uplink {
        Uplink {
            capacity: capacity.max(1.0),
            free_at: 0,
            queue_limit: None,
            recovery: 0,
            dropped_packets: 0,
        }
    }

    /// An uplink whose router queue holds `limit` of sending at its capacity; a piece
    /// that loses packets there arrives `recovery` after it was sent, at the earliest.
    pub fn with_queue(capacity: f64, limit: Micros, recovery: Micros) -> Uplink {
        Uplink {
            queue_limit: Some(limit),
            recovery,
            ..Uplink::new(capacity)
        }
    }

    /// Sends `bytes` of acknowledgements for what this peer received, in the FIFO with
    /// everything else; not behind more than [`ACK_BACKLOG_LIMIT`] of it. SACKs are
    /// cumulative, so the next covers what a lost one said, and a router queue holds no
    /// more than that: counted in an unbounded FIFO, the SACKs for a flood of deliveries
    /// held a control-only uplink's requests back for 20 s, so its pulls kept turning
    /// overdue and moving, and it never started (the hostile-swarm test, seed 7).
    /// Returns the bytes it queued.
    pub fn acknowledge(&mut self, now: Micros, bytes: usize) -> usize {
        let limit = self.queue_limit.unwrap_or(ACK_BACKLOG_LIMIT);
        if bytes == 0 || self.free_at.saturating_sub(now) > limit {
            return 0;
        }
        let serialise = (bytes as f64 * 1e6 / self.capacity).ceil() as Micros;
        self.free_at = self.free_at.max(now) + serialise;
        bytes
    }

    /// Queue `message`, of `len` bytes, on `link`: when it arrives at the far end, unless
    /// it waits on the link for a lost packet's recovery or its channel gave it up
    /// (`PiecesChannel::Lifetime`). Every message waits its turn in the uplink's FIFO;
    /// `bulk` (a piece) says which channel it travels on and whether the router queue's
    /// limit applies. Its packets may settle when earlier messages that wait arrive:
    /// [`LinkEnd::take_released`].
    #[allow(clippy::too_many_arguments)]
    pub fn transmit<T>(
        &mut self,
        now: Micros,
        link: &mut LinkEnd<T>,
        len: usize,
        bulk: bool,
        loss: Loss,
        rng: &mut impl Rng,
        message: T,
    ) -> Sent<T> {
        let packets = swarm::packets(len);
        let wire = (len + framing(len)) as u64;
        let serialise = (wire as f64 * 1e6 / self.capacity).ceil() as Micros;
        // Everything waits its turn: SCTP hands a piece's packets to the router at once
        // (its window allows), so a request, an announcement or a SACK sent after it
        // queues behind it in the router's FIFO. (Letting control messages skip the
        // queue made pulls faster than measured on real shaped uplinks: first piece
        // p50 264 ms against 521 real; in the FIFO 296. See docs/benchmarks.md.)
        let departs = self.free_at.max(now) + serialise;
        let lifetime = match link.pieces {
            PiecesChannel::Lifetime(ms) if bulk => Some(u64::from(ms) * 1000),
            _ => None,
        };
        // Expired while it waited in the sender's queue: the transport drops it unsent.
        if lifetime.is_some_and(|life| departs - now > life) {
            return Sent::GivenUp;
        }
        // A full router queue drops the packets that find no room (tail drop). The
        // transport sends them again later, which takes the same share of the uplink, so
        // the queue's timing stays as if they had waited; the piece waits for recovery.
        let mut recovered_at = 0;
        if let Some(limit) = self.queue_limit.filter(|_| bulk) {
            let backlog = self.free_at.saturating_sub(now);
            let per_packet = (serialise / packets as u64).max(1);
            let room = limit.saturating_sub(backlog) / per_packet;
            let dropped = (packets as u64).saturating_sub(room);
            if dropped > 0 {
                self.dropped_packets += dropped;
                recovered_at = now + self.recovery;
            }
        }

        self.free_at = self.free_at.max(now) + serialise;
        // Kept in order of departure (one FIFO: the same as the order sent), which
        // `buffered` and `drained_at` read front to back.
        let at = link.queued.partition_point(|&(d, _)| d <= departs);
        link.queued.insert(at, (departs, wire));
        link.queued_bytes += wire;
        let one_way = link.rtt_ms * 500;
        let rtt = link.rtt_ms * 1000;
        // The sender's queue (`bufferedAmount`) is empty of it once it left; a dropped
        // packet waits in the transport, which a data channel does not report.
        // When its last packet was sent (again, if lost): what a lifetime counts to.
        let mut last_sent = departs.max(recovered_at);
        // Its packets report the gaps of earlier losses on this association; those the
        // router queue dropped report nothing until they are resent.
        let by_association = loss.fast_retransmit == FastRetransmit::Association;
        if by_association {
            let per_packet = serialise / packets as u64;
            link.recovery
                .sent(last_sent - serialise, per_packet, packets, one_way);
        }
        let mut arrives = last_sent + one_way;
        // With a lost packet among its last three: how many later packets of the link
        // must report it before it is sent again.
        let mut tail_lost = None;
        // A lifetime's give-up is decided as it is sent, so there a tail loss takes the
        // time-out, as by the message's own packets.
        let by_link = by_association && lifetime.is_none();
        let resent_after = match draw_loss(loss.rate, packets, by_link, rng) {
            Drawn::Kept => 0,
            Drawn::Early => rtt,
            Drawn::Tail {
                behind: Some(behind),
            } => {
                tail_lost = Some(GAP_REPORTS - behind);
                0
            }
            Drawn::Tail { behind: None } => loss.tail_recovery.max(rtt),
        };
        arrives += resent_after;
        last_sent += resent_after;
        let ordered = !(bulk && link.pieces != PiecesChannel::Shared);
        // Its packets may have settled earlier messages' recovery, so every outcome
        // releases them below.
        let sent = if lifetime.is_some_and(|life| last_sent - now > life) {
            Sent::GivenUp
        } else if let Some(needs) = tail_lost {
            let timeout = arrives + loss.tail_recovery.max(rtt);
            link.recovery
                .lost(message, ordered, needs, arrives + rtt, timeout);
            Sent::Waits(Some(timeout))
        } else if !ordered {
            // Unordered: it neither waits for nor holds up anything else.
            Sent::Arrives(arrives, message)
        } else if link.recovery.holds_ordered() {
            link.recovery.hold(message, arrives);
            Sent::Waits(None)
        } else {
            // Ordered delivery: nothing overtakes a delayed message.
            arrives = arrives.max(link.last_arrival);
            link.last_arrival = arrives;
            Sent::Arrives(arrives, message)
        };
        link.recovery.release(&mut link.last_arrival);
        sent
    }
}

/// Whether a message lost a packet, and where.
enum Drawn {
    Kept,
    /// Early enough that the message's own later packets report it: a round trip.
    Early,
    /// Among its last three; with `locate`, how many of its own packets follow it.
    Tail {
        behind: Option<usize>,
    },
}

/// Draws the loss of a message of `packets` packets, each lost at `rate`; `locate` also
/// draws where in its last three a tail loss fell.
fn draw_loss(rate: f64, packets: usize, locate: bool, rng: &mut impl Rng) -> Drawn {
    if rate <= 0.0 {
        return Drawn::Kept;
    }
    let kept = 1.0 - rate;
    let lost = 1.0 - kept.powi(packets as i32);
    if !rng.gen_bool(lost) {
        return Drawn::Kept;
    }
    // Which packet: one of the last three has too few behind it for the gap to be
    // reported three times, so it waits for the retransmission time-out or for what
    // follows it; an earlier one is fast-retransmitted about a round trip later.
    let tail = 1.0 - kept.powi(packets.min(TAIL_PACKETS) as i32);
    if !rng.gen_bool((tail / lost).min(1.0)) {
        return Drawn::Early;
    }
    let behind = locate.then(|| rng.gen_range(0..packets.min(TAIL_PACKETS)));
    Drawn::Tail { behind }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    /// Loss at `rate`, every lost packet recovered a round trip later.
    /// A full packet's payload and its size on the wire; a rate that sends one a ms.
    const P: usize = PACKET_PAYLOAD;
    const W: u64 = (PACKET_PAYLOAD + PACKET_FRAMING) as u64;
    const WIRE_PER_MS: f64 = W as f64 * 1000.0;

    fn lossy(rate: f64) -> Loss {
        Loss {
            rate,
            tail_recovery: 0,
            fast_retransmit: FastRetransmit::Message,
        }
    }

    /// Every packet lost, recovered as SCTP does, with a 1 s time-out.
    fn lose_every_packet() -> Loss {
        Loss {
            rate: 1.0,
            tail_recovery: 1_000_000,
            fast_retransmit: FastRetransmit::Association,
        }
    }

    impl Uplink {
        /// [`Uplink::transmit`] of a message without content that never waits on its
        /// link: when it arrives, `None` if its channel gave it up.
        fn send(
            &mut self,
            now: Micros,
            link: &mut LinkEnd<()>,
            len: usize,
            bulk: bool,
            loss: Loss,
            rng: &mut impl Rng,
        ) -> Option<Micros> {
            match self.transmit(now, link, len, bulk, loss, rng, ()) {
                Sent::Arrives(at, ()) => Some(at),
                Sent::GivenUp => None,
                Sent::Waits(_) => panic!("a lost packet's recovery is tested with `transmit`"),
            }
        }
    }

    #[test]
    fn the_uplink_serialises_every_message_in_one_fifo() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(WIRE_PER_MS);
        let mut link = LinkEnd::new(100, PiecesChannel::Shared);
        let first = uplink
            .send(0, &mut link, P, true, Loss::default(), &mut rng)
            .unwrap();
        let second = uplink
            .send(0, &mut link, P, true, Loss::default(), &mut rng)
            .unwrap();
        assert_eq!(first, 1_000 + 50_000, "1 ms on the wire, then half the RTT");
        assert_eq!(second, 2_000 + 50_000, "queued behind the first");
        let mut other = LinkEnd::new(100, PiecesChannel::Shared);
        let control = uplink
            .send(0, &mut other, 20, false, Loss::default(), &mut rng)
            .unwrap();
        assert!(
            control > second,
            "a control message on another link waits in the router's queue too"
        );
        assert_eq!(uplink.acknowledge(0, 10 * W as usize), 10 * W as usize);
        let after_acks = uplink
            .send(0, &mut link, P, true, Loss::default(), &mut rng)
            .unwrap();
        assert!(
            after_acks > control + 10_000,
            "and so does a piece behind 10 ms of acknowledgements: {after_acks}"
        );
        assert_eq!(link.buffered(0), 3 * W, "this link's messages only");
        assert_eq!(link.buffered(20_000), 0);
    }

    #[test]
    fn a_link_knows_when_its_queue_drains_to_the_low_water_mark() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(WIRE_PER_MS);
        let mut link = LinkEnd::new(100, PiecesChannel::Shared);
        for _ in 0..4 {
            uplink.send(0, &mut link, P, true, Loss::default(), &mut rng);
        }
        assert_eq!(
            link.drained_at(2 * W),
            Some(2_000),
            "two packets sent by 2 ms"
        );
        assert_eq!(link.drained_at(10_000), None, "already below");
        link.buffered(2_000);
        assert_eq!(link.drained_at(2 * W), None);
    }

    #[test]
    fn sacks_do_not_queue_behind_more_than_a_router_holds() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(WIRE_PER_MS);
        // 10 s of SACKs offered at once: only what fits within the limit is queued.
        let queued: usize = (0..10_000).map(|_| uplink.acknowledge(0, W as usize)).sum();
        assert!(
            queued <= 201 * W as usize,
            "only about the limit's worth was queued: {queued}"
        );
        let mut link = LinkEnd::new(2, PiecesChannel::Shared);
        let request = uplink
            .send(0, &mut link, 20, false, Loss::default(), &mut rng)
            .unwrap();
        assert!(
            request <= ACK_BACKLOG_LIMIT + 3_000,
            "a request waits at most the limit behind SACKs: {request}"
        );
        assert!(request >= ACK_BACKLOG_LIMIT, "but it does wait: {request}");
    }

    #[test]
    fn a_control_message_waits_behind_queued_pieces() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(WIRE_PER_MS);
        let mut link = LinkEnd::new(100, PiecesChannel::Shared);
        for _ in 0..4 {
            uplink.send(0, &mut link, P, true, Loss::default(), &mut rng);
        }
        let control = uplink
            .send(0, &mut link, 20, false, Loss::default(), &mut rng)
            .unwrap();
        assert!(
            control > 4_000 + 50_000,
            "left after the four packets: {control}"
        );
        assert_eq!(
            link.buffered(1_000),
            3 * W + 20 + PACKET_FRAMING as u64,
            "the first packet left"
        );
        let drained = link.drained_at(W).expect("still above the mark");
        assert!(
            drained > 1_000,
            "a drain is never due in the past: {drained}"
        );
    }

    #[test]
    fn a_lost_packet_delays_its_message_and_those_behind_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(1e9);
        let mut link = LinkEnd::new(100, PiecesChannel::Shared);
        let lost = uplink
            .send(0, &mut link, 16_000, true, lossy(0.49), &mut rng)
            .unwrap();
        let next = uplink
            .send(0, &mut link, 10, false, Loss::default(), &mut rng)
            .unwrap();
        // 14 packets at 49% loss: the message is all but certainly delayed.
        assert!(lost >= 150_000, "arrived at {lost}");
        assert_eq!(
            next, lost,
            "an ordered link does not let the next message overtake"
        );
    }

    #[test]
    fn a_lost_packet_at_a_messages_tail_waits_for_the_time_out() {
        let mut rng = StdRng::seed_from_u64(1);
        let loss = Loss {
            rate: 0.05,
            tail_recovery: 1_000_000,
            fast_retransmit: FastRetransmit::Message,
        };
        // One packet: any loss is at the tail. 14 packets: most losses are earlier.
        let mut delays = |len: usize| -> Vec<Micros> {
            (0..4_000)
                .map(|_| {
                    let mut uplink = Uplink::new(1e9);
                    let mut link = LinkEnd::new(10, PiecesChannel::Shared);
                    let arrives = uplink.send(0, &mut link, len, true, loss, &mut rng);
                    arrives.unwrap() - 5_000
                })
                .collect()
        };
        let timed_out = |delays: &[Micros]| delays.iter().filter(|&&d| d >= 1_000_000).count();
        let fast = |delays: &[Micros]| {
            delays
                .iter()
                .filter(|&&d| (10_000..100_000).contains(&d))
                .count()
        };
        let small = delays(20);
        assert_eq!(fast(&small), 0, "a lone packet is never fast-retransmitted");
        assert!(
            (150..250).contains(&timed_out(&small)),
            "{}",
            timed_out(&small)
        );
        let piece = delays(16_000);
        // 14 packets at 5%: 51% of pieces lose one, 14% one of the last three.
        assert!(
            (450..700).contains(&timed_out(&piece)),
            "{}",
            timed_out(&piece)
        );
        assert!((1_300..1_700).contains(&fast(&piece)), "{}", fast(&piece));
    }

    #[test]
    fn a_tail_loss_is_resent_once_three_later_packets_of_the_link_report_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(1e9);
        let mut link = LinkEnd::new(100, PiecesChannel::Unordered);
        let lose_all = lose_every_packet();
        let none = Loss::default();
        let request = uplink.transmit(0, &mut link, 20, false, lose_all, &mut rng, "request");
        assert_eq!(
            request,
            Sent::Waits(Some(1 + 50_000 + 1_000_000)),
            "a lone packet (1 µs on the wire) waits for later ones, or for the time-out a \
             second after it would have arrived"
        );
        assert_eq!(
            uplink.transmit(1_000, &mut link, 20, false, none, &mut rng, "have"),
            Sent::Waits(None),
            "the ordered channel holds the next message behind it"
        );
        assert!(
            link.take_released().is_empty(),
            "one later packet is not enough"
        );
        let piece = uplink.transmit(2_000, &mut link, 16_000, true, none, &mut rng, "piece");
        assert!(
            matches!(piece, Sent::Arrives(at, "piece") if at < 60_000),
            "an unordered piece overtakes both: {piece:?}"
        );
        let released = link.take_released();
        let order: Vec<&str> = released.iter().map(|(_, m)| *m).collect();
        assert_eq!(order, ["request", "have"]);
        let (at, _) = released[0];
        assert!(
            (152_000..153_000).contains(&at),
            "the piece's second packet reported the gap a third time; the SACK and the \
             resend take a one-way each: {at}"
        );
        assert_eq!(released[1].0, at, "the `Have` arrives right behind it");
    }

    #[test]
    fn a_tail_loss_on_a_link_that_falls_silent_waits_for_the_time_out() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(1e9);
        let mut link = LinkEnd::new(100, PiecesChannel::Unordered);
        let lose_all = lose_every_packet();
        let Sent::Waits(Some(timeout)) =
            uplink.transmit(0, &mut link, 16_000, true, lose_all, &mut rng, "piece")
        else {
            panic!("a piece that loses every packet waits");
        };
        assert_eq!(link.expire(timeout - 1), 0);
        assert!(link.take_released().is_empty());
        assert_eq!(link.expire(timeout), 1);
        assert_eq!(link.take_released(), [(timeout, "piece")]);
    }

    #[test]
    fn a_given_up_piece_still_reports_the_gaps_before_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(1e9);
        // A 90 ms lifetime: a lost piece's retransmission would outlive it.
        let mut link = LinkEnd::new(100, PiecesChannel::Lifetime(90));
        let lose_all = lose_every_packet();
        let request = uplink.transmit(0, &mut link, 20, false, lose_all, &mut rng, "request");
        assert!(matches!(request, Sent::Waits(Some(_))), "{request:?}");
        let piece = uplink.transmit(0, &mut link, 16_000, true, lose_all, &mut rng, "piece");
        assert_eq!(piece, Sent::GivenUp);
        let released = link.take_released();
        assert_eq!(
            released.len(),
            1,
            "its packets went out and reported the request's gap: {released:?}"
        );
        assert!(
            (150_000..200_000).contains(&released[0].0),
            "resent a round trip and a half later, not at the time-out: {released:?}"
        );
        assert_eq!(link.expire(2_000_000), 0, "nothing is left to time out");
    }

    #[test]
    fn an_unordered_piece_delayed_by_a_loss_holds_up_nothing_else() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(1e9);
        let mut link = LinkEnd::new(100, PiecesChannel::Unordered);
        let lost = uplink
            .send(0, &mut link, 16_000, true, lossy(0.49), &mut rng)
            .unwrap();
        assert!(
            lost >= 150_000,
            "arrived at {lost}: retransmitted a round trip later"
        );
        let next = uplink
            .send(0, &mut link, 10, false, Loss::default(), &mut rng)
            .unwrap();
        assert!(next < 60_000, "a control message overtakes it: {next}");
        let piece = uplink
            .send(0, &mut link, 16_000, true, Loss::default(), &mut rng)
            .unwrap();
        assert!(piece < 60_000, "and so does the next piece: {piece}");
    }

    #[test]
    fn a_piece_that_would_outlive_its_lifetime_never_arrives() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut uplink = Uplink::new(1e9);
        // A retransmission takes a 100 ms round trip more, past a 90 ms lifetime (a
        // piece sent once arrives later than that, half a round trip on, all the same).
        let mut link = LinkEnd::new(100, PiecesChannel::Lifetime(90));
        assert_eq!(
            uplink.send(0, &mut link, 16_000, true, lossy(0.49), &mut rng),
            None
        );
        assert!(uplink
            .send(0, &mut link, 16_000, true, Loss::default(), &mut rng)
            .is_some());
        // Nor does one that would wait longer than it in the sender's queue.
        let mut slow = Uplink::new(100_000.0);
        let mut link = LinkEnd::new(2, PiecesChannel::Lifetime(120));
        let sent: Vec<bool> = (0..3)
            .map(|_| {
                slow.send(0, &mut link, 5_000, true, Loss::default(), &mut rng)
                    .is_some()
            })
            .collect();
        assert_eq!(
            sent,
            [true, true, false],
            "the third waits 160 ms: given up"
        );
    }

    #[test]
    fn a_full_router_queue_drops_packets_and_the_piece_waits_for_recovery() {
        let mut rng = StdRng::seed_from_u64(1);
        // One full packet per millisecond; the queue holds 5 ms; recovery takes 1 s.
        let mut uplink = Uplink::with_queue(WIRE_PER_MS, 5_000, 1_000_000);
        let mut link = LinkEnd::new(2, PiecesChannel::Shared);
        let fits = uplink
            .send(0, &mut link, 4 * P, true, Loss::default(), &mut rng)
            .unwrap();
        assert_eq!(fits, 4_000 + 1_000, "4 packets fit the 5 ms queue");
        assert_eq!(uplink.dropped_packets, 0);
        let overflows = uplink
            .send(0, &mut link, 4 * P, true, Loss::default(), &mut rng)
            .unwrap();
        assert_eq!(
            uplink.dropped_packets, 3,
            "one more packet had room, three did not"
        );
        assert_eq!(overflows, 1_000_000 + 1_000, "recovered, then half the RTT");
        // The queue itself kept its timing: what the sender reports as buffered is gone
        // once sent, the retransmission is the transport's.
        assert_eq!(link.buffered(8_000), 0);
        let mut unbounded = Uplink::new(WIRE_PER_MS);
        let mut other = LinkEnd::new(2, PiecesChannel::Shared);
        for _ in 0..10 {
            unbounded.send(0, &mut other, 4 * P, true, Loss::default(), &mut rng);
        }
        assert_eq!(
            unbounded.dropped_packets, 0,
            "without a limit nothing drops"
        );
    }
}
