use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use peer_native::edge::{self, EdgeOptions, Joining};
use peer_native::identity::ChannelSecret;
use peer_native::ingest::{self, config as ingest_config, IngestOptions};
use peer_native::node::{self, NodeOptions};
use peer_native::timeline::Timeline;
use peer_native::watch::WatchSink;
use peer_native::{broadcast, NativeError};
use protocol::{ChannelName, PiecesChannel, Role};
use swarm::BytesPerSec;

/// StreamTorrent: live video carried peer to peer.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which server and channel a command works with.
#[derive(Args, Debug)]
struct Target {
    /// WebSocket URL of the signal server.
    #[arg(
        long,
        env = "STREAMTORRENT_SERVER",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    server: String,
    /// Channel name: 1-64 characters a-z, 0-9, '-' or '_'.
    #[arg(long)]
    channel: ChannelName,
    /// Upload budget for serving chunks to peers, in kbit/s (0 serves nothing). Unlimited
    /// when not given.
    #[arg(long)]
    max_upload_kbps: Option<u64>,
    /// Experimental: substreams for pushing between viewers (0 to 16; the swarm's
    /// default, off, when not given). Every peer of a channel should use the same.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u8).range(0..=16))]
    substreams: Option<u8>,
    /// How links this peer offers carry pieces: `unordered` (a reliable channel of their
    /// own, so a lost packet delays only its piece), `shared` (on the ordered channel with
    /// every other message) or `lifetime:MS` (unordered, given up after MS ms). For
    /// benchmarks; see docs/benchmarks.md.
    #[arg(long, hide = true, default_value = "unordered")]
    pieces_channel: PiecesChannel,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a channel key pair (Ed25519). The channel belongs to the first key that
    /// broadcasts on it; keep the file secret and pass it to `broadcast --key`.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Publish a live channel from fragmented MP4 (H.264/AAC, VP9/Opus, AV1; see README).
    Broadcast {
        #[command(flatten)]
        target: Target,
        /// Fragmented MP4 to read as it arrives; `-` reads standard input (e.g. piped from
        /// `ffmpeg -re`). Not paced: a finished file is cut all at once.
        #[arg(long, default_value = "-")]
        input: PathBuf,
        /// Also write the init segment and every chunk, exactly as cut, into this folder.
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// Benchmarks: note when each chunk was cut, one JSON line each, in this file.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// The channel's key file, from `streamtorrent keygen`.
        #[arg(long, env = "STREAMTORRENT_KEY")]
        key: PathBuf,
    },
    /// Take live input for channels from RTMP publishers (OBS, ffmpeg, hardware encoders) at
    /// `rtmp://HOST:PORT/live/STREAM_KEY`, and with --whip-listen from WHIP publishers (OBS
    /// 30+, the studio page in a browser); each is broadcast on its channel.
    Ingest {
        /// WebSocket URL of the signal server.
        #[arg(
            long,
            env = "STREAMTORRENT_SERVER",
            default_value = "ws://127.0.0.1:8080/ws"
        )]
        server: String,
        /// The one channel to take input for (with --key and --stream-key); --config lists
        /// several instead.
        #[arg(long, required_unless_present = "config", conflicts_with = "config", requires_all = ["key", "stream_key"])]
        channel: Option<ChannelName>,
        /// The channel's key file, from `streamtorrent keygen`.
        #[arg(long, env = "STREAMTORRENT_KEY")]
        key: Option<PathBuf>,
        /// The secret a publisher gives as its stream key (at least 12 characters).
        #[arg(long, env = "STREAMTORRENT_STREAM_KEY", hide_env_values = true)]
        stream_key: Option<String>,
        /// A TOML file of channels, each `[[channel]]` with `name`, `key` (a key file) and
        /// `stream_key`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to accept RTMP (port 0: any free port; the first line printed says which).
        #[arg(
            long,
            env = "STREAMTORRENT_RTMP_LISTEN",
            default_value = "127.0.0.1:1935"
        )]
        rtmp_listen: String,
        /// Also take WHIP (OBS 30+, browsers) and serve the studio page (`/live`) over HTTP
        /// here, e.g. 127.0.0.1:8088 behind an HTTPS proxy (browsers capture cameras only
        /// on https:// pages or localhost).
        #[arg(long, env = "STREAMTORRENT_WHIP_LISTEN")]
        whip_listen: Option<String>,
        /// Upload budget of each channel's broadcaster, in kbit/s. Unlimited when not given.
        #[arg(long)]
        max_upload_kbps: Option<u64>,
        /// The most a publisher may send, sustained over seconds, in kbit/s; over it, it is
        /// dropped.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
        max_publish_kbps: u64,
        /// Also write each channel's init segment and chunks into DIR/CHANNEL/.
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// How links carry pieces (see `broadcast --help`; for benchmarks).
        #[arg(long, hide = true, default_value = "unordered")]
        pieces_channel: PiecesChannel,
    },
    /// Join a channel as a headless viewer (for tests, benchmarks and relays).
    Watch {
        #[command(flatten)]
        target: Target,
        /// Write the received stream (init segment, then chunks) to this file.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Also write the init segment and every played chunk into this folder.
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// Benchmarks: note when each chunk played (or was missed), one JSON line each, in
        /// this file.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Exit after playing this many chunks.
        #[arg(long)]
        chunks: Option<u64>,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// Privacy mode: reach other peers only through the TURN relays the signal server
        /// hands out, so no peer learns this viewer's address (the relay carries all of
        /// its traffic).
        #[arg(long)]
        relay_only: bool,
        /// Test only: play a polluter, flipping a bit in every piece served to others.
        /// Only in builds with the `test-hooks` feature (scripts/test builds one).
        #[cfg(feature = "test-hooks")]
        #[arg(long, hide = true)]
        test_corrupt_pieces: bool,
        /// Test only: keep the first broadcast's signed manifests and send them to new
        /// neighbours once the broadcaster restarted (a replay of old content).
        #[cfg(feature = "test-hooks")]
        #[arg(long, hide = true)]
        test_replay_manifests: bool,
    },
    /// Serve channels over HTTP for viewers who cannot get them from peers in time (and
    /// for CDNs and caches): a headless viewer of each channel asked for, verifying all
    /// it serves, as do the viewers it serves. URLs under /edge/v1/ (see docs).
    Edge {
        /// WebSocket URL of the signal server.
        #[arg(
            long,
            env = "STREAMTORRENT_SERVER",
            default_value = "ws://127.0.0.1:8080/ws"
        )]
        server: String,
        /// Where to serve HTTP (port 0: any free port; the first line printed says which).
        #[arg(
            long,
            env = "STREAMTORRENT_EDGE_LISTEN",
            default_value = "127.0.0.1:8090"
        )]
        listen: String,
        /// Serve only this channel, followed from the start (repeatable). Without it, any
        /// channel is followed when first asked for, and let go after 5 idle minutes.
        #[arg(long = "channel")]
        channels: Vec<ChannelName>,
        /// The most channels followed at once on request (each holds up to 30 chunks,
        /// at most 64 MiB).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
        max_channels: u64,
        /// How long a request for a chunk not cut yet waits, in ms (then 503).
        #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(0..=30_000))]
        wait_ms: u64,
        /// Requests one client address may have in flight (waits included), and its
        /// burst. Behind a CDN or cache, every request comes from its few addresses.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_requests_per_ip: u64,
        /// Requests one client address may make per second, sustained.
        #[arg(long, default_value_t = 20.0, value_parser = positive_rate)]
        requests_per_sec_per_ip: f64,
        /// Upload budget of the edge's viewers for serving peers, in kbit/s (0 serves
        /// no peer). Unlimited when not given.
        #[arg(long)]
        max_upload_kbps: Option<u64>,
        /// Reach peers only through the TURN relays the signal server hands out.
        #[arg(long)]
        relay_only: bool,
        /// Test only: serve every chunk with a bit flipped (a tampering edge or cache).
        /// Only in builds with the `test-hooks` feature.
        #[cfg(feature = "test-hooks")]
        #[arg(long, hide = true)]
        test_tamper: bool,
    },
}

