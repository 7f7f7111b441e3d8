//! One WebSocket connection: parse each client message, act on the rooms, forward what
//! the rooms send this peer.

use std::net::SocketAddr;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use protocol::{ClientMessage, ErrorCode, PeerId, ServerMessage, MAX_SIGNAL_MESSAGE_BYTES};
use tokio::sync::mpsc;

use crate::AppState;

/// Messages waiting for one client; a client that lets this many pile up is not reading.
const QUEUE_LEN: usize = 64;
/// Malformed messages tolerated before the connection is closed.
const MAX_STRIKES: u32 = 3;
/// Close code for a client that broke the protocol (RFC 6455 "policy violation").
const CLOSE_POLICY: u16 = 1008;

pub(crate) async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    // tungstenite's defaults (128 KiB read buffer, 64 MiB messages) suit a few connections,
    // not thousands of small signalling ones.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(MAX_SIGNAL_MESSAGE_BYTES)
        .max_frame_size(MAX_SIGNAL_MESSAGE_BYTES)
        .on_upgrade(move |socket| run(socket, addr, state))
}

async fn run(socket: WebSocket, addr: SocketAddr, state: AppState) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<ServerMessage>(QUEUE_LEN);
    let mut peer: Option<PeerId> = None;
    let mut strikes = 0;
    let close = loop {
        tokio::select! {
            outgoing = rx.recv() => {
                let Some(message) = outgoing else { break None };
                if sink.send(Message::Text(message.to_json().into())).await.is_err() {
                    break None;
                }
            }
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        strikes += 1;
                        reply_error(&tx, ErrorCode::MalformedMessage, "binary frames are not signalling messages".into());
                        if strikes >= MAX_STRIKES { break Some("too many malformed messages") }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "websocket read failed");
                        break None;
                    }
                };
                match ClientMessage::from_json(&text) {
                    Ok(message) => handle(&state, &tx, &mut peer, message),
                    Err(e) => {
                        strikes += 1;
                        reply_error(&tx, ErrorCode::MalformedMessage, e.to_string());
                        if strikes >= MAX_STRIKES { break Some("too many malformed messages") }
                    }
                }
            }
        }
    };
    if let Some(peer) = peer {
        state
            .rooms
            .lock()
            .expect("rooms lock is never held across a panic")
            .leave(peer);
        tracing::info!(%peer, %addr, "peer left");
    }
    // Flush queued replies (e.g. the error that explains the close) before closing.
    while let Ok(message) = rx.try_recv() {
        let _ = sink.send(Message::Text(message.to_json().into())).await;
    }
    if let Some(reason) = close {
        let frame = CloseFrame {
            code: CLOSE_POLICY,
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
}

fn handle(
    state: &AppState,
    tx: &mpsc::Sender<ServerMessage>,
    peer: &mut Option<PeerId>,
    message: ClientMessage,
) {
    let mut rooms = state
        .rooms
        .lock()
        .expect("rooms lock is never held across a panic");
    match message {
        ClientMessage::Join { channel, role } => {
            if peer.is_some() {
                reply_error(
                    tx,
                    ErrorCode::AlreadyJoined,
                    "this connection already joined a channel".into(),
                );
                return;
            }
            match rooms.join(channel.clone(), role, tx.clone()) {
                Ok((id, introduced)) => {
                    tracing::info!(peer = %id, %channel, ?role, introduced = introduced.len(), "peer joined");
                    *peer = Some(id);
                    let _ = tx.try_send(ServerMessage::Welcome {
                        peer_id: id,
                        channel,
                    });
                    let _ = tx.try_send(ServerMessage::Introduce { peers: introduced });
                }
                Err(e) => reply_error(tx, e.code, e.message),
            }
        }
        ClientMessage::Signal { to, signal } => {
            let Some(from) = *peer else {
                reply_error(tx, ErrorCode::NotJoined, "join a channel first".into());
                return;
            };
            if let Err(e) = rooms.relay(from, to, signal) {
                reply_error(tx, e.code, e.message);
            }
        }
        ClientMessage::Leave {} => {
            if let Some(id) = peer.take() {
                rooms.leave(id);
            }
        }
    }
}

fn reply_error(tx: &mpsc::Sender<ServerMessage>, code: ErrorCode, message: String) {
    let _ = tx.try_send(ServerMessage::Error { code, message });
}
