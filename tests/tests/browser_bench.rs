//! Browser benchmarks, run by hand (they measure, they do not pass or fail on speed):
//!
//! ```sh
//! scripts/build && cargo test --release -p tests --test browser_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Figures and the machine go in docs/benchmarks.md.

use std::time::Duration;

use serde_json::Value;
use tests::browser::Chromedriver;
use tests::netns;
use tests::process::{go_live, scratch, signal_server, workspace_root, BroadcastOptions};

/// Joins a running channel `JOINS` times, each in a fresh page load, and reports the time
/// to the first frame: from navigation start (page, wasm, signalling, WebRTC, first chunk,
/// planned start) and from the player's creation (`stats().startup_ms`).
#[test]
#[ignore = "benchmark: run by hand, see the file's docs"]
fn first_frame_after_joining_a_running_channel() {
    if !netns::enter("first_frame_after_joining_a_running_channel") {
        return;
    }
    const JOINS: usize = 20;
    let web_dir = workspace_root().join("web").join("dist");
    let dir = scratch("bench-first-frame");
    let (_server, addr) = signal_server(&web_dir);
    let (_ffmpeg, _broadcaster) = go_live(&addr, "demo", &dir, BroadcastOptions::default());
    std::thread::sleep(Duration::from_secs(3));
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (mut from_navigation, mut from_player, mut lag) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        let client = driver.open(&dir.join("profile")).await;
        for join in 0..JOINS {
            client
                .goto(&format!("http://{addr}/watch/demo"))
                .await
                .expect("the page loads");
            let probe = poll(&client, PLAYING, Duration::from_secs(20)).await;
            from_navigation.push(probe["first_frame_ms"].as_f64().expect("a first frame"));
            from_player.push(probe["startup_ms"].as_f64().expect("startup_ms"));
            // Steady state: the delay behind live once the early start is absorbed (0.7 s
            // at 0.9× takes 7 s).
            tokio::time::sleep(Duration::from_secs(10)).await;
            let steady = poll(&client, PLAYING, Duration::from_secs(5)).await;
            lag.push(steady["lag_ms"].as_f64().unwrap_or(f64::NAN));
            println!("join {join}: {probe} then {steady}");
            // Join at a different point of the chunk each time.
            tokio::time::sleep(Duration::from_millis(137 * join as u64 % 1000)).await;
        }
        let _ = client.close().await;
    });
    report(
        "first frame from navigation start (ms)",
        &mut from_navigation,
    );
    report(
        "first frame from player creation, startup_ms (ms)",
        &mut from_player,
    );
    report(
        "delay behind live 10 s after the first frame, lag_ms (ms)",
        &mut lag,
    );
}

/// Raw browser-to-browser data-channel throughput on this machine: two peer connections
/// in one headless Chromium page (inside the test's network namespace), sending the
/// swarm's 16,320-byte pieces for 5 s, keeping the send queue under a high-water mark:
/// the swarm's 64 KiB, and 1 MiB as the baseline in the same run.
#[test]
#[ignore = "benchmark: run by hand, see the file's docs"]
fn data_channel_throughput_between_two_peer_connections() {
    if !netns::enter("data_channel_throughput_between_two_peer_connections") {
        return;
    }
    let web_dir = workspace_root().join("web").join("dist");
    let dir = scratch("bench-datachannel");
    let (_server, addr) = signal_server(&web_dir);
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let client = driver.open(&dir.join("profile")).await;
        client
            .goto(&format!("http://{addr}/healthz"))
            .await
            .expect("a page to run in");
        for high_water in [64 * 1024, 1024 * 1024, 64 * 1024, 1024 * 1024] {
            let result = client
                .execute_async(THROUGHPUT, vec![high_water.into()])
                .await
                .expect("the benchmark script runs");
            println!(
                "high water {high_water} B: {:.1} MB/s ({:.0} Mbit/s) received, {} pieces",
                result["mb_per_s"].as_f64().unwrap_or(0.0),
                result["mb_per_s"].as_f64().unwrap_or(0.0) * 8.0,
                result["pieces"]
            );
        }
        let _ = client.close().await;
    });
}

const PLAYING: &str = r#"
const s = window.streamtorrent && window.streamtorrent.stats();
if (!s || s.state !== 'playing' || s.startup_ms === null) return null;
return { first_frame_ms: window.__first_frame_ms, startup_ms: s.startup_ms, lag_ms: s.lag_ms };
"#;

async fn poll(client: &fantoccini::Client, script: &str, timeout: Duration) -> Value {
    // The first 'playing' event's time, from navigation start, recorded by the page
    // itself as soon as the script can listen (before the first chunk can arrive).
    let _ = client
        .execute(
            "if (window.__first_frame_ms === undefined) { window.__first_frame_ms = null; const v = document.getElementById('video'); const mark = () => { if (window.__first_frame_ms === null) window.__first_frame_ms = performance.now(); }; if (!v.paused && v.readyState > 2) mark(); v.addEventListener('playing', mark); }",
            vec![],
        )
        .await;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let probe = client.execute(script, vec![]).await.expect("probe runs");
        if !probe.is_null() && !probe["first_frame_ms"].is_null() {
            return probe;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no first frame within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(what: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: n={} min {:.0} p50 {:.0} p95 {:.0} max {:.0}",
        samples.len(),
        at(0.0),
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

/// Two RTCPeerConnections in this page; sends 16,320-byte messages for 5 s whenever the
/// queue is under the high-water mark (refilled on `bufferedamountlow` at a quarter of it).
const THROUGHPUT: &str = r#"
const [highWater, done] = arguments;
const a = new RTCPeerConnection(), b = new RTCPeerConnection();
a.onicecandidate = e => e.candidate && b.addIceCandidate(e.candidate);
b.onicecandidate = e => e.candidate && a.addIceCandidate(e.candidate);
const ch = a.createDataChannel('bench');
ch.binaryType = 'arraybuffer';
let received = 0, pieces = 0, start = 0, stop = false;
b.ondatachannel = e => { e.channel.binaryType = 'arraybuffer'; e.channel.onmessage = m => { if (start) { received += m.data.byteLength; pieces++; } }; };
const piece = new Uint8Array(16320);
const fill = () => { while (!stop && ch.bufferedAmount < highWater) ch.send(piece); };
ch.bufferedAmountLowThreshold = highWater / 4;
ch.onbufferedamountlow = fill;
ch.onopen = () => {
  start = performance.now();
  fill();
  setTimeout(() => {
    stop = true;
    const secs = (performance.now() - start) / 1000;
    done({ mb_per_s: received / secs / 1e6, pieces });
    a.close(); b.close();
  }, 5000);
};
(async () => {
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
})();
"#;
