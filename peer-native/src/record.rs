//! Recording what was cut or played as files: `init.mp4` and one `chunk-NNNNNNNN.m4s` per
//! chunk, so tests can compare a viewer's copy with the broadcaster's byte for byte.

use std::path::Path;

use protocol::ChunkSeq;

use crate::NativeError;

/// File name of a recorded chunk, shared by the broadcaster and viewers.
pub fn chunk_file_name(seq: ChunkSeq) -> String {
    format!("chunk-{:08}.m4s", seq.0)
}

pub(crate) fn record(dir: Option<&Path>, name: &str, data: &[u8]) -> Result<(), NativeError> {
    let Some(dir) = dir else { return Ok(()) };
    let path = dir.join(name);
    std::fs::write(&path, data).map_err(|source| NativeError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })
}
