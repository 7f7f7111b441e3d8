//! The broadcaster's input: fragmented MP4 from a pipe or a file, cut into numbered chunks.

use std::path::{Path, PathBuf};

use protocol::{ChunkSeq, MAX_CHUNK_BYTES, MAX_PEER_MESSAGE_BYTES};
use swarm::Chunk;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::node::Produced;
use crate::record::{chunk_file_name, record};
use crate::timeline::Timeline;
use crate::NativeError;
use fmp4::{Cutter, Segment};

/// Room left in a peer message for the `Init` header, its MIME type (at most 256 bytes)
/// and its signature.
const INIT_HEADER_ROOM: usize = 400;

/// Reads `input` (`-` for stdin) on a task and returns the stream of numbered segments.
/// With `record_dir`, writes each segment there exactly as cut: `init.mp4`, then
/// `chunk-00000000.m4s`, ... (tests compare viewers' copies against these). With
/// `timeline`, notes when each chunk was cut.
pub fn spawn_input(
    input: PathBuf,
    record_dir: Option<PathBuf>,
    mut timeline: Option<Timeline>,
) -> mpsc::Receiver<Result<Produced, NativeError>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let result = if input.as_os_str() == "-" {
            pump(
                tokio::io::stdin(),
                record_dir.as_deref(),
                &mut timeline,
                &tx,
            )
            .await
        } else {
            match tokio::fs::File::open(&input).await {
                Ok(file) => pump(file, record_dir.as_deref(), &mut timeline, &tx).await,
                Err(source) => Err(NativeError::Io {
                    what: format!("cannot open input {}", input.display()),
                    source,
                }),
            }
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn pump(
    mut input: impl AsyncRead + Unpin,
    record_dir: Option<&Path>,
    timeline: &mut Option<Timeline>,
    tx: &mpsc::Sender<Result<Produced, NativeError>>,
) -> Result<(), NativeError> {
    let mut numbering = Numbering::new(record_dir.map(Path::to_path_buf), timeline.take())?;
    let mut cutter = Cutter::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|source| NativeError::Io {
                what: "reading input".into(),
                source,
            })?;
        if n == 0 {
            return Ok(cutter.finish()?);
        }
        for segment in cutter.push(&buf[..n])? {
            let produced = numbering.produce(segment)?;
            if tx.send(Ok(produced)).await.is_err() {
                return Ok(()); // The node stopped.
            }
        }
    }
}

/// Turns cut segments into what the node publishes: chunks numbered from 0, each checked
/// against what a peer message and a manifest can carry, recorded and noted as asked.
pub struct Numbering {
    next_seq: ChunkSeq,
    record_dir: Option<PathBuf>,
    timeline: Option<Timeline>,
}

impl Numbering {
    /// With `record_dir`, writes each segment there exactly as cut: `init.mp4`, then
    /// `chunk-00000000.m4s`, ... With `timeline`, notes when each chunk was cut.
    pub fn new(
        record_dir: Option<PathBuf>,
        timeline: Option<Timeline>,
    ) -> Result<Numbering, NativeError> {
        if let Some(dir) = &record_dir {
            std::fs::create_dir_all(dir).map_err(|source| NativeError::Io {
                what: format!("cannot create {}", dir.display()),
                source,
            })?;
        }
        Ok(Numbering {
            next_seq: ChunkSeq(0),
            record_dir,
            timeline,
        })
    }

    pub fn produce(&mut self, segment: Segment) -> Result<Produced, NativeError> {
        let record_dir = self.record_dir.as_deref();
        Ok(match segment {
            Segment::Init { mime, data } => {
                if data.len() > MAX_PEER_MESSAGE_BYTES - INIT_HEADER_ROOM {
                    return Err(NativeError::InitTooLarge(data.len()));
                }
                record(record_dir, "init.mp4", &data)?;
                Produced::Init { mime, data }
            }
            Segment::Media { keyframe, data } => {
                if data.len() > MAX_CHUNK_BYTES as usize {
                    return Err(NativeError::ChunkTooLarge(data.len()));
                }
                let seq = self.next_seq;
                self.next_seq = seq.next();
                record(record_dir, &chunk_file_name(seq), &data)?;
                if let Some(timeline) = &mut self.timeline {
                    timeline.cut(seq, data.len());
                }
                Produced::Chunk(Chunk {
                    seq,
                    keyframe,
                    data: data.into(),
                })
            }
        })
    }
}
