//! `streamtorrent ingest`: an RTMP server for one or more channels. A publisher (OBS,
//! ffmpeg, a hardware encoder) reaches a channel with its stream key at
//! `rtmp://HOST:PORT/live/KEY`; its FLV is remuxed into fragmented MP4 and fed to a
//! broadcaster node for the channel, the same path `broadcast` takes. The node lives while
//! the publisher does (and serves its last chunks a moment longer).
//!
//! Each connection runs an [`ingest::RtmpSession`]; this file only does the I/O and the
//! bookkeeping of which channel is live.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_limits::TokenBucket;
use fmp4::Cutter;
use ingest::{MediaKind, PublishRefusal, Remuxer, RtmpSession, SessionEvent, StreamKey};
use protocol::{ChannelName, PiecesChannel, Role};
use swarm::BytesPerSec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::broadcast::Numbering;
use crate::identity::ChannelSecret;
use crate::node::{self, NodeOptions, Produced};
use crate::watch::WatchSink;
use crate::NativeError;

/// The RTMP application publishers use: `rtmp://HOST:PORT/live/KEY`.
pub const APP: &str = "live";
/// A connection must be publishing this soon after it opens.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A live publisher silent this long is gone (an encoder sends many messages a second).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishers connected at once, live or not: a bound on what a crowd of sockets costs.
const MAX_CONNECTIONS: usize = 64;
/// How long a burst over the rate limit may last (keyframes are bursts).
const BURST_SECS: f64 = 4.0;

/// A channel this process may publish, and the key its publisher must present.
pub struct IngestChannel {
    pub channel: ChannelName,
    pub key: ChannelSecret,
    pub stream_key: StreamKey,
}

pub struct IngestOptions {
    /// WebSocket URL of the signal server.
    pub server: String,
    /// Where to accept RTMP, e.g. `0.0.0.0:1935` (port 0: any; the first line printed says).
    pub rtmp_listen: String,
    pub channels: Vec<IngestChannel>,
    /// Upload budget of each channel's broadcaster; `None` is unlimited.
    pub upload_limit: Option<BytesPerSec>,
    pub pieces_channel: PiecesChannel,
    /// The most a publisher may send, sustained, in kbit/s; over it, it is dropped.
    pub max_publish_kbps: u64,
    /// Also write each channel's init segment and chunks into `DIR/CHANNEL/`.
    pub record_dir: Option<PathBuf>,
}

/// Serves publishers until `stop`, then stops every channel's broadcaster.
pub async fn run(
    options: IngestOptions,
    stop: impl Future<Output = ()>,
) -> Result<(), NativeError> {
    let listener = TcpListener::bind(&options.rtmp_listen)
        .await
        .map_err(|source| NativeError::Io {
            what: format!("cannot listen for RTMP on {}", options.rtmp_listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| NativeError::Io {
        what: "reading the RTMP listener's address".into(),
        source,
    })?;
    // Tests and scripts read where we listen from the first line.
    println!("ingest listening on rtmp://{addr}/{APP}");
    let (stopping_tx, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        options,
        live: Mutex::new(HashSet::new()),
        nodes: Mutex::new(Vec::new()),
        connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        stopping,
    });
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "refused a connection: {MAX_CONNECTIONS} publishers already connected");
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        connection(socket, peer, &shared).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!("accepting an RTMP connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    let _ = stopping_tx.send(true);
    let nodes = std::mem::take(
        &mut *shared
            .nodes
            .lock()
            .expect("no task panics holding the lock"),
    );
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(5), node).await;
    }
    Ok(())
}

struct Shared {
    options: IngestOptions,
    /// Channels with a publisher, or whose broadcaster is still serving its last chunks.
    live: Mutex<HashSet<ChannelName>>,
    nodes: Mutex<Vec<JoinHandle<()>>>,
    connections: Arc<tokio::sync::Semaphore>,
    stopping: watch::Receiver<bool>,
}

impl Shared {
    /// The channel `key` publishes, claimed until the guard drops.
    fn claim(self: &Arc<Self>, key: &StreamKey) -> Result<(usize, LiveGuard), PublishRefusal> {
        // Every key is compared, so the time taken does not tell which one nearly matched.
        let mut found = None;
        for (i, c) in self.options.channels.iter().enumerate() {
            if c.stream_key.matches(key) {
                found = Some(i);
            }
        }
        let index = found.ok_or(PublishRefusal::WrongKey)?;
        let channel = self.options.channels[index].channel.clone();
        let mut live = self.live.lock().expect("no task panics holding the lock");
        if !live.insert(channel.clone()) {
            return Err(PublishRefusal::AlreadyLive);
        }
        Ok((
            index,
            LiveGuard {
                shared: self.clone(),
                channel,
            },
        ))
    }
}

/// A channel's claim: released when its broadcaster ends.
struct LiveGuard {
    shared: Arc<Shared>,
    channel: ChannelName,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Ok(mut live) = self.shared.live.lock() {
            live.remove(&self.channel);
        }
    }
}

async fn connection(mut socket: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    match serve(&mut socket, peer, shared).await {
        Ok(Some(channel)) => tracing::info!(%peer, %channel, "publisher stopped; the channel ends"),
        Ok(None) => tracing::info!(%peer, "connection closed before publishing"),
        Err(why) => tracing::warn!(%peer, "publisher dropped: {why}"),
    }
}

