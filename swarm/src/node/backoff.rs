//! When to try the signal server again: exponential back-off with jitter, so a server
//! restart is not met by every viewer reconnecting in the same instant, forever.

/// First wait after a lost connection.
pub const RECONNECT_FIRST_MS: u64 = 500;
/// The longest wait between attempts.
pub const RECONNECT_MAX_MS: u64 = 30_000;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next_ms: u64,
    /// splitmix64 state, seeded by the driver: the jitter is reproducible in tests.
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(seed: u64) -> Backoff {
        Backoff {
            next_ms: RECONNECT_FIRST_MS,
            rng: seed,
        }
    }

    /// The wait before the next attempt: the current step ±25%, and the step doubles, up
    /// to its cap.
    pub(crate) fn next_delay_ms(&mut self) -> u64 {
        let step = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(RECONNECT_MAX_MS);
        let quarter = step / 4;
        step - quarter + self.random() % (2 * quarter + 1)
    }

    /// A connection succeeded: the next loss starts from the first wait again.
    pub(crate) fn reset(&mut self) {
        self.next_ms = RECONNECT_FIRST_MS;
    }

    /// The next value of the seeded generator (also the source's session id).
    pub(crate) fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(1);
        let steps = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000];
        let delays: Vec<u64> = steps.iter().map(|_| backoff.next_delay_ms()).collect();
        for (delay, step) in delays.iter().zip(steps) {
            assert!(
                (step * 3 / 4..=step * 5 / 4).contains(delay),
                "{delay} for {step}"
            );
        }
        let mut other = Backoff::new(2);
        let others: Vec<u64> = steps.iter().map(|_| other.next_delay_ms()).collect();
        assert_ne!(delays, others, "two peers do not retry in lockstep");
        backoff.reset();
        assert!((375..=625).contains(&backoff.next_delay_ms()));
    }
}
