//! What the simulation measures, independently of what the swarms report about themselves.
//!
//! The player model, as a real player behaves: a viewer starts playing its first chunk
//! when the swarm hands it over or when the swarm scheduled it, whichever is later; chunk
//! `s + 1` is due one chunk duration after `s` started. A chunk handed over after its due
//! time stalls playback until then (late: not on time, and the delay behind live grows by
//! the stall); a chunk the swarm skips is missed, and the next one takes its place.
//! Continuity is the share of due chunks played on time.

use serde::Serialize;
use swarm::MsHistogram;

use crate::network::Micros;

/// One viewer's playback, as the simulated player saw it.
#[derive(Debug, Default)]
pub struct Player {
    /// The next chunk and when it is due, once playing.
    next: Option<(u64, Micros)>,
    on_time: u64,
    due: u64,
}

/// Everything counted during a run.
#[derive(Debug, Default)]
pub struct Metrics {
    pub chunk_us: Micros,
    pub bin_us: Micros,
    /// Protocol bytes sent between peers, and the chunk payload among them.
    pub message_bytes: u64,
    pub payload_sent: u64,
    /// Packet framing, and the SACKs receivers send (what the transport adds).
    pub framing_bytes: u64,
    /// Uplink capacity × time, summed over all peers (bytes).
    pub capacity_bytes: f64,
    /// Packets dropped at full uplink queues (`--uplink-queue-ms`; the real shapers'
    /// count for a real swarm).
    pub uplink_drops: u64,
    /// Pieces their channel gave up (`--pieces-channel lifetime:MS`).
    pub pieces_given_up: u64,
    /// With `--fast-retransmit association` (else 0): messages that lost a packet among
    /// their last three, and of those, the ones the retransmission time-out resent (too
    /// few later packets reported the gap).
    pub tail_losses: u64,
    pub tail_losses_timed_out: u64,
    pub source_payload_sent: u64,
    /// Payload viewers received, by sender.
    pub from_peers: u64,
    pub from_source: u64,
    pub duplicate: u64,
    pub startups_ms: Vec<u64>,
    pub never_started: u64,
    pub lags_ms: Vec<u32>,
    /// From a chunk's cut at the source to its hand-over to a viewer's player, every one
    /// handed over: how fast the mesh carries chunks, whatever the playout schedule.
    pub arrivals_ms: Vec<u32>,
    /// Per viewer with at least [`MIN_DUE_FOR_P5`] due chunks: its continuity.
    pub viewer_continuity: Vec<f64>,
    pub due: u64,
    pub on_time: u64,
    pub corrupt_chunks: u64,
    /// Bytes played (by honest viewers) that differ from what the source cut.
    pub bad_bytes_played: u64,
    /// The longest any viewer's playback waited past a chunk's due time.
    pub max_stall_us: Micros,
    pub max_chunks_held: usize,
    pub peers_dropped: u64,
    /// Dropped as hostile (malformed, protocol violation, lying, flooding, polluting): an
    /// honest swarm has none. Counted by honest peers only, as all figures here.
    pub peers_banned: u64,
    pub drops_polluted: u64,
    pub drops_flooding: u64,
    /// Payload that failed its signed hash and was thrown away.
    pub bytes_rejected: u64,
    pub requests_refused: u64,
    /// Overdue pulls that moved to another viewer.
    pub pulls_moved: u64,
    /// Payload parents pushed along substreams (viewers' own count, new pieces only).
    pub pushed: u64,
    /// Honest peers' pulls and serving, merged (see `swarm::Stats`).
    pub pulls: Pulls,
    pub viewers_joined: u64,
    pub hostile_joined: u64,
    pub bins: Vec<Bin>,
}

/// Where a hop's time goes, merged over the peers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pulls {
    pub first_piece: MsHistogram,
    pub complete: MsHistogram,
    pub serve_wait: MsHistogram,
}

impl Pulls {
    pub fn merge(&mut self, stats: &swarm::Stats) {
        self.first_piece.merge(&stats.pull_first_piece_ms);
        self.complete.merge(&stats.pull_complete_ms);
        self.serve_wait.merge(&stats.serve_wait_ms);
    }
}

/// A viewer still not playing this long after joining counts as never started; one that
/// left sooner (churn) just did not stay.
pub const NEVER_STARTED_AFTER: Micros = 10_000_000;

/// Viewers with fewer due chunks than this (churned out early) are left out of the
/// per-viewer percentile; their chunks still count in `continuity`.
pub const MIN_DUE_FOR_P5: u64 = 10;

