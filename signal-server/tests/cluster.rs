//! Several signal servers sharing channels through a real Redis (`--redis`): peers on
//! different servers meet and signal each other, leaves and claims reach them, one key
//! owns a channel, and the faults: a server killed, Redis restarted or unreachable, a
//! late cleanup after a broadcaster moved.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use protocol::{ClientMessage, ErrorCode, PeerId, Role, ServerMessage, SignalPayload};
use signal_server::ServerConfig;
use tests::redis::Redis;

/// A server in this test process sharing channels through `redis`; dropping the sender
/// stops it.
async fn server(redis: &Redis) -> (String, tokio::sync::oneshot::Sender<()>) {
    // The servers' warnings explain a failure (RUST_LOG for more).
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    let url = redis.url();
    start_with(move |config: &mut ServerConfig| {
        config.redis = Some(url);
        config.max_connections_per_ip = 1000;
        config.opens_per_sec_per_ip = 1000.0;
    })
    .await
}

/// Waits (polling, up to `within`) until `/healthz` on `addr` starts with `prefix`.
async fn health_becomes(addr: &str, prefix: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let health = http_get(addr, "/healthz").await;
        if health.starts_with(prefix) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "/healthz on {addr} still {health:?} after {within:?}, waiting for {prefix:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `/api/channels` on `addr` lists `channel` with `viewers`: what Redis
/// holds, so every server can introduce the peers written there.
async fn listed(addr: &str, channel: &str, viewers: usize) {
    let wanted = format!("{{\"name\":\"{channel}\",\"viewers\":{viewers}");
    let start = Instant::now();
    loop {
        let list = http_get(addr, "/api/channels").await;
        if list.contains(&wanted) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} lists {list}, not {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn offer(sdp: &str) -> SignalPayload {
    SignalPayload::Offer { sdp: sdp.into() }
}

/// The next message that is not an introduction or a claim (which may come at any time).
async fn next_signal_or_error(ws: &mut Ws) -> ServerMessage {
    loop {
        match recv(ws).await {
            ServerMessage::Introduce { .. } | ServerMessage::Claimed { .. } => continue,
            other => return other,
        }
    }
}

async fn signal(ws: &mut Ws, to: PeerId, sdp: &str) {
    send(
        ws,
        ClientMessage::Signal {
            to,
            signal: offer(sdp),
        },
    )
    .await;
}

async fn expect_signal(ws: &mut Ws, from: PeerId, sdp: &str) {
    let got = next_signal_or_error(ws).await;
    assert_eq!(
        got,
        ServerMessage::Signal {
            from,
            signal: offer(sdp)
        }
    );
}

#[tokio::test]
async fn peers_on_two_servers_meet_signal_each_other_and_hear_leaves() {
    let redis = Redis::start();
    let (a, _stop_a) = server(&redis).await;
    let (b, _stop_b) = server(&redis).await;
    let mut broadcaster = connect(&a).await;
    let (bid, _) = join(&mut broadcaster, "news", Role::Broadcaster).await;
    listed(&b, "news", 0).await;

    // A viewer on B meets the broadcaster on A, with its key and broadcast.
    let mut v1 = connect(&b).await;
    send(&mut v1, viewer_join("news")).await;
    let ServerMessage::Welcome {
        peer_id: v1_id,
        channel_key,
        broadcaster: named,
        session,
        ..
    } = recv(&mut v1).await
    else {
        panic!("expected welcome")
    };
    assert_eq!(named, Some(bid), "B names A's broadcaster");
    assert_eq!(session, Some(protocol::SessionId(7)));
    assert_eq!(channel_key, Some(public(&channel_signer("news"))));
    assert_eq!(
        recv(&mut v1).await,
        ServerMessage::Introduce { peers: vec![bid] }
    );

    // Set-up both ways across the servers, in order.
    for i in 0..5 {
        signal(&mut v1, bid, &format!("offer {i}")).await;
    }
    for i in 0..5 {
        expect_signal(&mut broadcaster, v1_id, &format!("offer {i}")).await;
    }
    signal(&mut broadcaster, v1_id, "answer").await;
    expect_signal(&mut v1, bid, "answer").await;

    // A viewer on A meets both; it may signal the one on B, and B's may answer.
    listed(&a, "news", 1).await;
    // A's metrics: its own peers (the broadcaster), and from Redis the whole channel's
    // viewers (v1, on B).
    let metrics = http_get(&a, "/metrics").await;
    for line in [
        "streamtorrent_channel_peers{channel=\"news\"} 1",
        "streamtorrent_cluster_channel_viewers{channel=\"news\"} 1",
        "streamtorrent_cluster_viewers 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
    let mut v2 = connect(&a).await;
    let (v2_id, peers) = join(&mut v2, "news", Role::Viewer).await;
    assert!(peers.contains(&bid) && peers.contains(&v1_id), "{peers:?}");
    signal(&mut v2, v1_id, "from v2").await;
    expect_signal(&mut v1, v2_id, "from v2").await;
    signal(&mut v1, v2_id, "to v2").await;
    expect_signal(&mut v2, v1_id, "to v2").await;

    // A peer never introduced to one on another server cannot reach it.
    let mut stranger = connect(&b).await;
    send(&mut stranger, viewer_join("sports")).await;
    let _ = recv(&mut stranger).await;
    let _ = recv(&mut stranger).await;
    signal(&mut stranger, v2_id, "sneaky").await;
    let refused = next_signal_or_error(&mut stranger).await;
    assert!(
        matches!(
            refused,
            ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                ..
            }
        ),
        "{refused:?}"
    );

    // The viewer on B leaves: its contacts on A hear it.
    send(&mut v1, ClientMessage::Leave {}).await;
    assert_eq!(
        next_signal_or_error(&mut broadcaster).await,
        ServerMessage::PeerLeft { peer: v1_id }
    );
    assert_eq!(
        next_signal_or_error(&mut v2).await,
        ServerMessage::PeerLeft { peer: v1_id }
    );
    listed(&b, "news", 1).await;
    // Each server's count of servers follows its heartbeat.
    let start = Instant::now();
    loop {
        let metrics = http_get(&a, "/metrics").await;
        assert!(metrics.contains("streamtorrent_redis_up 1"), "{metrics}");
        if metrics.contains("streamtorrent_cluster_servers 2") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_claim_on_one_server_reaches_viewers_waiting_on_another() {
    let redis = Redis::start();
    let (a, _stop_a) = server(&redis).await;
    let (b, _stop_b) = server(&redis).await;
    let mut waiting = connect(&b).await;
    let (_, peers) = join(&mut waiting, "late", Role::Viewer).await;
    assert!(peers.is_empty());
    health_becomes(&a, "ok: server", Duration::from_secs(5)).await;
    let mut broadcaster = connect(&a).await;
    let (bid, _) = join(&mut broadcaster, "late", Role::Broadcaster).await;
    loop {
        match recv(&mut waiting).await {
            ServerMessage::Claimed {
                channel_key,
                broadcaster,
                ..
            } => {
                assert_eq!(broadcaster, bid);
                assert_eq!(channel_key, public(&channel_signer("late")));
                break;
            }
            ServerMessage::Introduce { .. } => continue,
            other => panic!("expected claimed, got {other:?}"),
        }
    }
}

/// Two keys claiming one channel on two servers at the same moment: exactly one owns it,
/// on both servers.
#[tokio::test]
async fn two_keys_claiming_one_channel_on_two_servers_at_once_get_exactly_one_owner() {
    use ed25519_dalek::SigningKey;
    let redis = Redis::start();
    let (a, _stop_a) = server(&redis).await;
    let (b, _stop_b) = server(&redis).await;
    for round in 0..8u8 {
        let channel = format!("race{round}");
        let signers = [
            SigningKey::from_bytes(&[round + 1; 32]),
            SigningKey::from_bytes(&[round + 101; 32]),
        ];
        let mut sockets = [connect(&a).await, connect(&b).await];
        let mut nonces = Vec::new();
        for (ws, signer) in sockets.iter_mut().zip(&signers) {
            send(
                ws,
                ClientMessage::Join {
                    channel: channel.parse().unwrap(),
                    role: Role::Broadcaster,
                    key: Some(public(signer)),
                    session: Some(protocol::SessionId(1)),
                    version: protocol::SIGNAL_VERSION,
                },
            )
            .await;
            let ServerMessage::Challenge { nonce } = recv(ws).await else {
                panic!("expected a challenge: nobody owns {channel} yet")
            };
            nonces.push(nonce);
        }
        // Both answers sent before either is read.
        let [ws_a, ws_b] = &mut sockets;
        let (pa, pb) = (
            prove(&signers[0], &channel, &nonces[0]),
            prove(&signers[1], &channel, &nonces[1]),
        );
        tokio::join!(send(ws_a, pa), send(ws_b, pb));
        let (ra, rb) = tokio::join!(recv(ws_a), recv(ws_b));
        let welcomed = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, ServerMessage::Welcome { .. }))
            .count();
        let taken = [&ra, &rb]
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    ServerMessage::Error {
                        code: ErrorCode::ChannelTaken,
                        ..
                    }
                )
            })
            .count();
        assert_eq!((welcomed, taken), (1, 1), "round {round}: {ra:?} / {rb:?}");
        let winner = usize::from(matches!(rb, ServerMessage::Welcome { .. }));
        // Both servers name the winner's key to a viewer.
        for addr in [&a, &b] {
            let mut viewer = connect(addr).await;
            send(&mut viewer, viewer_join(&channel)).await;
            let ServerMessage::Welcome { channel_key, .. } = recv(&mut viewer).await else {
                panic!("expected welcome")
            };
            assert_eq!(
                channel_key,
                Some(public(&signers[winner])),
                "round {round} on {addr}"
            );
        }
    }
}

