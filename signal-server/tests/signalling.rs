//! The signal server over real sockets on 127.0.0.1:0 with real WebSocket clients.

mod common;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::{
    ChannelSummary, ClientMessage, ErrorCode, PeerId, Role, ServerMessage, SignalPayload,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use common::*;

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
            viewers: 1,
            key: Some(public(&channel_signer("news"))),
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
async fn a_broadcaster_proving_the_key_again_replaces_its_stale_session() {
    let addr = start().await;
    // The owner's old connection is still held (say, its network dropped silently).
    let mut stale = connect(&addr).await;
    let (stale_id, _) = join(&mut stale, "news", Role::Broadcaster).await;
    let mut viewer = connect(&addr).await;
    join(&mut viewer, "news", Role::Viewer).await;
    // It comes back on a new connection, proving the channel's key again: it is let in,
    // where it used to get `channel_taken` for a minute and exit.
    let mut back = connect(&addr).await;
    let (back_id, _) = join(&mut back, "news", Role::Broadcaster).await;
    assert_ne!(back_id, stale_id);
    // The viewer hears that the old one left and who broadcasts now.
    let mut heard = Vec::new();
    while heard.len() < 2 {
        heard.push(recv(&mut viewer).await);
    }
    assert!(
        heard.contains(&ServerMessage::PeerLeft { peer: stale_id }),
        "{heard:?}"
    );
    assert!(
        heard.iter().any(
            |m| matches!(m, ServerMessage::Claimed { broadcaster, .. } if *broadcaster == back_id)
        ),
        "{heard:?}"
    );
    // The stale session is told why it is out.
    let ServerMessage::Error { code, message } = recv(&mut stale).await else {
        panic!("expected an error")
    };
    assert_eq!(code, ErrorCode::ChannelTaken);
    assert!(message.contains("replaced"), "{message}");
}

#[tokio::test]
async fn signals_go_only_between_peers_introduced_to_each_other() {
    let addr = start().await;
    let mut broadcaster = connect(&addr).await;
    let (b_id, _) = join(&mut broadcaster, "news", Role::Broadcaster).await;
    let mut a = connect(&addr).await;
    let (a_id, a_intro) = join(&mut a, "news", Role::Viewer).await;
    assert_eq!(a_intro, vec![b_id]);
    // The broadcaster is full from now on: a later viewer meets viewers only.
    send(&mut broadcaster, ClientMessage::Status { free_slots: 0 }).await;
    let mut d = connect(&addr).await;
    let (d_id, d_intro) = join(&mut d, "news", Role::Viewer).await;
    assert_eq!(d_intro, vec![a_id]);
    // `d` knows the broadcaster's id (anyone can learn ids), but was never introduced.
    send(&mut d, offer_to(b_id)).await;
    let ServerMessage::Error { code, message } = recv(&mut d).await else {
        panic!("expected an error")
    };
    assert_eq!(code, ErrorCode::UnknownPeer);
    assert!(message.contains("introduced"), "{message}");
    // Introduced pairs still signal, whichever side starts.
    send(&mut d, offer_to(a_id)).await;
    assert!(matches!(recv(&mut a).await, ServerMessage::Signal { from, .. } if from == d_id));
    send(&mut a, offer_to(b_id)).await;
    assert!(
        matches!(recv(&mut broadcaster).await, ServerMessage::Signal { from, .. } if from == a_id),
        "the broadcaster got only what its contact sent"
    );
}

#[tokio::test]
async fn peer_ids_are_random_64_bit_values_not_a_counter() {
    let addr = start().await;
    let mut ids = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..8 {
        let mut ws = connect(&addr).await;
        ids.push(join(&mut ws, "news", Role::Viewer).await.0);
        sockets.push(ws);
    }
    // A counter would give 1, 2, 3…: anyone could guess a neighbour's id.
    let consecutive = ids
        .windows(2)
        .filter(|w| w[1].0.abs_diff(w[0].0) < 1_000)
        .count();
    assert_eq!(consecutive, 0, "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.0 > u64::from(u32::MAX) || id.0.leading_zeros() < 40),
        "{ids:?}"
    );
}

#[tokio::test]
async fn an_older_client_is_told_to_update_not_banned() {
    let addr = start().await;
    let mut old = connect(&addr).await;
    // A page from before versions sends no version at all.
    old.send(Message::text(
        r#"{"type":"join","channel":"news","role":"viewer"}"#,
    ))
    .await
    .unwrap();
    let ServerMessage::Error { code, message } = recv(&mut old).await else {
        panic!("expected an error")
    };
    assert_eq!(code, ErrorCode::UpgradeRequired);
    assert!(message.contains("reload"), "{message}");
    // Still connected and welcome once it speaks the current version.
    join(&mut old, "news", Role::Viewer).await;
    assert_rejections(&addr, "outdated", 1).await;
}

fn offer_to(to: PeerId) -> ClientMessage {
    ClientMessage::Signal {
        to,
        signal: SignalPayload::Offer { sdp: "x".into() },
    }
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
    let close = next_frame(&mut bad, Duration::from_secs(5)).await.unwrap();
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

/// A fresh viewer still joins and is introduced to the broadcaster.
async fn others_still_work(addr: &str, channel: &str, broadcaster: PeerId) {
    let mut viewer = connect(addr).await;
    let (_, intro) = join(&mut viewer, channel, Role::Viewer).await;
    assert_eq!(intro, vec![broadcaster]);
}

#[tokio::test]
async fn oversized_frame_is_closed_with_1009_and_a_reason() {
    let addr = start().await;
    let mut good = connect(&addr).await;
    let (good_id, _) = join(&mut good, "news", Role::Broadcaster).await;
    let mut bad = connect(&addr).await;
    bad.send(Message::text(
        "x".repeat(protocol::MAX_SIGNAL_MESSAGE_BYTES + 1),
    ))
    .await
    .unwrap();
    let (code, reason) = expect_close(&mut bad).await;
    assert_eq!(code, u16::from(CloseCode::Size));
    assert!(reason.contains("limit"), "{reason}");
    // Far over the limit, the WebSocket library stops reading mid-frame; the connection
    // still ends (a 1009 close, or a reset when the unread megabyte is discarded) and the
    // server keeps serving everyone else.
    let mut worse = connect(&addr).await;
    let _ = worse.send(Message::text("x".repeat(1 << 20))).await;
    match next_frame(&mut worse, Duration::from_secs(15))
        .await
        .expect("ended within 15 s")
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        Some(Err(_)) | None => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }
    assert_rejections(&addr, "too_large", 2).await;
    others_still_work(&addr, "news", good_id).await;
}

#[tokio::test]
async fn a_flood_is_throttled_then_dropped() {
    let (addr, _stop) = start_with(|c| {
        c.rate_per_sec = 5.0;
        c.rate_burst = 10;
    })
    .await;
    let mut good = connect(&addr).await;
    let (good_id, _) = join(&mut good, "news", Role::Broadcaster).await;
    let mut flooder = connect(&addr).await;
    join(&mut flooder, "news", Role::Viewer).await;
    for _ in 0..200 {
        if flooder
            .send(Message::text(
                ClientMessage::Signal {
                    to: good_id,
                    signal: SignalPayload::Answer { sdp: "x".into() },
                }
                .to_json(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut rate_limited = false;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), flooder.next())
            .await
            .expect("answer within 10 s")
        {
            Some(Ok(Message::Text(text))) => {
                if let Ok(ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }) = ServerMessage::from_json(&text)
                {
                    rate_limited = true;
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(rate_limited, "the flooder was told it is rate limited");
    assert_eq!(close, (1008, "flooding".to_string()));
    // The broadcaster got at most the burst (less the token the join spent) plus what the
    // rate refilled meanwhile.
    let mut relayed = 0;
    while let Ok(Some(Ok(frame))) = next_frame(&mut good, Duration::from_millis(300)).await {
        match frame {
            Message::Text(text) => {
                if matches!(
                    ServerMessage::from_json(&text),
                    Ok(ServerMessage::Signal { .. })
                ) {
                    relayed += 1;
                }
            }
            other => panic!("unexpected {other:?} while counting relays"),
        }
    }
    assert!(
        (9..=20).contains(&relayed),
        "relayed {relayed} of 200 flood messages"
    );
    others_still_work(&addr, "news", good_id).await;
}

#[tokio::test]
async fn a_page_from_another_origin_is_refused_at_the_handshake() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (addr, _stop) = start_with(|c| c.allowed_origins = vec!["https://tv.example".into()]).await;
    let with_origin = |origin: &str| {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        request
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    assert!(
        tokio_tungstenite::connect_async(with_origin("https://tv.example"))
            .await
            .is_ok()
    );
    // Native peers send no Origin.
    assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_not_buffered_for() {
    let (addr, _stop) = start_with(|c| {
        c.rate_per_sec = 1e6;
        c.rate_burst = 1_000_000;
    })
    .await;
    let mut sender = connect(&addr).await;
    let (sender_id, _) = join(&mut sender, "news", Role::Broadcaster).await;
    let mut sleeper = connect(&addr).await;
    let (sleeper_id, _) = join(&mut sleeper, "news", Role::Viewer).await;
    // The sleeper never reads again. 3000 x 12 KiB is far more than socket buffers hold.
    let sdp = "v".repeat(12 * 1024);
    let mut dropped = false;
    for _ in 0..3000 {
        sender
            .send(Message::text(
                ClientMessage::Signal {
                    to: sleeper_id,
                    signal: SignalPayload::Offer { sdp: sdp.clone() },
                }
                .to_json(),
            ))
            .await
            .unwrap();
        // Errors for the sender pile up unread too; peek without blocking.
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_millis(0), sender.next()).await
        {
            if let Ok(ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                ..
            }) = ServerMessage::from_json(&text)
            {
                dropped = true;
                break;
            }
            if let Ok(ServerMessage::PeerLeft { peer }) = ServerMessage::from_json(&text) {
                assert_eq!(peer, sleeper_id);
                dropped = true;
                break;
            }
        }
    }
    if !dropped {
        let message = recv(&mut sender).await;
        assert!(
            matches!(message, ServerMessage::PeerLeft { peer } if peer == sleeper_id)
                || matches!(
                    message,
                    ServerMessage::Error {
                        code: ErrorCode::UnknownPeer,
                        ..
                    }
                ),
            "{message:?}"
        );
    }
    assert_rejections(&addr, "slow_reader", 1).await;
    others_still_work(&addr, "news", sender_id).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_idle_timeout() {
    let (addr, _stop) = start_with(|c| {
        c.ping_interval_secs = 1;
        c.idle_timeout_secs = 2;
    })
    .await;
    let mut watcher = connect(&addr).await;
    join(&mut watcher, "news", Role::Broadcaster).await;
    let mut silent = connect(&addr).await;
    // Timed from before the silent client's last message: the server measures silence
    // from when it last heard the client.
    let started = std::time::Instant::now();
    let (silent_id, _) = join(&mut silent, "news", Role::Viewer).await;
    // `silent` never reads again, so never answers pings; `watcher` reads and stays.
    assert_eq!(
        recv(&mut watcher).await,
        ServerMessage::PeerLeft { peer: silent_id }
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "dropped after {elapsed:?}, before the timeout: {}",
        http_get(&addr, "/metrics").await
    );
    assert_rejections(&addr, "idle", 1).await;
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001() {
    let (addr, stop) = start_with(|_| {}).await;
    let mut a = connect(&addr).await;
    join(&mut a, "news", Role::Broadcaster).await;
    let mut b = connect(&addr).await;
    join(&mut b, "news", Role::Viewer).await;
    drop(stop);
    assert_eq!(
        expect_close(&mut a).await,
        (1001, "server shutting down".to_string())
    );
    assert_eq!(expect_close(&mut b).await.0, 1001);
}

#[tokio::test]
async fn metrics_and_health_report_what_happened() {
    let addr = start().await;
    assert_eq!(http_get(&addr, "/healthz").await, "ok\n");
    let mut b = connect(&addr).await;
    let (b_id, _) = join(&mut b, "news", Role::Broadcaster).await;
    let mut v = connect(&addr).await;
    let (v_id, _) = join(&mut v, "news", Role::Viewer).await;
    send(
        &mut v,
        ClientMessage::Signal {
            to: b_id,
            signal: SignalPayload::Offer { sdp: "o".into() },
        },
    )
    .await;
    recv(&mut b).await;
    send(
        &mut v,
        ClientMessage::Signal {
            to: PeerId(424242),
            signal: SignalPayload::Offer { sdp: "o".into() },
        },
    )
    .await;
    recv(&mut v).await;
    v.send(Message::text("{bad")).await.unwrap();
    recv(&mut v).await;
    let metrics = http_get(&addr, "/metrics").await;
    for line in [
        "streamtorrent_connections 2",
        "streamtorrent_channels 1",
        "streamtorrent_channel_peers{channel=\"news\"} 2",
        "streamtorrent_relayed_total 1",
        "streamtorrent_rejections_total{reason=\"unknown_peer\"} 1",
        "streamtorrent_rejections_total{reason=\"malformed\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    let _ = v_id;
}

#[test]
fn introductions_are_bounded_and_random() {
    use signal_server::{Limits, Rooms};
    let limits = Limits {
        introduce: 8,
        max_channels: 10,
        max_peers_per_channel: 100_000,
        max_connections_per_ip: 1,
        opens_per_sec_per_ip: 1.0,
    };
    let mut rooms = Rooms::new(limits);
    // Nobody reads in this test: what is posted stays queued (at most one message).
    let mailbox = || signal_server::Mailbox::new(1).0;
    let channel: protocol::ChannelName = "big".parse().unwrap();
    let (source, _) = rooms
        .join(
            channel.clone(),
            Role::Broadcaster,
            mailbox(),
            Some(protocol::SessionId(7)),
        )
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..5000 {
        let (_, intro) = rooms
            .join(channel.clone(), Role::Viewer, mailbox(), None)
            .unwrap();
        assert_eq!(intro[0], source);
        assert_eq!(intro.len(), (i + 1).min(8), "joiner {i}");
        let unique: std::collections::HashSet<_> = intro.iter().collect();
        assert_eq!(unique.len(), intro.len(), "duplicates in {intro:?}");
        seen.extend(intro);
    }
    // Random picks spread over the swarm rather than always the first peers.
    assert!(
        seen.len() > 3000,
        "only {} distinct peers ever introduced",
        seen.len()
    );
}

#[tokio::test]
async fn leaving_is_told_to_contacts_not_to_the_whole_channel() {
    let (addr, _stop) = start_with(|c| c.introduce = 1).await;
    let mut broadcaster = connect(&addr).await;
    join(&mut broadcaster, "news", Role::Broadcaster).await;
    // With one introduction each, both viewers know only the broadcaster.
    let mut leaver = connect(&addr).await;
    let (leaver_id, _) = join(&mut leaver, "news", Role::Viewer).await;
    let mut stranger = connect(&addr).await;
    join(&mut stranger, "news", Role::Viewer).await;
    drop(leaver);
    assert_eq!(
        recv(&mut broadcaster).await,
        ServerMessage::PeerLeft { peer: leaver_id }
    );
    let quiet = next_frame(&mut stranger, Duration::from_millis(500)).await;
    assert!(
        quiet.is_err(),
        "a peer never introduced to the leaver heard of it: {quiet:?}"
    );
}

#[tokio::test]
async fn newcomers_meet_peers_with_free_slots_first_and_can_ask_for_more() {
    let (addr, _stop) = start_with(|c| c.introduce = 2).await;
    let mut broadcaster = connect(&addr).await;
    let (b_id, _) = join(&mut broadcaster, "news", Role::Broadcaster).await;
    let mut viewers = Vec::new();
    for _ in 0..6 {
        let mut ws = connect(&addr).await;
        let (id, _) = join(&mut ws, "news", Role::Viewer).await;
        viewers.push((ws, id));
    }
    // Only the last viewer has room; the others report full.
    for (i, (ws, _)) in viewers.iter_mut().enumerate() {
        let free_slots = if i == 5 { 3 } else { 0 };
        send(ws, ClientMessage::Status { free_slots }).await;
    }
    // Each status comes on its own connection: wait until the server took them in.
    for (ws, _) in viewers.iter_mut() {
        barrier(ws).await;
    }
    let roomy = viewers[5].1;
    let mut newcomers = Vec::new();
    for _ in 0..5 {
        let mut newcomer = connect(&addr).await;
        let (_, intro) = join(&mut newcomer, "news", Role::Viewer).await;
        assert_eq!(
            intro,
            vec![b_id, roomy],
            "the broadcaster, then the one viewer with free slots"
        );
        // A peer that never reported counts as having room; this one is full.
        send(&mut newcomer, ClientMessage::Status { free_slots: 0 }).await;
        barrier(&mut newcomer).await;
        newcomers.push(newcomer);
    }

    // Asking for more gives peers not yet introduced to or with the asker.
    let (ws, first_id) = &mut viewers[0];
    send(ws, ClientMessage::MorePeers {}).await;
    let more = loop {
        if let ServerMessage::Introduce { peers } = recv(ws).await {
            break peers;
        }
    };
    assert_eq!(more.len(), 2, "{more:?}");
    assert!(
        !more.contains(first_id) && !more.contains(&b_id),
        "{more:?}"
    );
}

#[tokio::test]
async fn a_full_broadcaster_is_not_introduced_and_viewers_meet_each_other() {
    let (addr, _stop) = start_with(|c| c.introduce = 3).await;
    let mut broadcaster = connect(&addr).await;
    let (b_id, _) = join(&mut broadcaster, "news", Role::Broadcaster).await;
    let mut first = connect(&addr).await;
    let (first_id, intro) = join(&mut first, "news", Role::Viewer).await;
    assert_eq!(intro, vec![b_id], "a broadcaster with room is introduced");
    send(&mut broadcaster, ClientMessage::Status { free_slots: 0 }).await;
    barrier(&mut broadcaster).await;
    for _ in 0..3 {
        let mut viewer = connect(&addr).await;
        let (_, intro) = join(&mut viewer, "news", Role::Viewer).await;
        assert!(
            !intro.contains(&b_id),
            "a full broadcaster was introduced: {intro:?}"
        );
        assert!(
            intro.contains(&first_id),
            "viewers meet each other instead: {intro:?}"
        );
    }
}

#[tokio::test]
async fn hashed_assets_are_immutable_and_everything_else_revalidates() {
    let (addr, _stop) = start_with(|config| {
        std::fs::write(
            config.web_dir.join("peer-wasm-0123456789abcdef.js"),
            "// glue",
        )
        .unwrap();
        std::fs::write(config.web_dir.join("streamtorrent.js"), "// entry").unwrap();
    })
    .await;
    let cache_control = |response: String| {
        response
            .lines()
            .find_map(|l| l.strip_prefix("cache-control: ").map(str::to_owned))
            .unwrap_or_else(|| panic!("no cache-control in {response}"))
    };
    let hashed = http_get_raw(&addr, "/peer-wasm-0123456789abcdef.js").await;
    assert_eq!(cache_control(hashed), "public, max-age=31536000, immutable");
    for path in ["/streamtorrent.js", "/", "/watch/news", "/api/channels"] {
        let response = http_get_raw(&addr, path).await;
        assert_eq!(cache_control(response), "no-cache", "{path}");
    }
}

/// Viewers are told of the HTTP edges (`--edge-url`), in the order given; the broadcaster,
/// which never fetches, is not.
#[tokio::test]
async fn viewers_are_welcomed_with_the_configured_edges() {
    let edges: Vec<protocol::EdgeUrl> = vec![
        "https://edge-a.example".parse().unwrap(),
        "http://10.0.0.2:8090".parse().unwrap(),
    ];
    let given = edges.clone();
    let (addr, _stop) = start_with(move |config| config.edges = given).await;
    let mut broadcaster = connect(&addr).await;
    let signer = channel_signer("edged");
    send(
        &mut broadcaster,
        ClientMessage::Join {
            channel: "edged".parse().unwrap(),
            role: Role::Broadcaster,
            key: Some(public(&signer)),
            session: Some(protocol::SessionId(7)),
            version: protocol::SIGNAL_VERSION,
        },
    )
    .await;
    let ServerMessage::Challenge { nonce } = recv(&mut broadcaster).await else {
        panic!("a broadcaster is challenged first");
    };
    send(&mut broadcaster, prove(&signer, "edged", &nonce)).await;
    let welcome = recv(&mut broadcaster).await;
    assert!(
        matches!(&welcome, ServerMessage::Welcome { edges, .. } if edges.is_empty()),
        "{welcome:?}"
    );
    let mut viewer = connect(&addr).await;
    send(&mut viewer, viewer_join("edged")).await;
    let welcome = recv(&mut viewer).await;
    assert!(
        matches!(&welcome, ServerMessage::Welcome { edges: told, .. } if *told == edges),
        "{welcome:?}"
    );
}
