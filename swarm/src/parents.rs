//! A viewer's parents along the substreams (see `substreams.rs`): one per substream,
//! chosen by measured announcement delay (how long after its cut a neighbour says it holds
//! a block of the substream), so subscriptions point toward the source: a child always
//! announces after its parent, so it never looks the better parent. Replaced when lost,
//! refused or unanswered, or when another announces clearly sooner for long enough; never
//! one of our own children for the substream, and none while the source itself pushes
//! it to us (we are one of its roots).

use std::collections::BTreeMap;

use protocol::{ChunkSeq, PeerId, PeerMessage, MAX_SUBSTREAMS};

use crate::config::SwarmRole;
use crate::peer::PeerState;
use crate::substreams::substream_of;
use crate::{Millis, Swarm};

/// How often a viewer reviews its parents.
const REVIEW_MS: u64 = 1_000;
/// A subscription not answered within this is taken as refused (an older peer ignores it).
const CONFIRM_MS: u64 = 2_000;
/// A neighbour that refused a substream is not asked for it again for this long.
const REFUSED_MS: u64 = 10_000;
/// A parent is kept at least this long before a better one replaces it…
const MIN_TENURE_MS: u64 = 10_000;
/// …and only if the other announces that much sooner.
const SWITCH_MARGIN_MS: u64 = 300;
/// A viewer the source pushed a substream to within this many chunk durations is one of
/// its roots.
const FED_FOR_CHUNKS: u64 = 3;
/// Added to a candidate's delay for each substream already subscribed from it, so the
/// substreams spread over several parents (losing one then costs one substream).
const SPREAD_PENALTY_MS: u64 = 60;

/// A viewer's parents, one slot per substream, and what it last asked each neighbour for.
#[derive(Debug, Default)]
pub(crate) struct Parents {
    slots: Vec<Slot>,
    asked: BTreeMap<PeerId, u16>,
    next_review: Option<Millis>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// When the source last pushed us a block of this substream: while it does, we are
    /// one of the substream's roots and need no parent for it.
    fed_by_source: Option<Millis>,
    parent: Option<PeerId>,
    /// The parent said it pushes this substream.
    confirmed: bool,
    /// When the parent was chosen.
    since: Millis,
}

impl Slot {
    /// No parent (what the source feeds is remembered).
    fn clear(&mut self) {
        *self = Slot {
            fed_by_source: self.fed_by_source,
            ..Slot::default()
        };
    }
}

impl Parents {
    pub fn new(count: usize) -> Parents {
        Parents {
            slots: vec![Slot::default(); count.min(usize::from(MAX_SUBSTREAMS))],
            asked: BTreeMap::new(),
            next_review: None,
        }
    }

    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// When the parents are next reviewed.
    pub fn next_review(&self) -> Option<Millis> {
        self.next_review.filter(|_| !self.slots.is_empty())
    }

    /// `peer` is this viewer's confirmed parent for `substream`.
    pub fn pushes(&self, peer: PeerId, substream: usize) -> bool {
        self.slots
            .get(substream)
            .is_some_and(|s| s.confirmed && s.parent == Some(peer))
    }

    /// A neighbour went: the substreams it pushed get a new parent at once.
    pub fn lost(&mut self, peer: PeerId) {
        let mut lost = false;
        for slot in &mut self.slots {
            if slot.parent == Some(peer) {
                slot.clear();
                lost = true;
            }
        }
        self.asked.remove(&peer);
        if lost {
            self.next_review = None;
        }
    }

    /// Our parent for `substream`, confirmed or asked.
    pub fn parent(&self, substream: usize) -> Option<PeerId> {
        self.slots.get(substream)?.parent
    }

    /// The source pushes us blocks of `substream`.
    pub fn fed_by_source(&mut self, substream: usize, now: Millis) {
        if let Some(slot) = self.slots.get_mut(substream) {
            slot.fed_by_source = Some(now);
        }
    }

