//! `streamtorrent edge`: a headless viewer of the channels it is asked for that serves
//! their signed content over HTTP (`http.rs`), for viewers who cannot reach enough peers
//! in time, and for CDNs and caches in front of it. It verifies everything as any viewer
//! does, and so do the viewers it serves: it is trusted with nothing.

mod channels;
mod http;
mod live;
mod shelf;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_limits::IpLimits;
use protocol::ChannelName;

pub use channels::{Joining, IDLE_AFTER};
pub use shelf::{KEEP_BYTES, KEEP_CHUNKS};

use crate::NativeError;

pub struct EdgeOptions {
    pub joining: Joining,
    pub listen: String,
    /// Only these channels, followed from the start; empty: any asked for.
    pub channels: Vec<ChannelName>,
    /// The most channels followed at once on request.
    pub max_channels: usize,
    /// How long a request for a chunk not cut yet waits before 503.
    pub wait: Duration,
    /// Requests one address may have in flight, and its burst.
    pub max_requests_per_ip: usize,
    /// Requests one address may make per second, sustained.
    pub requests_per_sec_per_ip: f64,
    /// Test only: serve every chunk with a bit flipped.
    #[cfg(feature = "test-hooks")]
    pub tamper: bool,
}

/// Serves until `stop` completes.
pub async fn run(
    options: EdgeOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NativeError> {
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|source| NativeError::Io {
            what: format!("cannot listen on {}", options.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| NativeError::Io {
        what: "the listening address".into(),
        source,
    })?;
    // Followed on request: only channels the signal server lists as live.
    let live = options
        .channels
        .is_empty()
        .then(|| live::LiveChannels::new(&options.joining.server))
        .transpose()?;
    let channels = channels::Channels::new(options.joining, options.channels, options.max_channels);
    let edge = Arc::new(http::Edge {
        channels: channels.clone(),
        live,
        wait: options.wait,
        clients: Mutex::new(IpLimits::new(
            options.max_requests_per_ip,
            options.requests_per_sec_per_ip,
        )),
        #[cfg(feature = "test-hooks")]
        tamper: options.tamper,
    });
    // Scripts and tests read the address from the first line.
    println!("edge listening on http://{addr}");
    tracing::info!(%addr, "edge listening");
    let sweeper = tokio::spawn(async move {
        let mut every = tokio::time::interval(IDLE_AFTER / 10);
        loop {
            every.tick().await;
            channels.let_go_of_idle();
        }
    });
    let app = http::router(edge).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|source| NativeError::Io {
            what: "serving HTTP".into(),
            source,
        });
    sweeper.abort();
    served
}
