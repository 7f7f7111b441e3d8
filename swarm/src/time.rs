use std::ops::{Add, Sub};

/// A point in time, in milliseconds since an origin chosen by the driver (process start,
/// `performance.now()`'s origin, or a simulator's virtual zero). `std::time::Instant` does
/// not exist in the browser, and virtual time must be constructible in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Add<u64> for Millis {
    type Output = Millis;

    fn add(self, rhs: u64) -> Millis {
        Millis(self.0.saturating_add(rhs))
    }
}

impl Sub for Millis {
    type Output = u64;

    /// Elapsed milliseconds; zero when `rhs` is later (drivers' clocks never go backwards,
    /// but a saturating answer keeps a confused driver from panicking the core).
    fn sub(self, rhs: Millis) -> u64 {
        self.0.saturating_sub(rhs.0)
    }
}
