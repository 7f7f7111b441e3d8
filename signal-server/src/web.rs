//! HTTP routes beside the WebSocket: the app page, the channel list, metrics and health.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
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
/// With servers sharing channels, every server's live channels (as Redis lists them;
/// this server's own while Redis does not answer).
pub(crate) async fn channels(State(state): State<AppState>) -> impl IntoResponse {
    let shared = match &state.cluster {
        Some(cluster) => cluster.live_channels().await,
        None => None,
    };
    if let Some(live) = shared {
        return ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], Json(live));
    }
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

/// How long browsers and caches may keep what we serve. The build names the wasm, its
/// JS glue and the CSS by a hash of their content (`peer-wasm-0123456789abcdef.js`):
/// those never change under their name, so they are kept for a year. Everything else —
/// the pages, `streamtorrent.js` (the stable entry point other sites import, which names
/// the hashed files), the API — is revalidated every time, so a new release is picked up
/// at once and no page runs wasm older than the server.
pub(crate) async fn cache_control(request: Request, next: Next) -> Response {
    let immutable = is_content_hashed(request.uri().path());
    let mut response = next.run(request).await;
    let policy = if immutable && response.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static(policy));
    response
}

/// `name-<16 hex digits>[_bg].ext`, as Trunk names the files it hashes.
fn is_content_hashed(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or_default();
    let Some((stem, _ext)) = file.rsplit_once('.') else {
        return false;
    };
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(name, hash)| {
        !name.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (sizes, experience) = {
        let rooms = state.rooms();
        (rooms.channel_sizes(), rooms.channel_experience())
    };
    let mut text = state.metrics.render(&sizes, &experience);
    if let Some(cluster) = &state.cluster {
        cluster.render_metrics(&mut text);
        // The whole picture, from Redis: the same figures `/api/channels` gives.
        if let Some(live) = cluster.live_channels().await {
            render_shared_viewers(&mut text, &live);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Each live channel's viewers on every server sharing it, and their sum.
fn render_shared_viewers(out: &mut String, live: &[protocol::ChannelSummary]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP streamtorrent_cluster_channel_viewers Viewers of each live channel on every server sharing it, as Redis lists them.\n# TYPE streamtorrent_cluster_channel_viewers gauge"
    );
    for channel in live {
        let _ = writeln!(
            out,
            "streamtorrent_cluster_channel_viewers{{channel=\"{}\"}} {}",
            channel.name, channel.viewers
        );
    }
    let total: usize = live.iter().map(|c| c.viewers).sum();
    let _ = writeln!(
        out,
        "# HELP streamtorrent_cluster_viewers Viewers of live channels on every server sharing them.\n# TYPE streamtorrent_cluster_viewers gauge\nstreamtorrent_cluster_viewers {total}"
    );
}

/// Browsers ask for `/favicon.ico` on pages that name no icon (the JSON API, errors).
pub(crate) async fn favicon() -> axum::response::Redirect {
    axum::response::Redirect::permanent("/favicon.svg")
}

/// `ok`, or with `--redis` a line saying whether Redis answers. Always 200: a server
/// whose Redis is away still serves its own peers, and every server shares that Redis,
/// so a load balancer gains nothing by taking it out.
pub(crate) async fn healthz(State(state): State<AppState>) -> String {
    match &state.cluster {
        Some(cluster) => format!("{}\n", cluster.health().1),
        None => "ok\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::is_content_hashed;

    #[test]
    fn only_content_hashed_names_are_immutable() {
        for hashed in [
            "/peer-wasm-0123456789abcdef.js",
            "/peer-wasm-0123456789abcdef_bg.wasm",
            "/style-fedcba9876543210.css",
        ] {
            assert!(is_content_hashed(hashed), "{hashed}");
        }
        for plain in [
            "/",
            "/streamtorrent.js",
            "/peer-wasm.js",
            "/watch/news",
            "/x-0123.js",
            "/-0123456789abcdef.js",
            "/peer-wasm-0123456789abcdeg.js",
        ] {
            assert!(!is_content_hashed(plain), "{plain}");
        }
    }
}
