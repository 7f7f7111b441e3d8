//! Misbehaving neighbours: why each was dropped, counted by cause, and the hostile ones
//! banned so they are never taken back. Bounded: a neighbour cannot make this peer hold
//! more than a window's worth of announcements or a queue's worth of requests.

use std::collections::BTreeSet;

use protocol::{ChunkSeq, PeerId};

use crate::{Millis, Output, Swarm};

/// Refused requests from one neighbour within [`FLOOD_WINDOW_MS`] that make it a
/// flooder. An honest neighbour keeps at most `max_requests_per_peer` (4) outstanding and
/// backs off for 300 ms after a refusal: about 14 refusals a second at most.
pub(crate) const FLOOD_REFUSALS: u32 = 64;
pub(crate) const FLOOD_WINDOW_MS: u64 = 1000;
/// Banned peers remembered; the oldest ids (smallest) are forgotten first.
const MAX_BANNED: usize = 4096;

/// Why a neighbour was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// Sent bytes that are not a peer message (the driver could not decode them).
    Malformed,
    /// Broke the protocol: misaligned or inconsistent pieces.
    Violation,
    /// Announced chunks it cannot have: far past the live edge, or more than a window.
    Lying,
    /// Kept requesting while its queue here was full.
    Flooding,
    /// Sent content the channel key did not sign: a piece not matching its chunk's
    /// signed manifest, or a manifest or init segment with a bad signature.
    Polluting,
    /// Stopped delivering what it was asked for (not hostile: not banned).
    Unresponsive,
}

impl DropCause {
    /// Hostile causes get the peer banned.
    pub fn is_hostile(self) -> bool {
        !matches!(self, DropCause::Unresponsive)
    }
}

/// Neighbours dropped, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    pub malformed: u64,
    pub violation: u64,
    pub lying: u64,
    pub flooding: u64,
    pub polluted: u64,
    pub unresponsive: u64,
}

impl Drops {
    fn count(&mut self, cause: DropCause) {
        let counter = match cause {
            DropCause::Malformed => &mut self.malformed,
            DropCause::Violation => &mut self.violation,
            DropCause::Lying => &mut self.lying,
            DropCause::Flooding => &mut self.flooding,
            DropCause::Polluting => &mut self.polluted,
            DropCause::Unresponsive => &mut self.unresponsive,
        };
        *counter += 1;
    }
}

/// Peers dropped for hostility.
#[derive(Debug, Default)]
pub(crate) struct Banned(BTreeSet<PeerId>);

impl Banned {
    fn insert(&mut self, peer: PeerId) {
        self.0.insert(peer);
        if self.0.len() > MAX_BANNED {
            self.0.pop_first();
        }
    }

    pub fn contains(&self, peer: PeerId) -> bool {
        self.0.contains(&peer)
    }
}

/// Refusals of one neighbour's requests in the current window.
#[derive(Debug, Default)]
pub(crate) struct RefusalWindow {
    started: Millis,
    count: u32,
}

impl RefusalWindow {
    /// Counts one refusal at `now`; returns the refusals in the window so far.
    pub fn count(&mut self, now: Millis) -> u32 {
        if now - self.started >= FLOOD_WINDOW_MS || self.count == 0 {
            self.started = now;
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}

impl Swarm {
    /// Takes over the bans of the swarm this one replaces (a new broadcast): a polluter
    /// stays banned across a broadcaster restart.
    pub fn inherit_bans(&mut self, from: &Swarm) {
        for peer in &from.banned.0 {
            self.banned.insert(*peer);
        }
    }

    /// Whether `peer` was dropped for hostility: drivers neither offer to it nor accept
    /// its offers, and the swarm disconnects it at once if a link opens anyway.
    pub fn is_banned(&self, peer: PeerId) -> bool {
        self.banned.contains(peer)
    }

    pub(crate) fn drop_peer(&mut self, peer: PeerId, cause: DropCause, reason: String) {
        self.peers.remove(&peer);
        self.downloads.retain(|_, d| d.from != peer);
        self.parents.lost(peer);
        self.early.forget(peer);
        self.stats.peers_dropped += 1;
        self.stats.drops.count(cause);
        if cause.is_hostile() {
            self.banned.insert(peer);
        }
        self.outputs.push_back(Output::Disconnect { peer, reason });
    }

    /// A non-source neighbour announcing `seq`: plausible only within a window of the
    /// newest chunk known (a liar far ahead would otherwise drag the schedule with it),
    /// and only for a window's worth of chunks at a time.
    pub(crate) fn implausible_announcement(&self, peer: PeerId, seq: ChunkSeq) -> Option<String> {
        let state = self.peers.get(&peer)?;
        if state.is_source {
            return None;
        }
        let window = self.config.window.max(1);
        if let Some(newest) = self.newest_known {
            if seq.0 > newest.0.saturating_add(window) {
                return Some(format!(
                    "announced chunk {seq}, more than {window} past the newest known ({newest})"
                ));
            }
        }
        let held = state.has.len() as u64;
        (held > 2 * window).then(|| format!("announced {held} chunks, more than twice the window"))
    }
}
