use std::path::PathBuf;

use clap::Parser;
use signal_server::{ServerConfig, ServerError};
use tokio::net::TcpListener;

/// StreamTorrent signal server: introduces the viewers of a live channel to each other,
/// relays their WebRTC set-up, and serves the watch page. It never carries video.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address and port to listen on (HTTP and WebSocket on the same port).
    #[arg(long, env = "STREAMTORRENT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Folder with the built web app (the output of `trunk build`).
    #[arg(long, env = "STREAMTORRENT_WEB_DIR", default_value = "web/dist")]
    web_dir: PathBuf,
    /// How many peers of its channel a joining peer is introduced to.
    #[arg(long, env = "STREAMTORRENT_INTRODUCE", default_value_t = 8)]
    introduce: usize,
}

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    // Logs go to stderr; stdout carries only the address line that scripts read.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: args.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(%local, web_dir = %args.web_dir.display(), "listening");
    // Printed on stdout so scripts and tests can learn the port when listening on :0.
    println!("listening on http://{local}");
    let config = ServerConfig {
        web_dir: args.web_dir,
        introduce: args.introduce,
    };
    signal_server::serve(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
