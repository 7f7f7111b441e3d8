//! A real swarm's figures by the simulator's own definitions: reads the timelines that
//! `streamtorrent broadcast --timeline` and `watch --timeline` wrote during
//! `scripts/bench-native-swarm` and runs them through the same player model and report as
//! a simulated run, so the two sit side by side in one table.
//!
//! The directory holds `source.jsonl` (a `{"cut":SEQ,"at":T,"bytes":N}` line per chunk),
//! one `viewer-*.jsonl` per viewer (`joined`, `play`, `skip` and `end` lines; see
//! `peer_native::timeline`) and one `*.link` per peer: `LINK_KBPS TX_BYTES`, its shaped
//! uplink's rate and what its interface sent. Times are Unix milliseconds; virtual time 0
//! is one chunk before chunk 0 was cut, as in the simulator.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::metrics::{Metrics, Player};
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
    let cuts = read_cuts(&dir.join("source.jsonl"))?;
    let (&first, &(first_at, _)) = cuts.iter().next().ok_or_else(|| SimError::Read {
        path: dir.join("source.jsonl").display().to_string(),
        reason: "no chunk was cut".into(),
    })?;
    let t0 = first_at.saturating_sub((first + 1) * chunk_ms);
    let to_us = |unix_ms: u64| -> Micros { unix_ms.saturating_sub(t0) * 1000 };
    let end_us = config.seconds * 1_000_000;
    let mut metrics = Metrics::new(chunk_ms * 1000, end_us);

    let mut viewers = 0;
    for path in files(dir, "viewer-", ".jsonl")? {
        viewers += 1;
        let mut player = Player::default();
        let mut joined = None;
        for line in read_lines(&path)? {
            let field = |name: &str| line.get(name).and_then(Value::as_u64);
            if let Some(at) = field("joined") {
                joined = Some(to_us(at));
                metrics.viewers_joined += 1;
            } else if let (Some(seq), Some(at)) = (field("play"), field("at")) {
                let (at, due) = (to_us(at), to_us(field("due").unwrap_or(at)));
                if at <= end_us {
                    metrics.played(&mut player, joined.unwrap_or(at), at, seq, due);
                }
            } else if let (Some(seq), Some(at)) = (field("skip"), field("at")) {
                if to_us(at) <= end_us {
                    metrics.skipped(&mut player, to_us(at), seq);
                }
            } else if field("end").is_some() {
                metrics.from_peers += field("bytes_from_peers").unwrap_or(0);
                metrics.from_source += field("bytes_from_source").unwrap_or(0);
                metrics.duplicate += field("bytes_duplicate").unwrap_or(0);
            }
        }
        let joined = joined.ok_or_else(|| SimError::Read {
            path: path.display().to_string(),
            reason: "no \"joined\" line".into(),
        })?;
        metrics.finish(&mut player, joined, end_us);
    }
    for path in files(dir, "", ".link")? {
        let text = read(&path)?;
        let numbers: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [link_kbps, tx_bytes] = numbers[..] else {
            return Err(SimError::Read {
                path: path.display().to_string(),
                reason: format!("expected \"LINK_KBPS TX_BYTES\", found {text:?}"),
            });
        };
        metrics.capacity_bytes += link_kbps as f64 * 1000.0 / 8.0 * config.seconds as f64;
        metrics.message_bytes += tx_bytes;
    }

    let cut_jitter_max_ms = cuts
        .iter()
        .map(|(seq, (at, _))| at.abs_diff(t0 + (seq + 1) * chunk_ms))
        .max()
        .unwrap_or(0);
    let (&last, _) = cuts.iter().next_back().expect("cuts is not empty");
    let span_ms = ((last - first + 1) * chunk_ms).max(1);
    let bytes: u64 = cuts.values().map(|(_, bytes)| bytes).sum();
    let notes = RealNotes {
        viewers,
        chunks_cut: cuts.len(),
        cut_jitter_max_ms,
        stream_kbps: bytes * 8 / span_ms,
    };
    Ok((crate::report::summarise(config, metrics, 0, 0), notes))
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
        let cuts: String = (0..6)
            .map(|seq| {
                format!(
                    "{{\"cut\":{seq},\"at\":{},\"bytes\":125000}}\n",
                    10_000 + seq * 1000
                )
            })
            .collect();
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
        write(&dir, "source.link", "3000 1000000\n");
        write(&dir, "viewer-1.link", "1500 500000\n");
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
        // Uplink: 1.5 MB sent of (3,000 + 1,500) kbit/s × 8 s.
        let expected = 1_500_000.0 / (4_500.0 * 1000.0 / 8.0 * 8.0);
        assert!((report.uplink_utilisation - expected).abs() < 1e-9);
    }
}
