//! `swarm-sim`: see the crate docs, and `swarm-sim --help`.

use std::process::ExitCode;

use clap::Parser;
use swarm_sim::plot::{svg, Chart, Series};
use swarm_sim::{
    budget, run, table, FastRetransmit, Report, RttRange, SimConfig, SimError, CONTROL_ONLY_UPLINK,
};

/// Simulate a StreamTorrent channel: one broadcaster and N viewers running the real swarm
/// core on virtual time, over uplinks of limited capacity with delay and loss.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Viewers at the start (churn replaces them, keeping the count).
    #[arg(long, default_value_t = 100)]
    peers: usize,
    /// Simulated seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value_t = 2000)]
    bitrate_kbps: u64,
    /// Chunk duration.
    #[arg(long, default_value_t = 1000)]
    chunk_ms: u64,
    /// Mean viewer upload ÷ bitrate. Viewers fall in four classes: 15% upload nothing,
    /// 35% upload 1 unit, 35% 2 units, 15% 4 units, the unit scaled to this mean.
    #[arg(long, default_value_t = 1.5)]
    upload_ratio: f64,
    /// Broadcaster upload ÷ bitrate.
    #[arg(long, default_value_t = 4.0)]
    source_upload: f64,
    /// Share of viewers replaced per minute.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Packet loss probability on every link.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// SCTP's retransmission time-out (RTO.min, 1 s in the `webrtc` crate): how long a
    /// lost packet waits to be sent again when too few packets follow it for fast
    /// retransmit (three reports of the gap). Earlier losses cost a round trip. 0 makes
    /// every loss cost a round trip (the model before 2026-12-07).
    #[arg(long, default_value_t = 1000)]
    tail_loss_recovery_ms: u64,
    /// Which packets following a lost one count towards fast retransmit: every later
    /// packet the link sends (`association`, as SCTP does), or only the message's own
    /// (`message`: a loss among its last three always waits for the time-out; the model
    /// before 2026-12-08).
    #[arg(long, value_enum, default_value = "association")]
    fast_retransmit: FastRetransmit,
    /// Round-trip time range; each link draws uniformly from it.
    #[arg(long, default_value = "20-200")]
    rtt_ms: RttRange,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Initial viewers join spread over this many seconds.
    #[arg(long, default_value_t = 10)]
    ramp_secs: u64,
    /// Time a link's set-up takes beyond the modelled 3 round trips and 50 ms of
    /// gathering (DTLS, SCTP, the stack's timers); the native stack took about 370 ms
    /// more on the 2-core VM.
    #[arg(long, default_value_t = 0)]
    link_setup_ms: u64,
    /// Each uplink's router queue in ms at its capacity (unbounded if not given): pieces
    /// finding it full lose packets and arrive after --drop-recovery-ms (scripts/
    /// bench-native-swarm's shapers queue 200 ms).
    #[arg(long)]
    uplink_queue_ms: Option<u64>,
    /// How long a piece that lost packets at a full uplink queue waits for the
    /// transport's recovery (SCTP's retransmission time-out; RTO.min is 1 s in the
    /// `webrtc` crate).
    #[arg(long, default_value_t = 1000)]
    drop_recovery_ms: u64,
    /// How links carry pieces: `unordered` (a reliable channel of their own: a loss
    /// delays only its piece; what the drivers do), `shared` (on the ordered channel with
    /// every other message) or `lifetime:MS` (unordered, given up once a retransmission
    /// or the sender's queue would take longer than MS).
    #[arg(long, default_value = "unordered")]
    pieces_channel: protocol::PiecesChannel,
    /// Substreams for pushing between viewers (0: pull only; not given: the peers'
    /// default), at most 16.
    #[arg(long)]
    substreams: Option<usize>,
    /// Viewers' playout delay behind each chunk's cut, in ms (not given: the peers'
    /// default, the player's "normal" preset; "low" is 1000, "high" 4000), 100..=7000.
    #[arg(long)]
    target_buffer_ms: Option<u64>,
    /// Share of viewers that serve corrupted pieces (a bit flipped in each), 0..=1.
    #[arg(long, default_value_t = 0.0)]
    polluters: f64,
    /// Share of viewers that flood their neighbours with requests, 0..=1.
    #[arg(long, default_value_t = 0.0)]
    flooders: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw continuity and lag over time into this SVG file (with --sweep: continuity
    /// against upload ratio).
    #[arg(long)]
    plot: Option<String>,
    /// Viewers' uplinks in the classes' exact shares, with a mean of exactly
    /// --upload-ratio, instead of drawn at random (for small swarms set up to match).
    #[arg(long)]
    exact_classes: bool,
    /// Print each peer's uplink and upload budget for this scenario (`NAME LINK_KBPS
    /// BUDGET_KBPS` per line, the source first; implies --exact-classes) and exit.
    #[arg(long)]
    print_uplinks: bool,
    /// Measure the real swarm whose timelines are in this folder (written during
    /// scripts/bench-native-swarm) and print it beside a simulated run of the same scenario.
    #[arg(long)]
    real: Option<std::path::PathBuf>,
    /// Run once per upload ratio in this comma-separated list (e.g. 0.9,1.0,1.5,2.0)
    /// instead of --upload-ratio, and report them side by side against the fluid limit.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = SimConfig::new(cli.peers, cli.seconds);
    config.bitrate_kbps = cli.bitrate_kbps;
    config.chunk_ms = cli.chunk_ms;
    config.upload_ratio = cli.upload_ratio;
    config.source_upload = cli.source_upload;
    config.churn = cli.churn;
    config.loss = cli.loss;
    config.tail_loss_recovery_ms = cli.tail_loss_recovery_ms;
    config.fast_retransmit = cli.fast_retransmit;
    config.rtt = cli.rtt_ms;
    config.seed = cli.seed;
    config.ramp_secs = cli.ramp_secs;
    config.link_setup_ms = cli.link_setup_ms;
    config.uplink_queue_ms = cli.uplink_queue_ms;
    config.drop_recovery_ms = cli.drop_recovery_ms;
    config.pieces_channel = cli.pieces_channel;
    config.substreams = cli.substreams;
    config.target_buffer_ms = cli.target_buffer_ms;
    config.polluters = cli.polluters;
    config.flooders = cli.flooders;
    config.exact_classes = cli.exact_classes || cli.print_uplinks;
    let result = if cli.print_uplinks {
        config.validate().map(|()| print_uplinks(&config))
    } else if let Some(dir) = &cli.real {
        compare(&cli, config, dir)
    } else if cli.sweep.is_empty() {
        run(config).and_then(|report| output(&cli, &report))
    } else {
        sweep(&cli, config)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("swarm-sim: {error}");
            ExitCode::from(2)
        }
    }
}

