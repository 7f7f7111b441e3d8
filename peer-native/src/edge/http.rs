//! The edge's HTTP interface, version 1: everything under `/edge/v1/` (`EDGE_PATH`; the
//! URLs are built by `protocol::EdgeUrl`):
//!
//! - `GET /edge/v1/CHANNEL`: the live index (JSON: the broadcast session, the oldest and
//!   newest chunk held, the keyframe chunks); revalidated every second.
//! - `GET /edge/v1/CHANNEL/SESSION/init`: the init segment as the peer message `Init`
//!   (MIME type, data, the channel key's signature).
//! - `GET /edge/v1/CHANNEL/SESSION/SEQ/manifest`: the chunk's signed manifest (the peer
//!   message `Manifest`: a SHA-256 per piece).
//! - `GET /edge/v1/CHANNEL/SESSION/SEQ`: the chunk's bytes.
//!
//! A viewer checks what it fetches exactly as what a neighbour sends, so the edge (or a
//! cache in front of it) needs no trust. Content never changes for its URL: it is cached
//! for good (`immutable`). A chunk not cut yet is waited for a few seconds; then 503 with
//! `Retry-After`. 404: an unknown channel or a chunk too far ahead; 410: evicted, missed
//! or of an earlier broadcast; 429: the client asks too much or too fast.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use client_limits::{IpLimits, IpRefusal};
use protocol::{ChannelName, ChunkSeq, SessionId, EDGE_PATH};
use serde_json::json;
use tokio::time::Instant;

use super::channels::{lock, Channels, Followed, NotFollowed};
use super::shelf::{Lookup, Shelf};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A refusal, said in plain text; no cache keeps it unless `cache_control` says so.
struct Refusal {
    status: StatusCode,
    reason: String,
    retry_after_secs: Option<u64>,
    cache_control: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            retry_after_secs: None,
            cache_control: "no-store",
        }
    }

    fn retry_after(mut self, secs: u64) -> Refusal {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.reason)).into_response();
        set(&mut response, header::CACHE_CONTROL, self.cache_control);
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// What the handlers share.
pub struct Edge {
    pub channels: Arc<Channels>,
    /// Without a fixed list: which channels may be followed on request.
    pub live: Option<super::live::LiveChannels>,
    /// How long a request for a chunk not cut yet waits.
    pub wait: Duration,
    pub clients: Mutex<IpLimits>,
    /// Test only: flip a bit in every chunk served (a tampering edge or cache).
    #[cfg(feature = "test-hooks")]
    pub tamper: bool,
}

pub fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route(&format!("{EDGE_PATH}/{{channel}}"), get(index))
        .route(
            &format!("{EDGE_PATH}/{{channel}}/{{session}}/init"),
            get(init),
        )
        .route(
            &format!("{EDGE_PATH}/{{channel}}/{{session}}/{{seq}}/manifest"),
            get(manifest),
        )
        .route(
            &format!("{EDGE_PATH}/{{channel}}/{{session}}/{{seq}}"),
            get(chunk),
        )
        .route("/healthz", get(healthz))
        .fallback(|| async { Refusal::new(StatusCode::NOT_FOUND, "no such edge resource") })
        .layer(middleware::from_fn_with_state(edge.clone(), per_client))
        .layer(middleware::from_fn(cors))
        .with_state(edge)
}

async fn index(State(edge): State<Arc<Edge>>, Path(channel): Path<String>) -> Response {
    let channel = match follow(&edge, &channel).await {
        Ok(channel) => channel,
        Err(refusal) => return refusal.into_response(),
    };
    let index = channel.shelf().index(std::time::Instant::now());
    match index {
        Some(index) => {
            channel.served();
            let mut response = Json(index).into_response();
            set(&mut response, header::CACHE_CONTROL, "public, max-age=1");
            response
        }
        None => not_yet("the edge holds no chunk of this channel yet").into_response(),
    }
}

