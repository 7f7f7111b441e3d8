//! A real swarm's figures by the simulator's own definitions: reads the timelines that
//! `streamtorrent broadcast --timeline` and `watch --timeline` wrote during
//! `scripts/bench-native-swarm` and runs them through the same player model and report as
//! a simulated run, so the two sit side by side in one table.
//!
//! The directory holds `source.jsonl` (a `{"cut":SEQ,"at":T,"bytes":N}` line per chunk),
//! one `viewer-*.jsonl` per viewer (`joined`, `play`, `skip` and `end` lines; see
//! `peer_native::timeline`) and one `*.link` per peer: `LINK_KBPS TX_BYTES TX_PACKETS`,
//! its shaped uplink's rate and what its interface sent. The report's figures the
//! timelines cannot give (protocol overhead, source copies, events) are left at zero.
//! Offload differs slightly in what it counts: a real viewer's byte counters leave
//! duplicates out (they are counted apart), the simulator's include them. Times are Unix milliseconds; virtual time 0
//! is one chunk before chunk 0 was cut, as in the simulator.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use swarm::MsHistogram;

use crate::metrics::{percentile, Metrics, Player};
use crate::network::Micros;
use crate::{Report, SimConfig, SimError};

/// What a real run says beyond the report: how far its source strayed from the nominal
/// schedule, and the stream's real bitrate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RealNotes {
    pub viewers: usize,
    pub chunks_cut: usize,
    /// The largest distance of a cut from `t0 + (seq + 1) × chunk`.
    pub cut_jitter_max_ms: u64,
    pub stream_kbps: u64,
}

pub fn measure(config: &SimConfig, dir: &Path) -> Result<(Report, RealNotes), SimError> {
    let chunk_ms = config.chunk_ms;
    let mut cuts = read_cuts(&dir.join("source.jsonl"))?;
    let (&first, &(first_at, _)) = cuts.iter().next().ok_or_else(|| SimError::Read {
        path: dir.join("source.jsonl").display().to_string(),
        reason: "no chunk was cut".into(),
    })?;
    let t0 = first_at.saturating_sub((first + 1) * chunk_ms);
    let end_ms = t0 + config.seconds * 1000;
    // The source may outlive the scenario by a moment; what it cut after counts for nothing.
    cuts.retain(|_, (at, _)| *at <= end_ms);
    let to_us = |unix_ms: u64| -> Micros { unix_ms.saturating_sub(t0) * 1000 };
    let end_us = config.seconds * 1_000_000;
    let mut metrics = Metrics::new(chunk_ms * 1000, end_us);
    // Cut to hand-over from the real cut times (the player model uses the nominal ones,
    // which would charge a late source to the mesh).
    let mut arrivals_ms: Vec<u32> = Vec::new();
    let mut joined_at: BTreeMap<String, Micros> = BTreeMap::new();

    for path in files(dir, "viewer-", ".jsonl")? {
        let mut player = Player::default();
        let (mut joined, mut ended) = (None, false);
        for line in read_lines(&path)? {
            let field = |name: &str| line.get(name).and_then(Value::as_u64);
            if let Some(at) = field("joined") {
                joined = Some(to_us(at));
                metrics.viewers_joined += 1;
            } else if let (Some(seq), Some(at)) = (field("play"), field("at")) {
                if at > end_ms {
                    continue;
                }
                let due = to_us(field("due").unwrap_or(at));
                metrics.played(
                    &mut player,
                    joined.unwrap_or(to_us(at)),
                    to_us(at),
                    seq,
                    due,
                );
                if let Some((cut, _)) = cuts.get(&seq) {
                    arrivals_ms.push(at.saturating_sub(*cut) as u32);
                }
            } else if let (Some(seq), Some(at)) = (field("skip"), field("at")) {
                if at <= end_ms {
                    metrics.skipped(&mut player, to_us(at), seq);
                }
            } else if field("end").is_some() {
                ended = true;
                metrics.from_peers += field("bytes_from_peers").unwrap_or(0);
                metrics.from_source += field("bytes_from_source").unwrap_or(0);
                metrics.duplicate += field("bytes_duplicate").unwrap_or(0);
                let pulls = &mut metrics.pulls;
                read_histogram(&line, "pull_first_piece_ms", &mut pulls.first_piece);
                read_histogram(&line, "pull_complete_ms", &mut pulls.complete);
                read_histogram(&line, "serve_wait_ms", &mut pulls.serve_wait);
            }
        }
        let missing = |what: &str| SimError::Read {
            path: path.display().to_string(),
            reason: format!("no \"{what}\" line: the viewer did not run to the end (see its log)"),
        };
        let joined = joined.ok_or_else(|| missing("joined"))?;
        if !ended {
            return Err(missing("end"));
        }
        metrics.finish(&mut player, joined, end_us);
        joined_at.insert(stem(&path), joined);
    }
    for path in files(dir, "", ".link")? {
        let text = read(&path)?;
        let numbers: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [link_kbps, tx_bytes, tx_packets] = numbers[..] else {
            return Err(SimError::Read {
                path: path.display().to_string(),
                reason: format!("expected \"LINK_KBPS TX_BYTES TX_PACKETS\", found {text:?}"),
            });
        };
        // As the simulator counts it: capacity from joining to the end, and what went on
        // the wire above Ethernet (IP, UDP, DTLS, SCTP and the messages).
        let since = joined_at.get(&stem(&path)).copied().unwrap_or(0);
        let seconds = end_us.saturating_sub(since) as f64 / 1e6;
        metrics.capacity_bytes += link_kbps as f64 * 1000.0 / 8.0 * seconds;
        metrics.message_bytes += tx_bytes.saturating_sub(ETHERNET_HEADER * tx_packets);
    }

    let cut_jitter_max_ms = cuts
        .iter()
        .map(|(seq, (at, _))| at.abs_diff(t0 + (seq + 1) * chunk_ms))
        .max()
        .unwrap_or(0);
    let (&last, _) = cuts
        .iter()
        .next_back()
        .expect("the first cut is before the end");
    let span_ms = ((last - first + 1) * chunk_ms).max(1);
    let bytes: u64 = cuts.values().map(|(_, bytes)| bytes).sum();
    let notes = RealNotes {
        viewers: joined_at.len(),
        chunks_cut: cuts.len(),
        cut_jitter_max_ms,
        stream_kbps: bytes * 8 / span_ms,
    };
    // The uplink shapers' drops, as scripts/bench-native-swarm sums them; a folder
    // without that file (an older run) reports none.
    let drops = dir.join("shaper-drops");
    if drops.exists() {
        let text = read(&drops)?;
        metrics.uplink_drops = text
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .ok_or_else(|| SimError::Read {
                path: drops.display().to_string(),
                reason: format!("no packet count in {text:?}"),
            })?;
    }
    let mut report = crate::report::summarise(config, metrics, 0, 0);
    report.arrival_p50_ms = percentile(&mut arrivals_ms, 50);
    report.arrival_p95_ms = percentile(&mut arrivals_ms, 95);
    Ok((report, notes))
}

