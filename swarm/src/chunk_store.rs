//! The chunks a peer holds, whole or piece by piece, bounded to a window.

use std::collections::BTreeMap;

use bytes::Bytes;
use protocol::{BufferMapEntry, ChunkManifest, ChunkSeq, PeerMessage, PIECE_BYTES};

/// A complete media chunk: one or more fMP4 fragments (`moof`+`mdat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seq: ChunkSeq,
    /// Starts with a keyframe: a viewer may begin playback here.
    pub keyframe: bool,
    pub data: ChunkData,
}

/// Chunk bytes as the pieces they travel in. Pieces are shared buffers, so storing,
/// relaying and replaying a chunk never copies it; a player that needs one contiguous
/// buffer calls [`ChunkData::to_vec`].
#[derive(Debug, Clone, Default)]
pub struct ChunkData {
    pieces: Vec<Bytes>,
    len: usize,
}

impl ChunkData {
    /// Cuts `data` into pieces of [`PIECE_BYTES`] without copying.
    pub fn new(data: Bytes) -> ChunkData {
        let mut out = ChunkData::default();
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + PIECE_BYTES).min(data.len());
            out.push(data.slice(offset..end));
            offset = end;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            out.extend_from_slice(piece);
        }
        out
    }

    fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.pieces.push(piece);
    }
}

impl From<Vec<u8>> for ChunkData {
    fn from(data: Vec<u8>) -> ChunkData {
        ChunkData::new(Bytes::from(data))
    }
}

impl PartialEq for ChunkData {
    fn eq(&self, other: &ChunkData) -> bool {
        self.len == other.len
            && self
                .pieces
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.pieces.iter().flat_map(|p| p.iter()))
    }
}

impl Eq for ChunkData {}

/// Pieces in a chunk of `total` bytes.
pub(crate) fn piece_count(total: usize) -> usize {
    total.div_ceil(PIECE_BYTES)
}

/// Length of piece `index` of a chunk of `total` bytes.
pub(crate) fn piece_len(total: usize, index: usize) -> usize {
    total.saturating_sub(index * PIECE_BYTES).min(PIECE_BYTES)
}

/// A chunk held whole or in part. Pieces come from several peers at once, in any order.
#[derive(Debug)]
pub(crate) struct Held {
    pub keyframe: bool,
    pub total: usize,
    pieces: Vec<Option<Bytes>>,
    held: usize,
    /// Which of the first 128 pieces are held, one bit each: the scheduler asks that
    /// after every input (`first_missing`, for each pull's overdue deadline), and reading
    /// it here, in the map's own node, spares a cache miss on the pieces' memory, which
    /// was the most expensive line of the simulator's profile.
    present: u128,
}

impl Held {
    pub fn new(keyframe: bool, total: usize) -> Held {
        Held {
            keyframe,
            total,
            pieces: vec![None; piece_count(total)],
            held: 0,
            present: 0,
        }
    }

    pub fn whole(keyframe: bool, data: &ChunkData) -> Held {
        let mut held = Held::new(keyframe, data.len());
        for (index, piece) in data.pieces().iter().enumerate() {
            held.insert(index, piece.clone());
        }
        held
    }

    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_complete(&self) -> bool {
        self.held == self.pieces.len()
    }

    pub fn piece(&self, index: usize) -> Option<&Bytes> {
        self.pieces.get(index)?.as_ref()
    }

    /// Stores a piece; false if it was already held (a duplicate).
    pub fn insert(&mut self, index: usize, data: Bytes) -> bool {
        match self.pieces.get_mut(index) {
            Some(slot @ None) => {
                *slot = Some(data);
                self.held += 1;
                if index < PRESENT_BITS {
                    self.present |= 1 << index;
                }
                true
            }
            _ => false,
        }
    }

    /// The first piece in `range` not yet held.
    pub fn first_missing(&self, range: std::ops::Range<usize>) -> Option<usize> {
        let end = range.end.min(self.pieces.len());
        if end <= PRESENT_BITS && !range.is_empty() {
            let missing = !self.present & bits(range.start.min(end)..end);
            // Past the chunk's end nothing is held either (as `piece` says).
            return match missing {
                0 => (end < range.end).then_some(end.max(range.start)),
                _ => Some(missing.trailing_zeros() as usize),
            };
        }
        range.into_iter().find(|&i| self.piece(i).is_none())
    }

    /// Announces `pieces` of this chunk; `pushed`: they follow unasked (the source's push).
    pub fn have(&self, seq: ChunkSeq, pieces: std::ops::Range<usize>, pushed: bool) -> PeerMessage {
        PeerMessage::Have {
            seq,
            keyframe: self.keyframe,
            total: self.total as u32,
            first: u16::try_from(pieces.start).expect("chunk sizes cap piece indices"),
            count: u16::try_from(pieces.len()).expect("chunk sizes cap piece counts"),
            pushed,
        }
    }

