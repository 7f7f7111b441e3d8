//! Viewers' experience for `/metrics`: each viewer's periodic `Report` is checked against
//! what one viewer can truly have seen in the time since its last one, then added to its
//! channel's totals. Nothing is kept per peer, so a hostile client can move its channel's
//! figures by at most its own share (its time × the per-viewer cap), never more.

use std::fmt::Write;
use std::time::Duration;

use protocol::ViewerReport;
use tokio::time::Instant;

/// The slowest start-up or the largest delay a report may claim; beyond it the figure
/// is not a viewer's experience but a forgery (or a page left in a background tab).
const MAX_PLAUSIBLE_SECS: u32 = 600;
/// Stalls are counted as playback runs dry, so a second holds at most a few; this many
/// per second of reporting time, plus one, is the most a report may claim.
const MAX_STALLS_PER_SEC: u64 = 2;

/// What the server asks of reporting viewers and what it believes of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportPolicy {
    /// How often viewers report; `None`: the server takes no reports.
    pub every: Option<Duration>,
    /// Most payload a viewer can receive (from peers and broadcaster together), and
    /// separately upload, per second.
    pub max_bytes_per_sec: u64,
}

impl ReportPolicy {
    pub fn new(every_secs: u64, max_viewer_kbps: u64) -> ReportPolicy {
        ReportPolicy {
            every: (every_secs > 0).then(|| Duration::from_secs(every_secs)),
            max_bytes_per_sec: max_viewer_kbps.saturating_mul(1000) / 8,
        }
    }

    /// `report_every_ms` for `welcome`.
    pub fn every_ms(&self) -> Option<u32> {
        self.every
            .map(|every| u32::try_from(every.as_millis()).unwrap_or(u32::MAX))
    }
}

/// One viewer connection's reporting: when it last reported, and whether it already
/// told its start-up. Lives with the connection, never in the channel's totals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReportGate {
    since: Instant,
    startup_told: bool,
}

impl ReportGate {
    /// A viewer welcomed at `now`: its first report covers the time from here.
    pub fn new(now: Instant) -> ReportGate {
        ReportGate {
            since: now,
            startup_told: false,
        }
    }

    /// Whether `report` is believable at `now`; an accepted one starts the next interval.
    /// The refusal says why, for the client's `bad_report` error.
    pub fn admit(
        &mut self,
        now: Instant,
        report: &ViewerReport,
        policy: &ReportPolicy,
    ) -> Result<(), String> {
        let every = policy
            .every
            .ok_or("this server takes no viewer reports (its welcome asked for none)")?;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < every / 2 {
            return Err(format!(
                "reports come every {} ms; this one came {} ms after the last",
                every.as_millis(),
                elapsed.as_millis()
            ));
        }
        // A late report is believed for at most two intervals' worth: a client that
        // stays silent cannot bank time for one huge report.
        let credited = elapsed.min(every * 2);
        let most_bytes = (policy.max_bytes_per_sec as f64 * credited.as_secs_f64()) as u64;
        let received = report
            .bytes_from_peers
            .saturating_add(report.bytes_from_source)
            .saturating_add(report.bytes_from_http);
        if received > most_bytes || report.bytes_uploaded > most_bytes {
            return Err(format!(
                "{received} bytes received and {} uploaded in {} ms exceed the {} bytes a \
                 viewer can carry",
                report.bytes_uploaded,
                credited.as_millis(),
                most_bytes
            ));
        }
        let most_stalls = credited.as_secs() * MAX_STALLS_PER_SEC + 1;
        if u64::from(report.stalls) > most_stalls {
            return Err(format!(
                "{} stalls in {} ms is more than playback can have",
                report.stalls,
                credited.as_millis()
            ));
        }
        if report.startup_ms.is_some() && self.startup_told {
            return Err("start-up is told once, and this connection already told it".into());
        }
        for (what, ms) in [("start-up", report.startup_ms), ("delay", report.delay_ms)] {
            if ms.is_some_and(|ms| ms > MAX_PLAUSIBLE_SECS * 1000) {
                return Err(format!(
                    "a {what} over {MAX_PLAUSIBLE_SECS} s is not a live viewer's"
                ));
            }
        }
        self.since = now;
        self.startup_told |= report.startup_ms.is_some();
        Ok(())
    }
}

/// Upper bounds (seconds) of the start-up histogram's buckets.
const STARTUP_BUCKETS: [f64; 10] = [0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0];
/// Upper bounds (seconds) of the delay-behind-live histogram's buckets.
const DELAY_BUCKETS: [f64; 11] = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 30.0];

