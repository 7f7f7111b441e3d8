//! Limits on what one client gets from the server: connections per address (open at
//! once, and opened per second), joins and introductions per connection. Real sockets on
//! 127.0.0.1:0 with real WebSocket clients.

mod common;

use std::time::Duration;

use protocol::{ClientMessage, ErrorCode, Role, ServerMessage};

use common::*;

#[tokio::test]
async fn too_many_connections_from_one_ip_are_refused_at_the_handshake() {
    // Opening is not paced here: only the count of open connections is under test.
    let (addr, _stop) = start_with(|c| {
        c.max_connections_per_ip = 2;
        c.opens_per_sec_per_ip = 1000.0;
    })
    .await;
    let first = connect(&addr).await;
    let _second = connect(&addr).await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected HTTP 429, got {other:?}"),
    }
    drop(first);
    // The slot is released once the server sees the connection end.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "slot never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each connection joins afresh and is introduced afresh: closing and reopening
/// connections is paced per address, or it would bypass the per-connection limits.
#[tokio::test]
async fn reconnecting_in_a_loop_is_refused_at_the_handshake() {
    // A slow refill, so no token comes back while the test runs.
    let (addr, _stop) = start_with(|c| {
        c.max_connections_per_ip = 2;
        c.opens_per_sec_per_ip = 0.001;
    })
    .await;
    drop(connect(&addr).await);
    drop(connect(&addr).await);
    // Once the server saw both end, the address has no connection open but has spent
    // its burst: until then a refusal says "at most 2 connections".
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
                assert!(response.headers().contains_key("retry-after"));
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
                if body.contains("too fast") {
                    break;
                }
                assert!(body.contains("at most 2 connections"), "{body}");
            }
            other => panic!("expected HTTP 429, got {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "closes never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_apply_per_forwarded_client() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (addr, _stop) = start_with(|c| {
        c.max_connections_per_ip = 1;
        c.trust_proxy = true;
    })
    .await;
    let from = |client: &str| {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        // A client's own claim first, then the address our proxy appended.
        request.headers_mut().insert(
            "x-forwarded-for",
            format!("6.6.6.6, {client}").parse().unwrap(),
        );
        request
    };
    let _a = tokio_tungstenite::connect_async(from("203.0.113.1"))
        .await
        .expect("first client");
    let _b = tokio_tungstenite::connect_async(from("203.0.113.2"))
        .await
        .expect("another client, same proxy");
    match tokio_tungstenite::connect_async(from("203.0.113.1")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected HTTP 429 for the same client again, got {other:?}"),
    }
}

#[tokio::test]
async fn more_peers_come_at_most_every_five_seconds_per_connection() {
    let addr = start().await;
    let mut broadcaster = connect(&addr).await;
    join(&mut broadcaster, "news", Role::Broadcaster).await;
    let mut asker = connect(&addr).await;
    join(&mut asker, "news", Role::Viewer).await;
    let mut other = connect(&addr).await;
    join(&mut other, "news", Role::Viewer).await;
    let introduced = |message| matches!(message, ServerMessage::Introduce { .. });

    send(&mut asker, ClientMessage::MorePeers {}).await;
    assert!(
        introduced(recv(&mut asker).await),
        "the first ask is answered"
    );
    // Asking again at once: refused, with when to ask, and nobody introduced.
    send(&mut asker, ClientMessage::MorePeers {}).await;
    match recv(&mut asker).await {
        ServerMessage::Error { code, message } => {
            assert_eq!(code, ErrorCode::RateLimited, "{message}");
            assert!(message.contains("ask again in"), "{message}");
        }
        other => panic!("expected a rate-limit error, got {other:?}"),
    }
    // The limit is per connection: another viewer still gets its peers, and the asker
    // stays joined.
    send(&mut other, ClientMessage::MorePeers {}).await;
    loop {
        if introduced(recv(&mut other).await) {
            break;
        }
    }
    barrier(&mut asker).await;
}

/// Leaving and joining again would hand a connection a fresh introduction each time,
/// around the `more_peers` limit: a connection joins at most every 5 s.
#[tokio::test]
async fn a_connection_joins_at_most_every_five_seconds() {
    let addr = start().await;
    let mut broadcaster = connect(&addr).await;
    join(&mut broadcaster, "news", Role::Broadcaster).await;
    let mut cycler = connect(&addr).await;
    join(&mut cycler, "news", Role::Viewer).await;
    send(&mut cycler, ClientMessage::Leave {}).await;
    send(&mut cycler, viewer_join("news")).await;
    loop {
        match recv(&mut cycler).await {
            ServerMessage::Error { code, message } => {
                assert_eq!(code, ErrorCode::RateLimited, "{message}");
                assert!(message.contains("join again in"), "{message}");
                break;
            }
            ServerMessage::Welcome { .. } | ServerMessage::Introduce { .. } => {
                panic!("joined again at once: introduced afresh")
            }
            _ => {}
        }
    }
    // Refused, not joined: it is not in the channel, and others still join.
    send(&mut cycler, ClientMessage::MorePeers {}).await;
    match recv(&mut cycler).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::NotJoined),
        other => panic!("expected not_joined, got {other:?}"),
    }
    let mut other = connect(&addr).await;
    join(&mut other, "news", Role::Viewer).await;
}
