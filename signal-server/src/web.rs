//! HTTP routes beside the WebSocket: the app page and the channel list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

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

pub(crate) async fn channels(State(state): State<AppState>) -> impl IntoResponse {
    let live = state
        .rooms
        .lock()
        .expect("rooms lock is never held across a panic")
        .live_channels();
    Json(live)
}
