//! `streamtorrent edge` over real WebRTC: it follows a live channel when first asked for
//! it and serves what the broadcaster signed over HTTP, byte-identical, verifiable with
//! the channel key alone, with the cache headers a CDN needs, and precise errors.

use std::path::Path;
use std::time::{Duration, Instant};

use protocol::{init_message, Broadcast, ChannelKey, ChunkManifest, PeerMessage, SessionId};
use tests::http::{self, Response};
use tests::netns;
use tests::process::{
    edge, edge_on, free_port, go_live, scratch, signal_server, signal_server_with,
    watcher_as_nobody, BroadcastOptions, NOBODY,
};

const CHANNEL: &str = "edged";

#[test]
fn an_edge_serves_the_signed_broadcast_cacheable_and_answers_precisely() {
    if !netns::enter("an_edge_serves_the_signed_broadcast_cacheable_and_answers_precisely") {
        return;
    }
    let dir = scratch("edge-e2e");
    let (_server, addr) = signal_server(&dir);
    let (_ffmpeg, _broadcaster) = go_live(&addr, CHANNEL, &dir, BroadcastOptions::default());
    // Long waits, so "the next chunk" is always cut within one.
    let (_edge, at) = edge(&addr, &["--wait-ms", "10000"], &dir.join("edge.log"));
    let key = channel_key(&dir.join("broadcaster.key"));

    // Followed on the first request: the index says 503 until the first chunk is in.
    let index = wait_for_index(&at, Duration::from_secs(30));
    let live = &index;
    assert_eq!(index["version"], 1);
    let session: SessionId = live["session"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no session in the index: {index}"));
    let broadcast = Broadcast {
        channel: CHANNEL.parse().expect("a valid name"),
        session,
    };
    let base = format!("/edge/v1/{CHANNEL}/{session}");

    let init = http::get(&at, &format!("{base}/init"), &[]);
    assert_cacheable(&init, "init");
    let Ok(PeerMessage::Init {
        mime,
        data,
        signature,
    }) = PeerMessage::decode(&init.body)
    else {
        panic!("the init body is not an Init message");
    };
    assert!(key.verify(&init_message(&broadcast, &mime, &data), &signature));
    assert_eq!(data, read(&dir.join("broadcaster/init.mp4")));

    // Five chunks from the first keyframe held, each as the broadcaster cut it.
    let first = live["keyframes"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("no keyframe chunk in the index: {index}"));
    for seq in first..first + 5 {
        let manifest = http::get(&at, &format!("{base}/{seq}/manifest"), &[]);
        assert_cacheable(&manifest, "manifest");
        let Ok(PeerMessage::Manifest(manifest)) = PeerMessage::decode(&manifest.body) else {
            panic!("chunk {seq}'s manifest body is not a Manifest message");
        };
        manifest
            .verify(&key, &broadcast)
            .expect("the channel key signed the manifest");
        let chunk = http::get(&at, &format!("{base}/{seq}"), &[]);
        assert_cacheable(&chunk, "chunk");
        assert_matches(&manifest, &chunk.body);
        let cut = read(&dir.join(format!("broadcaster/chunk-{seq:08}.m4s")));
        assert!(chunk.body == cut, "chunk {seq} differs from what was cut");
        // Revalidation costs nothing.
        let etag = chunk.header("etag").expect("an ETag").to_owned();
        let again = http::get(&at, &format!("{base}/{seq}"), &[("If-None-Match", &etag)]);
        assert_eq!(again.status, 304, "chunk {seq} with If-None-Match {etag}");
        assert!(again.body.is_empty());
        // What a viewer missing part of a chunk asks for.
        let part = http::get(
            &at,
            &format!("{base}/{seq}"),
            &[("Range", "bytes=100-16419")],
        );
        assert_eq!(part.status, 206, "a range of chunk {seq}: {}", part.text());
        assert!(
            part.body == cut[100..16420],
            "the range of chunk {seq} differs"
        );
        let content_range = format!("bytes 100-16419/{}", cut.len());
        assert_eq!(part.header("content-range"), Some(content_range.as_str()));
        let past = format!("bytes={}-", cut.len());
        let past = http::get(&at, &format!("{base}/{seq}"), &[("Range", &past)]);
        assert_eq!(past.status, 416, "a range past the end of chunk {seq}");
    }

    // A chunk not cut yet is waited for, not refused.
    let newest = wait_for_index(&at, Duration::from_secs(5))["newest"]
        .as_u64()
        .expect("the index names its newest chunk");
    let asked = Instant::now();
    let next = http::get(&at, &format!("{base}/{}", newest + 1), &[]);
    assert_eq!(next.status, 200, "the next chunk: {}", next.text());
    println!("the next chunk came in {:?}", asked.elapsed());

    let status = |path: &str| http::get(&at, path, &[]);
    let far = status(&format!("{base}/{}", newest + 1000));
    assert_eq!(
        (far.status, far.header("cache-control")),
        (404, Some("no-store"))
    );
    let other = status(&format!(
        "/edge/v1/{CHANNEL}/{}/{newest}",
        SessionId(session.0 ^ 1)
    ));
    assert_eq!(
        other.status,
        404,
        "a broadcast the edge never held: {}",
        other.text()
    );
    assert_eq!(other.header("cache-control"), Some("no-store"));
    assert_eq!(status(&format!("{base}/twelve")).status, 400);
    assert_eq!(status(&format!("/edge/v1/{CHANNEL}/12/init")).status, 400);
    assert_eq!(status("/edge/v1/Not-A-Name!").status, 404);
    assert_eq!(status("/somewhere/else").status, 404);

    // Any page may fetch from it.
    let preflight = http::request(&at, "OPTIONS", &format!("{base}/{first}"), &[]);
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
}

/// An edge told which channels to serve serves only those; one asked too fast, or with
/// too many requests in flight, says when to come back; one following channels on
/// request follows only those the signal server lists as live.
#[test]
fn an_edge_refuses_unlisted_channels_and_clients_that_ask_too_fast() {
    let dir = scratch("edge-limits");
    // No server is needed to refuse: nothing here opens a link.
    let server = "127.0.0.1:9";
    let (_listed, at) = edge(
        server,
        &[
            "--channel",
            "only-this",
            "--requests-per-sec-per-ip",
            "1",
            "--max-requests-per-ip",
            "3",
        ],
        &dir.join("listed.log"),
    );
    let other = http::get(&at, "/edge/v1/another", &[]);
    assert_eq!(other.status, 404, "{}", other.text());
    assert!(other.text().contains("does not serve"), "{}", other.text());
    let listed = http::get(&at, "/edge/v1/only-this", &[]);
    assert_eq!(listed.status, 503, "no chunk yet: {}", listed.text());
    assert_eq!(listed.header("retry-after"), Some("1"));
    // Three requests are the burst; the fourth comes too fast.
    assert_eq!(http::get(&at, "/healthz", &[]).status, 200);
    let fast = http::get(&at, "/healthz", &[]);
    assert_eq!(fast.status, 429, "{}", fast.text());
    assert_eq!(fast.header("retry-after"), Some("1"));

    // Requests still being answered (here: waiting for a chunk) count against the
    // address until they are done.
    let (_waits, at) = edge(
        server,
        &[
            "--channel",
            "only-this",
            "--max-requests-per-ip",
            "2",
            "--wait-ms",
            "3000",
        ],
        &dir.join("waits.log"),
    );
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let at = at.clone();
            std::thread::spawn(move || {
                let path = format!("/edge/v1/only-this/{}/0", SessionId(1));
                http::get(&at, &path, &[]).status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let third = http::get(&at, "/healthz", &[]);
    assert_eq!(third.status, 429, "{}", third.text());
    assert!(third.text().contains("in flight"), "{}", third.text());
    assert_eq!(third.header("retry-after"), Some("1"));
    for wait in waiting {
        assert_eq!(wait.join().expect("a waiting request"), 503);
    }
    assert_eq!(
        http::get(&at, "/healthz", &[]).status,
        200,
        "the slots came back"
    );

    // On request, only what the signal server lists as live is followed; without an
    // answer from it, nothing.
    let (_unreachable, at) = edge(server, &[], &dir.join("unreachable.log"));
    let unreachable = http::get(&at, "/edge/v1/made-up", &[]);
    assert_eq!(unreachable.status, 503, "{}", unreachable.text());
    assert!(unreachable
        .text()
        .contains("cannot reach the signal server"));
    let (_server, addr) = signal_server(&dir);
    let (_on_request, at) = edge(&addr, &[], &dir.join("on-request.log"));
    let made_up = http::get(&at, "/edge/v1/made-up", &[]);
    assert_eq!(made_up.status, 404, "{}", made_up.text());
    assert!(
        made_up.text().contains("no such channel on the air"),
        "{}",
        made_up.text()
    );
    let health: serde_json::Value =
        serde_json::from_slice(&http::get(&at, "/healthz", &[]).body).expect("JSON");
    assert_eq!(
        health["channels"], 0,
        "a made-up channel was followed: {health}"
    );
}

/// A viewer whose UDP is blocked (so no WebRTC link can open) plays everything from the
/// edges the server names. The first edge tampers with every chunk: each is caught
/// against its signed manifest, none of it plays, and the viewer turns to the second.
#[test]
fn a_viewer_without_webrtc_plays_from_the_edge_and_catches_a_tampering_one() {
    if !netns::enter("a_viewer_without_webrtc_plays_from_the_edge_and_catches_a_tampering_one") {
        return;
    }
    let dir = scratch("edge-fallback");
    // The viewer runs as nobody, and writes its recording here.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("the scratch folder's mode can be set");
    netns::block_udp_of(NOBODY);
    let (tampering, honest) = (free_port(), free_port());
    let edge_url = |port: u16| format!("http://127.0.0.1:{port}");
    let (_server, addr) = signal_server_with(
        "127.0.0.1:0",
        &dir,
        &[
            "--edge-url",
            &edge_url(tampering),
            "--edge-url",
            &edge_url(honest),
        ],
    );
    let (_ffmpeg, _broadcaster) = go_live(&addr, CHANNEL, &dir, BroadcastOptions::default());
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let _tamperer = edge_on(
        &addr,
        &listen(tampering),
        &["--channel", CHANNEL, "--test-tamper"],
        &dir.join("tampering-edge.log"),
    );
    let _edge = edge_on(
        &addr,
        &listen(honest),
        &["--channel", CHANNEL],
        &dir.join("edge.log"),
    );

    let chunks = 8;
    let (name, viewer) = watcher_as_nobody(&addr, CHANNEL, &dir, "blocked", chunks, &[]);
    let output = viewer.wait_with_output().expect("the viewer runs");
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    assert!(
        output.status.success(),
        "the viewer without WebRTC did not play {chunks} chunks; see {}/{name}.log",
        dir.display()
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON summary");
    println!("without WebRTC: {summary}");
    assert_eq!(summary["chunks_played"], chunks, "{summary}");
    assert_eq!(summary["bytes_from_peers"], 0, "{summary}");
    assert_eq!(
        summary["bytes_from_source"], 0,
        "UDP was not blocked: {summary}"
    );
    assert!(summary["bytes_from_http"].as_u64() > Some(0), "{summary}");
    assert!(
        summary["bytes_rejected"].as_u64() > Some(0),
        "the tampering edge was never asked: {summary}"
    );
    assert!(
        log.contains("does not match its signed hash") && log.contains(&edge_url(tampering)),
        "the tampered chunk was not reported; see {}/{name}.log",
        dir.display()
    );
    let first = summary["first_seq"].as_u64().expect("a first chunk");
    for seq in first..first + chunks {
        let file = format!("chunk-{seq:08}.m4s");
        let got = read(&dir.join(&name).join(&file));
        assert!(
            got == read(&dir.join("broadcaster").join(&file)),
            "{file} differs from the cut"
        );
    }
}

/// Polls the index until it lists a chunk.
fn wait_for_index(at: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let index = http::get(at, &format!("/edge/v1/{CHANNEL}"), &[]);
        if index.status == 200 {
            assert_eq!(index.header("cache-control"), Some("public, max-age=1"));
            return serde_json::from_slice(&index.body).expect("the index is JSON");
        }
        assert_eq!(index.status, 503, "the index: {}", index.text());
        assert!(
            Instant::now() < deadline,
            "the edge held no chunk within {within:?}: {}",
            index.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_cacheable(response: &Response, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    assert_eq!(
        response.header("cache-control"),
        Some("public, max-age=31536000, immutable"),
        "{what}"
    );
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("*"),
        "{what}"
    );
    assert!(response.header("etag").is_some(), "{what} has no ETag");
}

fn assert_matches(manifest: &ChunkManifest, data: &[u8]) {
    assert_eq!(
        manifest.total as usize,
        data.len(),
        "chunk {}",
        manifest.seq
    );
    for (i, piece) in data.chunks(protocol::PIECE_BYTES).enumerate() {
        assert!(
            manifest.piece_matches(i, piece),
            "piece {i} of chunk {} does not match its signed hash",
            manifest.seq
        );
    }
}

/// The public key in a key file from `streamtorrent keygen`.
fn channel_key(path: &Path) -> ChannelKey {
    let text = std::fs::read_to_string(path).expect("the broadcaster's key file");
    text.lines()
        .find_map(|line| line.strip_prefix("public "))
        .and_then(|key| key.trim().parse().ok())
        .expect("a `public` line with the channel key")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
