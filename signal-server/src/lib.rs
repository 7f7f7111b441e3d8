//! The signal server: introduces the peers of a channel to each other, relays their WebRTC
//! set-up messages, lists live channels and serves the web app. It never carries video.

mod claims;
mod cluster;
mod config;
mod connection;
mod csp;
mod error;
mod ice;
mod liveness;
mod mailbox;
mod metrics;
mod owners;
mod rooms;
mod session;
mod viewer_reports;
mod web;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use owners::Owners;

pub use client_limits::IpRefusal;
pub use cluster::ServerId;
pub use config::ServerConfig;
pub use error::ServerError;
pub use ice::{ice_servers, turn_credentials};
pub use mailbox::{Mailbox, Outbox};
pub use metrics::{Metrics, Rejection};
pub use rooms::{JoinError, Limits, Rooms};
pub use viewer_reports::{Experience, ReportPolicy};

/// How long shutdown waits for clients to receive their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Shared by every connection: the rooms behind one lock, lock-free counters, settings.
#[derive(Clone)]
pub(crate) struct AppState {
    rooms: Arc<Mutex<Rooms>>,
    owners: Arc<Mutex<Owners>>,
    /// Present with `--redis`: the other servers sharing channels.
    pub cluster: Option<Arc<cluster::Cluster>>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServerConfig>,
    /// Every open connection: pinged from one task, and each closed with 1001 when the
    /// server shuts down.
    pub connections: Arc<liveness::Connections>,
}

impl AppState {
    pub fn rooms(&self) -> MutexGuard<'_, Rooms> {
        // Rooms' methods never panic while holding the lock, so poisoning cannot happen.
        self.rooms.lock().expect("rooms lock is never poisoned")
    }

    pub fn owners(&self) -> MutexGuard<'_, Owners> {
        // Owners' methods never panic while holding the lock.
        self.owners.lock().expect("owners lock is never poisoned")
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(connection::upgrade))
        .route("/api/channels", get(web::channels))
        .route("/metrics", get(web::metrics))
        .route("/healthz", get(web::healthz))
        .route("/", get(web::app_page))
        .route("/watch/{channel}", get(web::app_page))
        .route("/embed/{channel}", get(web::app_page))
        .route("/favicon.ico", get(web::favicon))
        .fallback_service(web::static_files(&state.config.web_dir))
        .layer(axum::middleware::from_fn_with_state(
            csp::ConnectTo(std::sync::Arc::new(
                state
                    .config
                    .edges
                    .iter()
                    .map(|e| e.origin().to_owned())
                    .collect(),
            )),
            csp::content_security_policy,
        ))
        .layer(axum::middleware::from_fn(web::cache_control))
        .with_state(state)
}

/// Serves until `shutdown` completes; then every client gets a 1001 close before return.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let limits = Limits {
        introduce: config.introduce,
        max_channels: config.max_channels,
        max_peers_per_channel: config.max_peers_per_channel,
        max_connections_per_ip: config.max_connections_per_ip,
        opens_per_sec_per_ip: config.opens_per_sec_per_ip,
    };
    let owners = Owners::load(config.owners_file.as_deref()).map_err(ServerError::Config)?;
    let rooms = Arc::new(Mutex::new(Rooms::new(limits)));
    let owners = Arc::new(Mutex::new(owners));
    let cluster = match &config.redis {
        Some(url) => Some(
            cluster::Cluster::start(url, rooms.clone(), owners.clone())
                .await
                .map_err(ServerError::Config)?,
        ),
        None => None,
    };
    let state = AppState {
        rooms,
        owners,
        cluster,
        metrics: Arc::new(Metrics::default()),
        connections: liveness::start(config.ping_interval_secs),
        config: Arc::new(config),
    };
    let metrics = state.metrics.clone();
    let connections = state.connections.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: closing every connection");
        connections.shut_down();
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while metrics.connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Signalling is small request/response messages: Nagle would hold a second reply
    // (e.g. `introduce` after `welcome`) for the client's delayed ACK, ~40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .await
        .map_err(ServerError::Serve)
}
