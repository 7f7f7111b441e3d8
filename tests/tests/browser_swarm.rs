//! A browser swarm: one broadcaster whose upload is capped near 1.5× the stream's bitrate,
//! and four viewers, each its own headless Chromium with its own profile, watching
//! `/watch/demo`. The broadcaster cannot send every viewer its own copy, so the viewers
//! must carry the stream to each other: each plays 30 s with at most one stall, at least
//! three get video from other viewers, and most of the bytes come from viewers. An HTTP
//! edge is configured, as an operator would: with peers delivering, it carries next to
//! nothing. Saves a screenshot of a watch page with its stats panel.

use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::Value;
use tests::browser::Chromedriver;
use tests::netns;
use tests::process::{
    edge_on, free_port, go_live, scratch, signal_server_with, web_dist, BroadcastOptions,
};

const VIEWERS: usize = 4;
/// x264's video bitrate; AAC adds 64 kbit/s.
const VIDEO_KBPS: u32 = 500;
/// 1.5 × (500 + 64) kbit/s; the test checks the ratio against the recorded stream.
const BROADCASTER_UPLOAD_KBPS: u32 = 850;
const PLAY_SECONDS: f64 = 30.0;
const MAX_STALLS: u64 = 1;
/// "Received bytes from other viewers" means at least a few chunks' worth.
const MIN_FROM_PEERS: u64 = 100_000;
/// The most of the payload the edge may carry while peers deliver: a chunk here and
/// there that peers could not bring in time.
const MAX_HTTP_SHARE: f64 = 0.05;

const PROBE: &str = r#"
const v = document.getElementById('video');
let played = 0;
for (let i = 0; i < v.played.length; i++) played += v.played.end(i) - v.played.start(i);
const p = window.streamtorrent;
return { played, stats: p ? p.stats() : null, error: v.error && v.error.message,
         status: document.getElementById('status').textContent };
"#;

#[test]
fn four_browsers_carry_a_capped_broadcast_to_each_other() {
    if !netns::enter("four_browsers_carry_a_capped_broadcast_to_each_other") {
        return;
    }
    let web_dir = web_dist();
    let dir = scratch("browser-swarm");
    let edge_port = free_port();
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    let (_server, addr) = signal_server_with("127.0.0.1:0", &web_dir, &["--edge-url", &edge_url]);
    let record = dir.join("broadcaster");
    let (_ffmpeg, _broadcaster) = go_live(
        &addr,
        "demo",
        &dir,
        BroadcastOptions {
            video_kbps: Some(VIDEO_KBPS),
            max_upload_kbps: Some(BROADCASTER_UPLOAD_KBPS),
        },
    );
    let _edge = edge_on(
        &addr,
        &format!("127.0.0.1:{edge_port}"),
        // Uploading nothing to peers, as it would otherwise be one more peer with a
        // fast uplink, and carry the swarm the viewers are meant to carry.
        &["--channel", "demo", "--max-upload-kbps", "0"],
        &dir.join("edge.log"),
    );
    std::thread::sleep(Duration::from_secs(3));

    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let mut viewers = Vec::new();
        for i in 0..VIEWERS {
            let client = driver.open(&dir.join(format!("profile-{i}"))).await;
            client
                .goto(&format!("http://{addr}/watch/demo"))
                .await
                .map_err(|e| e.to_string())?;
            viewers.push(client);
            // Viewers arrive one after another, as audiences do.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let outcome = watch_all(&viewers).await;
        if outcome.is_ok() {
            let png = viewers[0].screenshot().await.map_err(|e| e.to_string())?;
            let path = dir.join("watch-page.png");
            std::fs::write(&path, png).map_err(|e| e.to_string())?;
            println!("screenshot of a watch page: {}", path.display());
        }
        for client in viewers {
            let _ = client.close().await;
        }
        outcome
    });
    let probes = result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    check_swarm(&probes, &record);
}

