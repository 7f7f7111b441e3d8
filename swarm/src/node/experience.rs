//! A viewer's experience reports: every `report_every_ms` the server's `welcome` asked
//! for, what this viewer received, uploaded and played since its last report on the
//! connection. The operator sees the channel's sums in `/metrics`.

use protocol::ViewerReport;

use crate::{Millis, Stats};

/// Playback as only a driver that plays knows it (the page's `<video>`). A driver that
/// tells none (the native `watch`) is reported by its swarm's own playout model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Playback {
    /// Times playback ran dry so far, over the node's life.
    pub stalls: u64,
    /// From the start to the first frame, once there was one.
    pub startup_ms: Option<u64>,
    /// Delay behind live now, while playing.
    pub delay_ms: Option<u64>,
}

/// Running totals a report is the difference of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub from_peers: u64,
    pub from_source: u64,
    pub from_http: u64,
    pub uploaded: u64,
    pub stalls: u64,
}

impl Totals {
    pub fn of(stats: &Stats, playback: Option<&Playback>) -> Totals {
        Totals {
            from_peers: stats.bytes_from_peers,
            from_source: stats.bytes_from_source,
            from_http: stats.bytes_from_http,
            uploaded: stats.bytes_uploaded,
            stalls: playback.map_or(stats.stalls, |p| p.stalls),
        }
    }

    /// What came since `earlier`. A new broadcast starts a new swarm whose counters
    /// start again from zero: then all of the new count is new.
    fn since(self, earlier: Totals) -> Totals {
        let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
        Totals {
            from_peers: delta(self.from_peers, earlier.from_peers),
            from_source: delta(self.from_source, earlier.from_source),
            from_http: delta(self.from_http, earlier.from_http),
            uploaded: delta(self.uploaded, earlier.uploaded),
            stalls: delta(self.stalls, earlier.stalls),
        }
    }
}

/// When the next report is due and what the last one covered.
#[derive(Debug, Default)]
pub(super) struct ExperienceReports {
    every_ms: Option<u64>,
    due: Option<Millis>,
    sent: Totals,
    /// Start-up is one observation per viewer, however many connections it takes.
    startup_told: bool,
}

impl ExperienceReports {
    /// A welcome on a new connection: report every `every_ms` from now, counting from
    /// `totals` (what happened while away is not this connection's to tell).
    pub fn welcomed(&mut self, now: Millis, every_ms: Option<u32>, totals: Totals) {
        self.every_ms = every_ms.filter(|&ms| ms > 0).map(u64::from);
        self.due = self.every_ms.map(|every| now + every);
        self.sent = totals;
    }

    pub fn due(&self) -> Option<Millis> {
        self.due
    }

    /// The report due at `now`, if one is; the next is then due an interval later.
    pub fn take_due(
        &mut self,
        now: Millis,
        totals: Totals,
        startup_ms: Option<u64>,
        delay_ms: Option<u64>,
    ) -> Option<ViewerReport> {
        let (due, every) = (self.due?, self.every_ms?);
        if now < due {
            return None;
        }
        self.due = Some(now + every);
        let new = totals.since(self.sent);
        self.sent = totals;
        let startup_ms = startup_ms.filter(|_| !self.startup_told);
        self.startup_told |= startup_ms.is_some();
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Some(ViewerReport {
            bytes_from_peers: new.from_peers,
            bytes_from_source: new.from_source,
            bytes_from_http: new.from_http,
            bytes_uploaded: new.uploaded,
            stalls: clamp(new.stalls),
            startup_ms: startup_ms.map(clamp),
            delay_ms: delay_ms.map(clamp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(from_peers: u64, stalls: u64) -> Totals {
        Totals {
            from_peers,
            from_source: 10,
            from_http: 0,
            uploaded: 5,
            stalls,
        }
    }

    #[test]
    fn each_report_says_what_came_since_the_last_and_start_up_once() {
        let mut reports = ExperienceReports::default();
        reports.welcomed(Millis(1_000), Some(10_000), totals(100, 0));
        assert_eq!(reports.due(), Some(Millis(11_000)));
        assert_eq!(
            reports.take_due(Millis(10_999), totals(900, 1), None, None),
            None
        );
        let first = reports
            .take_due(Millis(11_000), totals(900, 1), Some(1_300), Some(1_800))
            .expect("due");
        assert_eq!(first.bytes_from_peers, 800);
        assert_eq!((first.bytes_from_source, first.bytes_uploaded), (0, 0));
        assert_eq!(
            (first.stalls, first.startup_ms, first.delay_ms),
            (1, Some(1_300), Some(1_800))
        );
        assert_eq!(reports.due(), Some(Millis(21_000)));
        let second = reports
            .take_due(Millis(21_000), totals(1_000, 1), Some(1_300), None)
            .expect("due");
        assert_eq!((second.bytes_from_peers, second.stalls), (100, 0));
        assert_eq!(second.startup_ms, None, "start-up is told once");
    }

    #[test]
    fn a_new_swarm_counting_from_zero_is_all_new() {
        let mut reports = ExperienceReports::default();
        reports.welcomed(Millis(0), Some(1_000), totals(5_000, 3));
        let report = reports
            .take_due(Millis(1_000), totals(400, 0), None, None)
            .expect("due");
        assert_eq!((report.bytes_from_peers, report.stalls), (400, 0));
    }

    #[test]
    fn bytes_fetched_from_edges_are_reported_apart() {
        let mut reports = ExperienceReports::default();
        reports.welcomed(Millis(0), Some(1_000), Totals::default());
        let stats = Stats {
            bytes_from_http: 7_000,
            bytes_from_peers: 3_000,
            ..Stats::default()
        };
        let report = reports
            .take_due(Millis(1_000), Totals::of(&stats, None), None, None)
            .expect("due");
        assert_eq!(
            (report.bytes_from_http, report.bytes_from_peers),
            (7_000, 3_000)
        );
    }

    #[test]
    fn a_server_asking_for_none_gets_none() {
        let mut reports = ExperienceReports::default();
        reports.welcomed(Millis(0), None, Totals::default());
        assert_eq!(reports.due(), None);
        assert_eq!(
            reports.take_due(Millis(60_000), Totals::default(), None, None),
            None
        );
    }
}
