//! Who is in the audience, and how their links come and go: viewers joining and leaving
//! (churn), and what a WebRTC stack does for a link the core opens — gathering, the
//! answer, ICE and DTLS — as delays.

use protocol::PeerId;
use rand::Rng;
use swarm::{BytesPerSec, LinkId, LinkStart, NodeInput};

use crate::driver::SimLink;
use crate::hostile::Behaviour;
use crate::network::{LinkEnd, Micros};
use crate::sim::{budget, Event, Sim, CONTROL_ONLY_UPLINK, GATHER_US, SOURCE};
use crate::UPLOAD_CLASSES;

/// A viewer that crashes rather than closing its tab is noticed this late, by its
/// neighbours (ICE consent) and by the server (pings).
pub(crate) const CRASH_NOTICE_US: Micros = 5_000_000;
/// After the answer: ICE checks, the DTLS handshake and SCTP set-up, in round trips.
const CONNECT_RTTS: u64 = 3;

impl Sim {
    /// Exponential gaps: churn arrives as a Poisson process.
    pub(crate) fn churn_gap(&mut self) -> Micros {
        let per_second = self.config.churn * self.config.peers as f64 / 60.0;
        let uniform: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        (-uniform.ln() / per_second * 1e6) as Micros
    }

    pub(crate) fn join(&mut self) {
        let capacity = if self.exact_uplinks.is_empty() {
            self.drawn_uplink()
        } else {
            let joined = self.metrics.viewers_joined + self.metrics.hostile_joined;
            self.exact_uplinks[joined as usize % self.exact_uplinks.len()]
        };
        let (limit, uplink) = if capacity > 0.0 {
            (budget(capacity), capacity)
        } else {
            (BytesPerSec(0), CONTROL_ONLY_UPLINK)
        };
        let behaviour = self.draw_behaviour();
        let index = self.add_node(None, Some(limit), uplink, behaviour);
        if behaviour == Behaviour::Honest {
            self.metrics.viewers_joined += 1;
        } else {
            self.metrics.hostile_joined += 1;
        }
        self.live_viewers.push(index);
    }

    /// An uplink drawn from the classes, scaled so their mean is `upload_ratio`.
    fn drawn_uplink(&mut self) -> f64 {
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
        weight / mean_weight * self.config.upload_ratio * self.config.bitrate_bytes()
    }

    /// The node opens a link: an offer gets a token (standing for the SDP) and an RTT for
    /// the pair; an answer finds its offerer by the token and pairs the two ends.
    pub(crate) fn open_link(&mut self, index: usize, link: LinkId, peer: PeerId, start: LinkStart) {
        let (token, rtt_ms, remote) = match start {
            LinkStart::Offer => {
                let (min, max) = (self.config.rtt.min, self.config.rtt.max);
                let rtt_ms = self.rng.gen_range(min..=max);
                let token = self.next_token;
                self.next_token += 1;
                self.offers.insert(token, (index, link, rtt_ms));
                (token, rtt_ms, None)
            }
            LinkStart::Answer { sdp } => {
                let offer = sdp
                    .strip_prefix("sim-offer ")
                    .and_then(|t| t.parse::<u64>().ok())
                    .and_then(|t| self.offers.remove(&t));
                let Some((offerer, offer_link, rtt_ms)) = offer else {
                    return; // Its offerer's link is gone; this one times out.
                };
                if let Some(l) = self.link_mut(offerer, offer_link) {
                    l.remote = Some((index, link));
                }
                (0, rtt_ms, Some((offerer, offer_link)))
            }
        };
        let answering = remote.is_some();
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        debug_assert!(answering || node.peer_id != Some(peer));
        node.links.insert(
            link,
            SimLink {
                remote,
                end: LinkEnd::new(rtt_ms, self.config.pieces_channel),
                open: false,
                acks: swarm::Acknowledgements::default(),
            },
        );
        let sdp = if answering {
            "sim-answer".to_owned()
        } else {
            format!("sim-offer {token}")
        };
        let input = NodeInput::LocalDescription(link, sdp);
        self.schedule(self.now + GATHER_US, Event::Input { node: index, input });
    }

