//! Load benchmark for a running signal-server: opens N WebSocket peers from this process,
//! joins them to channels, measures join-to-introduction latency and the server's memory
//! growth per connection (its RSS, from /proc), then has pairs of peers bounce signalling
//! messages through the server, a fixed window in flight per pair (closed loop, so the
//! benchmark measures the server's relaying rather than overrunning its queues).
//!
//! Start the server with limits that let one machine act as many clients, e.g.
//!   signal-server --listen 127.0.0.1:8080 --max-connections-per-ip 100000 \
//!     --max-peers-per-channel 100000 --rate-per-sec 1000000 --rate-burst 1000000
//! then: cargo run --release --bin signal-bench -- --connections 19000 --seconds 10 --json
//!
//! Against servers sharing channels through Redis, name each with `--server`: peer i
//! connects to the (i mod n)th, so every channel spans them all, and relays are counted
//! within and across servers. One process holds at most ~19,900 connections here (20,000
//! open files per process), so several run side by side (`--first-index` keeps their
//! channels apart) and meet at `--ready-file` / `--go-file` (scripts/bench-cluster).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use protocol::{ClientMessage, PeerId, Role, ServerMessage, SignalPayload};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(about = "Load benchmark for a running signal-server")]
struct Args {
    /// WebSocket URL of a server; repeat for servers sharing channels (peer i connects to
    /// the (i mod n)th).
    #[arg(long = "server", default_value = "ws://127.0.0.1:8080/ws")]
    servers: Vec<String>,
    /// Number this process's peers from here, so processes run side by side use distinct
    /// channels.
    #[arg(long, default_value_t = 0)]
    first_index: usize,
    /// Concurrent WebSocket peers to open (this process and the server each need one file
    /// descriptor per connection; the open-file limit here is 20,000 per process).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Length of the relay phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Peers per channel.
    #[arg(long, default_value_t = 1000)]
    channel_size: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// The servers' process ids (one per `--server`, in order), for their RSS; found from
    /// the URLs' ports when omitted.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Once every peer joined, write the join figures here (JSON) ...
    #[arg(long, requires = "go_file")]
    ready_file: Option<std::path::PathBuf>,
    /// ... and start relaying only once this file exists.
    #[arg(long, requires = "ready_file")]
    go_file: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What every peer task shares.
struct Shared {
    /// Relayed messages between peers on one server, and between peers on two.
    within: AtomicU64,
    across: AtomicU64,
    /// Peers whose first introduction (the one they signal) is on their own server, and
    /// on another: how the relays split.
    pairs_within: AtomicU64,
    pairs_across: AtomicU64,
    errors: AtomicU64,
    /// Which server each joined peer is on, set before the relay phase.
    servers: OnceLock<HashMap<PeerId, usize>>,
}

/// Messages in flight per pair during the relay phase.
const WINDOW: usize = 4;

/// A joined peer: its index, id and join latency.
type Joined = (usize, PeerId, Duration);

#[tokio::main]
async fn main() {
    let args = Args::parse();
    raise_open_file_limit();
    let pids = server_pids(&args).unwrap_or_else(|message| {
        eprintln!("signal-bench: {message}");
        std::process::exit(2);
    });
    let rss_before: Vec<u64> = pids.iter().map(|&pid| rss_kib(pid)).collect();
    let peak_before: Vec<u64> = pids.iter().map(|&pid| peak_rss_kib(pid)).collect();
    let shared = Arc::new(Shared {
        within: AtomicU64::new(0),
        across: AtomicU64::new(0),
        pairs_within: AtomicU64::new(0),
        pairs_across: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        servers: OnceLock::new(),
    });
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel::<Joined>();
    // Phase 2 starts once every peer joined.
    let (go_tx, go_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    for index in 0..args.connections {
        let numbered = args.first_index + index;
        let channel = format!("bench-{}", numbered / args.channel_size.max(1));
        let task = Peer {
            index,
            channel,
            server: index % args.servers.len(),
            url: args.servers[index % args.servers.len()].clone(),
            shared: shared.clone(),
            joined: joined_tx.clone(),
            go: go_rx.clone(),
            stop: stop_rx.clone(),
            gate: gate.clone(),
        };
        tokio::spawn(task.run());
    }
    drop(joined_tx);
    let mut ids: Vec<Option<PeerId>> = vec![None; args.connections];
    let mut latencies = Vec::with_capacity(args.connections);
    while let Some((index, id, latency)) = joined_rx.recv().await {
        ids[index] = Some(id);
        latencies.push(latency);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let connections = latencies.len();
    tokio::time::sleep(Duration::from_secs(1)).await; // Let the server settle.
    let rss_after: Vec<u64> = pids.iter().map(|&pid| rss_kib(pid)).collect();
    let peak_after: Vec<u64> = pids.iter().map(|&pid| peak_rss_kib(pid)).collect();
    let on_server = ids
        .iter()
        .enumerate()
        .filter_map(|(index, id)| Some(((*id)?, index % args.servers.len())))
        .collect();
    shared
        .servers
        .set(on_server)
        .expect("the peers' servers are set once, before the relay phase");

    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    // Per server: its connections from this process are 1/n of them (peer i on server i
    // mod n), give or take one.
    let here = connections as f64 / args.servers.len() as f64;
    let per_connection = |before: &[u64], after: &[u64]| -> Vec<f64> {
        before
            .iter()
            .zip(after)
            .map(|(before, after)| {
                if here == 0.0 {
                    0.0
                } else {
                    after.saturating_sub(*before) as f64 / here
                }
            })
            .collect()
    };
    let mut report = serde_json::json!({
        "connections": connections,
        "connections_wanted": args.connections,
        "servers": args.servers.len(),
        "server_rss_kib_before": rss_before,
        "server_rss_kib_after": rss_after,
        "rss_kib_per_connection": per_connection(&rss_before, &rss_after),
        "server_peak_rss_kib_before": peak_before,
        "server_peak_rss_kib_after": peak_after,
        "peak_rss_kib_per_connection": per_connection(&peak_before, &peak_after),
        "join_p50_ms": pct(0.50),
        "join_p99_ms": pct(0.99),
        "connect_all_secs": connect_secs,
    });
    if let (Some(ready), Some(go)) = (&args.ready_file, &args.go_file) {
        if let Err(e) = std::fs::write(ready, report.to_string()) {
            eprintln!("signal-bench: cannot write {}: {e}", ready.display());
            std::process::exit(2);
        }
        while !go.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let relay_start = Instant::now();
    let _ = go_tx.send(true);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let within = shared.within.load(Ordering::Relaxed);
    let across = shared.across.load(Ordering::Relaxed);
    let relay_secs = relay_start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);

    let fields = report.as_object_mut().expect("a JSON object");
    fields.insert(
        "relay_per_s".into(),
        ((within + across) as f64 / relay_secs).into(),
    );
    fields.insert(
        "relay_within_per_s".into(),
        (within as f64 / relay_secs).into(),
    );
    fields.insert(
        "relay_across_per_s".into(),
        (across as f64 / relay_secs).into(),
    );
    for (name, count) in [
        ("signallers_within", &shared.pairs_within),
        ("signallers_across", &shared.pairs_across),
    ] {
        fields.insert(name.into(), count.load(Ordering::Relaxed).into());
    }
    fields.insert(
        "errors".into(),
        shared.errors.load(Ordering::Relaxed).into(),
    );
    if args.json {
        println!("{report}");
    } else {
        for (key, value) in report.as_object().expect("a JSON object") {
            println!("{key:>24}  {value}");
        }
    }
    std::process::exit(0); // Close every connection at once rather than one by one.
}

struct Peer {
    index: usize,
    /// Which of the `--server`s it connects to.
    server: usize,
    channel: String,
    url: String,
    shared: Arc<Shared>,
    joined: mpsc::UnboundedSender<Joined>,
    go: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    gate: Arc<Semaphore>,
}

impl Peer {
    async fn run(mut self) {
        let permit = self
            .gate
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // Small buffers: this one process holds thousands of connections.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async_with_config(&self.url, Some(config), true),
        )
        .await
        else {
            self.shared.error("connect failed or timed out");
            return;
        };
        let channel = self.channel.parse().expect("bench channel names are valid");
        let sent = Instant::now();
        if ws
            .send(Message::text(
                ClientMessage::Join {
                    channel,
                    role: Role::Viewer,
                    key: None,
                    session: None,
                    version: protocol::SIGNAL_VERSION,
                }
                .to_json(),
            ))
            .await
            .is_err()
        {
            self.shared.error("join not sent");
            return;
        }
        let mut me = None;
        // The server relays only between peers it introduced: each peer signals the first
        // one it was introduced to, and answers whoever signals it.
        let mut introduced = None;
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            match ServerMessage::from_json(&text) {
                Ok(ServerMessage::Welcome { peer_id, .. }) => me = Some(peer_id),
                Ok(ServerMessage::Introduce { peers }) => {
                    introduced = peers.first().copied();
                    break;
                }
                _ => {
                    self.shared
                        .error("a message other than welcome/introduce while joining");
                    return;
                }
            }
        }
        let Some(me) = me else {
            self.shared.error("no welcome before introduce");
            return;
        };
        let _ = self.joined.send((self.index, me, sent.elapsed()));
        drop(self.joined);
        drop(permit);

        let _ = self.go.wait_for(|go| *go).await;
        let offer = |to: PeerId| {
            ClientMessage::Signal {
                to,
                signal: SignalPayload::Offer {
                    sdp: "v=0 bench".into(),
                },
            }
            .to_json()
        };
        // A peer introduced to another starts a window; each received message is answered.
        if let Some(target) = introduced {
            let same = self.shared.servers.get().and_then(|s| s.get(&target)) == Some(&self.server);
            let pairs = if same {
                &self.shared.pairs_within
            } else {
                &self.shared.pairs_across
            };
            pairs.fetch_add(1, Ordering::Relaxed);
            for _ in 0..WINDOW {
                if ws.send(Message::text(offer(target))).await.is_err() {
                    self.shared.error("relay send failed");
                    return;
                }
            }
        }
        loop {
            let frame = tokio::select! {
                _ = self.stop.changed() => return,
                frame = ws.next() => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) if text.contains("\"type\":\"signal\"") => {
                    let Ok(ServerMessage::Signal { from, .. }) = ServerMessage::from_json(&text)
                    else {
                        self.shared.error("an unreadable signal");
                        continue;
                    };
                    self.shared.count_relay(from, self.server);
                    if ws.send(Message::text(offer(from))).await.is_err() {
                        self.shared.error("answer send failed");
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    if !*self.stop.borrow() {
                        self.shared.error("connection closed while relaying");
                    }
                    return;
                }
            }
        }
    }
}

impl Shared {
    /// Counts an error; the first few are said on stderr, so a run's errors can be told apart.
    fn error(&self, what: &str) {
        if self.errors.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("signal-bench: {what}");
        }
    }

