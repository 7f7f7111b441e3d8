//! When to try the signal server again after losing it: exponential back-off, so a server
//! restart is not met by every viewer reconnecting at once, forever.

use gloo_timers::callback::Timeout;

use crate::event::{emit, Event, Events};

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

/// Schedules `Event::Reconnect` after each lost connection, backing off.
#[derive(Default)]
pub struct Reconnector {
    backoff: Backoff,
    /// The pending attempt (dropping it cancels) and when it fires (page clock, ms).
    pending: Option<(Timeout, f64)>,
}

impl Reconnector {
    /// The connection opened: the next loss retries quickly again.
    pub fn opened(&mut self) {
        self.backoff.reset();
        self.pending = None;
    }

    /// The connection closed (or never opened): schedules the next attempt and returns
    /// its delay in ms.
    pub fn closed(&mut self, events: &Events) -> u32 {
        let delay = self.backoff.next_delay_ms();
        let events = events.clone();
        let timeout = Timeout::new(delay, move || emit(&events, Event::Reconnect));
        self.pending = Some((timeout, crate::app::now().0 as f64 + f64::from(delay)));
        delay
    }

    /// The scheduled attempt is being made now.
    pub fn attempting(&mut self) {
        self.pending = None;
    }

    /// Milliseconds until the next attempt, while one is pending.
    pub fn retry_in_ms(&self, now: f64) -> Option<f64> {
        self.pending.as_ref().map(|(_, at)| (at - now).max(0.0))
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