    /// The offerer applied the answer: the data channel opens on both ends a few round
    /// trips, plus the handshakes' own time (`--link-setup-ms`), later.
    pub(crate) fn answered(&mut self, index: usize, link: LinkId) {
        let now = self.now;
        let setup_us = self.config.link_setup_ms * 1000;
        let Some(l) = self.link_mut(index, link) else {
            return;
        };
        let Some((remote, remote_link)) = l.remote else {
            return;
        };
        let at = now + CONNECT_RTTS * l.end.rtt_ms * 1000 + setup_us;
        for (node, link) in [(index, link), (remote, remote_link)] {
            let input = NodeInput::LinkOpen(link);
            self.schedule(at, Event::Input { node, input });
        }
    }

    /// A viewer leaves: half close their tab (neighbours and the server hear at once),
    /// half crash or lose power (noticed after a few seconds).
    pub(crate) fn leave(&mut self, index: usize) {
        let crashed = self.rng.gen_bool(0.5);
        let Some(node) = self.nodes[index].as_ref() else {
            return;
        };
        let peer_id = node.peer_id;
        let ends: Vec<(usize, LinkId, u64)> = node
            .links
            .values()
            .filter_map(|l| l.remote.map(|(n, link)| (n, link, l.end.rtt_ms)))
            .collect();
        for (remote, link, rtt_ms) in ends {
            let notice = if crashed {
                CRASH_NOTICE_US
            } else {
                rtt_ms * 500
            };
            let input = NodeInput::LinkClosed(link);
            self.schedule(
                self.now + notice,
                Event::Input {
                    node: remote,
                    input,
                },
            );
        }
        if let Some(peer) = peer_id {
            if crashed {
                self.schedule(self.now + CRASH_NOTICE_US, Event::ServerLeave { peer });
            } else {
                self.server_leave(peer);
            }
        }
        self.retire(index, self.now);
    }

    /// Take a viewer out and book its playback.
    pub(crate) fn retire(&mut self, index: usize, end: Micros) {
        let Some(mut node) = self.nodes[index].take() else {
            return;
        };
        if let Some(peer) = node.peer_id {
            self.server.forget(peer);
        }
        self.metrics.capacity_bytes += node.uplink.capacity * (end - node.joined) as f64 / 1e6;
        self.metrics.uplink_drops += node.uplink.dropped_packets;
        if node.behaviour != Behaviour::Honest {
            return;
        }
        if index != SOURCE {
            self.metrics.finish(&mut node.player, node.joined, end);
        }
        let stats = node.node.swarm().map(|s| s.stats()).unwrap_or_default();
        self.metrics.peers_dropped += stats.peers_dropped;
        let d = stats.drops;
        self.metrics.peers_banned += d.malformed + d.violation + d.lying + d.flooding + d.polluted;
        self.metrics.drops_polluted += d.polluted;
        self.metrics.drops_flooding += d.flooding;
        self.metrics.bytes_rejected += stats.bytes_rejected;
        self.metrics.requests_refused += stats.requests_refused;
        self.metrics.pulls_moved += stats.pulls_moved;
        self.metrics.pushed += stats.bytes_pushed;
        // Viewers' only, as a real run's timelines give them.
        if index != SOURCE {
            self.metrics.pulls.merge(&stats);
        }
    }

    /// A piece on its way to viewer `to`: payload by sender, and copies of a piece it
    /// already got.
    pub(crate) fn count_received(
        &mut self,
        to: usize,
        from: usize,
        seq: u64,
        offset: u32,
        len: usize,
    ) {
        let Some(node) = self.nodes[to].as_mut() else {
            return;
        };
        let len = len as u64;
        if from == SOURCE {
            self.metrics.from_source += len;
        } else {
            self.metrics.from_peers += len;
        }
        let index = offset as usize / protocol::PIECE_BYTES;
        let seen = node.received.entry(seq).or_default();
        if seen.len() <= index {
            seen.resize(index + 1, false);
        }
        if std::mem::replace(&mut seen[index], true) {
            self.metrics.duplicate += len;
        }
        if node.received.len() > 64 {
            node.received.pop_first();
        }
    }
}
