//! HTTP routes beside the WebSocket: the app page, the channel list, metrics and health.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeader;

use crate::AppState;

/// `/`, `/watch/<channel>` and `/embed/<channel>` all load the same single-page app, which
/// reads the path to decide what to show.
pub(crate) async fn app_page(State(state): State<AppState>) -> Response {
    let path = state.config.web_dir.join("index.html");
    match tokio::fs::read_to_string(&path).await {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "web app not found at {} ({e}); build it with `trunk build` or pass --web-dir",
                path.display()
            ),
        )
            .into_response(),
    }
}

/// Public: other sites' pages may read it (the JS API, docs/embed.md).
pub(crate) async fn channels(State(state): State<AppState>) -> impl IntoResponse {
    let mut live = state.rooms().live_channels();
    let owners = state.owners();
    for channel in &mut live {
        channel.key = owners.key(&channel.name);
    }
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], Json(live))
}

/// `web/dist`: the app, and `streamtorrent.js` with the wasm it loads, which pages of any
/// origin may import (a module script from another origin needs CORS). Nothing here
/// depends on cookies, so `*` exposes nothing private.
pub(crate) fn static_files(web_dir: &std::path::Path) -> SetResponseHeader<ServeDir, HeaderValue> {
    SetResponseHeader::overriding(
        ServeDir::new(web_dir),
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    )
}

/// Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let sizes = state.rooms().channel_sizes();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&sizes),
    )
}

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}