#[derive(Debug, Default, Clone)]
pub struct Bin {
    pub due: u64,
    pub on_time: u64,
    pub lags_ms: Vec<u32>,
}

impl Metrics {
    pub fn new(chunk_us: Micros, end: Micros) -> Metrics {
        let bins = 60;
        let bin_us = (end / bins).max(chunk_us);
        Metrics {
            chunk_us,
            bin_us,
            bins: vec![Bin::default(); (end / bin_us + 1) as usize],
            ..Metrics::default()
        }
    }

    fn bin(&mut self, at: Micros) -> &mut Bin {
        let index = ((at / self.bin_us) as usize).min(self.bins.len() - 1);
        &mut self.bins[index]
    }

    /// A chunk handed to a viewer's player at `now`; `planned` is when the swarm
    /// scheduled it (used for the first chunk: playback starts no earlier).
    pub fn played(
        &mut self,
        player: &mut Player,
        joined: Micros,
        now: Micros,
        seq: u64,
        planned: Micros,
    ) {
        let due = match player.next {
            Some((next, due)) if seq >= next => due + (seq - next) * self.chunk_us,
            Some(_) => return, // Not in order: the swarm's promise is to never do this.
            None => {
                let start = planned.max(now);
                self.startups_ms.push((start - joined) / 1000);
                start
            }
        };
        let starts = due.max(now);
        let on_time = now <= due;
        self.max_stall_us = self.max_stall_us.max(now.saturating_sub(due));
        let lag_ms = ((starts - seq * self.chunk_us) / 1000) as u32;
        player.due += 1;
        self.due += 1;
        self.lags_ms.push(lag_ms);
        let bin = self.bin(starts);
        bin.due += 1;
        bin.lags_ms.push(lag_ms);
        if on_time {
            player.on_time += 1;
            self.on_time += 1;
            self.bin(starts).on_time += 1;
        }
        player.next = Some((seq + 1, starts + self.chunk_us));
        let cut = (seq + 1) * self.chunk_us;
        self.arrivals_ms
            .push((now.saturating_sub(cut) / 1000) as u32);
    }

    /// The swarm gave up on a chunk: missed, and the next takes its place.
    pub fn skipped(&mut self, player: &mut Player, now: Micros, seq: u64) {
        let Some((next, due)) = player.next else {
            return;
        };
        if seq < next {
            return;
        }
        player.due += 1;
        self.due += 1;
        self.bin(now).due += 1;
        self.max_stall_us = self.max_stall_us.max(now.saturating_sub(due));
        player.next = Some((seq + 1, due.max(now)));
    }

    /// The viewer (which joined at `joined`) left, or the run ended, at `end`.
    pub fn finish(&mut self, player: &mut Player, joined: Micros, end: Micros) {
        let Some((_, due)) = player.next else {
            if end - joined >= NEVER_STARTED_AFTER {
                self.never_started += 1;
            }
            return;
        };
        if end > due {
            // Stalled at the end, waiting for a chunk already due.
            player.due += 1;
            self.due += 1;
            self.bin(end).due += 1;
        }
        if player.due >= MIN_DUE_FOR_P5 {
            self.viewer_continuity
                .push(player.on_time as f64 / player.due as f64);
        }
    }
}

