//! Pieces that came before their chunk's signed manifest. A neighbour sends a chunk's
//! manifest right before the first piece of it, but pieces may travel on an unordered
//! data channel beside the ordered one that carries the manifest, so a piece overtakes
//! it whenever the manifest's packet is lost and sent again. Such a piece (one we asked
//! for, or a push from the source or a parent) is held here, unchecked and unused, until
//! the manifest comes, and only then checked. Bounded: a neighbour that sends pieces of
//! chunks it never signs for fills only its own places (a second of a fast uplink's
//! pieces), and the oldest held piece makes room for a newer one; a piece given up is
//! asked for again when its request times out.

use std::collections::VecDeque;

use bytes::Bytes;
use protocol::{ChunkSeq, PeerId, RequestId};

/// Pieces held at most, from every neighbour together (16 KiB each: 1 MiB).
pub const EARLY_PIECES_MAX: usize = 64;
/// Pieces held at most from one neighbour: what a 4 Mbit/s uplink sends in the second a
/// lost manifest waits for SCTP to send it again.
pub const EARLY_PIECES_PER_PEER: usize = 32;

/// A piece as it came, to be taken again once its manifest is here.
#[derive(Debug, Clone)]
pub(crate) struct EarlyPiece {
    pub peer: PeerId,
    pub req: RequestId,
    pub seq: ChunkSeq,
    pub offset: u32,
    pub total: u32,
    pub data: Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct EarlyPieces {
    /// Oldest first.
    held: VecDeque<EarlyPiece>,
}

impl EarlyPieces {
    /// Holds `piece`; returns how many bytes were given up to keep the bounds (the
    /// piece itself when its sender already fills its places, else the oldest held).
    pub fn hold(&mut self, piece: EarlyPiece) -> u64 {
        let from_peer = self.held.iter().filter(|p| p.peer == piece.peer).count();
        if from_peer >= EARLY_PIECES_PER_PEER {
            return piece.data.len() as u64;
        }
        let mut given_up = 0;
        if self.held.len() >= EARLY_PIECES_MAX {
            if let Some(oldest) = self.held.pop_front() {
                given_up = oldest.data.len() as u64;
            }
        }
        self.held.push_back(piece);
        given_up
    }

    /// Every piece held of chunk `seq`, in the order they came.
    pub fn take(&mut self, seq: ChunkSeq) -> Vec<EarlyPiece> {
        if !self.held.iter().any(|p| p.seq == seq) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        self.held.retain(|p| {
            let this_chunk = p.seq == seq;
            if this_chunk {
                taken.push(p.clone());
            }
            !this_chunk
        });
        taken
    }

    /// Forgets the pieces `peer` sent (it is gone: they would never be taken).
    pub fn forget(&mut self, peer: PeerId) {
        self.held.retain(|p| p.peer != peer);
    }

    /// Forgets pieces of chunks before `oldest` (out of the window: their manifests
    /// will not be kept any more).
    pub fn evict_below(&mut self, oldest: ChunkSeq) {
        self.held.retain(|p| p.seq >= oldest);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(peer: u64, seq: u64, offset: u32) -> EarlyPiece {
        EarlyPiece {
            peer: PeerId(peer),
            req: RequestId(1),
            seq: ChunkSeq(seq),
            offset,
            total: 100_000,
            data: Bytes::from(vec![0u8; 10]),
        }
    }

    #[test]
    fn pieces_are_taken_by_chunk_in_the_order_they_came() {
        let mut early = EarlyPieces::default();
        early.hold(piece(1, 5, 0));
        early.hold(piece(2, 6, 0));
        early.hold(piece(1, 5, 16_320));
        let taken = early.take(ChunkSeq(5));
        assert_eq!(
            taken.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![0, 16_320]
        );
        assert_eq!(early.len(), 1, "the other chunk's piece stays");
        assert!(early.take(ChunkSeq(5)).is_empty());
        early.evict_below(ChunkSeq(7));
        assert_eq!(early.len(), 0);
        early.hold(piece(1, 8, 0));
        early.hold(piece(2, 8, 0));
        early.forget(PeerId(1));
        let left = early.take(ChunkSeq(8));
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].peer,
            PeerId(2),
            "a gone neighbour's pieces are forgotten"
        );
    }

    #[test]
    fn one_neighbour_fills_only_its_own_places_and_the_oldest_makes_room() {
        let mut early = EarlyPieces::default();
        for i in 0..EARLY_PIECES_PER_PEER as u32 {
            assert_eq!(early.hold(piece(1, 5, i)), 0);
        }
        assert_eq!(early.hold(piece(1, 5, 99)), 10, "its own places are full");
        assert_eq!(early.len(), EARLY_PIECES_PER_PEER);
        let mut next = 2;
        while early.len() < EARLY_PIECES_MAX {
            assert_eq!(early.hold(piece(next, 5, 0)), 0);
            next += 1;
        }
        assert_eq!(early.hold(piece(next, 5, 0)), 10, "the oldest gave way");
        assert_eq!(early.len(), EARLY_PIECES_MAX);
        assert!(
            early
                .take(ChunkSeq(5))
                .iter()
                .all(|p| p.offset != 0 || p.peer != PeerId(1)),
            "the first piece held was the one given up"
        );
    }
}
