//! Upload rates and the token bucket that keeps a peer within its upload budget.

use crate::Millis;

/// A data rate in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct BytesPerSec(pub u64);

impl BytesPerSec {
    pub fn from_kbps(kbps: u64) -> BytesPerSec {
        BytesPerSec(kbps.saturating_mul(1000) / 8)
    }

    pub fn kbps(self) -> u64 {
        self.0.saturating_mul(8) / 1000
    }

    /// Bytes this rate moves in `ms` milliseconds.
    pub fn bytes_in(self, ms: u64) -> u64 {
        self.0.saturating_mul(ms) / 1000
    }
}

/// The share of an upload budget the token bucket leaves unspent, for what it cannot
/// count: a message's last packet framed whole, STUN consent checks, SCTP heartbeats and
/// retransmissions. A budget equal to its link runs the link at its exact rate, where the
/// router's queue grows on any excess until it drops, and each drop's retransmission is
/// more excess. Measured on shaped real uplinks (16 viewers at 1.2×, docs/benchmarks.md):
/// 3,526 packets dropped and 0.59 of chunks on time at the full budget; 191 and 0.83
/// with 2% left; at 5% the swarm starves (0.46).
pub const UPLOAD_HEADROOM_PERCENT: u64 = 2;

/// Tokens are bytes; a send may take the bucket into debt by one message, so a 16 KiB piece
/// can go out on a small budget, and the debt is repaid before the next one.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: BytesPerSec,
    burst: i64,
    tokens: i64,
    last: Option<Millis>,
}

impl TokenBucket {
    /// A bucket for an upload budget of `limit`, spending all of it but the headroom.
    pub fn for_budget(limit: BytesPerSec, burst_ms: u64) -> TokenBucket {
        let rate = BytesPerSec(limit.0 - limit.0 * UPLOAD_HEADROOM_PERCENT / 100);
        // At least a byte: a bucket that can never hold one never sends.
        TokenBucket::new(rate, rate.bytes_in(burst_ms).max(1))
    }

    pub fn new(rate: BytesPerSec, burst: u64) -> TokenBucket {
        let burst = i64::try_from(burst).unwrap_or(i64::MAX);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    pub fn refill(&mut self, now: Millis) {
        let elapsed = self.last.map_or(0, |last| now - last);
        self.last = Some(now);
        let earned = i64::try_from(self.rate.bytes_in(elapsed)).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_add(earned).min(self.burst);
    }

    pub fn can_send(&self) -> bool {
        self.tokens > 0
    }

    /// When the bucket next allows a send (now, if it does).
    pub fn ready_at(&self) -> Millis {
        let last = self.last.unwrap_or_default();
        if self.tokens > 0 {
            return last;
        }
        // `refill` earns whole bytes per elapsed millisecond: wait until one is earned
        // beyond the debt.
        let owed = self.tokens.unsigned_abs().saturating_add(1);
        let rate = self.rate.0.max(1);
        last + owed.saturating_mul(1000).div_ceil(rate)
    }

    /// Whether the bucket owes more than `ms` of its rate.
    pub fn in_debt_for(&self, ms: u64) -> bool {
        let limit = i64::try_from(self.rate.bytes_in(ms)).unwrap_or(i64::MAX);
        self.tokens < -limit
    }

    pub fn take(&mut self, bytes: usize) {
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes a bucket lets out over 10 s in 700-byte messages, refilled every 10 ms.
    fn sent_in_ten_seconds(mut bucket: TokenBucket) -> u64 {
        let mut sent = 0;
        for ms in (0..=10_000).step_by(10) {
            bucket.refill(Millis(ms));
            while bucket.can_send() {
                bucket.take(700);
                sent += 700;
            }
        }
        sent
    }

    #[test]
    fn a_bucket_allows_its_rate_and_no_more() {
        let sent = sent_in_ten_seconds(TokenBucket::new(BytesPerSec(10_000), 1_000));
        // 10 s at 10,000 B/s plus the initial burst, give or take one message.
        assert!((100_000..=101_700).contains(&sent), "sent {sent}");
    }

    #[test]
    fn a_budget_bucket_leaves_its_headroom_unspent() {
        let sent = sent_in_ten_seconds(TokenBucket::for_budget(BytesPerSec(100_000), 20));
        // 10 s at 98% of 100,000 B/s, plus a 20 ms burst, give or take one message.
        assert!((980_000..=982_700).contains(&sent), "sent {sent}");
    }

    #[test]
    fn a_bucket_in_debt_is_ready_once_it_earned_the_debt_back() {
        let mut bucket = TokenBucket::new(BytesPerSec(10_000), 1_000);
        bucket.refill(Millis(100));
        assert_eq!(
            bucket.ready_at(),
            Millis(100),
            "a full bucket is ready at once"
        );
        bucket.take(1_000 + 16_000);
        let ready = bucket.ready_at();
        // 16,000 bytes of debt plus one at 10 bytes per ms.
        assert_eq!(ready, Millis(100 + 1_601));
        bucket.refill(Millis(ready.0 - 1));
        assert!(!bucket.can_send(), "a millisecond early");
        bucket.refill(ready);
        assert!(bucket.can_send());
    }

    #[test]
    fn rates_convert_from_kbps() {
        assert_eq!(BytesPerSec::from_kbps(2000), BytesPerSec(250_000));
        assert_eq!(BytesPerSec(250_000).kbps(), 2000);
        assert_eq!(BytesPerSec(1000).bytes_in(1500), 1500);
    }
}
