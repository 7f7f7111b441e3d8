//! Two signal servers sharing one channel through a real Redis, behind a real nginx, as an
//! operator runs them for a big event. Server A has the broadcaster (its upload capped near
//! 1.5× the stream, so viewers must carry it) and two native viewers; server B, reached
//! through nginx, has a native viewer and a Chromium. Every viewer plays, and viewers on B
//! get chunks from viewers on A. Then B is killed (SIGKILL) mid-stream: its viewers
//! reconnect through nginx to A and rejoin, and every viewer keeps playing.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::Value;
use tests::browser::Chromedriver;
use tests::netns;
use tests::nginx::{Nginx, Upstream};
use tests::process::{
    go_live, http_get, scratch, signal_server_with, wait_for_channel, watcher, web_dist,
    BroadcastOptions,
};
use tests::redis::Redis;

const CHANNEL: &str = "final";
/// Native viewers play this many chunks (one a second), across the kill.
const CHUNKS: u64 = 50;
const VIDEO_KBPS: u32 = 500;
/// About 1.5 × (500 + 64) kbit/s: the broadcaster cannot serve every viewer a copy.
const BROADCASTER_UPLOAD_KBPS: u32 = 850;
/// The Chromium on B plays this long, B being killed after `KILL_AFTER_PLAYED`.
const PLAY_SECONDS: f64 = 30.0;
const KILL_AFTER_PLAYED: f64 = 12.0;
const MAX_STALLS: u64 = 1;
/// A native counts every chunk played even a millisecond late. One such is usual at
/// start-up here (the second chunk, with the broadcaster capped: three runs of this test
/// on one machine saw it in two of three viewers; start-up is the swarm issue's), so one
/// more is allowed across the kill.
const MAX_NATIVE_STALLS: u64 = 2;
/// "Got chunks from viewers on A" means at least a couple of chunks' worth.
const MIN_FROM_A: f64 = 100_000.0;

const PROBE: &str = r#"
const v = document.getElementById('video');
let played = 0;
for (let i = 0; i < v.played.length; i++) played += v.played.end(i) - v.played.start(i);
const p = window.streamtorrent;
return { played, stats: p ? p.stats() : null, error: v.error && v.error.message };
"#;

#[test]
fn viewers_on_two_servers_share_a_channel_and_survive_one_server_dying() {
    if !netns::enter("viewers_on_two_servers_share_a_channel_and_survive_one_server_dying") {
        return;
    }
    let dir = scratch("cluster-e2e");
    let web_dir = web_dist();
    let redis = Redis::start();
    let shared = ["--redis", &redis.url()];
    let (_a, a) = signal_server_with("127.0.0.1:0", &web_dir, &shared);
    let (mut b_server, b) = signal_server_with("127.0.0.1:0", &web_dir, &shared);
    // B first, A only while B is down: where each connection lands is known.
    let nginx = Nginx::start(
        &dir,
        &[
            Upstream {
                addr: &b,
                backup: false,
            },
            Upstream {
                addr: &a,
                backup: true,
            },
        ],
    );
    let (_ffmpeg, _broadcaster) = go_live(
        &a,
        CHANNEL,
        &dir,
        BroadcastOptions {
            video_kbps: Some(VIDEO_KBPS),
            max_upload_kbps: Some(BROADCASTER_UPLOAD_KBPS),
        },
    );
    wait_for_channel(&b, CHANNEL, Duration::from_secs(10));

    let on_a: Vec<(String, Child)> = ["a1", "a2"]
        .iter()
        .map(|name| watcher(&a, CHANNEL, &dir, name, CHUNKS, &[]))
        .collect();
    let on_b = watcher(&nginx.addr, CHANNEL, &dir, "b1", CHUNKS, &[]);

    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (result, summaries) = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        let outcome = watch_across_the_kill(&client, &nginx, &a, &b, &mut b_server).await;
        // The page stays in the swarm until the natives are done: a viewer leaving is
        // another test's concern, and this one's natives should not pay for it.
        let natives = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                let mut summaries = HashMap::new();
                for (name, child) in on_a.into_iter().chain([on_b]) {
                    summaries.insert(name.clone(), played_all(&dir, &name, child));
                }
                summaries
            }
        })
        .await;
        let _ = client.close().await;
        (outcome, natives)
    });
    let chromium = result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    let summaries = summaries.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let a_ids: Vec<&str> = ["a1", "a2"]
        .iter()
        .map(|n| summaries[*n]["peer"].as_str().expect("a peer id"))
        .collect();
    // What B's viewers got from A's: the native's exact count from its neighbours at the
    // end, the Chromium's from its per-neighbour rates sampled each second.
    let b1_from_a: u64 = summaries["b1"]["neighbours"]
        .as_array()
        .expect("neighbours")
        .iter()
        .filter(|n| a_ids.contains(&n["peer"].as_str().unwrap_or_default()))
        .map(|n| n["bytes_down"].as_u64().unwrap_or(0))
        .sum();
    let chromium_from_a: f64 = a_ids
        .iter()
        .map(|id| chromium.from.get(*id).copied().unwrap_or(0.0))
        .sum();
    println!(
        "viewers on B from viewers on A: b1 {b1_from_a} bytes, Chromium ≈ {chromium_from_a:.0} bytes; \
         Chromium played {:.1} s, {} stall(s)",
        chromium.played, chromium.stalls
    );
    assert!(
        b1_from_a as f64 + chromium_from_a >= MIN_FROM_A,
        "viewers on B got only {b1_from_a} + {chromium_from_a:.0} bytes from viewers on A \
         ({a_ids:?}): {}",
        summaries["b1"]
    );
}

