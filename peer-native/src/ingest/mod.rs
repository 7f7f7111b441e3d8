//! `streamtorrent ingest`: live input for one or more channels. A publisher reaches a
//! channel with its stream key: over RTMP (OBS, ffmpeg, a hardware encoder) at
//! `rtmp://HOST:PORT/live/KEY` (`rtmp.rs`), or over WHIP (OBS 30+, a browser on the studio
//! page) with `Authorization: Bearer KEY` (`whip.rs`). Its media is remuxed into fragmented
//! MP4 and fed to a broadcaster node for the channel, the same path `broadcast` takes. The node lives while
//! the publisher does (and serves its last chunks a moment longer).
//!
//! The protocol work is in the `ingest` crate, without I/O; this module does the I/O and
//! the bookkeeping of which channel is live.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fmp4::Cutter;
use ingest::{PublishRefusal, StreamKey};
use protocol::{ChannelName, PiecesChannel, Role};
use swarm::BytesPerSec;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broadcast::Numbering;
use crate::identity::ChannelSecret;
use crate::node::{self, NodeOptions, Produced};
use crate::watch::WatchSink;
use crate::NativeError;

pub mod config;
mod rtmp;
mod whip;

/// The RTMP application publishers use: `rtmp://HOST:PORT/live/KEY`.
pub const APP: &str = "live";
/// A live publisher silent this long is gone (an encoder sends many messages a second;
/// WebRTC many packets).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishers connected at once, live or not: a bound on what a crowd of sockets costs.
const MAX_CONNECTIONS: usize = 64;

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
    /// Where to serve WHIP and the studio page over HTTP, if at all (port 0: any; the second
    /// line printed says).
    pub whip_listen: Option<String>,
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
    let whip_listener = match &options.whip_listen {
        Some(listen) => {
            Some(
                TcpListener::bind(listen)
                    .await
                    .map_err(|source| NativeError::Io {
                        what: format!("cannot listen for WHIP on {listen}"),
                        source,
                    })?,
            )
        }
        None => None,
    };
    // Tests and scripts read where we listen from the first lines. Whoever reads them may
    // stop reading (close the pipe): that must not stop the ingest.
    let mut lines = vec![format!("ingest listening on rtmp://{addr}/{APP}")];
    if let Some(listener) = &whip_listener {
        if let Ok(addr) = listener.local_addr() {
            lines.push(format!("ingest WHIP on http://{addr}{}", whip::WHIP_PATH));
            lines.push(format!("ingest studio on http://{addr}/live"));
        }
    }
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }
    let (stopping_tx, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        options,
        live: Mutex::new(HashSet::new()),
        nodes: Mutex::new(Vec::new()),
        connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        stopping,
    });
    if let Some(listener) = whip_listener {
        let app = whip::router(shared.clone());
        let mut stopping = shared.stopping.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            });
            if let Err(e) = served.await {
                tracing::warn!("the WHIP server stopped: {e}");
            }
        });
    }
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
                        rtmp::connection(socket, peer, &shared).await;
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

pub(crate) struct Shared {
    pub(crate) options: IngestOptions,
    /// Channels with a publisher, or whose broadcaster is still serving its last chunks.
    live: Mutex<HashSet<ChannelName>>,
    nodes: Mutex<Vec<JoinHandle<()>>>,
    connections: Arc<tokio::sync::Semaphore>,
    pub(crate) stopping: watch::Receiver<bool>,
}

impl Shared {
    /// The channel `key` publishes, claimed until the guard drops.
    /// Claims the channel `key` publishes and starts its broadcaster.
    pub(crate) fn go_live(
        self: &Arc<Self>,
        key: &StreamKey,
    ) -> Result<Result<Live, String>, PublishRefusal> {
        let (index, guard) = self.claim(key)?;
        Ok(Live::start(self, index, guard).map_err(|e| e.to_string()))
    }

    /// Whether `key` is some channel's stream key.
    pub(crate) fn knows(&self, key: &StreamKey) -> bool {
        self.channel_of(key).is_some()
    }

    fn channel_of(&self, key: &StreamKey) -> Option<usize> {
        // Every key is compared, so the time taken does not tell which one nearly matched.
        let mut found = None;
        for (i, c) in self.options.channels.iter().enumerate() {
            if c.stream_key.matches(key) {
                found = Some(i);
            }
        }
        found
    }

    fn claim(self: &Arc<Self>, key: &StreamKey) -> Result<(usize, LiveGuard), PublishRefusal> {
        let index = self.channel_of(key).ok_or(PublishRefusal::WrongKey)?;
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

/// A live channel's input: fragmented MP4 (from whichever remuxer) through the cutter and
/// numbering, into its broadcaster node.
pub(crate) struct Live {
    pub channel: ChannelName,
    cutter: Cutter,
    numbering: Numbering,
    feed: mpsc::Sender<Result<Produced, NativeError>>,
}

impl Live {
    /// Starts the broadcaster of the channel claimed by `guard` (configured at `index`).
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
            cutter: Cutter::new(),
            numbering,
            feed,
        })
    }

    /// Fragmented MP4 a remuxer wrote: cut, numbered and handed to the broadcaster.
    pub async fn send_mp4(&mut self, bytes: Vec<u8>) -> Result<(), String> {
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
