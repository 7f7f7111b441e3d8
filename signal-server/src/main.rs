use clap::Parser;
use signal_server::{ServerConfig, ServerError};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), ServerError> {
    // Logs go to stderr; stdout carries only the address line that scripts read.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = ServerConfig::parse();
    config.validate().map_err(ServerError::Config)?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(%local, web_dir = %config.web_dir.display(), "listening");
    // Printed on stdout so scripts and tests can learn the port when listening on :0.
    println!("listening on http://{local}");
    signal_server::serve(listener, config, stop_signal()).await
}

/// Ctrl-C or SIGTERM (systemd, `kill`).
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler succeeds on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
