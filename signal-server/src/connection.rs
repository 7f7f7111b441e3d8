//! One WebSocket connection: checks at the handshake, then parse each client message, act
//! on the rooms, forward what the rooms send this peer, and drop the client when it breaks
//! a limit.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use protocol::{ClientMessage, ErrorCode};
use tokio::time::Instant;

use crate::claims::CHALLENGE_TIMEOUT;
use crate::mailbox::{Mailbox, Outbox, Outgoing};
use crate::metrics::Rejection;
use crate::session::{handle, leave, reply_error, until, Session};
use crate::AppState;
use client_limits::IpRefusal;
use client_limits::TokenBucket;

/// Messages waiting for one client; a client that lets this many pile up is not reading.
const QUEUE_LEN: usize = 64;
/// Malformed messages tolerated before the connection is closed.
const MAX_STRIKES: u32 = 3;
/// A write that does not complete in this time means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the client's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
pub(crate) const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let allowed = &state.config.allowed_origins;
    if let Some(origin) = headers.get("origin") {
        let origin = origin.to_str().unwrap_or_default();
        if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
            state.metrics.reject(Rejection::Origin);
            tracing::info!(%addr, origin, "refused a WebSocket from a page of another origin");
            return (
                StatusCode::FORBIDDEN,
                format!("origin {origin} may not use this server"),
            )
                .into_response();
        }
    }
    let addr = if state.config.trust_proxy {
        forwarded_for(&headers).map_or(addr, |ip| SocketAddr::new(ip, addr.port()))
    } else {
        addr
    };
    if let Err(refusal) = state.rooms().open_connection(addr.ip(), Instant::now()) {
        state.metrics.reject(Rejection::PerIpLimit);
        return match refusal {
            IpRefusal::TooMany => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "at most {} connections per IP address",
                    state.config.max_connections_per_ip
                ),
            )
                .into_response(),
            IpRefusal::TooFast { retry_after } => {
                // Whole seconds, rounded up: the header has no finer unit.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, secs.max(1).to_string())],
                    format!(
                        "connections opened too fast: at most {} a second per IP address \
                         after a burst of {}; try again in {secs} s",
                        state.config.opens_per_sec_per_ip, state.config.max_connections_per_ip
                    ),
                )
                    .into_response()
            }
        };
    }
    // Releases the IP's slot however the connection ends, even if the upgrade fails.
    let slot = IpSlot {
        state: state.clone(),
        addr,
    };
    let max = state.config.max_message_bytes;
    // tungstenite's defaults (128 KiB read buffer, 64 MiB messages) suit a few connections,
    // not thousands of small signalling ones. The read buffer is allocated for every
    // connection, idle or not, and most messages are small: a bigger one (an SDP) takes a
    // few more reads of the kernel's buffer, and the buffer grows for it.
    // tungstenite's own limit sits a little above ours so an oversized message reaches us
    // and gets a precise 1009 close.
    ws.read_buffer_size(256)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(max + 1024)
        .max_frame_size(max + 1024)
        // The connection runs in a task of its own, and axum's upgrade task ends: kept
        // waiting on the connection, that task would keep its own state (~600 bytes)
        // beside it for the connection's whole life.
        .on_upgrade(move |socket| {
            tokio::spawn(run(socket, slot));
            std::future::ready(())
        })
}

/// The client address a reverse proxy appended last to `X-Forwarded-For`: the one address
/// in the header that our own proxy vouches for.
fn forwarded_for(headers: &HeaderMap) -> Option<std::net::IpAddr> {
    let value = headers.get("x-forwarded-for")?.to_str().ok()?;
    value.rsplit(',').next()?.trim().parse().ok()
}

struct IpSlot {
    state: AppState,
    addr: SocketAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.state.rooms().close_connection(self.addr.ip());
    }
}

/// Why the server closes a connection.
pub(crate) struct Close {
    pub code: u16,
    pub reason: String,
}

