//! Who is in the audience: viewers joining and leaving (churn), and the signal server's
//! part, introducing peers and setting links up and down.

use protocol::PeerId;
use rand::Rng;
use swarm::{BytesPerSec, Config, Input, TARGET_LINKS};

use crate::hostile::Behaviour;
use crate::network::{LinkEnd, Micros};
use crate::sim::{budget, Event, Sim, CONTROL_ONLY_UPLINK, SOURCE};
use crate::UPLOAD_CLASSES;

/// Links a viewer accepts at most: free slots steer introductions toward the target, and
/// this bounds the rest, so the swarm is never a full mesh.
pub(crate) const MAX_VIEWER_LINKS: usize = 2 * TARGET_LINKS;
/// Signalling a link through the server (offer and answer relayed) before ICE starts.
pub(crate) const SIGNALLING_US: Micros = 200_000;
/// A viewer that crashes rather than closing its tab is noticed this late (ICE consent).
pub(crate) const CRASH_NOTICE_US: Micros = 5_000_000;

impl Sim {
    /// Exponential gaps: churn arrives as a Poisson process.
    pub(crate) fn churn_gap(&mut self) -> Micros {
        let per_second = self.config.churn * self.config.peers as f64 / 60.0;
        let uniform: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        (-uniform.ln() / per_second * 1e6) as Micros
    }

    pub(crate) fn join(&mut self) {
        let mut config = Config::viewer(self.channel_key);
        config.seed = self.rng.gen();
        let draw: f64 = self.rng.gen();
        let mean_weight: f64 = UPLOAD_CLASSES.iter().map(|(s, w)| s * w).sum();
        let mut cumulative = 0.0;
        let mut weight = UPLOAD_CLASSES[UPLOAD_CLASSES.len() - 1].1;
        for (share, w) in UPLOAD_CLASSES {
            cumulative += share;
            if draw < cumulative {
                weight = w;
                break;
            }
        }
        let capacity =
            weight / mean_weight * self.config.upload_ratio * self.config.bitrate_bytes();
        let uplink = if capacity > 0.0 {
            config.upload_limit = Some(budget(capacity));
            capacity
        } else {
            config.upload_limit = Some(BytesPerSec(0));
            CONTROL_ONLY_UPLINK
        };
        let behaviour = self.draw_behaviour();
        let index = self.add_node(config, uplink, behaviour);
        if behaviour == Behaviour::Honest {
            self.metrics.viewers_joined += 1;
        } else {
            self.metrics.hostile_joined += 1;
        }
        self.live_viewers.push(index);
        self.introduce(index, TARGET_LINKS);
        let phase = self.rng.gen_range(0..self.config.tick_ms * 1000);
        self.schedule(self.now + phase, Event::Tick(index));
    }

    /// The signal server's part: up to `want` peers with free slots, the source among
    /// them only while it has room. Random draws keep this O(want) at any swarm size.
    pub(crate) fn introduce(&mut self, index: usize, want: usize) {
        let mut chosen: Vec<usize> = Vec::new();
        let source_has_room = self.nodes[SOURCE]
            .as_ref()
            .is_some_and(|s| s.free_slots > 0);
        if source_has_room && !self.linked(index, SOURCE) {
            chosen.push(SOURCE);
        }
        // As the signal server does: a random sample, those with free slots first.
        let mut sample: Vec<usize> = Vec::new();
        for _ in 0..16 * want {
            if self.live_viewers.len() <= 1 {
                break;
            }
            let pick = self.live_viewers[self.rng.gen_range(0..self.live_viewers.len())];
            if pick != index
                && !sample.contains(&pick)
                && !self.linked(index, pick)
                && !self.banned(index, pick)
            {
                sample.push(pick);
            }
        }
        sample.sort_by_key(|&i| self.nodes[i].as_ref().is_none_or(|n| n.free_slots == 0));
        let room = want.saturating_sub(chosen.len());
        chosen.extend(sample.into_iter().take(room));
        for other in chosen {
            let (min, max) = (self.config.rtt.min, self.config.rtt.max);
            let rtt_ms = self.rng.gen_range(min..=max);
            for end in [index, other] {
                let node = self.nodes[end].as_mut().expect("chosen peers are live");
                node.pending += 1;
                node.free_slots = node.free_slots.saturating_sub(1);
            }
            // ICE checks, the DTLS handshake and SCTP set-up: about four round trips.
            let at = self.now + SIGNALLING_US + 4 * rtt_ms * 1000;
            self.schedule(
                at,
                Event::LinkOpen {
                    a: index,
                    b: other,
                    rtt_ms,
                },
            );
        }
    }