    /// `substream` has a confirmed parent: its blocks come by push.
    pub fn covered(&self, substream: usize) -> bool {
        self.slots.get(substream).is_some_and(|s| s.confirmed)
    }
}

/// What a neighbour's announcements of each substream tell about it: how long after the
/// cut it announces (smoothed), and which substreams it refused us.
#[derive(Debug, Clone, Default)]
pub(crate) struct AsParent {
    delay_ms: Vec<Option<u64>>,
    refused: u16,
    refused_until: Millis,
}

impl AsParent {
    fn sample(&mut self, substream: usize, delay: u64) {
        if self.delay_ms.len() <= substream {
            self.delay_ms.resize(substream + 1, None);
        }
        let d = &mut self.delay_ms[substream];
        *d = Some(d.map_or(delay, |old| (3 * old + delay) / 4));
    }

    fn delay(&self, substream: usize) -> Option<u64> {
        self.delay_ms.get(substream).copied().flatten()
    }

    fn refuses(&self, substream: usize, now: Millis) -> bool {
        now < self.refused_until && self.refused & (1 << substream) != 0
    }

    fn refuse(&mut self, mask: u16, now: Millis) {
        if now >= self.refused_until {
            self.refused = 0;
        }
        self.refused |= mask;
        self.refused_until = now + REFUSED_MS;
    }
}

impl Swarm {
    /// A neighbour announced blocks `fresh` of `seq` for the first time: each is a sample of
    /// how soon it hears of that block's substream.
    pub(crate) fn note_announcement(
        &mut self,
        now: Millis,
        peer: PeerId,
        seq: ChunkSeq,
        fresh: &[usize],
    ) {
        let count = self.parents.count();
        if count == 0 || fresh.is_empty() {
            return;
        }
        let Some(cut) = self.clock.cut_at(seq) else {
            return;
        };
        let delay = now.0.saturating_sub(cut.0);
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.is_source {
            return;
        }
        for &block in fresh {
            state
                .as_parent
                .sample(substream_of(count, seq, block), delay);
        }
    }

    /// Viewer: replace lost, refused or unanswered parents, move to a clearly earlier one,
    /// and tell each neighbour what it is now asked to push.
    pub(crate) fn review_parents(&mut self, now: Millis) {
        let count = self.parents.count();
        if count == 0 || self.config.role() != SwarmRole::Viewer {
            return;
        }
        if self.parents.next_review.is_some_and(|at| now < at) {
            return;
        }
        self.parents.next_review = Some(now + REVIEW_MS);
        for j in 0..count {
            let slot = self.parents.slots[j];
            if let Some(parent) = slot.parent {
                let gone = !self.peers.contains_key(&parent);
                let unanswered = !slot.confirmed && now - slot.since > CONFIRM_MS;
                if unanswered {
                    if let Some(state) = self.peers.get_mut(&parent) {
                        state.as_parent.refuse(1 << j, now);
                    }
                }
                if gone || unanswered {
                    self.parents.slots[j].clear();
                }
            }
            let slot = self.parents.slots[j];
            let fed = slot
                .fed_by_source
                .is_some_and(|at| now - at < FED_FOR_CHUNKS * self.clock.chunk_ms());
            if fed {
                // A root of this substream: a parent would only send it again.
                self.parents.slots[j].clear();
                continue;
            }
            let Some((best, score)) = self.best_parent(j, now) else {
                continue;
            };
            let replace = match slot.parent {
                None => true,
                Some(parent) if parent == best => false,
                Some(parent) => {
                    let current = self.parent_score(parent, j).unwrap_or(u64::MAX);
                    slot.confirmed
                        && now - slot.since >= MIN_TENURE_MS
                        && score + SWITCH_MARGIN_MS < current
                }
            };
            if replace {
                self.parents.slots[j] = Slot {
                    parent: Some(best),
                    confirmed: false,
                    since: now,
                    ..slot
                };
            }
        }
        self.send_subscriptions();
    }