/// One connection from its upgrade to its close; its slot is given back when it ends.
///
/// Tens of thousands of these wait idle at once, and each one's future is the bulk of what
/// an idle connection costs. So what only runs now and then (a message being handled, a
/// write, the close) runs in a future boxed while it runs, rather than inline in this one
/// whose size every idle connection pays; the socket is not split, which would put it in
/// a shared allocation of its own.
#[allow(clippy::manual_async_fn)] // On purpose: see the comment inside.
fn run(mut socket: WebSocket, slot: IpSlot) -> impl Future<Output = ()> + Send {
    // A block, not an `async fn`: an async fn keeps its arguments twice in its future
    // (rust-lang/rust#62958), here the socket's 368 bytes.
    async move {
        let (state, addr) = (&slot.state, slot.addr);
        state.metrics.connections.fetch_add(1, Ordering::Relaxed);
        let (mailbox, outbox) = Mailbox::new(QUEUE_LEN);
        // Pings, the idle check and the shutdown close come through the mailbox.
        let _registered = state.connections.register(&mailbox);
        let mut session = Session::default();
        let mut strikes = 0;
        let config = &state.config;
        let mut bucket = TokenBucket::new(config.rate_per_sec, config.rate_burst, Instant::now());
        let mut refused_in_a_row = 0;
        let idle_timeout = Duration::from_secs(config.idle_timeout_secs);
        let mut last_heard = Instant::now();
        let close: Option<Close> = loop {
            let claim_deadline = session.claim.as_ref().map(|c| c.deadline);
            tokio::select! {
                _ = until(claim_deadline) => {
                    state.metrics.reject(Rejection::ChallengeTimeout);
                    reply_error(&mailbox, ErrorCode::NotChallenged, format!("the challenge was not answered within {} s", CHALLENGE_TIMEOUT.as_secs()));
                    break Some(Close { code: CLOSE_POLICY, reason: "challenge not answered".into() });
                }
                outgoing = outbox.next() => {
                    let message = match outgoing {
                        Outgoing::Message(text) => Message::Text(String::from(text).into()),
                        Outgoing::Ping => {
                            if last_heard.elapsed() > idle_timeout {
                                state.metrics.reject(Rejection::Idle);
                                break Some(Close { code: CLOSE_GOING_AWAY, reason: "idle timeout".into() });
                            }
                            Message::Ping(Default::default())
                        }
                        Outgoing::Kicked => break Some(slow_reader(state)),
                        Outgoing::ShutDown => break Some(Close { code: CLOSE_GOING_AWAY, reason: "server shutting down".into() }),
                    };
                    match send_unless_kicked(&mut socket, message, &outbox).await {
                        Sent::Done => {}
                        Sent::Kicked => break Some(slow_reader(state)),
                        Sent::Stalled => {
                            state.metrics.reject(Rejection::SlowReader);
                            break None;
                        }
                        Sent::Gone => break None,
                    }
                }
                incoming = socket.next() => {
                    last_heard = Instant::now();
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            strikes += 1;
                            state.metrics.reject(Rejection::Malformed);
                            reply_error(&mailbox, ErrorCode::MalformedMessage, "binary frames are not signalling messages".into());
                            if strikes >= MAX_STRIKES { break Some(Close { code: CLOSE_POLICY, reason: "too many malformed messages".into() }) }
                            continue;
                        }
                        Some(Ok(Message::Close(_))) | None => break None,
                        Some(Ok(_)) => continue, // Ping and pong: liveness only.
                        Some(Err(e)) => break read_error_close(state, &e.to_string()),
                    };
                    if text.len() > config.max_message_bytes {
                        state.metrics.reject(Rejection::TooLarge);
                        break Some(Close { code: CLOSE_TOO_BIG, reason: format!("message of {} bytes is over the {}-byte limit", text.len(), config.max_message_bytes) });
                    }
                    if !bucket.try_take(Instant::now()) {
                        state.metrics.reject(Rejection::RateLimited);
                        refused_in_a_row += 1;
                        if refused_in_a_row == 1 {
                            reply_error(&mailbox, ErrorCode::RateLimited, format!("over {} messages per second; messages are being dropped", config.rate_per_sec));
                        }
                        if refused_in_a_row >= config.rate_burst.max(1) {
                            break Some(Close { code: CLOSE_POLICY, reason: "flooding".into() });
                        }
                        continue;
                    }
                    refused_in_a_row = 0;
                    match ClientMessage::from_json(&text) {
                        Ok(message) => {
                            // Boxed: handling a message may wait on Redis, and those futures are
                            // large; inline, every idle connection would carry their room.
                            if let Some(close) = Box::pin(handle(state, &mailbox, &mut session, message)).await {
                                break Some(close);
                            }
                        }
                        Err(e) => {
                            strikes += 1;
                            state.metrics.reject(Rejection::Malformed);
                            reply_error(&mailbox, ErrorCode::MalformedMessage, e.to_string());
                            if strikes >= MAX_STRIKES { break Some(Close { code: CLOSE_POLICY, reason: "too many malformed messages".into() }) }
                        }
                    }
                }
            }
        };
        if let Some(peer) = session.peer {
            leave(state, peer);
            tracing::info!(%peer, %addr, "peer left");
        }
        if let Some(close) = close {
            tracing::info!(%addr, code = close.code, reason = %close.reason, "closing connection");
            Box::pin(close_with(socket, &outbox, close)).await;
        }
        state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends what is still queued (e.g. the error that explains the close), then the close
