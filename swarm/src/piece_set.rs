//! Which pieces of a chunk a neighbour holds, as a bit set.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PieceSet {
    bits: Vec<u64>,
    len: usize,
}

impl PieceSet {
    pub fn empty(len: usize) -> PieceSet {
        PieceSet {
            bits: vec![0; len.div_ceil(64)],
            len,
        }
    }

    pub fn full(len: usize) -> PieceSet {
        let mut set = PieceSet::empty(len);
        set.insert(0..len);
        set
    }

    /// Marks `range` held; indices past the chunk's end are ignored.
    pub fn insert(&mut self, range: Range<usize>) {
        for i in range.start..range.end.min(self.len) {
            self.bits[i / 64] |= 1 << (i % 64);
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        i < self.len && self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn contains_all(&self, range: Range<usize>) -> bool {
        !range.is_empty() && range.into_iter().all(|i| self.contains(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_held_or_not_across_word_boundaries() {
        let mut set = PieceSet::empty(130);
        set.insert(60..70);
        assert!(set.contains_all(60..70));
        assert!(!set.contains_all(59..70));
        assert!(!set.contains(70));
        set.insert(120..200);
        assert!(set.contains(129));
        assert!(!set.contains(130), "past the end");
        assert!(!set.contains_all(0..0), "an empty range is never 'held'");
        assert!(PieceSet::full(130).contains_all(0..130));
    }
}
