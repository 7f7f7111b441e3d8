//! A small fixed histogram of durations, so the simulator and a real run report where a
//! pull's time goes by the same buckets (and a node's stats stay `Copy`).

/// Bucket `i` holds durations up to `FIRST_MS × GROWTH^i` milliseconds: 12% wide, from
/// 5 ms to about 38 s; the last bucket also holds everything longer.
const BUCKETS: usize = 80;
const FIRST_MS: f64 = 5.0;
const GROWTH: f64 = 1.12;

/// Counts of durations in milliseconds, about 12% resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsHistogram {
    counts: [u32; BUCKETS],
}

impl Default for MsHistogram {
    fn default() -> MsHistogram {
        MsHistogram {
            counts: [0; BUCKETS],
        }
    }
}

impl MsHistogram {
    pub fn record(&mut self, ms: u64) {
        let i = bucket_of(ms);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The upper bound of the bucket holding the `p`th percentile (0 when empty).
    pub fn percentile(&self, p: u64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = (total * p.min(100)).div_ceil(100).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return upper_ms(i);
            }
        }
        upper_ms(BUCKETS - 1)
    }

    pub fn merge(&mut self, other: &MsHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// The buckets that hold anything: (upper bound in ms, count), for a report.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (upper_ms(i), c))
    }

    /// Adds `count` durations of `ms` (a bucket read back from [`MsHistogram::buckets`]).
    pub fn add(&mut self, ms: u64, count: u32) {
        let i = bucket_of(ms);
        self.counts[i] = self.counts[i].saturating_add(count);
    }
}

fn upper_ms(i: usize) -> u64 {
    (FIRST_MS * GROWTH.powi(i as i32)).round() as u64
}

fn bucket_of(ms: u64) -> usize {
    if ms as f64 <= FIRST_MS {
        return 0;
    }
    let i = ((ms as f64 / FIRST_MS).ln() / GROWTH.ln()).ceil() as usize;
    // Rounding may put a bound one bucket high or low: settle on the first that holds it.
    let mut i = i.saturating_sub(1).min(BUCKETS - 1);
    while i < BUCKETS - 1 && upper_ms(i) < ms {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_fall_within_a_bucket_of_the_truth() {
        let mut h = MsHistogram::default();
        for ms in 1..=1000 {
            h.record(ms);
        }
        assert_eq!(h.count(), 1000);
        for (p, truth) in [(50, 500), (95, 950), (100, 1000)] {
            let got = h.percentile(p);
            assert!(
                got >= truth && got <= truth * 112 / 100 + 1,
                "p{p}: {got} for {truth}"
            );
        }
        assert_eq!(MsHistogram::default().percentile(50), 0);
    }

    #[test]
    fn every_duration_lands_in_the_first_bucket_that_holds_it() {
        for ms in [0, 1, 5, 6, 99, 100, 101, 4_999, 60_000, u64::MAX] {
            let i = bucket_of(ms);
            assert!(upper_ms(i) >= ms || i == BUCKETS - 1, "{ms} in {i}");
            assert!(
                i == 0 || upper_ms(i - 1) < ms,
                "{ms} could go lower than {i}"
            );
        }
    }

    #[test]
    fn buckets_read_back_into_the_same_histogram() {
        let mut h = MsHistogram::default();
        for ms in [3, 40, 40, 700, 90_000] {
            h.record(ms);
        }
        let mut copy = MsHistogram::default();
        for (ms, count) in h.buckets() {
            copy.add(ms, count);
        }
        assert_eq!(copy, h);
        let mut twice = h;
        twice.merge(&h);
        assert_eq!(twice.count(), 10);
        assert_eq!(twice.percentile(50), h.percentile(50));
    }
}