    fn count_relay(&self, from: PeerId, to_server: usize) {
        let from_server = self.servers.get().and_then(|s| s.get(&from));
        match from_server {
            Some(&server) if server == to_server => {
                self.within.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {
                self.across.fetch_add(1, Ordering::Relaxed);
            }
            // Every peer of this process joined before the relay phase, and channels are
            // not shared between processes: a sender we do not know is the server's error.
            None => self.error("a signal from a peer this process does not know"),
        }
    }
}

/// Each server's process id: as given, or the process listening on its URL's port.
fn server_pids(args: &Args) -> Result<Vec<u32>, String> {
    if !args.server_pids.is_empty() {
        if args.server_pids.len() != args.servers.len() {
            return Err(format!(
                "{} --server-pid for {} --server: give one per server, in order",
                args.server_pids.len(),
                args.servers.len()
            ));
        }
        return Ok(args.server_pids.clone());
    }
    args.servers
        .iter()
        .map(|url| {
            url.rsplit(':')
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse::<u16>().ok())
                .and_then(listening_pid)
                .ok_or_else(|| {
                    format!("cannot find the server process listening on {url}; pass --server-pid")
                })
        })
        .collect()
}

/// Resident memory of a process in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory of a process in KiB: what a machine must have for it.
fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// One "Name: N kB" line of /proc/PID/status.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The process with a listening TCP socket on `port`: its socket inode from /proc/net/tcp,
/// then the process whose fd links to that inode.
fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && fields.get(3) == Some(&"0A") {
                inodes.extend(fields.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.to_string_lossy() == *i) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Thousands of sockets need the soft open-file limit raised to the hard one.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