/// The owner's new session on B replaces its old one on A; A's cleanup of the old one,
/// coming after B listed the new one, must not unlist the new broadcaster.
#[tokio::test]
async fn a_late_cleanup_of_a_replaced_broadcaster_never_removes_its_successor() {
    let redis = Redis::start();
    let (a, _stop_a) = server(&redis).await;
    let (b, _stop_b) = server(&redis).await;
    let mut old = connect(&a).await;
    let (old_id, _) = join(&mut old, "moved", Role::Broadcaster).await;
    listed(&b, "moved", 0).await;
    let mut new = connect(&b).await;
    let (new_id, _) = join(&mut new, "moved", Role::Broadcaster).await;
    // A hears of the new session and takes the old one out.
    loop {
        match recv(&mut old).await {
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, ErrorCode::ChannelTaken);
                break;
            }
            ServerMessage::Introduce { .. } => continue,
            other => panic!("expected channel_taken, got {other:?}"),
        }
    }
    // From then on, for longer than A's cleanup takes but shorter than a presence
    // refresh (which would mask a lost entry), both servers name the new broadcaster.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        for addr in [&a, &b] {
            let list = http_get(addr, "/api/channels").await;
            assert!(
                list.contains("\"name\":\"moved\""),
                "{addr}: {list}; Redis: {:?} {:?}",
                redis.reply("HGETALL st:ch:moved:bc"),
                redis.reply("SMEMBERS st:live")
            );
            let mut viewer = connect(addr).await;
            send(&mut viewer, viewer_join("moved")).await;
            let ServerMessage::Welcome { broadcaster, .. } = recv(&mut viewer).await else {
                panic!("expected welcome")
            };
            assert_eq!(broadcaster, Some(new_id), "{addr}, old was {old_id}");
        }
    }
}