async fn init(
    State(edge): State<Arc<Edge>>,
    Path((channel, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (channel, session) = match parse(&edge, &channel, &session, None).await {
        Ok((channel, session, _)) => (channel, session),
        Err(refusal) => return refusal.into_response(),
    };
    let found = channel.look(edge.wait, |s: &Shelf| s.init(session)).await;
    content(found, format!("\"{session}-init\""), &headers)
}

async fn manifest(
    State(edge): State<Arc<Edge>>,
    Path((channel, session, seq)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (channel, session, seq) = match parse(&edge, &channel, &session, Some(&seq)).await {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let found = channel
        .look(edge.wait, |s: &Shelf| s.manifest(session, seq))
        .await;
    content(found, format!("\"{session}-{}-m\"", seq.0), &headers)
}

async fn chunk(
    State(edge): State<Arc<Edge>>,
    Path((channel, session, seq)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (channel, session, seq) = match parse(&edge, &channel, &session, Some(&seq)).await {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    let found = channel
        .look(edge.wait, |s: &Shelf| s.chunk(session, seq))
        .await;
    #[cfg(feature = "test-hooks")]
    let found = match found {
        Lookup::Here(bytes) if edge.tamper && !bytes.is_empty() => {
            let mut altered = bytes.to_vec();
            altered[bytes.len() / 2] ^= 1;
            Lookup::Here(Bytes::from(altered))
        }
        other => other,
    };
    content(found, format!("\"{session}-{}\"", seq.0), &headers)
}

async fn healthz(State(edge): State<Arc<Edge>>) -> Response {
    let (channels, bytes) = edge.channels.load();
    Json(json!({ "ok": true, "channels": channels, "chunk_bytes": bytes })).into_response()
}

/// The path's parts, parsed; or the answer saying which is wrong.
async fn parse(
    edge: &Arc<Edge>,
    channel: &str,
    session: &str,
    seq: Option<&str>,
) -> Result<(Arc<Followed>, SessionId, ChunkSeq), Refusal> {
    let session: SessionId = session.parse().map_err(|e: protocol::ProtocolError| {
        Refusal::new(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    let seq = match seq {
        Some(seq) => seq.parse::<u64>().map(ChunkSeq).map_err(|_| {
            let reason = format!("{seq:?} is not a chunk number");
            Refusal::new(StatusCode::BAD_REQUEST, reason)
        })?,
        None => ChunkSeq(0),
    };
    Ok((follow(edge, channel).await?, session, seq))
}

async fn follow(edge: &Arc<Edge>, channel: &str) -> Result<Arc<Followed>, Refusal> {
    let name: ChannelName = channel
        .parse()
        .map_err(|e: protocol::ProtocolError| Refusal::new(StatusCode::NOT_FOUND, e.to_string()))?;
    if let (Some(live), false) = (&edge.live, edge.channels.follows(&name)) {
        match live.is_live(&name).await {
            Ok(true) => {}
            Ok(false) => {
                let reason = "the signal server lists no such channel on the air";
                return Err(Refusal::new(StatusCode::NOT_FOUND, reason));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the live channels");
                let reason = "cannot reach the signal server to look the channel up";
                return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason).retry_after(5));
            }
        }
    }
    edge.channels.follow(&name).map_err(|why| match why {
        NotFollowed::NotListed => Refusal::new(
            StatusCode::NOT_FOUND,
            "this edge does not serve that channel",
        ),
        NotFollowed::Full { max } => {
            let reason = format!("this edge already follows its limit of {max} channels");
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason).retry_after(60)
        }
    })
}

/// The answer for a lookup of immutable content tagged `etag`.
fn content(found: Lookup, etag: String, request: &HeaderMap) -> Response {
    match found {
        Lookup::Here(bytes) => immutable(bytes, etag, request),
        Lookup::NotYet => not_yet("not here yet: ask again").into_response(),
        Lookup::Gone => Refusal {
            // For good: a cache may remember it.
            cache_control: "public, max-age=3600",
            ..Refusal::new(
                StatusCode::GONE,
                "no longer here: evicted, or of an earlier broadcast (see the index)",
            )
        }
        .into_response(),
        Lookup::Missed => Refusal::new(
            StatusCode::GONE,
            "this edge missed it: its own swarm skipped the chunk",
        )
        .into_response(),
        Lookup::Unknown => Refusal::new(
            StatusCode::NOT_FOUND,
            "not here: not cut and not due soon, or of a broadcast this edge has not seen",
        )
        .into_response(),
    }
}

fn immutable(bytes: Bytes, etag: String, request: &HeaderMap) -> Response {
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let range = request
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| byte_range(v, bytes.len()));
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    let mut response = match range {
        _ if unchanged => StatusCode::NOT_MODIFIED.into_response(),
        None => (octets, bytes.clone()).into_response(),
        // What a viewer missing part of a chunk asks for.
        Some(Ok((first, last))) => {
            let content_range = format!("bytes {first}-{last}/{}", bytes.len());
            let mut response = (
                StatusCode::PARTIAL_CONTENT,
                octets,
                bytes.slice(first..=last),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&content_range) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            response
        }
        Some(Err(())) => {
            let mut response = Refusal::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the range starts past the end",
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", bytes.len())) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    set(&mut response, header::ACCEPT_RANGES, "bytes");
    set(&mut response, header::CACHE_CONTROL, IMMUTABLE);
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A `Range` header's single byte range over `len` bytes, first and last included:
/// `None` when there is none to honour (absent, several, or not bytes: the whole is
/// sent), `Err` when it starts past the end.
fn byte_range(header: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last N bytes.
        let n: usize = last.parse().ok()?;
        return match n.min(len) {
            0 => Some(Err(())),
            n => Some(Ok((len - n, len - 1))),
        };
    }
    let first: usize = first.parse().ok()?;
    let last = match last {
        "" => len.saturating_sub(1),
        last => last.parse::<usize>().ok()?.min(len.saturating_sub(1)),
    };
    if first >= len {
        return Some(Err(()));
    }
    (first <= last).then_some(Ok((first, last)))
}

fn not_yet(reason: &str) -> Refusal {
    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason).retry_after(1)
}

fn set(response: &mut Response, name: header::HeaderName, value: &'static str) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

/// Per client address: requests in flight (waits included) and how fast they come.
async fn per_client(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    let admitted = lock(&edge.clients).open(ip, Instant::now());
    match admitted {
        Ok(()) => {
            let done = InFlight {
                edge: edge.clone(),
                ip,
            };
            let (parts, body) = next.run(request).await.into_parts();
            // Counted until its body is sent or the client goes: a client that does not
            // read holds one of its in-flight slots (and the chunk) as long as that.
            let body = Body::new(Counted {
                inner: body,
                _done: done,
            });
            Response::from_parts(parts, body)
        }
        Err(IpRefusal::TooMany) => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests in flight from this address",
        )
        .retry_after(1)
        .into_response(),
        Err(IpRefusal::TooFast { retry_after }) => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "requests from this address come too fast",
        )
        .retry_after(retry_after.as_secs_f64().ceil().max(1.0) as u64)
        .into_response(),
    }
}

/// A response body that keeps its request counted in flight until it is dropped; sizes
/// pass through, so `Content-Length` stays.
struct Counted {
    inner: Body,
    _done: InFlight,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request out when its answer was sent, or when the client went away first.
struct InFlight {
    edge: Arc<Edge>,
    ip: IpAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.edge.clients).close(self.ip);
    }
}

/// Any page may fetch from the edge: everything it serves is public and signed.
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        set(
            &mut response,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET, HEAD, OPTIONS",
        );
        set(&mut response, header::ACCESS_CONTROL_ALLOW_HEADERS, "Range");
        set(&mut response, header::ACCESS_CONTROL_MAX_AGE, "86400");
        response
    } else {
        next.run(request).await
    };
    set(&mut response, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    // A page's player reads when to ask again.
    set(
        &mut response,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        "Retry-After, ETag, Content-Range",
    );
    response
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn a_single_byte_range_is_honoured_and_anything_else_gets_the_whole() {
        assert_eq!(byte_range("bytes=10-19", 100), Some(Ok((10, 19))));
        assert_eq!(byte_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(byte_range("bytes=90-500", 100), Some(Ok((90, 99))));
        assert_eq!(byte_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(byte_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(byte_range("bytes=0-1,5-6", 100), None);
        assert_eq!(byte_range("bytes=20-10", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
        assert_eq!(byte_range("bytes=x-1", 100), None);
    }
}