    /// How good `peer` is as the parent of `substream`: its announcement delay, plus a
    /// penalty for each other substream already subscribed from it.
    fn parent_score(&self, peer: PeerId, substream: usize) -> Option<u64> {
        let delay = self.peers.get(&peer)?.as_parent.delay(substream)?;
        let others = self
            .parents
            .slots
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != substream && s.parent == Some(peer))
            .count() as u64;
        Some(delay + others * SPREAD_PENALTY_MS)
    }

    fn best_parent(&self, substream: usize, now: Millis) -> Option<(PeerId, u64)> {
        let count = self.parents.count();
        // Never one of our children for it: two peers feeding each other the same
        // substream would send every block twice.
        let our_child = |p: &PeerState| {
            p.children
                .is_some_and(|(c, m)| usize::from(c) == count && m & (1 << substream) != 0)
        };
        self.peers
            .iter()
            .filter(|(_, p)| !p.is_source && p.forwards() > 0 && !our_child(p))
            .filter(|(_, p)| !p.as_parent.refuses(substream, now))
            .filter_map(|(id, _)| Some((*id, self.parent_score(*id, substream)?)))
            .min_by_key(|(id, score)| (*score, id.0))
    }

    /// Sends `Subscribe` to every neighbour whose share of the parents changed (mask 0 to
    /// a former parent).
    fn send_subscriptions(&mut self) {
        let count = self.parents.count();
        let mut wanted: BTreeMap<PeerId, u16> = BTreeMap::new();
        for (j, slot) in self.parents.slots.iter().enumerate() {
            if let Some(parent) = slot.parent {
                *wanted.entry(parent).or_default() |= 1 << j;
            }
        }
        let asked: Vec<PeerId> = self.parents.asked.keys().copied().collect();
        for peer in asked {
            wanted.entry(peer).or_default();
        }
        for (peer, mask) in wanted {
            if !self.peers.contains_key(&peer) {
                self.parents.asked.remove(&peer);
                continue;
            }
            if self.parents.asked.get(&peer) == Some(&mask) {
                continue;
            }
            if mask == 0 {
                self.parents.asked.remove(&peer);
            } else {
                self.parents.asked.insert(peer, mask);
            }
            let count = u8::try_from(count).expect("at most MAX_SUBSTREAMS substreams");
            self.send(peer, PeerMessage::Subscribe { count, mask });
        }
    }

    /// A neighbour answered our subscription: the substreams it pushes are confirmed, the
    /// rest are looked for elsewhere.
    pub(crate) fn on_subscribed(&mut self, now: Millis, peer: PeerId, count: u8, mask: u16) {
        let ours = self.parents.count();
        let mask = if usize::from(count) == ours { mask } else { 0 };
        let asked = self.parents.asked.get(&peer).copied().unwrap_or(0);
        let mut refused = 0;
        for (j, slot) in self.parents.slots.iter_mut().enumerate() {
            if slot.parent != Some(peer) {
                continue;
            }
            if mask & (1 << j) != 0 {
                slot.confirmed = true;
            } else if asked & (1 << j) != 0 {
                slot.clear();
                refused |= 1 << j;
            }
        }
        if refused != 0 {
            if let Some(state) = self.peers.get_mut(&peer) {
                state.as_parent.refuse(refused, now);
            }
            // What it refused is looked for elsewhere at once.
            self.parents.asked.insert(peer, asked & !refused);
            self.parents.next_review = Some(now);
        }
    }

    /// A viewer that serves nothing announces nothing, but its parent must still hear what
    /// it holds, or it pushes blocks the viewer already fetched: tell the parent of the
    /// block's substream (it never asks a peer that uploads nothing).
    pub(crate) fn tell_parent(&mut self, seq: ChunkSeq, pieces: std::ops::Range<usize>) {
        let block = self.block_of(pieces.start);
        let substream = substream_of(self.parents.count(), seq, block);
        let Some(parent) = self.parents.parent(substream) else {
            return;
        };
        let Some(held) = self.store.chunks.get(&seq) else {
            return;
        };
        let have = held.have(seq, pieces, false);
        self.send(parent, have);
    }
}
