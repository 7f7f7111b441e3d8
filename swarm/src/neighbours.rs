//! What a peer tells the signal server about its neighbours: how many more links it
//! accepts (newcomers are introduced to peers with room first, and to the broadcaster
//! only while it has room), and a request for more peers when it has too few. Drivers
//! send what `update` returns.

use protocol::ClientMessage;

use crate::{Millis, SwarmRole};

/// Peer links a viewer aims for; free slots are counted against it.
pub const TARGET_LINKS: usize = 8;
/// Links the broadcaster takes. Beyond them viewers feed each other, and the broadcaster
/// is not introduced to every joiner (which would also make it answer every join).
pub const SOURCE_MAX_LINKS: usize = 16;
/// Links a viewer takes at most: free slots steer introductions toward the target, and
/// this bounds the rest, so the swarm is never a full mesh.
pub const MAX_VIEWER_LINKS: usize = 2 * TARGET_LINKS;
/// A viewer with fewer links than this asks for more.
const ASK_BELOW: usize = TARGET_LINKS / 2;
/// Least time between two requests for more peers.
const ASK_EVERY_MS: u64 = 10_000;

/// Remembers what was last said, so nothing is repeated needlessly.
#[derive(Debug)]
pub struct NeighbourReport {
    role: SwarmRole,
    reported: Option<u16>,
    last_ask: Option<Millis>,
}

impl NeighbourReport {
    pub fn new(role: SwarmRole) -> NeighbourReport {
        NeighbourReport {
            role,
            reported: None,
            last_ask: None,
        }
    }

    /// Messages for the signal server given the current number of open links, and
    /// whether the swarm is starving ([`crate::Swarm::starving`]): links to a cluster of
    /// peers cut off from the broadcaster are no use, however many there are.
    pub fn update(&mut self, links: usize, starving: bool, now: Millis) -> Vec<ClientMessage> {
        let mut out = Vec::new();
        let target = match self.role {
            SwarmRole::Source => SOURCE_MAX_LINKS,
            SwarmRole::Viewer => TARGET_LINKS,
        };
        let free_slots = u16::try_from(target.saturating_sub(links)).unwrap_or(u16::MAX);
        if self.reported != Some(free_slots) {
            self.reported = Some(free_slots);
            out.push(ClientMessage::Status { free_slots });
        }
        let due = self.last_ask.is_none_or(|at| now - at >= ASK_EVERY_MS);
        if self.role == SwarmRole::Viewer && (links < ASK_BELOW || starving) && due {
            self.last_ask = Some(now);
            out.push(ClientMessage::MorePeers {});
        }
        out
    }

    /// When `update` would next ask for more peers, given the links and starvation it
    /// would see then (`None`: it would not ask).
    pub fn ask_due(&self, links: usize, starving: bool) -> Option<Millis> {
        let wants = self.role == SwarmRole::Viewer && (links < ASK_BELOW || starving);
        wants.then(|| self.last_ask.map_or(Millis(0), |at| at + ASK_EVERY_MS))
    }

    /// Joined (or joined again): everything must be said again, but the join itself asked
    /// for peers; the introduction that follows it is still on its way, so asking for more
    /// now would only double it.
    pub fn joined(&mut self, now: Millis) {
        self.forget();
        self.last_ask = Some(now);
    }

    /// After reconnecting to the server, everything must be said again.
    pub fn forget(&mut self) {
        *self = NeighbourReport::new(self.role);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_changes_and_asks_for_more_at_most_every_ten_seconds() {
        let mut report = NeighbourReport::new(SwarmRole::Viewer);
        assert_eq!(
            report.update(1, false, Millis(0)),
            vec![
                ClientMessage::Status { free_slots: 7 },
                ClientMessage::MorePeers {}
            ]
        );
        assert_eq!(
            report.update(1, false, Millis(5_000)),
            vec![],
            "nothing changed, asked recently"
        );
        assert_eq!(
            report.update(2, false, Millis(9_000)),
            vec![ClientMessage::Status { free_slots: 6 }]
        );
        assert_eq!(
            report.update(2, false, Millis(10_000)),
            vec![ClientMessage::MorePeers {}]
        );
        assert_eq!(
            report.update(8, false, Millis(30_000)),
            vec![ClientMessage::Status { free_slots: 0 }]
        );
        assert_eq!(
            report.update(12, false, Millis(40_000)),
            vec![],
            "over target is still zero free slots"
        );
        assert_eq!(
            report.update(12, true, Millis(41_000)),
            vec![ClientMessage::MorePeers {}],
            "plenty of links, but starving"
        );
        report.forget();
        assert_eq!(
            report.update(12, false, Millis(42_000)),
            vec![ClientMessage::Status { free_slots: 0 }]
        );
    }

    #[test]
    fn a_join_counts_as_asking_for_peers() {
        let mut report = NeighbourReport::new(SwarmRole::Viewer);
        report.joined(Millis(1_000));
        // Welcomed, the introduction not yet here: no links, and no second request.
        assert_eq!(
            report.update(0, false, Millis(1_000)),
            vec![ClientMessage::Status { free_slots: 8 }]
        );
        assert_eq!(report.ask_due(0, false), Some(Millis(11_000)));
        assert_eq!(
            report.update(2, false, Millis(11_000)),
            vec![
                ClientMessage::Status { free_slots: 6 },
                ClientMessage::MorePeers {}
            ],
            "still short ten seconds on"
        );
        assert_eq!(
            report.ask_due(8, false),
            None,
            "enough links: nothing to ask"
        );
    }

    #[test]
    fn the_source_reports_room_up_to_its_cap_and_never_asks_for_peers() {
        let mut report = NeighbourReport::new(SwarmRole::Source);
        let all = SOURCE_MAX_LINKS as u16;
        assert_eq!(
            report.update(0, false, Millis(0)),
            vec![ClientMessage::Status { free_slots: all }]
        );
        let full = report.update(SOURCE_MAX_LINKS, true, Millis(60_000));
        assert_eq!(full, vec![ClientMessage::Status { free_slots: 0 }]);
    }
}
