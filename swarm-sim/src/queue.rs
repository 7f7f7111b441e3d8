//! The event queue: earliest first, and in insertion order at equal times, so a run is
//! reproducible. Events live in a slab and the heap orders small (time, order, slot)
//! keys: moving big events around the heap was a third of the simulator's time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::network::Micros;

pub struct EventQueue<T> {
    heap: BinaryHeap<Reverse<(Micros, u64, u32)>>,
    slab: Vec<Option<T>>,
    free: Vec<u32>,
    order: u64,
}

impl<T> EventQueue<T> {
    pub fn new() -> EventQueue<T> {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            order: 0,
        }
    }

    pub fn push(&mut self, at: Micros, item: T) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(item);
                slot
            }
            None => {
                self.slab.push(Some(item));
                u32::try_from(self.slab.len() - 1).expect("fewer than 4 billion events pending")
            }
        };
        self.order += 1;
        self.heap.push(Reverse((at, self.order, slot)));
    }

    pub fn pop(&mut self) -> Option<(Micros, T)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        let item = self.slab[slot as usize]
            .take()
            .expect("every queued slot holds its event until popped");
        Some((at, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_insertion_order() {
        let mut queue = EventQueue::new();
        queue.push(5, "c");
        queue.push(1, "a");
        queue.push(5, "d");
        queue.push(3, "b");
        let popped: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(popped, vec![(1, "a"), (3, "b"), (5, "c"), (5, "d")]);
        queue.push(9, "reuses a slot");
        assert_eq!(queue.slab.len(), 4);
        assert_eq!(queue.pop(), Some((9, "reuses a slot")));
    }
}
