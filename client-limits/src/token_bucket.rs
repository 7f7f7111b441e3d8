//! A token bucket per connection: a sustained rate with a burst allowance.

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(per_sec: f64, burst: u32, now: Instant) -> TokenBucket {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            per_sec,
            tokens: capacity,
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there to take (zero if one is).
    pub fn next_token_in(&self, now: Instant) -> std::time::Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let missing = 1.0 - (self.tokens + elapsed * self.per_sec).min(self.capacity);
        std::time::Duration::from_secs_f64((missing / self.per_sec).max(0.0))
    }

    /// Whether idle time has refilled it: it then remembers nothing of past use.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5, start);
        assert_eq!((0..8).filter(|_| bucket.try_take(start)).count(), 5);
        // 10 per second: one token every 100 ms.
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
        // Idle time refills at most to the burst.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..8).filter(|_| bucket.try_take(later)).count(), 5);
    }
}
