//! When to try the signal server again after losing it: exponential back-off, so a server
//! restart is not met by every viewer reconnecting at once, forever.

/// First wait after a lost connection, in milliseconds.
const FIRST_MS: u32 = 500;
/// The longest wait between attempts.
const MAX_MS: u32 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next_ms: u32,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next_ms: FIRST_MS }
    }
}

impl Backoff {
    /// The wait before the next attempt; each call doubles the following one, up to a cap.
    pub fn next_delay_ms(&mut self) -> u32 {
        let delay = self.next_ms;
        self.next_ms = self.next_ms.saturating_mul(2).min(MAX_MS);
        delay
    }

    /// A connection succeeded: the next loss starts from the first wait again.
    pub fn reset(&mut self) {
        self.next_ms = FIRST_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u32> = (0..9).map(|_| backoff.next_delay_ms()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay_ms(), 500);
    }
}
