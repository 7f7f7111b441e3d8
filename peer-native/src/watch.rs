//! The headless viewer's sink: writes the played stream to a file and/or one file per chunk.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use protocol::ChunkSeq;
use serde_json::json;
use swarm::Chunk;

use crate::node::{Report, Sink};
use crate::record::{chunk_file_name, record};
use crate::timeline::Timeline;
use crate::NativeError;

pub struct WatchSink {
    /// The played stream (init segment, then chunks), playable by any MP4 player.
    output: Option<File>,
    record_dir: Option<PathBuf>,
    /// Stop after this many chunks.
    limit: Option<u64>,
    played: u64,
    first: Option<ChunkSeq>,
    last: Option<ChunkSeq>,
    skipped: Vec<ChunkSeq>,
    timeline: Option<Timeline>,
}

impl WatchSink {
    pub fn new(
        output: Option<PathBuf>,
        record_dir: Option<PathBuf>,
        limit: Option<u64>,
    ) -> Result<WatchSink, NativeError> {
        let output = output
            .map(|path| {
                File::create(&path).map_err(|source| NativeError::Io {
                    what: format!("cannot create {}", path.display()),
                    source,
                })
            })
            .transpose()?;
        if let Some(dir) = &record_dir {
            std::fs::create_dir_all(dir).map_err(|source| NativeError::Io {
                what: format!("cannot create {}", dir.display()),
                source,
            })?;
        }
        Ok(WatchSink {
            output,
            record_dir,
            limit,
            played: 0,
            first: None,
            last: None,
            skipped: Vec::new(),
            timeline: None,
        })
    }

    /// Also keep a timeline of what played when (see [`Timeline`]); starts it now.
    pub fn with_timeline(mut self, mut timeline: Timeline) -> WatchSink {
        timeline.joined();
        self.timeline = Some(timeline);
        self
    }

    /// Whether a `--chunks` limit was set and not reached.
    pub fn fell_short(&self) -> Option<(u64, u64)> {
        self.limit
            .filter(|limit| self.played < *limit)
            .map(|limit| (self.played, limit))
    }

    /// One JSON line for scripts and tests (and the timeline's last).
    pub fn summary(&mut self, report: &Report) -> String {
        let stats = &report.stats;
        let neighbours: Vec<_> = report
            .neighbours
            .iter()
            .map(|n| {
                json!({
                    "peer": n.peer.to_string(),
                    "source": n.is_source,
                    "bytes_down": n.bytes_down,
                    "bytes_up": n.bytes_up,
                })
            })
            .collect();
        if let Some(timeline) = &mut self.timeline {
            timeline.ended(stats);
        }
        json!({
            "chunks_played": self.played,
            "first_seq": self.first.map(|s| s.0),
            "last_seq": self.last.map(|s| s.0),
            "skipped": self.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
            "bytes_from_peers": stats.bytes_from_peers,
            "bytes_from_source": stats.bytes_from_source,
            "bytes_from_http": stats.bytes_from_http,
            "bytes_uploaded": stats.bytes_uploaded,
            "bytes_rejected": stats.bytes_rejected,
            "stalls": stats.stalls,
            "peers_dropped_polluting": stats.drops.polluted,
            "peer": report.peer.map(|p| p.to_string()),
            "neighbours": neighbours,
        })
        .to_string()
    }

    fn write(&mut self, data: &[u8]) -> Result<(), NativeError> {
        if let Some(file) = &mut self.output {
            file.write_all(data).map_err(|source| NativeError::Io {
                what: "writing output".into(),
                source,
            })?;
        }
        Ok(())
    }
}

impl Sink for WatchSink {
    fn init(&mut self, mime: &str, data: &[u8]) -> Result<(), NativeError> {
        tracing::info!(%mime, "stream type");
        record(self.record_dir.as_deref(), "init.mp4", data)?;
        self.write(data)
    }

    fn play(&mut self, chunk: &Chunk, starts_in: Duration) -> Result<bool, NativeError> {
        if let Some(timeline) = &mut self.timeline {
            timeline.played(chunk.seq, starts_in);
        }
        let data = chunk.data.to_vec();
        record(
            self.record_dir.as_deref(),
            &chunk_file_name(chunk.seq),
            &data,
        )?;
        self.write(&data)?;
        self.played += 1;
        self.first.get_or_insert(chunk.seq);
        self.last = Some(chunk.seq);
        tracing::info!(seq = %chunk.seq, bytes = chunk.data.len(), "played");
        Ok(self.limit.is_some_and(|limit| self.played >= limit))
    }

    fn skipped(&mut self, seq: ChunkSeq) {
        if let Some(timeline) = &mut self.timeline {
            timeline.skipped(seq);
        }
        tracing::warn!(%seq, "chunk missed its deadline");
        self.skipped.push(seq);
    }
}