/// One publisher's connection; returns the channel it published, if it did.
async fn serve(
    socket: &mut TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<Option<ChannelName>, String> {
    let mut session = RtmpSession::new(APP);
    let mut live: Option<Live> = None;
    let kbps = shared.options.max_publish_kbps as f64;
    let kib_per_sec = kbps * 1000.0 / 8.0 / 1024.0;
    let mut budget = TokenBucket::new(
        kib_per_sec,
        (kib_per_sec * BURST_SECS) as u32,
        Instant::now(),
    );
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let wait = if live.is_some() {
            SILENCE_TIMEOUT
        } else {
            SETUP_TIMEOUT
        };
        let n = match tokio::time::timeout(wait, socket.read(&mut buf)).await {
            Err(_) if live.is_some() => return Err(format!("sent nothing for {wait:?}")),
            Err(_) => return Err(format!("not publishing {wait:?} after connecting")),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        let now = Instant::now();
        for _ in 0..n.div_ceil(1024) {
            if !budget.try_take(now) {
                return Err(format!(
                    "sending faster than {} kbit/s (--max-publish-kbps)",
                    shared.options.max_publish_kbps
                ));
            }
        }
        let result = session.handle_input(&buf[..n]);
        let mut refused = None;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Publish(key) => match shared.claim(&key) {
                    Ok((index, guard)) => {
                        session.accept_publish();
                        let started =
                            Live::start(shared, index, guard).map_err(|e| e.to_string())?;
                        tracing::info!(%peer, channel = %started.channel, "publisher live");
                        live = Some(started);
                    }
                    Err(refusal) => {
                        session.refuse_publish(refusal);
                        refused = Some(refusal);
                    }
                },
                SessionEvent::Media {
                    kind,
                    timestamp,
                    payload,
                } => {
                    if let Some(live) = &mut live {
                        live.feed(kind, timestamp, &payload).await?;
                    }
                }
                SessionEvent::Unpublished => {
                    if let Some(live) = live.take() {
                        let channel = live.channel.clone();
                        live.finish().await?;
                        let _ = socket.write_all(&session.take_output()).await;
                        return Ok(Some(channel));
                    }
                }
            }
        }
        let reply = session.take_output();
        if !reply.is_empty() {
            socket
                .write_all(&reply)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
        }
        match refused {
            Some(PublishRefusal::WrongKey) => return Err("refused: wrong stream key".into()),
            Some(PublishRefusal::AlreadyLive) => {
                return Err("refused: the channel already has a publisher".into())
            }
            None => {}
        }
        result.map_err(|e| e.to_string())?;
    }
    match live {
        Some(live) => {
            let channel = live.channel.clone();
            live.finish().await?;
            Ok(Some(channel))
        }
        None => Ok(None),
    }
}

/// A live channel's input: remuxer, cutter and numbering, feeding its broadcaster node.
struct Live {
    channel: ChannelName,
    remuxer: Remuxer,
    cutter: Cutter,
    numbering: Numbering,
    feed: mpsc::Sender<Result<Produced, NativeError>>,
}

impl Live {
    fn start(shared: &Arc<Shared>, index: usize, guard: LiveGuard) -> Result<Live, NativeError> {
        let config = &shared.options.channels[index];
        let channel = config.channel.clone();
        let record_dir = shared
            .options
            .record_dir
            .as_ref()
            .map(|dir| dir.join(channel.as_str()));
        let numbering = Numbering::new(record_dir, None)?;
        let (feed, rx) = mpsc::channel(16);
        let options = NodeOptions {
            server: shared.options.server.clone(),
            channel: channel.clone(),
            role: Role::Broadcaster,
            upload_limit: shared.options.upload_limit,
            substreams: None,
            key: Some(config.key.clone()),
            relay_only: false,
            pieces_channel: shared.options.pieces_channel,
            edge: false,
            #[cfg(feature = "test-hooks")]
            hooks: Default::default(),
        };
        let mut stopping = shared.stopping.clone();
        let node = tokio::spawn(async move {
            // The channel stays claimed until its broadcaster is gone.
            let _guard = guard;
            let name = options.channel.clone();
            let stop = async move {
                let _ = stopping.wait_for(|stopping| *stopping).await;
            };
            let result = match WatchSink::new(None, None, None) {
                Ok(mut sink) => node::run(options, Some(rx), &mut sink, stop)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tracing::info!(channel = %name, "broadcaster stopped"),
                Err(e) => tracing::warn!(channel = %name, "broadcaster failed: {e}"),
            }
        });
        let mut nodes = shared
            .nodes
            .lock()
            .expect("no task panics holding the lock");
        nodes.retain(|n| !n.is_finished());
        nodes.push(node);
        Ok(Live {
            channel,
            remuxer: Remuxer::new(),
            cutter: Cutter::new(),
            numbering,
            feed,
        })
    }

    async fn feed(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), String> {
        self.remuxer
            .push(kind, timestamp, payload)
            .map_err(|e| e.to_string())?;
        self.forward().await
    }

    /// The publisher stopped: the last fragment goes out, then the feed ends.
    async fn finish(mut self) -> Result<(), String> {
        self.remuxer.finish();
        self.forward().await
    }

    async fn forward(&mut self) -> Result<(), String> {
        let bytes = self.remuxer.take_output();
        if bytes.is_empty() {
            return Ok(());
        }
        let segments = self.cutter.push(&bytes).map_err(|e| e.to_string())?;
        for segment in segments {
            let produced = self.numbering.produce(segment).map_err(|e| e.to_string())?;
            if self.feed.send(Ok(produced)).await.is_err() {
                return Err(format!(
                    "the broadcaster of {} stopped (see the log above)",
                    self.channel
                ));
            }
        }
        Ok(())
    }
}