/// What the Chromium on B did.
struct Watched {
    played: f64,
    stalls: u64,
    /// Estimated payload bytes from each neighbour, by peer id.
    from: HashMap<String, f64>,
}

/// Plays on B until `KILL_AFTER_PLAYED`, kills B, checks both of B's viewers rejoin on A,
/// and plays on to `PLAY_SECONDS`.
async fn watch_across_the_kill(
    client: &Client,
    nginx: &Nginx,
    a: &str,
    b: &str,
    b_server: &mut tests::process::Guard,
) -> Result<Watched, String> {
    client
        .goto(&format!("http://{}/watch/{CHANNEL}", nginx.addr))
        .await
        .map_err(|e| e.to_string())?;
    // The broadcaster and two viewers on A, a viewer and the page on B.
    until(Duration::from_secs(20), || {
        connections(a) == Some(3) && connections(b) == Some(2)
    })
    .await
    .map_err(|_| {
        format!(
            "connections A {:?} (want 3), B {:?} (want 2)",
            connections(a),
            connections(b)
        )
    })?;
    let mut watched = Watched {
        played: 0.0,
        stalls: 0,
        from: HashMap::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = None;
    let mut last = Instant::now();
    while watched.played < PLAY_SECONDS {
        if Instant::now() > deadline {
            return Err(format!(
                "the Chromium played {:.1} s of {PLAY_SECONDS} within 120 s",
                watched.played
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let probe = client
            .execute(PROBE, vec![])
            .await
            .map_err(|e| e.to_string())?;
        if !probe["error"].is_null() {
            return Err(format!("the Chromium's video failed: {probe}"));
        }
        let stats = &probe["stats"];
        watched.played = probe["played"].as_f64().unwrap_or(0.0);
        watched.stalls = stats["stalls"].as_u64().unwrap_or(0);
        if watched.stalls > MAX_STALLS {
            return Err(format!(
                "the Chromium stalled more than {MAX_STALLS} times: {probe}"
            ));
        }
        let seconds = last.elapsed().as_secs_f64();
        last = Instant::now();
        for n in stats["neighbours"].as_array().into_iter().flatten() {
            let peer = n["peer"].as_str().unwrap_or_default().to_owned();
            let kbps = n["down_kbps"].as_f64().unwrap_or(0.0);
            *watched.from.entry(peer).or_default() += kbps * 125.0 * seconds;
        }
        if killed.is_none() && watched.played >= KILL_AFTER_PLAYED {
            b_server.0.kill().map_err(|e| e.to_string())?;
            let _ = b_server.0.wait();
            println!("server B killed after {:.1} s played", watched.played);
            killed = Some(Instant::now());
        }
        // Both of B's viewers are back, on A, through nginx.
        if let Some(at) = killed {
            if at.elapsed() > Duration::from_secs(20) && connections(a) != Some(5) {
                return Err(format!(
                    "B's viewers did not rejoin on A within 20 s: A has {:?} connections",
                    connections(a)
                ));
            }
        }
    }
    let Some(at) = killed else {
        return Err("B was never killed".into());
    };
    until(Duration::from_secs(20).saturating_sub(at.elapsed()), || {
        connections(a) == Some(5)
    })
    .await
    .map_err(|_| format!("B's viewers did not rejoin on A: {:?}", connections(a)))?;
    Ok(watched)
}

/// A native viewer's summary, once it has played all `CHUNKS`, each the broadcaster's.
fn played_all(dir: &std::path::Path, name: &str, child: Child) -> Value {
    let output = child.wait_with_output().expect("the viewer runs");
    assert!(
        output.status.success(),
        "{name} did not play {CHUNKS} chunks; see {}/{name}.log",
        dir.display()
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    println!("{name}: {summary}");
    assert_eq!(summary["chunks_played"], CHUNKS, "{summary}");
    assert!(
        summary["stalls"].as_u64().unwrap_or(u64::MAX) <= MAX_NATIVE_STALLS,
        "{name} stalled: {summary}"
    );
    let first = summary["first_seq"].as_u64().expect("a first chunk");
    let last = summary["last_seq"].as_u64().expect("a last chunk");
    let skipped: Vec<u64> = summary["skipped"]
        .as_array()
        .expect("a list of skipped chunks")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        skipped.len() as u64 <= MAX_STALLS,
        "{name} skipped {skipped:?}: {summary}"
    );
    for seq in (first..=last).filter(|seq| !skipped.contains(seq)) {
        let chunk = format!("chunk-{seq:08}.m4s");
        let got = std::fs::read(dir.join(name).join(&chunk)).expect("recorded");
        let cut = std::fs::read(dir.join("broadcaster").join(&chunk)).expect("cut");
        assert!(
            got == cut,
            "{name}'s {chunk} differs from the broadcaster's"
        );
    }
    summary
}

/// `streamtorrent_connections` on a server's `/metrics`; `None` if it does not answer.
fn connections(addr: &str) -> Option<u64> {
    let page = http_get(addr, "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix("streamtorrent_connections "))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until `done()` holds, polling every 100 ms.
async fn until(within: Duration, done: impl Fn() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