/// Polls every viewer until each played `PLAY_SECONDS`; fails at once on a stall too many
/// or a media error.
async fn watch_all(viewers: &[Client]) -> Result<Vec<Value>, String> {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let mut probes = Vec::new();
        for client in viewers {
            probes.push(
                client
                    .execute(PROBE, vec![])
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        for (i, probe) in probes.iter().enumerate() {
            // The whole swarm goes with a failure: one viewer's trouble is often another's
            // link (each page's console, with why links closed, is in its profile's
            // chrome_debug.log).
            if !probe["error"].is_null() {
                let all = swarm_lines(&probes);
                return Err(format!("viewer {i}'s video failed: {probe}\n{all}"));
            }
            if probe["stats"]["stalls"].as_u64().unwrap_or(0) > MAX_STALLS {
                let all = swarm_lines(&probes);
                return Err(format!(
                    "viewer {i} stalled more than {MAX_STALLS} times: {probe}\n{all}"
                ));
            }
        }
        // STREAMTORRENT_TRACE=1: every viewer's figures each second, to see a swarm go wrong.
        if std::env::var_os("STREAMTORRENT_TRACE").is_some() {
            println!("{}", swarm_lines(&probes));
        }
        let done = probes
            .iter()
            .all(|p| p["played"].as_f64().unwrap_or(0.0) >= PLAY_SECONDS);
        if done {
            return Ok(probes);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not every viewer played {PLAY_SECONDS} s within 150 s:\n{}",
                swarm_lines(&probes)
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One line per viewer: what it played, its links, where its bytes came from, its drops.
fn swarm_lines(probes: &[Value]) -> String {
    let mut out = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let s = &p["stats"];
        let neighbours: Vec<String> = s["neighbours"]
            .as_array()
            .map(|ns| ns.iter().map(|n| n["peer"].to_string()).collect())
            .unwrap_or_default();
        out.push(format!(
            "viewer {i}: played {:.1} state {} peers {} {:?} dup {} refused {} dropped {} drops {} from_peers {} from_source {} up {} stalls {} missed {} lag {} buffer {}",
            p["played"].as_f64().unwrap_or(0.0), s["state"], s["peers"], neighbours, s["bytes_duplicate"], s["requests_refused"], s["peers_dropped"], s["drops"], s["bytes_from_peers"],
            s["bytes_from_source"], s["bytes_uploaded"], s["stalls"], s["chunks_missed"], s["lag_ms"], s["buffer_ms"]
        ));
    }
    out.join("\n")
}

fn check_swarm(probes: &[Value], record: &Path) {
    let stat = |p: &Value, name: &str| p["stats"][name].as_u64().unwrap_or(0);
    println!("viewer  played_s  from_peers  from_source  uploaded  stalls  missed  startup_ms  lag_ms  buffer_ms");
    for (i, p) in probes.iter().enumerate() {
        println!(
            "{i:>6}  {:>8.1}  {:>10}  {:>11}  {:>8}  {:>6}  {:>6}  {:>10}  {:>6}  {:>9}",
            p["played"].as_f64().unwrap_or(0.0),
            stat(p, "bytes_from_peers"),
            stat(p, "bytes_from_source"),
            stat(p, "bytes_uploaded"),
            stat(p, "stalls"),
            stat(p, "chunks_missed"),
            p["stats"]["startup_ms"],
            p["stats"]["lag_ms"],
            stat(p, "buffer_ms"),
        );
    }
    let from_peers: u64 = probes.iter().map(|p| stat(p, "bytes_from_peers")).sum();
    let from_source: u64 = probes.iter().map(|p| stat(p, "bytes_from_source")).sum();
    let from_http: u64 = probes.iter().map(|p| stat(p, "bytes_from_http")).sum();
    let received = (from_peers + from_source + from_http).max(1) as f64;
    let share = from_peers as f64 / received;
    let http_share = from_http as f64 / received;
    println!("the edge carried {from_http} bytes: {http_share:.4} of the payload");
    let fed_by_peers = probes
        .iter()
        .filter(|p| stat(p, "bytes_from_peers") >= MIN_FROM_PEERS)
        .count();
    let stream_kbps = recorded_kbps(record);
    let cap_ratio = f64::from(BROADCASTER_UPLOAD_KBPS) / stream_kbps;
    println!(
        "share from viewers {share:.3}; {fed_by_peers} of {VIEWERS} viewers fed by viewers; \
         stream {stream_kbps:.0} kbit/s, broadcaster capped at {BROADCASTER_UPLOAD_KBPS} kbit/s = {cap_ratio:.2}×"
    );
    assert!(
        (1.3..=1.7).contains(&cap_ratio),
        "the broadcaster's cap should be near 1.5× the stream, is {cap_ratio:.2}× of {stream_kbps:.0} kbit/s"
    );
    assert!(
        fed_by_peers >= 3,
        "only {fed_by_peers} viewers got ≥ {MIN_FROM_PEERS} bytes from other viewers"
    );
    assert!(
        share >= 0.5,
        "only {:.0}% of the payload came from other viewers",
        100.0 * share
    );
    assert!(
        http_share <= MAX_HTTP_SHARE,
        "the edge carried {:.1}% of the payload while peers delivered",
        100.0 * http_share
    );
}

/// The stream's bitrate, from the chunks the broadcaster recorded (one a second).
fn recorded_kbps(record: &Path) -> f64 {
    let mut bytes = 0u64;
    let mut chunks = 0u64;
    for entry in std::fs::read_dir(record).expect("the broadcaster records its chunks") {
        let entry = entry.expect("a readable directory entry");
        if entry.file_name() != "init.mp4" {
            bytes += entry.metadata().map_or(0, |m| m.len());
            chunks += 1;
        }
    }
    assert!(chunks > 10, "the broadcaster recorded only {chunks} chunks");
    bytes as f64 * 8.0 / 1000.0 / chunks as f64
}
