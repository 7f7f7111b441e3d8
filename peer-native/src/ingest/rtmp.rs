//! RTMP publishers: each connection runs an [`ingest::RtmpSession`]; a publish whose
//! stream key names a channel not already live starts its broadcaster, fed through a
//! [`Remuxer`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use client_limits::TokenBucket;
use ingest::{PublishRefusal, Remuxer, RtmpSession, SessionEvent};
use protocol::ChannelName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Live, Shared, APP, SILENCE_TIMEOUT};

/// A connection must be publishing this soon after it opens.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply the publisher does not take this long is a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a burst over the rate limit may last (keyframes are bursts).
const BURST_SECS: f64 = 4.0;

pub(super) async fn connection(mut socket: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    match serve(&mut socket, peer, shared).await {
        Ok(Some(channel)) => tracing::info!(%peer, %channel, "publisher stopped; the channel ends"),
        Ok(None) => tracing::info!(%peer, "connection closed before publishing"),
        Err(why) => tracing::warn!(%peer, "publisher dropped: {why}"),
    }
}

/// One publisher's connection; returns the channel it published, if it did.
async fn serve(
    socket: &mut TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<Option<ChannelName>, String> {
    let mut session = RtmpSession::new(APP);
    let mut live: Option<(Live, Remuxer)> = None;
    let kbps = shared.options.max_publish_kbps as f64;
    let kib_per_sec = kbps * 1000.0 / 8.0 / 1024.0;
    let mut budget = TokenBucket::new(
        kib_per_sec,
        (kib_per_sec * BURST_SECS) as u32,
        Instant::now(),
    );
    let mut buf = vec![0u8; 64 * 1024];
    // Until its publish is accepted, a connection has SETUP_TIMEOUT in all: trickling a
    // byte now and then must not hold a connection slot for ever.
    let setup_deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let deadline = if live.is_some() {
            Instant::now() + SILENCE_TIMEOUT
        } else {
            setup_deadline
        };
        let n = match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) if live.is_some() => {
                return Err(format!("sent nothing for {SILENCE_TIMEOUT:?}"))
            }
            Err(_) => return Err(format!("not publishing {SETUP_TIMEOUT:?} after connecting")),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        let now = Instant::now();
        for _ in 0..n.div_ceil(1024) {
            if !budget.try_take(now) {
                return Err(format!(
                    "sending faster than {} kbit/s (--max-publish-kbps)",
                    shared.options.max_publish_kbps
                ));
            }
        }
        let result = session.handle_input(&buf[..n]);
        let mut refused = None;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Publish(key) => match shared.go_live(&key) {
                    Ok(started) => {
                        // Accepted only once its broadcaster runs.
                        let started = started?;
                        session.accept_publish();
                        tracing::info!(%peer, channel = %started.channel, "publisher live");
                        live = Some((started, Remuxer::new()));
                    }
                    Err(refusal) => {
                        session.refuse_publish(refusal);
                        refused = Some(refusal);
                    }
                },
                SessionEvent::Media {
                    kind,
                    timestamp,
                    payload,
                } => {
                    if let Some((live, remuxer)) = &mut live {
                        remuxer
                            .push(kind, timestamp, &payload)
                            .map_err(|e| e.to_string())?;
                        live.send_mp4(remuxer.take_output()).await?;
                    }
                }
                SessionEvent::Unpublished => {
                    if let Some((live, remuxer)) = live.take() {
                        let channel = finish(live, remuxer).await?;
                        let _ = write(socket, &session.take_output()).await;
                        return Ok(Some(channel));
                    }
                }
            }
        }
        let reply = session.take_output();
        if !reply.is_empty() {
            write(socket, &reply).await?;
        }
        match refused {
            Some(PublishRefusal::WrongKey) => return Err("refused: wrong stream key".into()),
            Some(PublishRefusal::AlreadyLive) => {
                return Err("refused: the channel already has a publisher".into())
            }
            None => {}
        }
        result.map_err(|e| e.to_string())?;
    }
    match live {
        Some((live, remuxer)) => Ok(Some(finish(live, remuxer).await?)),
        None => Ok(None),
    }
}

/// Writes a reply; a client that does not read it within WRITE_TIMEOUT is dropped (it
/// would otherwise hold its task and its slot for ever).
async fn write(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!("did not read our replies for {WRITE_TIMEOUT:?}")),
    }
}

/// The publisher stopped: the last fragment goes out, then the feed ends.
async fn finish(mut live: Live, mut remuxer: Remuxer) -> Result<ChannelName, String> {
    remuxer.finish();
    live.send_mp4(remuxer.take_output()).await?;
    Ok(live.channel)
}
