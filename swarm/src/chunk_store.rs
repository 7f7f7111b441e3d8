use std::collections::BTreeMap;

use protocol::{BufferMapEntry, ChunkSeq, PeerId, RequestId};

use crate::Millis;

/// A complete media chunk: one or more fMP4 fragments (`moof`+`mdat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seq: ChunkSeq,
    /// Starts with a keyframe: a viewer may begin playback here.
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// A chunk being downloaded from one peer.
#[derive(Debug)]
pub(crate) struct Download {
    pub from: PeerId,
    pub req: RequestId,
    pub started: Millis,
    pub keyframe: bool,
    /// Allocated at the size the first piece announces; `received` guards completeness.
    pub data: Vec<u8>,
    pub received: usize,
    /// Which byte offsets arrived, so a repeated piece is not counted twice.
    pub pieces: BTreeMap<u32, usize>,
}

/// The chunks this peer holds or is fetching, bounded to a window behind the newest.
#[derive(Debug, Default)]
pub(crate) struct ChunkStore {
    pub complete: BTreeMap<ChunkSeq, Chunk>,
    pub downloads: BTreeMap<ChunkSeq, Download>,
}

impl ChunkStore {
    pub fn has(&self, seq: ChunkSeq) -> bool {
        self.complete.contains_key(&seq)
    }

    pub fn buffer_map(&self) -> Vec<BufferMapEntry> {
        self.complete
            .values()
            .map(|c| BufferMapEntry {
                seq: c.seq,
                keyframe: c.keyframe,
            })
            .collect()
    }

    /// Forget everything older than `oldest_kept`; this bounds memory to the window.
    pub fn evict_before(&mut self, oldest_kept: ChunkSeq) {
        self.complete = self.complete.split_off(&oldest_kept);
        self.downloads = self.downloads.split_off(&oldest_kept);
    }
}
