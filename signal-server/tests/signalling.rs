//! The signal server over real sockets on 127.0.0.1:0 with real WebSocket clients.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::{
    ChannelSummary, ClientMessage, ErrorCode, PeerId, Role, ServerMessage, SignalPayload,
};
use signal_server::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn start() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let web_dir = std::env::temp_dir().join(format!("st-web-{}", addr.port()));
    std::fs::create_dir_all(&web_dir).unwrap();
    std::fs::write(web_dir.join("index.html"), "<html>app</html>").unwrap();
    tokio::spawn(signal_server::serve(
        listener,
        ServerConfig {
            web_dir,
            introduce: 8,
        },
        std::future::pending(),
    ));
    addr.to_string()
}

async fn connect(addr: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Ws, message: ClientMessage) {
    ws.send(Message::text(message.to_json())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> ServerMessage {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message within 5 s");
        match frame.expect("connection ended").expect("read failed") {
            Message::Text(text) => {
                return ServerMessage::from_json(&text).expect("server sent valid JSON")
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn join(ws: &mut Ws, channel: &str, role: Role) -> (PeerId, Vec<PeerId>) {
    send(
        ws,
        ClientMessage::Join {
            channel: channel.parse().unwrap(),
            role,
        },
    )
    .await;
    let ServerMessage::Welcome { peer_id, .. } = recv(ws).await else {
        panic!("expected welcome")
    };
    let ServerMessage::Introduce { peers } = recv(ws).await else {
        panic!("expected introduce")
    };
    (peer_id, peers)
}

#[tokio::test]
async fn join_introduce_relay_leave() {
    let addr = start().await;
    let mut broadcaster = connect(&addr).await;
    let (b_id, b_intro) = join(&mut broadcaster, "news", Role::Broadcaster).await;
    assert!(b_intro.is_empty());

    let mut viewer = connect(&addr).await;
    let (v_id, v_intro) = join(&mut viewer, "news", Role::Viewer).await;
    assert_eq!(
        v_intro,
        vec![b_id],
        "a viewer is introduced to the broadcaster"
    );

    let offer = SignalPayload::Offer {
        sdp: "v=0 offer".into(),
    };
    send(
        &mut viewer,
        ClientMessage::Signal {
            to: b_id,
            signal: offer.clone(),
        },
    )
    .await;
    assert_eq!(
        recv(&mut broadcaster).await,
        ServerMessage::Signal {
            from: v_id,
            signal: offer
        }
    );

    let answer = SignalPayload::Answer {
        sdp: "v=0 answer".into(),
    };
    send(
        &mut broadcaster,
        ClientMessage::Signal {
            to: v_id,
            signal: answer.clone(),
        },
    )
    .await;
    assert_eq!(
        recv(&mut viewer).await,
        ServerMessage::Signal {
            from: b_id,
            signal: answer
        }
    );

    let listed: Vec<ChannelSummary> =
        serde_json::from_str(&http_get(&addr, "/api/channels").await).unwrap();
    assert_eq!(
        listed,
        vec![ChannelSummary {
            name: "news".parse().unwrap(),
            viewers: 1
        }]
    );

    send(&mut viewer, ClientMessage::Leave {}).await;
    assert_eq!(
        recv(&mut broadcaster).await,
        ServerMessage::PeerLeft { peer: v_id }
    );
}

#[tokio::test]
async fn dropped_connection_counts_as_leaving() {
    let addr = start().await;
    let mut broadcaster = connect(&addr).await;
    join(&mut broadcaster, "news", Role::Broadcaster).await;
    let mut viewer = connect(&addr).await;
    let (v_id, _) = join(&mut viewer, "news", Role::Viewer).await;
    drop(viewer);
    assert_eq!(
        recv(&mut broadcaster).await,
        ServerMessage::PeerLeft { peer: v_id }
    );
}

#[tokio::test]
async fn relay_to_unknown_or_foreign_peer_is_an_error() {
    let addr = start().await;
    let mut a = connect(&addr).await;
    let (_, _) = join(&mut a, "news", Role::Broadcaster).await;
    let mut other = connect(&addr).await;
    let (other_id, _) = join(&mut other, "sports", Role::Broadcaster).await;
    for to in [PeerId(999_999), other_id] {
        send(
            &mut a,
            ClientMessage::Signal {
                to,
                signal: SignalPayload::Offer { sdp: "x".into() },
            },
        )
        .await;
        let ServerMessage::Error { code, .. } = recv(&mut a).await else {
            panic!("expected error")
        };
        assert_eq!(code, ErrorCode::UnknownPeer);
    }
    // The foreign channel's peer never saw anything, and both still work.
    let mut viewer = connect(&addr).await;
    let (_, intro) = join(&mut viewer, "sports", Role::Viewer).await;
    assert_eq!(intro, vec![other_id]);
}

#[tokio::test]
async fn second_broadcaster_is_refused() {
    let addr = start().await;
    let mut first = connect(&addr).await;
    join(&mut first, "news", Role::Broadcaster).await;
    let mut second = connect(&addr).await;
    send(
        &mut second,
        ClientMessage::Join {
            channel: "news".parse().unwrap(),
            role: Role::Broadcaster,
        },
    )
    .await;
    let ServerMessage::Error { code, .. } = recv(&mut second).await else {
        panic!("expected error")
    };
    assert_eq!(code, ErrorCode::ChannelTaken);
}

#[tokio::test]
async fn signal_before_join_is_an_error() {
    let addr = start().await;
    let mut ws = connect(&addr).await;
    send(
        &mut ws,
        ClientMessage::Signal {
            to: PeerId(1),
            signal: SignalPayload::Answer { sdp: "x".into() },
        },
    )
    .await;
    let ServerMessage::Error { code, .. } = recv(&mut ws).await else {
        panic!("expected error")
    };
    assert_eq!(code, ErrorCode::NotJoined);
}

#[tokio::test]
async fn malformed_json_gets_errors_then_a_close_and_others_keep_working() {
    let addr = start().await;
    let mut good = connect(&addr).await;
    let (good_id, _) = join(&mut good, "news", Role::Broadcaster).await;

    let mut bad = connect(&addr).await;
    for text in [
        "{not json",
        r#"{"type":"teleport"}"#,
        r#"{"type":"join","channel":"NO WAY","role":"viewer"}"#,
    ] {
        bad.send(Message::text(text)).await.unwrap();
        let ServerMessage::Error { code, message } = recv(&mut bad).await else {
            panic!("expected error")
        };
        assert_eq!(code, ErrorCode::MalformedMessage);
        assert!(!message.is_empty());
    }
    let close = tokio::time::timeout(Duration::from_secs(5), bad.next())
        .await
        .unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a policy close, got {other:?}"),
    }

    let mut viewer = connect(&addr).await;
    let (_, intro) = join(&mut viewer, "news", Role::Viewer).await;
    assert_eq!(intro, vec![good_id]);
}

#[tokio::test]
async fn serves_the_app_on_watch_paths() {
    let addr = start().await;
    assert!(http_get(&addr, "/watch/demo").await.contains("app"));
    assert!(http_get(&addr, "/").await.contains("app"));
}

/// A minimal HTTP/1.0 GET; enough for JSON and HTML bodies, and it keeps the test
/// dependencies to the WebSocket client.
async fn http_get(addr: &str, path: &str) -> String {
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
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}
