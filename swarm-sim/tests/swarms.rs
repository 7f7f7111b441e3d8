//! Small simulated swarms, seconds each, running the real `Swarm` on virtual time. Every
//! check names the scenario's seed, so a failure can be replayed with
//! `swarm-sim --seed N` and the same options.

use swarm_sim::{run, FastRetransmit, Report, RttRange, SimConfig};

fn scenario(peers: usize, seconds: u64, upload_ratio: f64, source_upload: f64) -> SimConfig {
    let mut config = SimConfig::new(peers, seconds);
    config.upload_ratio = upload_ratio;
    config.source_upload = source_upload;
    config.ramp_secs = 5;
    config.seed = 7;
    config
}

fn simulate(config: &SimConfig) -> Report {
    run(config.clone()).unwrap_or_else(|e| panic!("seed {}: {e}", config.seed))
}

/// Asserts with the scenario's seed and the whole report in the message.
macro_rules! check {
    ($report:expr, $condition:expr, $what:expr) => {
        assert!(
            $condition,
            "{} (seed {}; replay with swarm-sim --seed {}): {}",
            $what,
            $report.seed,
            $report.seed,
            serde_json::to_string(&$report).expect("a report is plain numbers")
        )
    };
}

#[test]
fn a_generous_lossless_network_plays_every_chunk_on_time() {
    let mut config = scenario(20, 30, 5.0, 10.0);
    config.rtt = RttRange { min: 20, max: 40 };
    let report = simulate(&config);
    check!(report, report.continuity == 1.0, "every due chunk on time");
    check!(report, report.max_stall_ms == 0, "no stall at all");
    check!(report, report.never_started == 0, "every viewer started");
    check!(report, report.corrupt_chunks == 0, "every chunk intact");
    // The source pushes two copies of every chunk: 10% of what 20 viewers need.
    check!(report, report.offload > 0.85, "viewers fed each other");
    check!(report, report.duplicate < 0.01, "hardly any byte twice");
    // The design target is 3 s (chunk length + 2 s). With the swarm's timers on a 250 ms
    // tick this scenario measured 3.05 s; on exact deadlines 2.82 s (docs/benchmarks.md).
    check!(report, report.lag_p95_ms <= 3_000, "within 3 s of live");
    check!(
        report,
        report.peers_banned == 0,
        "no honest viewer taken for hostile"
    );
    // Every event is counted under one kind; pieces and the announcements of them are
    // among them (the counts show where the simulator's time goes).
    let counted: u64 = report.events_by_kind.values().sum();
    check!(report, counted == report.events, "events by kind add up");
    let kind = |k: &str| report.events_by_kind.get(k).copied().unwrap_or(0);
    check!(
        report,
        kind("message piece") > 0 && kind("message have") > 0,
        "messages counted by type"
    );
}

#[test]
fn viewers_that_leave_never_stall_the_others_beyond_a_request_time_out() {
    // Every minute the whole audience is replaced; half of those leaving crash, and their
    // neighbours notice only after 5 s, so requests to them must time out and move on.
    let mut config = scenario(30, 60, 4.0, 8.0);
    config.rtt = RttRange { min: 20, max: 100 };
    config.churn = 1.0;
    let report = simulate(&config);
    let request_timeout_ms =
        swarm::Config::viewer(protocol::ChannelSigner::from_seed(&[0; 32]).public())
            .request_timeout_ms;
    check!(
        report,
        report.viewers_joined >= 50,
        "churn replaced most viewers"
    );
    check!(
        report,
        report.max_stall_ms <= request_timeout_ms,
        "no stall longer than a request time-out"
    );
    check!(report, report.continuity >= 0.95, "continuity held up");
    check!(report, report.corrupt_chunks == 0, "every chunk intact");
    check!(
        report,
        report.peers_banned == 0,
        "no honest viewer taken for hostile"
    );
}

#[test]
fn upload_below_the_fluid_limit_degrades_without_panic_or_unbounded_memory() {
    // Viewers upload 0.7× the bitrate: no schedule can deliver every chunk to everyone.
    let config = scenario(30, 60, 0.7, 4.0);
    let report = simulate(&config);
    let window = swarm::Config::viewer(protocol::ChannelSigner::from_seed(&[0; 32]).public()).window
        as usize;
    check!(
        report,
        report.max_chunks_held <= window + 1,
        "memory stays within the chunk window"
    );
    check!(report, report.continuity < 0.9, "continuity drops");
    check!(report, report.continuity > 0.1, "but playback goes on");
    check!(
        report,
        report.offload > 0.5,
        "viewers still carry most of it"
    );
    check!(report, report.corrupt_chunks == 0, "every chunk intact");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let mut config = scenario(15, 20, 2.0, 4.0);
    config.loss = 0.01;
    config.churn = 0.5;
    let (a, b) = (simulate(&config), simulate(&config));
    let same = serde_json::to_value(&a).map(|mut v| {
        v["sim_wall_ms"] = 0.into();
        v
    });
    let again = serde_json::to_value(&b).map(|mut v| {
        v["sim_wall_ms"] = 0.into();
        v
    });
    check!(a, same.ok() == again.ok(), "identical reports");
    check!(a, a.events > 10_000, "the run did something");
}

#[test]
fn link_handshakes_delay_start_up_by_their_time() {
    let mut config = scenario(12, 20, 2.0, 4.0);
    config.exact_classes = true;
    let quick = simulate(&config);
    config.link_setup_ms = 400;
    let slow = simulate(&config);
    // A viewer's first chunk comes over its first link: that link opens 400 ms later.
    check!(
        slow,
        slow.startup_p50_ms >= quick.startup_p50_ms + 300,
        format!(
            "start-up p50 {} ms without handshake time",
            quick.startup_p50_ms
        )
    );
}

#[test]
fn later_packets_of_a_link_recover_most_losses_before_the_time_out() {
    let mut config = scenario(16, 30, 1.5, 3.0);
    config.exact_classes = true;
    config.loss = 0.02;
    config.rtt = RttRange { min: 1, max: 4 };
    config.fast_retransmit = FastRetransmit::Association;
    let by_link = simulate(&config);
    config.fast_retransmit = FastRetransmit::Message;
    let by_message = simulate(&config);
    check!(
        by_link,
        by_link.tail_losses > 100,
        "messages lost packets near their end"
    );
    check!(
        by_link,
        by_link.tail_losses_timed_out * 5 < by_link.tail_losses,
        "busy links report most of those gaps before the time-out"
    );
    check!(
        by_link,
        by_link.arrival_p50_ms < by_message.arrival_p50_ms,
        format!(
            "so chunks complete sooner than when every such loss waits a second ({} ms)",
            by_message.arrival_p50_ms
        )
    );
}

#[test]
fn viewers_play_at_the_delay_their_latency_preset_sets() {
    let mut config = scenario(12, 30, 2.0, 4.0);
    config.exact_classes = true;
    config.rtt = RttRange { min: 1, max: 4 };
    let normal = simulate(&config);
    config.target_buffer_ms = Some(4_000);
    let high = simulate(&config);
    check!(
        high,
        high.lag_p50_ms >= normal.lag_p50_ms + 2_000,
        format!(
            "2.5 s more delay behind live than the default's {} ms",
            normal.lag_p50_ms
        )
    );
    check!(high, high.continuity > 0.95, "and it plays on time");
}