/// The figures `swarm-sim --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub peers: usize,
    pub seconds: u64,
    pub seed: u64,
    /// Share of due chunks played on time, all viewers.
    pub continuity: f64,
    /// The 5th-percentile viewer's continuity.
    pub continuity_p5: f64,
    /// Share of payload viewers received from other viewers.
    pub offload: f64,
    /// Share of payload viewers received that parents pushed along substreams.
    pub pushed: f64,
    pub startup_p50_ms: u64,
    pub startup_p95_ms: u64,
    /// Delay behind the live edge (the moment the chunk's first frame was captured) when
    /// the chunk plays.
    pub lag_p50_ms: u64,
    pub lag_p95_ms: u64,
    /// From cut at the source to complete at a viewer.
    pub arrival_p50_ms: u64,
    pub arrival_p95_ms: u64,
    /// Non-payload protocol bytes ÷ payload bytes.
    pub overhead: f64,
    /// Packet framing (SCTP, DTLS, UDP/IP) ÷ payload bytes, estimated per packet.
    pub transport_overhead: f64,
    /// Payload received twice ÷ payload received.
    pub duplicate: f64,
    /// Bytes sent ÷ what all uplinks could have sent.
    pub uplink_utilisation: f64,
    /// Packets dropped at full uplink queues.
    pub uplink_drops: u64,
    /// Pieces their channel gave up.
    pub pieces_given_up: u64,
    /// With `--fast-retransmit association` (else 0): messages that lost a packet among
    /// their last three, and how many of them waited for the retransmission time-out
    /// rather than fast retransmit.
    pub tail_losses: u64,
    pub tail_losses_timed_out: u64,
    /// Source payload sent ÷ one copy of the stream.
    pub source_copies: f64,
    pub viewers_joined: u64,
    pub never_started: u64,
    pub corrupt_chunks: u64,
    /// Bytes honest viewers played that differ from what the source cut.
    pub bad_bytes_played: u64,
    /// The longest any viewer's playback stalled (waited past a chunk's due time).
    pub max_stall_ms: u64,
    pub max_chunks_held: usize,
    pub peers_dropped: u64,
    /// Dropped as hostile (malformed, protocol violation, lying, flooding, polluting) by
    /// honest peers: an honest swarm has none.
    pub peers_banned: u64,
    /// Of those: polluters and flooders.
    pub drops_polluted: u64,
    pub drops_flooding: u64,
    /// Payload honest peers threw away for failing its signed hash.
    pub bytes_rejected: u64,
    pub requests_refused: u64,
    /// Overdue pulls that moved to another viewer.
    pub pulls_moved: u64,
    /// A pull answered by the neighbour asked: request to first piece, and to the whole
    /// block; a request's wait in its server's upload queue (12% buckets).
    pub pull_first_piece_p50_ms: u64,
    pub pull_first_piece_p95_ms: u64,
    pub pull_complete_p50_ms: u64,
    pub pull_complete_p95_ms: u64,
    pub serve_wait_p50_ms: u64,
    pub serve_wait_p95_ms: u64,
    /// Polluters and flooders that joined (not in `viewers_joined`).
    pub hostile_joined: u64,
    pub events: u64,
    /// Events by kind (messages by type), to see where the simulator's time goes.
    pub events_by_kind: std::collections::BTreeMap<&'static str, u64>,
    pub sim_wall_ms: u64,
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
}

/// One bin of the continuity-and-lag-over-time plot.
#[derive(Debug, Clone)]
pub struct TimelinePoint {
    pub at_s: f64,
    pub continuity: Option<f64>,
    pub lag_p50_ms: Option<u64>,
    pub lag_p95_ms: Option<u64>,
}

/// The `p`-th percentile (0..=100) by nearest rank; zero for no samples.
pub fn percentile<T: Copy + Ord + Into<u64>>(samples: &mut [T], p: u64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = (p * samples.len() as u64).div_ceil(100).max(1) as usize - 1;
    samples[rank.min(samples.len() - 1)].into()
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut samples, 50), 50);
        assert_eq!(percentile(&mut samples, 95), 95);
        assert_eq!(percentile(&mut samples, 100), 100);
        assert_eq!(percentile(&mut Vec::<u32>::new(), 50), 0);
    }

    #[test]
    fn the_player_counts_late_and_missing_chunks_against_continuity() {
        let second = 1_000_000;
        let mut metrics = Metrics::new(second, 100 * second);
        let mut player = Player::default();
        // Chunk 10 arrives at 11.2 s, planned for 12 s: playback starts at 12 s.
        metrics.played(&mut player, 10 * second, 11_200_000, 10, 12 * second);
        metrics.played(&mut player, 0, 12_900_000, 11, 0); // due 13 s: on time
        metrics.played(&mut player, 0, 14_100_000, 12, 0); // due 14 s: late, stalls to 14.1
        metrics.skipped(&mut player, 15_700_000, 13); // due 15.1 s, skipped at 15.7
        metrics.played(&mut player, 0, 15_500_000, 14, 0); // takes 13's place: due 15.7
                                                           // The viewer leaves at 17 s, waiting for chunk 15 (due 16.7 s).
        metrics.finish(&mut player, 10 * second, 17 * second);
        assert_eq!(metrics.startups_ms, vec![2_000]);
        assert_eq!(metrics.due, 6, "chunks 10..=15");
        assert_eq!(metrics.on_time, 3, "10, 11 and 14");
        assert_eq!(metrics.lags_ms, vec![2_000, 2_000, 2_100, 1_700]);
    }
}