fn output(cli: &Cli, report: &Report) -> Result<(), SimError> {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(report).expect("the report is plain numbers")
        );
    } else {
        print!("{}", table(report));
    }
    if let Some(path) = &cli.plot {
        std::fs::write(path, timeline_svg(report)).map_err(|source| SimError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn print_uplinks(config: &SimConfig) {
    let source = config.source_upload * config.bitrate_bytes();
    let kbps = |bytes_per_sec: f64| (bytes_per_sec * 8.0 / 1000.0).round() as u64;
    println!("source {} {}", kbps(source), budget(source).kbps());
    for (i, uplink) in config.exact_uplinks().into_iter().enumerate() {
        if uplink > 0.0 {
            println!("viewer-{i:02} {} {}", kbps(uplink), budget(uplink).kbps());
        } else {
            println!("viewer-{i:02} {} 0", kbps(CONTROL_ONLY_UPLINK));
        }
    }
}

/// One row of the comparison: a figure, formatted, from a report.
type Figure = fn(&Report) -> String;

/// The real swarm beside the simulated one, figure by figure.
fn compare(cli: &Cli, config: SimConfig, dir: &std::path::Path) -> Result<(), SimError> {
    let (real, notes) = swarm_sim::real::measure(&config, dir)?;
    let sim = run(config)?;
    if cli.json {
        let both = serde_json::json!({"real": real, "real_notes": notes, "sim": sim});
        println!("{both}");
        return Ok(());
    }
    println!("| figure | real | simulated |");
    println!("|---|---|---|");
    let rows: [(&str, Figure); 15] = [
        ("continuity (on time)", |r| format!("{:.4}", r.continuity)),
        ("continuity, p5 viewer", |r| {
            format!("{:.4}", r.continuity_p5)
        }),
        ("offload", |r| format!("{:.4}", r.offload)),
        ("cut → complete p50 ms", |r| r.arrival_p50_ms.to_string()),
        ("cut → complete p95 ms", |r| r.arrival_p95_ms.to_string()),
        ("behind live p50 ms", |r| r.lag_p50_ms.to_string()),
        ("behind live p95 ms", |r| r.lag_p95_ms.to_string()),
        ("start-up p50 ms", |r| r.startup_p50_ms.to_string()),
        ("start-up p95 ms", |r| r.startup_p95_ms.to_string()),
        ("longest stall ms", |r| r.max_stall_ms.to_string()),
        ("uplink use", |r| format!("{:.3}", r.uplink_utilisation)),
        ("packets dropped at uplinks", |r| r.uplink_drops.to_string()),
        ("pull: request → first piece p50 / p95 ms", |r| {
            format!(
                "{} / {}",
                r.pull_first_piece_p50_ms, r.pull_first_piece_p95_ms
            )
        }),
        ("pull: request → block complete p50 / p95 ms", |r| {
            format!("{} / {}", r.pull_complete_p50_ms, r.pull_complete_p95_ms)
        }),
        ("request's wait to be served p50 / p95 ms", |r| {
            format!("{} / {}", r.serve_wait_p50_ms, r.serve_wait_p95_ms)
        }),
    ];
    for (name, figure) in rows {
        println!("| {name} | {} | {} |", figure(&real), figure(&sim));
    }
    // Joining is the hardest part of a small run; this shows the swarm once settled.
    let settled_from = (cli.ramp_secs + 20) as f64;
    let settled = |r: &Report| {
        let bins: Vec<f64> = r
            .timeline
            .iter()
            .filter(|p| p.at_s >= settled_from)
            .filter_map(|p| p.continuity)
            .collect();
        format!("{:.4}", bins.iter().sum::<f64>() / bins.len().max(1) as f64)
    };
    println!(
        "| continuity from {settled_from} s | {} | {} |",
        settled(&real),
        settled(&sim)
    );
    println!(
        "\nreal: {} viewers, {} chunks cut, stream {} kbit/s, cuts within {} ms of schedule",
        notes.viewers, notes.chunks_cut, notes.stream_kbps, notes.cut_jitter_max_ms
    );
    Ok(())
}

/// One run per upload ratio. The fluid limit: the most any schedule could deliver is
/// (source upload + all viewers' upload) ÷ viewers, in bitrates; 1 means just enough.
fn sweep(cli: &Cli, base: SimConfig) -> Result<(), SimError> {
    let mut rows = Vec::new();
    for &ratio in &cli.sweep {
        let mut config = base.clone();
        config.upload_ratio = ratio;
        let report = run(config.clone())?;
        let fluid = (config.source_upload + ratio * config.peers as f64) / config.peers as f64;
        eprintln!(
            "swarm-sim: upload ratio {ratio}: continuity {:.4}",
            report.continuity
        );
        rows.push((ratio, fluid, report));
    }
    if cli.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|(ratio, fluid, report)| {
                serde_json::json!({"upload_ratio": ratio, "fluid_limit": fluid, "report": report})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!("| upload ratio | fluid limit | continuity | continuity p5 | offload | lag p50 ms | lag p95 ms | startup p95 ms | uplink use |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for (ratio, fluid, r) in &rows {
            println!(
                "| {ratio:.2} | {fluid:.3} | {:.4} | {:.4} | {:.4} | {} | {} | {} | {:.3} |",
                r.continuity,
                r.continuity_p5,
                r.offload,
                r.lag_p50_ms,
                r.lag_p95_ms,
                r.startup_p95_ms,
                r.uplink_utilisation
            );
        }
    }
    if let Some(path) = &cli.plot {
        std::fs::write(path, sweep_svg(&base, &rows)).map_err(|source| SimError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn sweep_svg(base: &SimConfig, rows: &[(f64, f64, Report)]) -> String {
    let points = |f: &dyn Fn(&Report) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|(ratio, _, r)| (*ratio, f(r))).collect()
    };
    // Where the fluid limit is exactly 1: the least upload any schedule needs.
    let at_limit = 1.0 - base.source_upload / base.peers as f64;
    let chart = Chart {
        title: format!(
            "Continuity against viewer upload ({} viewers, {} s, seed {})",
            base.peers, base.seconds, base.seed
        ),
        x_label: "mean viewer upload ÷ bitrate".into(),
        y_label: "share".into(),
        y_max: 1.0,
        series: vec![
            Series {
                label: "continuity".into(),
                colour: "#1f77b4",
                points: points(&|r| r.continuity),
            },
            Series {
                label: "continuity, 5th pct viewer".into(),
                colour: "#ff7f0e",
                points: points(&|r| r.continuity_p5),
            },
            Series {
                label: format!("fluid limit = 1 at {at_limit:.3}"),
                colour: "#7f7f7f",
                points: vec![(at_limit, 0.0), (at_limit, 1.0)],
            },
        ],
    };
    svg(&[chart])
}

fn timeline_svg(report: &Report) -> String {
    let line = |f: &dyn Fn(&swarm_sim::TimelinePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .timeline
            .iter()
            .filter_map(|p| Some((p.at_s, f(p)?)))
            .collect()
    };
    let continuity = Chart {
        title: format!(
            "Continuity over time ({} viewers, seed {})",
            report.peers, report.seed
        ),
        x_label: "simulated seconds".into(),
        y_label: "chunks on time".into(),
        y_max: 1.0,
        series: vec![Series {
            label: "share due on time".into(),
            colour: "#1f77b4",
            points: line(&|p| p.continuity),
        }],
    };
    let p95 = line(&|p| p.lag_p95_ms.map(|ms| ms as f64 / 1000.0));
    let y_max = p95.iter().map(|p| p.1).fold(1.0, f64::max).ceil();
    let lag = Chart {
        title: "Delay behind live".into(),
        x_label: "simulated seconds".into(),
        y_label: "seconds".into(),
        y_max,
        series: vec![
            Series {
                label: "p50".into(),
                colour: "#2ca02c",
                points: line(&|p| p.lag_p50_ms.map(|ms| ms as f64 / 1000.0)),
            },
            Series {
                label: "p95".into(),
                colour: "#d62728",
                points: p95,
            },
        ],
    };
    svg(&[continuity, lag])
}