/// A rate: finite and above 0 (a rate of 0 would refuse every client for good).
fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{value:?} is not a rate above 0")),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("streamtorrent: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), NativeError> {
    match cli.command {
        Command::Keygen { out } => {
            let key = ChannelSecret::generate();
            key.save(&out)?;
            println!("{}", key.public());
            eprintln!(
                "wrote {}; the public key above is the channel's identity",
                out.display()
            );
            Ok(())
        }
        Command::Broadcast {
            target:
                Target {
                    server,
                    channel,
                    max_upload_kbps,
                    substreams,
                    pieces_channel,
                },
            input,
            record_dir,
            timeline,
            key,
        } => {
            let key = ChannelSecret::load(&key)?;
            let timeline = timeline.as_deref().map(Timeline::create).transpose()?;
            let feed = broadcast::spawn_input(input, record_dir, timeline);
            let mut sink = WatchSink::new(None, None, None)?;
            let options = NodeOptions {
                server,
                channel,
                role: Role::Broadcaster,
                upload_limit: max_upload_kbps.map(BytesPerSec::from_kbps),
                substreams: substreams.map(usize::from),
                key: Some(key),
                relay_only: false,
                pieces_channel,
                edge: false,
                #[cfg(feature = "test-hooks")]
                hooks: Default::default(),
            };
            node::run(options, Some(feed), &mut sink, ctrl_c()).await?;
            Ok(())
        }
        Command::Ingest {
            server,
            channel,
            key,
            stream_key,
            config,
            rtmp_listen,
            whip_listen,
            max_upload_kbps,
            max_publish_kbps,
            record_dir,
            pieces_channel,
        } => {
            let channels = match (config, channel, key, stream_key) {
                (Some(path), ..) => ingest_config::from_file(&path)?,
                (None, Some(channel), Some(key), Some(stream_key)) => {
                    ingest_config::from_flags(channel, &key, &stream_key)?
                }
                _ => {
                    unreachable!("clap requires --config, or --channel with --key and --stream-key")
                }
            };
            let options = IngestOptions {
                server,
                rtmp_listen,
                whip_listen,
                channels,
                upload_limit: max_upload_kbps.map(BytesPerSec::from_kbps),
                pieces_channel,
                max_publish_kbps,
                record_dir,
            };
            ingest::run(options, ctrl_c()).await
        }
        Command::Watch {
            target:
                Target {
                    server,
                    channel,
                    max_upload_kbps,
                    substreams,
                    pieces_channel,
                },
            output,
            record_dir,
            timeline,
            chunks,
            timeout_secs,
            relay_only,
            #[cfg(feature = "test-hooks")]
            test_corrupt_pieces,
            #[cfg(feature = "test-hooks")]
            test_replay_manifests,
        } => {
            let mut sink = WatchSink::new(output, record_dir, chunks)?;
            if let Some(path) = timeline {
                sink = sink.with_timeline(Timeline::create(&path)?);
            }
            let options = NodeOptions {
                server,
                channel,
                role: Role::Viewer,
                upload_limit: max_upload_kbps.map(BytesPerSec::from_kbps),
                substreams: substreams.map(usize::from),
                key: None,
                relay_only,
                pieces_channel,
                edge: false,
                #[cfg(feature = "test-hooks")]
                hooks: peer_native::test_hooks::TestHooks {
                    corrupt_pieces: test_corrupt_pieces,
                    replay_manifests: test_replay_manifests,
                },
            };
            let timeout = async move {
                match timeout_secs {
                    Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                    None => std::future::pending().await,
                }
            };
            let stop = async move {
                tokio::select! {
                    _ = ctrl_c() => {}
                    _ = timeout => {}
                }
            };
            let report = node::run(options, None, &mut sink, stop).await?;
            println!("{}", sink.summary(&report));
            match sink.fell_short() {
                Some((played, wanted)) => Err(NativeError::FellShort { played, wanted }),
                None => Ok(()),
            }
        }
        Command::Edge {
            server,
            listen,
            channels,
            max_channels,
            wait_ms,
            max_requests_per_ip,
            requests_per_sec_per_ip,
            max_upload_kbps,
            relay_only,
            #[cfg(feature = "test-hooks")]
            test_tamper,
        } => {
            let options = EdgeOptions {
                joining: Joining {
                    server,
                    upload_limit: max_upload_kbps.map(BytesPerSec::from_kbps),
                    relay_only,
                },
                listen,
                channels,
                max_channels: max_channels as usize,
                wait: Duration::from_millis(wait_ms),
                max_requests_per_ip: max_requests_per_ip as usize,
                requests_per_sec_per_ip,
                #[cfg(feature = "test-hooks")]
                tamper: test_tamper,
            };
            edge::run(options, ctrl_c()).await
        }
    }
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}
