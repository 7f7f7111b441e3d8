//! The link table: one entry per WebRTC link being set up or open, keyed by a handle
//! with a generation, so an event for a link that is gone (a late `closed` from a link an
//! offer replaced) can never touch the link that took its place.

use std::collections::BTreeMap;

use protocol::PeerId;

use crate::Millis;

/// Names one link for its whole life; never names another, even in a reused slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    index: u32,
    generation: u32,
}

impl LinkId {
    /// Drivers get their ids from the node's `OpenLink`; a test of a driver's link on
    /// its own may make its own.
    pub fn new(index: u32, generation: u32) -> LinkId {
        LinkId { index, generation }
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "link{}.{}", self.index, self.generation)
    }
}

/// Where a link is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Signalling and ICE: not usable yet. Closed unopened at `connect_by`.
    Connecting {
        /// Our description goes out by then, with whatever candidates were gathered.
        describe_by: Option<Millis>,
        connect_by: Millis,
    },
    /// The data channel is open, and we sent our `Hello`.
    Open {
        /// The peer's `Hello` came.
        hello: bool,
        /// Closed without blame if the peer's `Hello` has not come by then.
        hello_by: Millis,
        /// When we last said our `Hello`: said again `HELLO_REPEAT_MS` later while the
        /// peer's has not come, and no sooner.
        said_at: Millis,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) peer: PeerId,
    /// We offered (so our description is an offer, and their answer is expected).
    pub(crate) offered: bool,
    /// The remote description arrived (an offerer waits for the answer).
    pub(crate) answered: bool,
    pub(crate) state: LinkState,
}

impl Link {
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, LinkState::Open { .. })
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    link: Option<Link>,
}

/// At most one link per peer; a handle per link.
#[derive(Debug, Default)]
pub(crate) struct LinkTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_peer: BTreeMap<PeerId, LinkId>,
}

impl LinkTable {
    /// Adds a link to `peer`, which must have none (callers remove the old one first).
    pub(crate) fn insert(&mut self, link: Link) -> LinkId {
        debug_assert!(!self.by_peer.contains_key(&link.peer));
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let id = LinkId {
            index,
            generation: slot.generation,
        };
        self.by_peer.insert(link.peer, id);
        slot.link = Some(link);
        id
    }

    pub(crate) fn get(&self, id: LinkId) -> Option<&Link> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.link.as_ref())
            .flatten()
    }

    pub(crate) fn get_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.link.as_mut()
    }

    pub(crate) fn remove(&mut self, id: LinkId) -> Option<Link> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let link = slot.link.take()?;
        self.by_peer.remove(&link.peer);
        self.free.push(id.index);
        Some(link)
    }

    pub(crate) fn of_peer(&self, peer: PeerId) -> Option<LinkId> {
        self.by_peer.get(&peer).copied()
    }

    /// Links being set up or open: what counts against the cap.
    pub(crate) fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (LinkId, &Link)> + '_ {
        self.by_peer
            .values()
            .filter_map(|id| Some((*id, self.get(*id)?)))
    }

    /// Every link, in no stated order: for questions whose answer does not depend on it
    /// (the earliest deadline), asked after every input, where walking the peer map cost.
    pub(crate) fn unordered(&self) -> impl Iterator<Item = &Link> + '_ {
        self.slots.iter().filter_map(|slot| slot.link.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: u64) -> Link {
        Link {
            peer: PeerId(peer),
            offered: true,
            answered: false,
            state: LinkState::Connecting {
                describe_by: None,
                connect_by: Millis(0),
            },
        }
    }

    #[test]
    fn a_stale_handle_never_reaches_the_link_in_its_slot() {
        let mut table = LinkTable::default();
        let old = table.insert(link(7));
        assert!(table.remove(old).is_some());
        let new = table.insert(link(7));
        assert_ne!(old, new, "the slot is reused under a new generation");
        assert!(table.get(old).is_none());
        assert!(table.remove(old).is_none(), "a late close of the old link");
        assert_eq!(table.of_peer(PeerId(7)), Some(new));
        assert_eq!(table.len(), 1);
    }
}
