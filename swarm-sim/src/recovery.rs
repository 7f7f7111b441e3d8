//! How an SCTP association recovers a lost packet that too few of the message's own
//! packets follow: by fast retransmit once three later packets of the association, on any
//! of its channels, have been reported to the sender (each arrival behind a gap makes the
//! receiver send a SACK at once: `rtc-sctp` `association/mod.rs`, `miss_indicator`), or by
//! the retransmission time-out, whichever comes first. On a busy link that is a round trip
//! and a half after the third later packet left; on a link that falls silent it is the
//! time-out (RTO.min, 1 s in the `webrtc` crate).
//!
//! When a message is sent, what the link will send next is not known yet, so such a
//! message waits here (with the ordered channel's messages behind it) until later sends on
//! the link, or its time-out, settle when it arrives.

use std::collections::VecDeque;

use crate::network::Micros;

/// A lost packet is sent again once this many later packets reported its gap.
pub const GAP_REPORTS: usize = 3;

/// Messages of one direction of a link that wait for a lost packet's recovery.
#[derive(Debug)]
pub struct Recovery<T> {
    waiting: VecDeque<Waiting<T>>,
    /// Messages whose arrival is now known, for the driver to deliver.
    released: Vec<(Micros, T)>,
}

impl<T> Default for Recovery<T> {
    fn default() -> Self {
        Recovery {
            waiting: VecDeque::new(),
            released: Vec::new(),
        }
    }
}

impl<T> Recovery<T> {
    /// A message's `packets` left the uplink one every `per_packet` from `start` on: each
    /// reports the gaps before it, and a gap reported enough is retransmitted, arriving
    /// three one-way delays after the packet that completed its reports left.
    pub fn sent(&mut self, start: Micros, per_packet: Micros, packets: usize, one_way: Micros) {
        for w in self.waiting.iter_mut().filter(|w| w.needs > 0) {
            if w.needs <= packets {
                let reported_by = start + per_packet * w.needs as u64;
                let resent = reported_by + 3 * one_way;
                w.arrives = Some(resent.min(w.timeout).max(w.earliest));
                w.needs = 0;
            } else {
                w.needs -= packets;
            }
        }
    }

    /// A message lost one of its packets with only `needs` short of [`GAP_REPORTS`]
    /// packets after it in the message: it waits for later sends or the time-out.
    pub fn lost(
        &mut self,
        message: T,
        ordered: bool,
        needs: usize,
        earliest: Micros,
        timeout: Micros,
    ) {
        self.waiting.push_back(Waiting {
            message,
            ordered,
            needs,
            arrives: None,
            earliest,
            timeout,
        });
    }

    /// Whether an ordered message sent now must wait behind one still recovering.
    pub fn holds_ordered(&self) -> bool {
        self.waiting.iter().any(|w| w.ordered)
    }

    /// An ordered message that would arrive at `arrives` but must not overtake a waiting
    /// one.
    pub fn hold(&mut self, message: T, arrives: Micros) {
        self.waiting.push_back(Waiting {
            message,
            ordered: true,
            needs: 0,
            arrives: Some(arrives),
            earliest: arrives,
            timeout: arrives,
        });
    }

    /// The time-outs due by `now` resend their packets; returns how many did.
    pub fn expire(&mut self, now: Micros) -> usize {
        let mut expired = 0;
        for w in self.waiting.iter_mut().filter(|w| w.needs > 0) {
            if w.timeout <= now {
                w.arrives = Some(w.timeout);
                w.needs = 0;
                expired += 1;
            }
        }
        expired
    }

    /// Moves every message whose arrival is known, and which no earlier ordered message
    /// holds back, to the released ones; ordered ones arrive in order, after
    /// `last_arrival` (the ordered channel's last delivery, updated).
    pub fn release(&mut self, last_arrival: &mut Micros) {
        let mut blocked = false;
        let mut i = 0;
        while i < self.waiting.len() {
            let w = &self.waiting[i];
            let ready = w.arrives.filter(|_| !(w.ordered && blocked));
            let Some(mut at) = ready else {
                blocked |= w.ordered;
                i += 1;
                continue;
            };
            let w = self
                .waiting
                .remove(i)
                .expect("the index was just read from the queue");
            if w.ordered {
                at = at.max(*last_arrival);
                *last_arrival = at;
            }
            self.released.push((at, w.message));
        }
    }

    /// The messages released since the last call, with when each arrives.
    pub fn take_released(&mut self) -> Vec<(Micros, T)> {
        std::mem::take(&mut self.released)
    }

    /// Messages still waiting.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[derive(Debug)]
struct Waiting<T> {
    message: T,
    /// On the ordered channel: it neither overtakes nor lets anything overtake it.
    ordered: bool,
    /// Later packets still to be sent before the gap has been reported enough; 0 once
    /// its arrival is known (or for a message only held back behind a lost one).
    needs: usize,
    arrives: Option<Micros>,
    /// The soonest it can arrive once lost: a round trip after it would have.
    earliest: Micros,
    /// When it arrives if the retransmission time-out resends it.
    timeout: Micros,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_later_packets_bring_the_retransmission_forward() {
        let mut r = Recovery::default();
        r.lost("lost", false, 3, 100, 1_000_000);
        r.sent(10_000, 1_000, 2, 50_000);
        let mut last = 0;
        r.release(&mut last);
        assert!(r.take_released().is_empty(), "two packets report it twice");
        r.sent(20_000, 1_000, 15, 50_000);
        r.release(&mut last);
        assert_eq!(
            r.take_released(),
            [(20_000 + 1_000 + 150_000, "lost")],
            "the third later packet left at 21 ms; SACK and resend take three one-ways"
        );
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn a_silent_link_waits_for_the_time_out() {
        let mut r = Recovery::default();
        r.lost("lost", true, 3, 100, 1_000_000);
        r.sent(10_000, 1_000, 1, 5_000);
        assert_eq!(r.expire(999_999), 0);
        assert_eq!(r.expire(1_000_000), 1);
        let mut last = 0;
        r.release(&mut last);
        assert_eq!(r.take_released(), [(1_000_000, "lost")]);
        assert_eq!(last, 1_000_000);
    }

    #[test]
    fn ordered_messages_wait_behind_a_lost_one_and_unordered_ones_do_not() {
        let mut r = Recovery::default();
        r.lost("request", true, 3, 100, 1_000_000);
        assert!(r.holds_ordered());
        r.hold("have", 20_000);
        r.lost("piece", false, 1, 100, 2_000_000);
        // The piece's one missing report comes from the next packet; the request's
        // three do not come yet.
        r.sent(30_000, 1_000, 1, 5_000);
        let mut last = 0;
        r.release(&mut last);
        assert_eq!(r.take_released(), [(46_000, "piece")]);
        r.expire(1_000_000);
        r.release(&mut last);
        assert_eq!(
            r.take_released(),
            [(1_000_000, "request"), (1_000_000, "have")],
            "the ordered channel delivers in order, nothing before the lost request"
        );
        assert!(!r.holds_ordered());
    }

    #[test]
    fn a_retransmission_is_never_sooner_than_a_round_trip_nor_later_than_the_time_out() {
        let mut r = Recovery::default();
        // Reported by a packet that left at 11 ms: resent to arrive at 14 ms.
        r.lost("early", false, 1, 300_000, 1_000_000);
        r.lost("late", false, 1, 0, 5_000);
        r.sent(10_000, 1_000, 1, 1_000);
        let mut last = 0;
        r.release(&mut last);
        assert_eq!(r.take_released(), [(300_000, "early"), (5_000, "late")]);
    }
}
