//! A watch page in real Chromium beside a polluter: a native viewer that flips a bit in
//! every piece it serves. The page fetches from it, finds the first piece failing the
//! broadcaster's signed hash, drops it and keeps playing; every chunk it appended is
//! byte-identical to the broadcaster's recording (compared by SHA-256).

use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::Value;
use tests::browser::Chromedriver;
use tests::netns;
use tests::process::{go_live, polluter, scratch, workspace_root, BroadcastOptions};

/// Media that must play after the polluter was caught, in seconds of the video's clock.
const PLAY_SECONDS: f64 = 8.0;

const INSTRUMENT: &str = r#"
const v = document.getElementById('video');
window.__st = { started: false, first: 0, waiting: 0 };
const start = () => { if (!window.__st.started) { window.__st.started = true; window.__st.first = v.currentTime; } };
if (!v.paused && v.currentTime > 0) start();
v.addEventListener('playing', start);
v.addEventListener('waiting', () => { if (window.__st.started) window.__st.waiting++; });
"#;

const PROBE: &str = r#"
const v = document.getElementById('video');
return { time: v.currentTime, first: window.__st.first, started: window.__st.started,
         waiting: window.__st.waiting, error: v.error && v.error.message,
         stats: window.streamtorrent && window.streamtorrent.stats() };
"#;

#[test]
fn a_page_fed_a_corrupted_piece_drops_its_sender_and_plays_only_signed_bytes() {
    if !netns::enter("a_page_fed_a_corrupted_piece_drops_its_sender_and_plays_only_signed_bytes") {
        return;
    }
    let web_dir = workspace_root().join("web").join("dist");
    let dir = scratch("browser-pollution");
    let (_server, addr) = tests::process::signal_server(&web_dir);
    // Capped below three times the stream (~480 kbit/s), so the broadcaster pushes each
    // block to one of the two viewers only and each fetches the other half from the
    // other viewer: the page from the polluter. Once the page dropped it, the blocks
    // pushed to the polluter come from the broadcaster: the cap leaves room for that.
    let capped = BroadcastOptions {
        video_kbps: Some(400),
        max_upload_kbps: Some(1300),
    };
    let (_ffmpeg, _broadcaster) = go_live(&addr, "polluted", &dir, capped);
    let _polluter = polluter(&addr, "polluted", &dir);
    std::thread::sleep(Duration::from_secs(2));
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        let outcome = watch_beside_polluter(&client, &addr).await;
        let _ = client.close().await;
        outcome
    });
    let probe = result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    let stats = &probe["stats"];
    // What reached appendBuffer is exactly what the broadcaster cut.
    let appended = stats["appended"]
        .as_array()
        .expect("stats list appended chunks");
    assert!(
        appended.len() >= 5,
        "too few appended chunks listed: {stats}"
    );
    for chunk in appended {
        let seq = chunk["seq"].as_u64().expect("a chunk number");
        let path = dir.join("broadcaster").join(format!("chunk-{seq:08}.m4s"));
        let recorded = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let digest: String = protocol::hash_piece(&recorded)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            chunk["sha256"].as_str(),
            Some(digest.as_str()),
            "chunk {seq} appended differs from the broadcaster's"
        );
    }
    println!(
        "page dropped the polluter ({} bytes rejected), played on: {}",
        stats["bytes_rejected"], probe
    );
}

/// Opens the watch page and waits until it caught the polluter and then played
/// `PLAY_SECONDS` more, skipping no chunk, dropping no other peer, with no media error.
async fn watch_beside_polluter(client: &Client, addr: &str) -> Result<Value, String> {
    let js = |e: fantoccini::error::CmdError| e.to_string();
    client
        // `audit=1`: the page lists what it appended, with its SHA-256.
        .goto(&format!("http://{addr}/watch/polluted?audit=1"))
        .await
        .map_err(js)?;
    client.execute(INSTRUMENT, vec![]).await.map_err(js)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut caught_at: Option<f64> = None;
    loop {
        let probe = client.execute(PROBE, vec![]).await.map_err(js)?;
        if !probe["error"].is_null() {
            return Err(format!("the video element failed: {probe}"));
        }
        let stats = &probe["stats"];
        // Nothing is lost to the polluter: every chunk is played, none skipped. Stalls are
        // not bounded: at a 1.5 s target a chunk refetched from the broadcaster may stall
        // playback, and how often depends on the machine's load (Chromium, ffmpeg and three
        // peers on two cores; a CI run stalled twice in its first two seconds).
        if stats["chunks_missed"].as_u64().unwrap_or(0) > 0 {
            return Err(format!("the page skipped a chunk: {probe}"));
        }
        if stats["peers_dropped"].as_u64().unwrap_or(0) > 1 {
            return Err(format!("the page dropped an honest peer too: {probe}"));
        }
        let time = probe["time"].as_f64().unwrap_or(0.0);
        // Measured on the video's clock once playing: before, it reads 0 and then jumps to
        // the first chunk's timestamp (seconds into the channel), which would pass for
        // seconds played (a flaky pass with one chunk played, found on review).
        let caught = stats["drops"]["polluted"].as_u64().unwrap_or(0) >= 1;
        if caught_at.is_none() && caught && probe["started"] == true {
            if stats["bytes_rejected"].as_u64().unwrap_or(0) == 0 {
                return Err(format!(
                    "dropped for pollution without rejecting bytes: {probe}"
                ));
            }
            caught_at = Some(time);
        }
        if let Some(at) = caught_at {
            if probe["started"] == true && time - at >= PLAY_SECONDS {
                return Ok(probe);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "within 60 s the page did not catch the polluter and play {PLAY_SECONDS} s on: {probe}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
