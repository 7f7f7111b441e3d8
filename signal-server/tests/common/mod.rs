//! Helpers shared by the signal server's integration tests: a server on 127.0.0.1:0 and
//! real WebSocket clients.
#![allow(dead_code)] // Each test file uses its own subset.

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use protocol::{
    claim_message, ChannelKey, ChannelName, ClientMessage, KeySignature, PeerId, Role,
    ServerMessage,
};
use signal_server::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The key a test broadcaster uses for `channel`: derived from the name, so every
/// broadcaster of one channel in a test holds the same key.
pub fn channel_signer(channel: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, byte) in channel.bytes().enumerate() {
        seed[i % 32] ^= byte;
    }
    seed[31] ^= 0x5a;
    SigningKey::from_bytes(&seed)
}

pub fn public(signer: &SigningKey) -> ChannelKey {
    ChannelKey::from_bytes(&signer.verifying_key().to_bytes()).unwrap()
}

/// Answers a challenge for `channel` with `signer`.
pub fn prove(signer: &SigningKey, channel: &str, nonce: &protocol::Nonce) -> ClientMessage {
    let channel: ChannelName = channel.parse().unwrap();
    let signature = signer.sign(&claim_message(&channel, nonce));
    ClientMessage::Prove {
        signature: KeySignature::from_bytes(&signature.to_bytes()),
    }
}

pub async fn start() -> String {
    let (addr, stop) = start_with(|_| {}).await;
    // Keep the server up for the rest of the test process.
    std::mem::forget(stop);
    addr
}

/// Starts a server with adjusted settings; dropping the sender shuts it down.
pub async fn start_with(
    adjust: impl FnOnce(&mut ServerConfig),
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let web_dir = std::env::temp_dir().join(format!("st-web-{}", addr.port()));
    std::fs::create_dir_all(&web_dir).unwrap();
    std::fs::write(web_dir.join("index.html"), "<html>app</html>").unwrap();
    let mut config = ServerConfig::with_web_dir(web_dir);
    adjust(&mut config);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(signal_server::serve(listener, config, async move {
        let _ = stop_rx.await;
    }));
    (addr.to_string(), stop_tx)
}

pub async fn connect(addr: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

pub async fn send(ws: &mut Ws, message: ClientMessage) {
    ws.send(Message::text(message.to_json())).await.unwrap();
}

pub async fn recv(ws: &mut Ws) -> ServerMessage {
    recv_within(ws, Duration::from_secs(5)).await
}

/// The next message, which must come within `within`.
pub async fn recv_within(ws: &mut Ws, within: Duration) -> ServerMessage {
    loop {
        let frame = tokio::time::timeout(within, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {within:?}"));
        match frame.expect("connection ended").expect("read failed") {
            Message::Text(text) => {
                return ServerMessage::from_json(&text).expect("server sent valid JSON")
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn join(ws: &mut Ws, channel: &str, role: Role) -> (PeerId, Vec<PeerId>) {
    let signer = channel_signer(channel);
    let key = (role == Role::Broadcaster).then(|| public(&signer));
    send(
        ws,
        ClientMessage::Join {
            channel: channel.parse().unwrap(),
            role,
            key,
            session: (role == Role::Broadcaster).then_some(protocol::SessionId(7)),
            version: protocol::SIGNAL_VERSION,
        },
    )
    .await;
    let mut reply = recv(ws).await;
    if let ServerMessage::Challenge { nonce } = reply {
        send(ws, prove(&signer, channel, &nonce)).await;
        reply = recv(ws).await;
    }
    let ServerMessage::Welcome { peer_id, .. } = reply else {
        panic!("expected welcome, got {reply:?}")
    };
    let ServerMessage::Introduce { peers } = recv(ws).await else {
        panic!("expected introduce")
    };
    (peer_id, peers)
}

/// A viewer's `join` of `channel`, as sent.
pub fn viewer_join(channel: &str) -> ClientMessage {
    ClientMessage::Join {
        channel: channel.parse().unwrap(),
        role: Role::Viewer,
        key: None,
        session: None,
        version: protocol::SIGNAL_VERSION,
    }
}

/// Returns once the server handled everything sent on `ws` so far: messages on one
/// connection are handled in order, and a second `join` is answered `already_joined`
/// without changing anything.
pub async fn barrier(ws: &mut Ws) {
    send(ws, viewer_join("barrier")).await;
    loop {
        if let ServerMessage::Error { code, .. } = recv(ws).await {
            assert_eq!(code, protocol::ErrorCode::AlreadyJoined);
            return;
        }
    }
}

/// A minimal HTTP/1.0 GET; enough for JSON and HTML bodies, and it keeps the test
/// dependencies to the WebSocket client.
pub async fn http_get(addr: &str, path: &str) -> String {
    let response = http_get_raw(addr, path).await;
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The whole successful response to a GET, headers (lowercase names) included.
pub async fn http_get_raw(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// The next frame other than a ping or pong, or `Err` if none comes within `within`. The
/// server pings every connection at its own second of the ping interval, which may fall in
/// any test's window, so tests that read raw frames read through this.
pub async fn next_frame(
    ws: &mut Ws,
    within: Duration,
) -> Result<
    Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    tokio::time::error::Elapsed,
> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await? {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            frame => return Ok(frame),
        }
    }
}

/// The next close frame, skipping other messages.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("closed within 15 s");
        match frame {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without a close frame"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("read failed before the close frame: {e}"),
        }
    }
}

/// `/metrics` counts exactly `count` rejections for `reason`.
pub async fn assert_rejections(addr: &str, reason: &str, count: u64) {
    let metrics = http_get(addr, "/metrics").await;
    let line = format!("streamtorrent_rejections_total{{reason=\"{reason}\"}} {count}");
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line:?} in\n{metrics}"
    );
}