/// A Prometheus histogram with fixed buckets; counts are not cumulative until rendered.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        if let Some(bucket) = bounds.iter().position(|&bound| value <= bound) {
            self.counts[bucket] += 1;
        }
        self.count += 1;
        self.sum += value;
    }

    fn render(&self, out: &mut String, name: &str, channel: &str, bounds: &[f64]) {
        let mut cumulative = 0;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{channel=\"{channel}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{channel=\"{channel}\",le=\"+Inf\"}} {}\n\
             {name}_sum{{channel=\"{channel}\"}} {}\n\
             {name}_count{{channel=\"{channel}\"}} {}",
            self.count, self.sum, self.count
        );
    }
}

/// One channel's viewers' experience, summed over every accepted report since the
/// channel appeared on this server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Experience {
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    pub bytes_from_http: u64,
    pub bytes_uploaded: u64,
    pub stalls: u64,
    startup: Histogram,
    delay: Histogram,
}

impl Experience {
    pub(crate) fn add(&mut self, report: &ViewerReport) {
        self.bytes_from_peers = self
            .bytes_from_peers
            .saturating_add(report.bytes_from_peers);
        self.bytes_from_source = self
            .bytes_from_source
            .saturating_add(report.bytes_from_source);
        self.bytes_from_http = self.bytes_from_http.saturating_add(report.bytes_from_http);
        self.bytes_uploaded = self.bytes_uploaded.saturating_add(report.bytes_uploaded);
        self.stalls = self.stalls.saturating_add(u64::from(report.stalls));
        if let Some(ms) = report.startup_ms {
            self.startup
                .observe(&STARTUP_BUCKETS, f64::from(ms) / 1000.0);
        }
        if let Some(ms) = report.delay_ms {
            self.delay.observe(&DELAY_BUCKETS, f64::from(ms) / 1000.0);
        }
    }
}