/// Bytes of Ethernet header on each packet a veth counts, which the simulator's framing
/// (IP and up) does not include.
const ETHERNET_HEADER: u64 = 14;

/// Adds a histogram written as `[[upper bound ms, count], …]` (absent in older timelines).
fn read_histogram(line: &Value, name: &str, into: &mut MsHistogram) {
    let Some(buckets) = line.get(name).and_then(Value::as_array) else {
        return;
    };
    for bucket in buckets {
        let ms = bucket.get(0).and_then(Value::as_u64);
        let count = bucket.get(1).and_then(Value::as_u64);
        if let (Some(ms), Some(count)) = (ms, count) {
            into.add(ms, u32::try_from(count).unwrap_or(u32::MAX));
        }
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned()
}

/// seq → (cut at, bytes).
fn read_cuts(path: &Path) -> Result<BTreeMap<u64, (u64, u64)>, SimError> {
    let mut cuts = BTreeMap::new();
    for line in read_lines(path)? {
        let field = |name: &str| line.get(name).and_then(Value::as_u64);
        if let (Some(seq), Some(at)) = (field("cut"), field("at")) {
            cuts.insert(seq, (at, field("bytes").unwrap_or(0)));
        }
    }
    Ok(cuts)
}

fn read(path: &Path) -> Result<String, SimError> {
    std::fs::read_to_string(path).map_err(|e| SimError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Every line as JSON; a line that is not (a viewer killed mid-write) is left out.
fn read_lines(path: &Path) -> Result<Vec<Value>, SimError> {
    Ok(read(path)?
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

fn files(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<std::path::PathBuf>, SimError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SimError::Read {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(prefix) && name.ends_with(suffix))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("the test can write its scratch dir");
    }

    /// Chunks cut each second from 10,000 ms; one viewer plays 0..=3 with chunk 2 handed
    /// over 500 ms late (a stall), the other misses chunk 1 and plays 2 in its place.
    #[test]
    fn a_real_run_is_measured_as_the_simulator_measures() {
        let dir = std::env::temp_dir().join(format!("swarm-sim-real-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let cuts = (0..6)
            .map(|seq| {
                format!(
                    "{{\"cut\":{seq},\"at\":{},\"bytes\":125000}}\n",
                    10_000 + seq * 1000
                )
            })
            .collect::<String>()
            // The source outlived the scenario (8 s: until 17,000): not counted.
            + "{\"cut\":9,\"at\":19000,\"bytes\":125000}\n";
        write(&dir, "source.jsonl", &cuts);
        write(
            &dir,
            "viewer-1.jsonl",
            "{\"joined\":9500}\n\
             {\"play\":0,\"at\":10100,\"due\":12000}\n\
             {\"play\":1,\"at\":11100,\"due\":13000}\n\
             {\"play\":2,\"at\":14500,\"due\":14500}\n\
             {\"play\":3,\"at\":14600,\"due\":15500}\n\
             {\"end\":16000,\"bytes_from_peers\":300000,\"bytes_from_source\":200000}\n",
        );
        write(
            &dir,
            "viewer-2.jsonl",
            "{\"joined\":9500}\n\
             {\"play\":0,\"at\":10200,\"due\":12000}\n\
             {\"skip\":1,\"at\":12900}\n\
             {\"play\":2,\"at\":12950,\"due\":13000}\n\
             {\"play\":3,\"at\":13900,\"due\":13950}\n\
             {\"end\":16000,\"bytes_from_peers\":100000,\"bytes_from_source\":400000}\n",
        );
        write(&dir, "source.link", "3000 1000000 0\n");
        write(&dir, "viewer-1.link", "1500 501400 100\n");
        write(
            &dir,
            "shaper-drops",
            "[bench] uplink shapers dropped 37 packets in all\n",
        );
        let mut config = SimConfig::new(2, 8);
        config.bitrate_kbps = 1000;
        let (report, notes) = measure(&config, &dir).expect("the timelines parse");
        std::fs::remove_dir_all(&dir).ok();

        assert_eq!(notes.viewers, 2);
        assert_eq!(notes.chunks_cut, 6);
        assert_eq!(notes.cut_jitter_max_ms, 0);
        assert_eq!(notes.stream_kbps, 1000);
        // Viewer 1: chunk 2 was due at 14,000 and came at 14,500 (late); 0, 1 and 3 on
        // time. Viewer 2: 1 missed, 2 took its place, 0, 2 and 3 on time. Both stall at
        // the end (virtual 8 s): chunk 4 was due and never came. 6 of 10 on time.
        assert!((report.continuity - 0.6).abs() < 1e-9, "{report:?}");
        assert!((report.offload - 0.4).abs() < 1e-9);
        // Start-up: joined at 9,500, first chunk plays at its due, 12,000.
        assert_eq!(report.startup_p50_ms, 2500);
        // Cut to hand-over: 100, 100, 2500, 1600 and 200, 950, 900 ms.
        assert_eq!(report.arrival_p50_ms, 900);
        assert_eq!(report.arrival_p95_ms, 2500);
        // Uplink: 1.5 MB sent above Ethernet (100 packets' headers off) of 3,000 kbit/s
        // for 8 s and 1,500 kbit/s from viewer 1's joining (virtual 0.5 s) on.
        let expected = 1_500_000.0 / (3_000.0 * 1000.0 / 8.0 * 8.0 + 1_500.0 * 1000.0 / 8.0 * 7.5);
        assert!((report.uplink_utilisation - expected).abs() < 1e-9);
        assert_eq!(report.uplink_drops, 37, "the shapers' count");
    }

    #[test]
    fn a_viewer_that_did_not_run_to_the_end_is_an_error_not_a_figure() {
        let dir = std::env::temp_dir().join(format!("swarm-sim-real-end-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        write(
            &dir,
            "source.jsonl",
            "{\"cut\":0,\"at\":10000,\"bytes\":1}\n",
        );
        write(
            &dir,
            "viewer-1.jsonl",
            "{\"joined\":9500}\n{\"play\":0,\"at\":10100,\"due\":12000}\n",
        );
        let result = measure(&SimConfig::new(1, 8), &dir);
        std::fs::remove_dir_all(&dir).ok();
        let error = result
            .expect_err("a viewer without an end line")
            .to_string();
        assert!(
            error.contains("viewer-1.jsonl") && error.contains("end"),
            "{error}"
        );
    }
}