    /// Either banned the other: drivers neither offer to nor accept a banned peer.
    pub(crate) fn banned(&self, a: usize, b: usize) -> bool {
        let bans = |x: usize, y: usize| {
            self.nodes[x]
                .as_ref()
                .is_some_and(|n| n.swarm.is_banned(PeerId(y as u64)))
        };
        bans(a, b) || bans(b, a)
    }

    pub(crate) fn linked(&self, a: usize, b: usize) -> bool {
        self.nodes[a]
            .as_ref()
            .is_some_and(|n| n.links.contains_key(&PeerId(b as u64)))
    }

    pub(crate) fn open_link(&mut self, a: usize, b: usize, rtt_ms: u64) {
        for end in [a, b] {
            if let Some(node) = self.nodes[end].as_mut() {
                node.pending = node.pending.saturating_sub(1);
            }
        }
        let room = |sim: &Sim, i: usize| {
            sim.nodes[i]
                .as_ref()
                .is_some_and(|n| n.links.len() < n.max_links(i))
        };
        if !room(self, a) || !room(self, b) || self.linked(a, b) {
            return;
        }
        for (this, other) in [(a, b), (b, a)] {
            let node = self.nodes[this].as_mut().expect("checked live above");
            node.links
                .insert(PeerId(other as u64), LinkEnd::new(rtt_ms));
        }
        self.input(a, Input::PeerConnected(PeerId(b as u64)));
        self.input(b, Input::PeerConnected(PeerId(a as u64)));
    }

    pub(crate) fn close_link(&mut self, index: usize, peer: PeerId) {
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        if let Some(link) = node.links.remove(&peer) {
            let at = self.now + link.rtt_ms * 500;
            self.schedule(
                at,
                Event::LinkClosed {
                    to: peer.0 as usize,
                    from: PeerId(index as u64),
                },
            );
        }
    }

    pub(crate) fn leave(&mut self, index: usize) {
        let Some(node) = self.nodes[index].as_ref() else {
            return;
        };
        let links: Vec<(PeerId, u64)> = node.links.iter().map(|(p, l)| (*p, l.rtt_ms)).collect();
        for (peer, rtt_ms) in links {
            // Half close their tab (the far end hears at once), half crash or lose power.
            let notice = if self.rng.gen_bool(0.5) {
                rtt_ms * 500
            } else {
                CRASH_NOTICE_US
            };
            self.schedule(
                self.now + notice,
                Event::LinkClosed {
                    to: peer.0 as usize,
                    from: PeerId(index as u64),
                },
            );
        }
        self.retire(index, self.now);
    }

    /// Take a viewer out and book its playback.
    pub(crate) fn retire(&mut self, index: usize, end: Micros) {
        let Some(mut node) = self.nodes[index].take() else {
            return;
        };
        self.metrics.capacity_bytes += node.uplink.capacity * (end - node.joined) as f64 / 1e6;
        if node.behaviour != Behaviour::Honest {
            return;
        }
        if index != SOURCE {
            self.metrics.finish(&mut node.player, node.joined, end);
        }
        let stats = node.swarm.stats();
        self.metrics.peers_dropped += stats.peers_dropped;
        let d = stats.drops;
        self.metrics.peers_banned += d.malformed + d.violation + d.lying + d.flooding + d.polluted;
        self.metrics.drops_polluted += d.polluted;
        self.metrics.drops_flooding += d.flooding;
        self.metrics.bytes_rejected += stats.bytes_rejected;
        self.metrics.requests_refused += stats.requests_refused;
    }
}