    fn data(&self) -> Option<ChunkData> {
        let mut data = ChunkData::default();
        for piece in &self.pieces {
            data.push(piece.clone()?);
        }
        Some(data)
    }
}

#[derive(Debug, Default)]
pub(crate) struct ChunkStore {
    pub chunks: BTreeMap<ChunkSeq, Held>,
    /// Signed manifests (verified, on a viewer) of chunks in the window, held or not yet.
    pub manifests: BTreeMap<ChunkSeq, ChunkManifest>,
}

impl ChunkStore {
    pub fn is_complete(&self, seq: ChunkSeq) -> bool {
        self.chunks.get(&seq).is_some_and(Held::is_complete)
    }

    pub fn complete(&self, seq: ChunkSeq) -> Option<Chunk> {
        let held = self.chunks.get(&seq).filter(|h| h.is_complete())?;
        Some(Chunk {
            seq,
            keyframe: held.keyframe,
            data: held.data()?,
        })
    }

    /// Whole chunks this peer can serve (partial ones are announced block by block).
    pub fn buffer_map(&self) -> Vec<BufferMapEntry> {
        self.chunks
            .iter()
            .filter(|(_, h)| h.is_complete())
            .map(|(seq, h)| BufferMapEntry {
                seq: *seq,
                keyframe: h.keyframe,
                total: h.total as u32,
            })
            .collect()
    }

    /// Forget everything older than `oldest_kept`; this bounds memory to the window.
    pub fn evict_before(&mut self, oldest_kept: ChunkSeq) {
        self.chunks = self.chunks.split_off(&oldest_kept);
        self.manifests = self.manifests.split_off(&oldest_kept);
    }
}

/// Pieces whose presence `Held::present` records.
const PRESENT_BITS: usize = 128;

/// The bits of `range`, within `PRESENT_BITS`.
fn bits(range: std::ops::Range<usize>) -> u128 {
    let below = |n: usize| match n {
        PRESENT_BITS => u128::MAX,
        n => (1u128 << n) - 1,
    };
    below(range.end) & !below(range.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_data_is_cut_into_aligned_pieces_without_copying() {
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let chunk = ChunkData::from(data.clone());
        assert_eq!(chunk.pieces().len(), 3);
        assert_eq!(chunk.pieces()[2].len(), 40_000 - 2 * PIECE_BYTES);
        assert_eq!(chunk.to_vec(), data);
        assert_eq!(piece_count(40_000), 3);
        assert_eq!(piece_len(40_000, 2), 40_000 - 2 * PIECE_BYTES);
        assert_eq!(piece_len(40_000, 3), 0);
    }

    #[test]
    fn a_held_chunk_fills_in_any_order_and_refuses_duplicates() {
        let data = ChunkData::from(vec![7u8; 3 * PIECE_BYTES - 5]);
        let mut held = Held::new(true, data.len());
        assert!(held.insert(2, data.pieces()[2].clone()));
        assert!(!held.insert(2, data.pieces()[2].clone()));
        assert!(!held.insert(9, data.pieces()[2].clone()), "past the end");
        assert_eq!(held.first_missing(0..3), Some(0));
        assert!(held.insert(0, data.pieces()[0].clone()));
        assert!(!held.is_complete());
        assert!(held.insert(1, data.pieces()[1].clone()));
        assert!(held.is_complete());
        assert_eq!(held.data(), Some(data));
    }

    /// `first_missing` reads presence bits for the first 128 pieces and the pieces past
    /// them; both must say what looking at every piece says, past the chunk's end too.
    #[test]
    fn the_first_missing_piece_is_what_a_scan_finds() {
        for pieces in [1, 3, 16, 127, 128, 129, 200] {
            let data = ChunkData::from(vec![1u8; pieces * PIECE_BYTES - 3]);
            let mut held = Held::new(false, data.len());
            // Every third piece and a few near the bit boundary.
            for index in (0..pieces).filter(|i| i % 3 == 1 || (126..130).contains(i)) {
                held.insert(index, data.pieces()[index].clone());
            }
            for start in 0..pieces + 3 {
                for end in start..pieces + 4 {
                    let scanned = (start..end).find(|&i| held.piece(i).is_none());
                    assert_eq!(
                        held.first_missing(start..end),
                        scanned,
                        "{pieces} pieces, range {start}..{end}"
                    );
                }
            }
        }
    }
}
