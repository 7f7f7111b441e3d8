//! The signal server: introduces the peers of a channel to each other, relays their WebRTC
//! set-up messages, lists live channels and serves the web app. It never carries video.

mod connection;
mod error;
mod rooms;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

pub use error::ServerError;
pub use rooms::{JoinError, Rooms};

/// Settings an operator chooses; see `signal-server --help`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Folder holding the built web app (`index.html` and its assets).
    pub web_dir: PathBuf,
    /// Peers introduced to a joining peer; a handful, never the whole swarm.
    pub introduce: usize,
}

/// Shared by every connection: one plain struct behind one lock.
#[derive(Clone)]
pub(crate) struct AppState {
    pub rooms: Arc<Mutex<Rooms>>,
    pub config: Arc<ServerConfig>,
}

pub fn router(config: ServerConfig) -> Router {
    let state = AppState {
        rooms: Arc::new(Mutex::new(Rooms::new(config.introduce))),
        config: Arc::new(config.clone()),
    };
    Router::new()
        .route("/ws", get(connection::upgrade))
        .route("/api/channels", get(web::channels))
        .route("/", get(web::app_page))
        .route("/watch/{channel}", get(web::app_page))
        .route("/embed/{channel}", get(web::app_page))
        .fallback_service(tower_http::services::ServeDir::new(&config.web_dir))
        .with_state(state)
}

/// Serves until the future `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = router(config).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)
}
