//! Channel ownership: only the holder of a channel's key broadcasts on it. Forged,
//! replayed, missing and unanswered proofs are refused.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use protocol::{ClientMessage, ErrorCode, Role, ServerMessage};

fn broadcaster_join(channel: &str, signer: Option<&SigningKey>) -> ClientMessage {
    ClientMessage::Join {
        channel: channel.parse().unwrap(),
        role: Role::Broadcaster,
        key: signer.map(public),
        session: Some(protocol::SessionId(7)),
        version: protocol::SIGNAL_VERSION,
    }
}

async fn expect_error(ws: &mut Ws, expected: ErrorCode) -> String {
    match recv(ws).await {
        ServerMessage::Error { code, message } if code == expected => message,
        other => panic!("expected a {expected:?} error, got {other:?}"),
    }
}

async fn challenged(ws: &mut Ws, channel: &str, signer: &SigningKey) -> protocol::Nonce {
    send(ws, broadcaster_join(channel, Some(signer))).await;
    match recv(ws).await {
        ServerMessage::Challenge { nonce } => nonce,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_broadcaster_without_a_key_is_refused() {
    let addr = start().await;
    let mut ws = connect(&addr).await;
    send(&mut ws, broadcaster_join("news", None)).await;
    let message = expect_error(&mut ws, ErrorCode::KeyRequired).await;
    assert!(message.contains("streamtorrent keygen"), "{message}");
    assert_rejections(&addr, "key_required", 1).await;
    // Nothing was claimed: the channel's holder can still broadcast.
    let mut owner = connect(&addr).await;
    join(&mut owner, "news", Role::Broadcaster).await;
}

#[tokio::test]
async fn a_forged_signature_is_refused_and_the_connection_closed() {
    let addr = start().await;
    let claimed = channel_signer("news");
    let forger = SigningKey::from_bytes(&[66; 32]);
    let mut ws = connect(&addr).await;
    let nonce = challenged(&mut ws, "news", &claimed).await;
    // Signed with another key than the one claimed.
    send(&mut ws, prove(&forger, "news", &nonce)).await;
    let message = expect_error(&mut ws, ErrorCode::BadSignature).await;
    assert!(message.contains("does not prove"), "{message}");
    assert_eq!(expect_close(&mut ws).await.0, 1008);
    assert_rejections(&addr, "bad_signature", 1).await;
    let mut owner = connect(&addr).await;
    join(&mut owner, "news", Role::Broadcaster).await;
}

#[tokio::test]
async fn a_signature_replayed_from_an_earlier_challenge_is_refused() {
    let addr = start().await;
    let signer = channel_signer("news");
    let mut first = connect(&addr).await;
    let old_nonce = challenged(&mut first, "news", &signer).await;
    let recorded = prove(&signer, "news", &old_nonce);
    send(&mut first, recorded.clone()).await;
    assert!(matches!(
        recv(&mut first).await,
        ServerMessage::Welcome { .. }
    ));
    drop(first);
    // Someone who saw that exchange tries it again on a new connection.
    let mut replay = connect(&addr).await;
    let new_nonce = challenged(&mut replay, "news", &signer).await;
    assert_ne!(new_nonce, old_nonce, "every challenge is fresh");
    send(&mut replay, recorded).await;
    expect_error(&mut replay, ErrorCode::BadSignature).await;
    assert_eq!(expect_close(&mut replay).await.0, 1008);
}

#[tokio::test]
async fn nothing_but_the_answer_is_taken_and_an_unanswered_challenge_closes() {
    let addr = start().await;
    let mut stray = connect(&addr).await;
    send(
        &mut stray,
        prove(&channel_signer("news"), "news", &protocol::Nonce([0; 32])),
    )
    .await;
    expect_error(&mut stray, ErrorCode::NotChallenged).await;

    let mut ws = connect(&addr).await;
    challenged(&mut ws, "news", &channel_signer("news")).await;
    send(&mut ws, ClientMessage::MorePeers {}).await;
    expect_error(&mut ws, ErrorCode::NotChallenged).await;
    let started = std::time::Instant::now();
    // The time-out's error message, then the close.
    assert_eq!(expect_close(&mut ws).await.0, 1008);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed after the time-out"
    );
    assert_rejections(&addr, "challenge_timeout", 1).await;
}

#[tokio::test]
async fn a_channel_stays_with_its_first_key_while_its_broadcaster_is_away() {
    let addr = start().await;
    let owner = channel_signer("news");
    let mut first = connect(&addr).await;
    join(&mut first, "news", Role::Broadcaster).await;
    // Its connection drops; whether the server has noticed yet makes no difference.
    drop(first);
    // Another key is refused before any challenge.
    let mut other = connect(&addr).await;
    send(
        &mut other,
        broadcaster_join("news", Some(&SigningKey::from_bytes(&[77; 32]))),
    )
    .await;
    let message = expect_error(&mut other, ErrorCode::ChannelTaken).await;
    assert!(message.contains("belongs to another key"), "{message}");
    // The owner comes back; viewers learn the key from their welcome.
    let mut back = connect(&addr).await;
    join(&mut back, "news", Role::Broadcaster).await;
    let mut viewer = connect(&addr).await;
    send(
        &mut viewer,
        ClientMessage::Join {
            channel: "news".parse().unwrap(),
            role: Role::Viewer,
            key: None,
            session: None,
            version: protocol::SIGNAL_VERSION,
        },
    )
    .await;
    match recv(&mut viewer).await {
        ServerMessage::Welcome { channel_key, .. } => assert_eq!(channel_key, Some(public(&owner))),
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn with_an_owners_file_ownership_survives_a_restart() {
    let file = std::env::temp_dir().join(format!("owners-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let configure = |config: &mut signal_server::ServerConfig| {
        config.owners_file = Some(file.clone());
    };
    let (addr, stop) = start_with(configure).await;
    let mut owner = connect(&addr).await;
    join(&mut owner, "news", Role::Broadcaster).await;
    drop(stop);
    drop(owner);
    let (addr, _stop) = start_with(configure).await;
    let mut other = connect(&addr).await;
    send(
        &mut other,
        broadcaster_join("news", Some(&SigningKey::from_bytes(&[88; 32]))),
    )
    .await;
    expect_error(&mut other, ErrorCode::ChannelTaken).await;
    let mut owner = connect(&addr).await;
    join(&mut owner, "news", Role::Broadcaster).await;
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn viewers_waiting_on_an_unclaimed_channel_learn_its_key_when_it_is_claimed() {
    let addr = start().await;
    let mut early = connect(&addr).await;
    send(
        &mut early,
        ClientMessage::Join {
            channel: "premiere".parse().unwrap(),
            role: Role::Viewer,
            key: None,
            session: None,
            version: protocol::SIGNAL_VERSION,
        },
    )
    .await;
    match recv(&mut early).await {
        ServerMessage::Welcome { channel_key, .. } => assert_eq!(channel_key, None),
        other => panic!("expected welcome, got {other:?}"),
    }
    assert!(matches!(
        recv(&mut early).await,
        ServerMessage::Introduce { .. }
    ));
    let mut owner = connect(&addr).await;
    let (owner_id, _) = join(&mut owner, "premiere", Role::Broadcaster).await;
    match recv(&mut early).await {
        ServerMessage::Claimed {
            channel_key,
            broadcaster,
            session,
        } => {
            assert_eq!(channel_key, public(&channel_signer("premiere")));
            assert_eq!(broadcaster, owner_id);
            assert_eq!(session, protocol::SessionId(7), "the broadcast it named");
        }
        other => panic!("expected the channel's key, got {other:?}"),
    }
}