/// The viewer-experience families, for every channel in `channels` (name, totals).
pub(crate) fn render(out: &mut String, channels: &[(String, Experience)]) {
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        out,
        "streamtorrent_viewer_bytes_total",
        "counter",
        "Video payload viewers received, by where it came from, as they report it.",
    );
    for (name, e) in channels {
        for (from, bytes) in [
            ("peers", e.bytes_from_peers),
            ("broadcaster", e.bytes_from_source),
            ("http", e.bytes_from_http),
        ] {
            let _ = writeln!(
                out,
                "streamtorrent_viewer_bytes_total{{channel=\"{name}\",from=\"{from}\"}} {bytes}"
            );
        }
    }
    family(
        out,
        "streamtorrent_viewer_uploaded_bytes_total",
        "counter",
        "Video payload viewers sent to other viewers, as they report it.",
    );
    for (name, e) in channels {
        let _ = writeln!(
            out,
            "streamtorrent_viewer_uploaded_bytes_total{{channel=\"{name}\"}} {}",
            e.bytes_uploaded
        );
    }
    family(
        out,
        "streamtorrent_viewer_stalls_total",
        "counter",
        "Times viewers' playback ran dry, as they report it.",
    );
    for (name, e) in channels {
        let _ = writeln!(
            out,
            "streamtorrent_viewer_stalls_total{{channel=\"{name}\"}} {}",
            e.stalls
        );
    }
    family(
        out,
        "streamtorrent_viewer_startup_seconds",
        "histogram",
        "From opening the player to its first frame, one observation per viewer session.",
    );
    for (name, e) in channels {
        e.startup.render(
            out,
            "streamtorrent_viewer_startup_seconds",
            name,
            &STARTUP_BUCKETS,
        );
    }
    family(
        out,
        "streamtorrent_viewer_delay_seconds",
        "histogram",
        "Viewers' delay behind live, one observation per playing viewer per report.",
    );
    for (name, e) in channels {
        e.delay.render(
            out,
            "streamtorrent_viewer_delay_seconds",
            name,
            &DELAY_BUCKETS,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReportPolicy {
        ReportPolicy::new(10, 8_000) // 1,000,000 bytes a second
    }

    fn report(peers: u64, source: u64) -> ViewerReport {
        ViewerReport {
            bytes_from_peers: peers,
            bytes_from_source: source,
            ..ViewerReport::default()
        }
    }

    #[test]
    fn a_report_an_interval_after_welcome_within_the_cap_is_admitted() {
        let start = Instant::now();
        let mut gate = ReportGate::new(start);
        let at = start + Duration::from_secs(10);
        assert_eq!(
            gate.admit(at, &report(6_000_000, 4_000_000), &policy()),
            Ok(())
        );
        // The next interval starts at the accepted report.
        let refused = gate.admit(at + Duration::from_secs(4), &report(0, 0), &policy());
        assert!(refused.unwrap_err().contains("came 4000 ms after"));
        let next = at + Duration::from_secs(10);
        assert_eq!(gate.admit(next, &report(1, 1), &policy()), Ok(()));
    }

    #[test]
    fn figures_beyond_one_viewer_are_refused_and_change_nothing() {
        let start = Instant::now();
        let mut gate = ReportGate::new(start);
        let at = start + Duration::from_secs(10);
        let inflated = report(10_000_001, 0);
        assert!(gate.admit(at, &inflated, &policy()).is_err());
        let uploaded = ViewerReport {
            bytes_uploaded: 10_000_001,
            ..ViewerReport::default()
        };
        assert!(gate.admit(at, &uploaded, &policy()).is_err());
        let stalls = ViewerReport {
            stalls: 22,
            ..ViewerReport::default()
        };
        assert!(gate.admit(at, &stalls, &policy()).is_err());
        let delay = ViewerReport {
            delay_ms: Some(600_001),
            ..ViewerReport::default()
        };
        assert!(gate.admit(at, &delay, &policy()).is_err());
        // None of those started a new interval: an honest report is still welcome now.
        assert_eq!(gate.admit(at, &report(10_000_000, 0), &policy()), Ok(()));
    }

    #[test]
    fn silence_banks_at_most_two_intervals() {
        let start = Instant::now();
        let mut gate = ReportGate::new(start);
        let late = start + Duration::from_secs(600);
        assert!(gate.admit(late, &report(20_000_001, 0), &policy()).is_err());
        assert_eq!(gate.admit(late, &report(20_000_000, 0), &policy()), Ok(()));
    }

    #[test]
    fn start_up_is_told_once_per_connection() {
        let start = Instant::now();
        let mut gate = ReportGate::new(start);
        let startup = ViewerReport {
            startup_ms: Some(1_200),
            ..ViewerReport::default()
        };
        let at = start + Duration::from_secs(10);
        assert_eq!(gate.admit(at, &startup, &policy()), Ok(()));
        let again = gate.admit(at + Duration::from_secs(10), &startup, &policy());
        assert!(again.unwrap_err().contains("once"));
    }

    #[test]
    fn a_server_asking_for_no_reports_refuses_them() {
        let mut gate = ReportGate::new(Instant::now());
        let off = ReportPolicy::new(0, 8_000);
        assert_eq!(off.every_ms(), None);
        let later = Instant::now() + Duration::from_secs(60);
        assert!(gate.admit(later, &report(0, 0), &off).is_err());
    }

    #[test]
    fn totals_render_as_prometheus_counters_and_cumulative_histograms() {
        let mut e = Experience::default();
        e.add(&ViewerReport {
            bytes_from_peers: 900,
            bytes_from_source: 100,
            bytes_from_http: 50,
            bytes_uploaded: 700,
            stalls: 2,
            startup_ms: Some(1_200),
            delay_ms: Some(1_800),
        });
        e.add(&ViewerReport {
            delay_ms: Some(2_500),
            ..ViewerReport::default()
        });
        let mut out = String::new();
        render(&mut out, &[("news".into(), e)]);
        for line in [
            "streamtorrent_viewer_bytes_total{channel=\"news\",from=\"peers\"} 900",
            "streamtorrent_viewer_bytes_total{channel=\"news\",from=\"broadcaster\"} 100",
            "streamtorrent_viewer_bytes_total{channel=\"news\",from=\"http\"} 50",
            "streamtorrent_viewer_uploaded_bytes_total{channel=\"news\"} 700",
            "streamtorrent_viewer_stalls_total{channel=\"news\"} 2",
            "streamtorrent_viewer_startup_seconds_bucket{channel=\"news\",le=\"1\"} 0",
            "streamtorrent_viewer_startup_seconds_bucket{channel=\"news\",le=\"1.5\"} 1",
            "streamtorrent_viewer_startup_seconds_count{channel=\"news\"} 1",
            "streamtorrent_viewer_delay_seconds_bucket{channel=\"news\",le=\"2\"} 1",
            "streamtorrent_viewer_delay_seconds_bucket{channel=\"news\",le=\"3\"} 2",
            "streamtorrent_viewer_delay_seconds_bucket{channel=\"news\",le=\"+Inf\"} 2",
            "streamtorrent_viewer_delay_seconds_sum{channel=\"news\"} 4.3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