/// frame, and waits a little for the client's.
async fn close_with(mut socket: WebSocket, outbox: &Outbox, close: Close) {
    while let Some(message) = outbox.try_next_message() {
        if !send_in_time(&mut socket, Message::Text(String::from(message).into())).await {
            break;
        }
    }
    let frame = CloseFrame {
        code: close.code,
        reason: close.reason.into(),
    };
    if send_in_time(&mut socket, Message::Close(Some(frame))).await {
        // Complete the close handshake: dropping the socket while the client's reply is
        // in flight makes the kernel answer with a reset, which can destroy our close
        // frame before the client reads it.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// The close frame a read error deserves: 1009 for an oversized frame, 1002 for a broken
/// protocol, none for a client that simply vanished.
fn read_error_close(state: &AppState, error: &str) -> Option<Close> {
    // tungstenite reports an oversized frame as a capacity error ("Space limit exceeded").
    if error.contains("Space limit exceeded") {
        state.metrics.reject(Rejection::TooLarge);
        let max = state.config.max_message_bytes;
        Some(Close {
            code: CLOSE_TOO_BIG,
            reason: format!("message over the {max}-byte limit"),
        })
    } else if error.contains("without closing handshake") || error.contains("IO error") {
        tracing::debug!(error, "client connection dropped");
        None
    } else {
        Some(Close {
            code: CLOSE_PROTOCOL,
            reason: "WebSocket protocol error".into(),
        })
    }
}

fn slow_reader(state: &AppState) -> Close {
    state.metrics.reject(Rejection::SlowReader);
    Close {
        code: CLOSE_POLICY,
        reason: "too many unread messages".into(),
    }
}

enum Sent {
    Done,
    /// The client's queue overflowed while this write was blocked.
    Kicked,
    /// The write did not complete within [`WRITE_TIMEOUT`]: the client stopped reading.
    Stalled,
    /// The connection is gone (the client closed it or vanished): nobody to blame.
    Gone,
}

/// Writes one message; gives up when the write stalls past [`WRITE_TIMEOUT`] or the client's
/// queue overflows meanwhile, so a client that stops reading is dropped promptly. Boxed by
/// itself, so the write's state is not part of every idle connection's future.
fn send_unless_kicked<'a>(
    socket: &'a mut WebSocket,
    message: Message,
    outbox: &'a Outbox,
) -> Pin<Box<dyn Future<Output = Sent> + Send + 'a>> {
    Box::pin(async move {
        tokio::select! {
            sent = tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)) => match sent {
                Ok(Ok(())) => Sent::Done,
                Ok(Err(_)) => Sent::Gone,
                Err(_) => Sent::Stalled,
            },
            _ = outbox.kicked() => Sent::Kicked,
        }
    })
}

async fn send_in_time(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}