/// A server process for the tests that kill one: `signal-server --redis` on port 0.
struct Process {
    child: Child,
    addr: String,
}

impl Process {
    fn start(redis: &Redis) -> Process {
        use std::io::BufRead;
        let web = std::env::temp_dir().join(format!("st-web-proc-{}", std::process::id()));
        std::fs::create_dir_all(&web).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_signal-server"))
            .args(["--listen", "127.0.0.1:0", "--redis", &redis.url()])
            .args([
                "--max-connections-per-ip",
                "1000",
                "--opens-per-sec-per-ip",
                "1000",
            ])
            .arg("--web-dir")
            .arg(&web)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Process { child, addr }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_killed_server_s_peers_are_refused_at_once_and_no_longer_introduced_but_links_stay() {
    let redis = Redis::start();
    let mut doomed = Process::start(&redis);
    let (b, _stop_b) = server(&redis).await;
    let mut broadcaster = connect(&b).await;
    let (bid, _) = join(&mut broadcaster, "crash", Role::Broadcaster).await;
    listed(&doomed.addr, "crash", 0).await;
    let mut lost = connect(&doomed.addr).await;
    let (lost_id, peers) = join(&mut lost, "crash", Role::Viewer).await;
    assert_eq!(peers, vec![bid]);
    signal(&mut lost, bid, "hello").await;
    expect_signal(&mut broadcaster, lost_id, "hello").await;
    // A viewer on B linked to it: it must keep its link when the server dies.
    let mut linked = connect(&b).await;
    let (linked_id, peers) = join(&mut linked, "crash", Role::Viewer).await;
    assert!(peers.contains(&lost_id), "{peers:?}");
    signal(&mut linked, lost_id, "offer").await;
    expect_signal(&mut lost, linked_id, "offer").await;
    listed(&b, "crash", 2).await;

    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    // At once: nobody reads the dead server's inbox.
    signal(&mut broadcaster, lost_id, "anyone?").await;
    let refused = next_signal_or_error(&mut broadcaster).await;
    assert!(
        matches!(
            &refused,
            ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    // Within the stated bound (5 s to expire, 3 s missing, a heartbeat) it is no longer
    // introduced: a join after the bound meets only the living.
    let gone_within = Duration::from_secs(10);
    let mut introduced_dead = true;
    while introduced_dead && killed.elapsed() < gone_within {
        let mut late = connect(&b).await;
        let (_, peers) = join(&mut late, "crash", Role::Viewer).await;
        introduced_dead = peers.contains(&lost_id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !introduced_dead,
        "still introduced {:?} after the kill",
        killed.elapsed()
    );
    // Found gone within the bound…
    while !http_get(&b, "/metrics")
        .await
        .contains("streamtorrent_cluster_servers_gone_total 1")
    {
        assert!(
            killed.elapsed() < gone_within,
            "not found gone within {gone_within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …and its link left alone: the viewer linked to it was not told `PeerLeft` (it would
    // drop a working WebRTC link whose far end only lost its server); a signal to it is
    // refused at once. (The late joiners above came and went: their leaves are not its.)
    signal(&mut linked, lost_id, "still there?").await;
    let refused = loop {
        match next_signal_or_error(&mut linked).await {
            ServerMessage::PeerLeft { peer } if peer != lost_id => continue,
            other => break other,
        }
    };
    assert!(
        matches!(
            &refused,
            ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                ..
            }
        ),
        "{refused:?}"
    );
    health_becomes(&b, "ok: server", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn after_a_redis_restart_servers_list_their_peers_again_and_nobody_is_dropped() {
    let mut redis = Redis::start();
    let (a, _stop_a) = server(&redis).await;
    let (b, _stop_b) = server(&redis).await;
    let mut broadcaster = connect(&a).await;
    let (bid, _) = join(&mut broadcaster, "tv", Role::Broadcaster).await;
    listed(&b, "tv", 0).await;
    let mut viewer = connect(&b).await;
    let (vid, _) = join(&mut viewer, "tv", Role::Viewer).await;

    redis.restart();
    assert_eq!(
        redis.command("EXISTS st:owner:tv"),
        Some(":0".into()),
        "a fresh Redis"
    );
    // Both servers read their notes again and list everything (the owner included).
    for addr in [&a, &b] {
        health_becomes(addr, "ok: server", Duration::from_secs(10)).await;
    }
    let back = Instant::now();
    listed(&b, "tv", 1).await;
    listed(&a, "tv", 1).await;
    // At once, in the beat that finds Redis back, not at the next periodic refresh (5 s).
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "listed again only {:?} after Redis answered",
        back.elapsed()
    );
    let owner = redis.reply("GET st:owner:tv").unwrap_or_default();
    let key = public(&channel_signer("tv")).to_string();
    assert!(
        owner.contains(&key),
        "the owner is recorded again: {owner:?}"
    );
    // The servers' peers never heard a leave: links across servers stay, and signals
    // between them pass again.
    signal(&mut viewer, bid, "after").await;
    expect_signal(&mut broadcaster, vid, "after").await;
    signal(&mut broadcaster, vid, "back").await;
    expect_signal(&mut viewer, bid, "back").await;
    let mut fresh = connect(&b).await;
    let (_, peers) = join(&mut fresh, "tv", Role::Viewer).await;
    assert!(peers.contains(&bid) && peers.contains(&vid), "{peers:?}");
    // Another key cannot take the channel, not even on a server that never knew it.
    let (c, _stop_c) = server(&redis).await;
    let thief = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let mut ws = connect(&c).await;
    send(
        &mut ws,
        ClientMessage::Join {
            channel: "tv".parse().unwrap(),
            role: Role::Broadcaster,
            key: Some(public(&thief)),
            session: Some(protocol::SessionId(2)),
            version: protocol::SIGNAL_VERSION,
        },
    )
    .await;
    assert!(matches!(
        recv(&mut ws).await,
        ServerMessage::Error {
            code: ErrorCode::ChannelTaken,
            ..
        }
    ));
}

#[tokio::test]
async fn with_redis_unreachable_each_server_serves_its_own_peers_and_recovers_by_itself() {
    let redis = Redis::start();
    let (a, _stop_a) = server(&redis).await;
    let (b, _stop_b) = server(&redis).await;
    let mut broadcaster = connect(&a).await;
    let (bid, _) = join(&mut broadcaster, "storm", Role::Broadcaster).await;
    listed(&b, "storm", 0).await;
    let mut across = connect(&b).await;
    let (aid, _) = join(&mut across, "storm", Role::Viewer).await;

    redis.pause();
    let paused = Instant::now();
    health_becomes(&a, "degraded: Redis unreachable", Duration::from_secs(5)).await;
    // A still introduces its own peers and relays between them.
    let mut local = connect(&a).await;
    let (lid, peers) = join(&mut local, "storm", Role::Viewer).await;
    assert_eq!(peers, vec![bid]);
    signal(&mut local, bid, "still here").await;
    expect_signal(&mut broadcaster, lid, "still here").await;
    let metrics = http_get(&a, "/metrics").await;
    assert!(metrics.contains("streamtorrent_redis_up 0"), "{metrics}");

    // Longer than a server's entry lasts: at the resume, each server finds the other
    // expired until it beats again, which must not count as gone.
    while paused.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.resume();
    health_becomes(&a, "ok: server", Duration::from_secs(10)).await;
    health_becomes(&b, "ok: server", Duration::from_secs(10)).await;
    listed(&b, "storm", 2).await;
    let mut remote = connect(&b).await;
    let (rid, peers) = join(&mut remote, "storm", Role::Viewer).await;
    assert!(peers.contains(&bid), "{peers:?}");
    signal(&mut remote, bid, "across again").await;
    expect_signal(&mut broadcaster, rid, "across again").await;
    // The viewer on B that met A's broadcaster before the outage still reaches it: no
    // leave was made up for either.
    signal(&mut across, bid, "kept").await;
    expect_signal(&mut broadcaster, aid, "kept").await;
}

#[tokio::test]
async fn a_redis_that_answers_late_is_not_taken_for_down() {
    let redis = Redis::start();
    let (a, _stop_a) = server(&redis).await;
    let (b, _stop_b) = server(&redis).await;
    let mut broadcaster = connect(&a).await;
    let (bid, _) = join(&mut broadcaster, "busy", Role::Broadcaster).await;
    listed(&b, "busy", 0).await;

    // Redis stops answering for 2.2 s: longer than a command waits (1 s, so a heartbeat
    // under the old limit is marked down before the stall ends), shorter than the
    // heartbeat's allowance (3 s) with room for the polling below. (Seen under load: a
    // burst of relays on a busy machine.)
    redis.pause();
    let paused = Instant::now();
    // A join meanwhile gives up on Redis after 1 s and meets this server's peers.
    let mut local = connect(&a).await;
    let (_, peers) = join(&mut local, "busy", Role::Viewer).await;
    assert_eq!(peers, vec![bid]);
    println!("joined {:?} into the stall", paused.elapsed());
    while paused.elapsed() < Duration::from_millis(2200) {
        for server in [&a, &b] {
            let health = http_get(server, "/healthz").await;
            assert!(
                health.starts_with("ok: server"),
                "{server} at {:?} into the stall: {health}",
                paused.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.resume();
    // Still sharing: a viewer on B meets A's broadcaster and reaches it, and the late
    // answer was counted, not taken for an outage.
    let mut remote = connect(&b).await;
    let (rid, peers) = join(&mut remote, "busy", Role::Viewer).await;
    assert!(peers.contains(&bid), "{peers:?}");
    signal(&mut remote, bid, "after the stall").await;
    expect_signal(&mut broadcaster, rid, "after the stall").await;
    for server in [&a, &b] {
        let health = http_get(server, "/healthz").await;
        assert!(health.starts_with("ok: server"), "{server}: {health}");
    }
    let metrics = http_get(&a, "/metrics").await;
    let slow: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamtorrent_cluster_slow_answers_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no slow answers counted in {metrics}"));
    assert!(slow > 0, "{metrics}");
}
