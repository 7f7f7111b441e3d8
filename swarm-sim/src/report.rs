//! Turning counters into the reported figures, and the readable table.

use std::fmt::Write;

use crate::metrics::{percentile, ratio, Metrics, Report, TimelinePoint};
use crate::SimConfig;

pub fn summarise(config: &SimConfig, mut m: Metrics, events: u64, sim_wall_ms: u64) -> Report {
    let received = m.from_peers + m.from_source;
    let mut p5 = m.viewer_continuity.clone();
    p5.sort_unstable_by(f64::total_cmp);
    let continuity_p5 = if p5.is_empty() {
        0.0
    } else {
        p5[(p5.len() * 5).div_ceil(100).max(1) - 1]
    };
    let stream_bytes = config.bitrate_bytes() * config.seconds as f64;
    let bin_s = m.bin_us as f64 / 1e6;
    let timeline = m
        .bins
        .iter_mut()
        .enumerate()
        .map(|(i, bin)| TimelinePoint {
            at_s: i as f64 * bin_s,
            continuity: (bin.due > 0).then(|| ratio(bin.on_time, bin.due).min(1.0)),
            lag_p50_ms: (!bin.lags_ms.is_empty()).then(|| percentile(&mut bin.lags_ms, 50)),
            lag_p95_ms: (!bin.lags_ms.is_empty()).then(|| percentile(&mut bin.lags_ms, 95)),
        })
        .collect();
    Report {
        peers: config.peers,
        seconds: config.seconds,
        seed: config.seed,
        continuity: ratio(m.on_time, m.due),
        continuity_p5,
        offload: ratio(m.from_peers, received),
        pushed: ratio(m.pushed, received),
        startup_p50_ms: percentile(&mut m.startups_ms, 50),
        startup_p95_ms: percentile(&mut m.startups_ms, 95),
        lag_p50_ms: percentile(&mut m.lags_ms, 50),
        lag_p95_ms: percentile(&mut m.lags_ms, 95),
        arrival_p50_ms: percentile(&mut m.arrivals_ms, 50),
        arrival_p95_ms: percentile(&mut m.arrivals_ms, 95),
        overhead: ratio(m.message_bytes - m.payload_sent, m.payload_sent),
        transport_overhead: ratio(m.framing_bytes, m.payload_sent),
        duplicate: ratio(m.duplicate, received),
        uplink_utilisation: (m.message_bytes + m.framing_bytes) as f64 / m.capacity_bytes.max(1.0),
        uplink_drops: m.uplink_drops,
        pieces_given_up: m.pieces_given_up,
        tail_losses: m.tail_losses,
        tail_losses_timed_out: m.tail_losses_timed_out,
        source_copies: m.source_payload_sent as f64 / stream_bytes.max(1.0),
        viewers_joined: m.viewers_joined,
        never_started: m.never_started,
        corrupt_chunks: m.corrupt_chunks,
        bad_bytes_played: m.bad_bytes_played,
        max_stall_ms: m.max_stall_us / 1000,
        max_chunks_held: m.max_chunks_held,
        peers_dropped: m.peers_dropped,
        peers_banned: m.peers_banned,
        drops_polluted: m.drops_polluted,
        drops_flooding: m.drops_flooding,
        bytes_rejected: m.bytes_rejected,
        requests_refused: m.requests_refused,
        pulls_moved: m.pulls_moved,
        pull_first_piece_p50_ms: m.pulls.first_piece.percentile(50),
        pull_first_piece_p95_ms: m.pulls.first_piece.percentile(95),
        pull_complete_p50_ms: m.pulls.complete.percentile(50),
        pull_complete_p95_ms: m.pulls.complete.percentile(95),
        serve_wait_p50_ms: m.pulls.serve_wait.percentile(50),
        serve_wait_p95_ms: m.pulls.serve_wait.percentile(95),
        hostile_joined: m.hostile_joined,
        events,
        events_by_kind: Default::default(),
        sim_wall_ms,
        timeline,
    }
}

/// The report as a two-column table.
pub fn table(report: &Report) -> String {
    let rows: [(&str, String); 36] = [
        ("peers", report.peers.to_string()),
        ("seconds", report.seconds.to_string()),
        ("seed", report.seed.to_string()),
        ("continuity", format!("{:.4}", report.continuity)),
        ("continuity_p5", format!("{:.4}", report.continuity_p5)),
        ("offload", format!("{:.4}", report.offload)),
        ("pushed", format!("{:.4}", report.pushed)),
        ("startup_p50_ms", report.startup_p50_ms.to_string()),
        ("startup_p95_ms", report.startup_p95_ms.to_string()),
        ("lag_p50_ms", report.lag_p50_ms.to_string()),
        ("lag_p95_ms", report.lag_p95_ms.to_string()),
        ("arrival_p50_ms", report.arrival_p50_ms.to_string()),
        ("arrival_p95_ms", report.arrival_p95_ms.to_string()),
        ("overhead", format!("{:.4}", report.overhead)),
        (
            "transport_overhead",
            format!("{:.4}", report.transport_overhead),
        ),
        ("duplicate", format!("{:.4}", report.duplicate)),
        (
            "uplink_utilisation",
            format!("{:.3}", report.uplink_utilisation),
        ),
        ("uplink_drops", report.uplink_drops.to_string()),
        ("pieces_given_up", report.pieces_given_up.to_string()),
        ("tail_losses", report.tail_losses.to_string()),
        (
            "tail_losses_timed_out",
            report.tail_losses_timed_out.to_string(),
        ),
        ("source_copies", format!("{:.2}", report.source_copies)),
        ("viewers_joined", report.viewers_joined.to_string()),
        ("never_started", report.never_started.to_string()),
        ("corrupt_chunks", report.corrupt_chunks.to_string()),
        ("bad_bytes_played", report.bad_bytes_played.to_string()),
        ("max_stall_ms", report.max_stall_ms.to_string()),
        ("max_chunks_held", report.max_chunks_held.to_string()),
        ("peers_dropped", report.peers_dropped.to_string()),
        ("peers_banned", report.peers_banned.to_string()),
        ("drops_polluted", report.drops_polluted.to_string()),
        ("drops_flooding", report.drops_flooding.to_string()),
        ("bytes_rejected", report.bytes_rejected.to_string()),
        ("hostile_joined", report.hostile_joined.to_string()),
        ("events", report.events.to_string()),
        ("sim_wall_ms", report.sim_wall_ms.to_string()),
    ];
    let mut out = String::new();
    for (name, value) in rows {
        writeln!(out, "{name:<20} {value:>12}").expect("writing to a String cannot fail");
    }
    out
}
