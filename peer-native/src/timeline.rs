//! `--timeline FILE`: one JSON line per event, stamped with the Unix time in milliseconds,
//! so a benchmark can line a real swarm up against the simulator with the simulator's own
//! definitions (`swarm-sim --real DIR`, run by `scripts/bench-native-swarm`). Every peer of
//! a benchmark runs on one machine, so their clocks agree.
//!
//! Lines: `{"joined":T}` when a viewer starts; `{"cut":SEQ,"at":T,"bytes":N}` when the
//! broadcaster cut a chunk; `{"play":SEQ,"at":T,"due":T}` when a viewer's swarm handed a
//! chunk to the player (`due`: when it plays); `{"skip":SEQ,"at":T}` when one missed its
//! deadline; `{"end":T, ...stats}` when the viewer stops.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::ChunkSeq;
use serde_json::{json, Value};
use swarm::{MsHistogram, Stats};

use crate::NativeError;

pub struct Timeline {
    file: File,
}

impl Timeline {
    pub fn create(path: &Path) -> Result<Timeline, NativeError> {
        let file = File::create(path).map_err(|source| NativeError::Io {
            what: format!("cannot create {}", path.display()),
            source,
        })?;
        Ok(Timeline { file })
    }

    pub fn joined(&mut self) {
        self.line(json!({ "joined": unix_ms(SystemTime::now()) }));
    }

    pub fn cut(&mut self, seq: ChunkSeq, bytes: usize) {
        self.line(json!({ "cut": seq.0, "at": unix_ms(SystemTime::now()), "bytes": bytes }));
    }

    /// The chunk plays `starts_in` from now (at once when it is late).
    pub fn played(&mut self, seq: ChunkSeq, starts_in: Duration) {
        let now = SystemTime::now();
        let due = unix_ms(now + starts_in);
        self.line(json!({ "play": seq.0, "at": unix_ms(now), "due": due }));
    }

    pub fn skipped(&mut self, seq: ChunkSeq) {
        self.line(json!({ "skip": seq.0, "at": unix_ms(SystemTime::now()) }));
    }

    pub fn ended(&mut self, stats: &Stats) {
        self.line(json!({
            "end": unix_ms(SystemTime::now()),
            "bytes_from_peers": stats.bytes_from_peers,
            "bytes_from_source": stats.bytes_from_source,
            "bytes_from_http": stats.bytes_from_http,
            "bytes_uploaded": stats.bytes_uploaded,
            "bytes_duplicate": stats.bytes_duplicate,
            "stalls": stats.stalls,
            "chunks_missed": stats.chunks_missed,
            "pull_first_piece_ms": histogram(&stats.pull_first_piece_ms),
            "pull_complete_ms": histogram(&stats.pull_complete_ms),
            "serve_wait_ms": histogram(&stats.serve_wait_ms),
        }));
    }

    /// A benchmark aid: a line that cannot be written is logged and the viewer goes on (its
    /// playback matters more than its diary). One write per line, so a reader never sees
    /// half of one.
    fn line(&mut self, value: Value) {
        let line = format!("{value}\n");
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the timeline");
        }
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A histogram as `[[upper bound ms, count], …]`, its non-empty buckets.
fn histogram(h: &MsHistogram) -> Value {
    h.buckets().map(|(ms, count)| json!([ms, count])).collect()
}
