//! A watch page left playing for a long time (`scripts/bench-soak`, 30 minutes by
//! default): each minute, the JS heap, the buffered ranges, the DOM's size, stalls and
//! delay behind live, printed as a Markdown table for `docs/benchmarks.md`. Ignored in
//! `scripts/test` (it takes half an hour); it fails only when the page stops playing.

use std::time::{Duration, Instant};

use tests::browser::Chromedriver;
use tests::netns;
use tests::process::{broadcaster, scratch, signal_server, wait_for_channel, workspace_root};

const INSTRUMENT: &str = r#"
const v = document.getElementById('video');
window.__soak = { waiting: 0, started: false };
v.addEventListener('playing', () => { window.__soak.started = true; });
v.addEventListener('waiting', () => { if (window.__soak.started) window.__soak.waiting++; });
"#;

const SAMPLE: &str = r#"
const v = document.getElementById('video');
const ranges = Array.from({ length: v.buffered.length }, (_, i) => v.buffered.end(i) - v.buffered.start(i));
const stats = document.getElementById('stats').textContent;
const lag = /Behind live([0-9.]+) s/.exec(stats);
return { heap: performance.memory ? performance.memory.usedJSHeapSize : null,
         ranges: ranges.length, buffered_s: ranges.reduce((a, b) => a + b, 0),
         dom: document.getElementsByTagName('*').length, waiting: window.__soak.waiting,
         time: v.currentTime, lag_s: lag ? parseFloat(lag[1]) : null,
         status: document.getElementById('status').textContent };
"#;

#[test]
#[ignore = "half an hour: run by scripts/bench-soak"]
fn a_watch_page_plays_for_half_an_hour_with_flat_memory() {
    if !netns::enter("a_watch_page_plays_for_half_an_hour_with_flat_memory") {
        return;
    }
    let minutes: u64 = std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30);
    let web_dir = workspace_root().join("web").join("dist");
    let dir = scratch("browser-soak");
    let (_server, addr) = signal_server(&web_dir);
    let _live = broadcaster(
        &addr,
        "soak",
        &dir.join("broadcaster"),
        &dir.join("broadcaster.log"),
    );
    wait_for_channel(&addr, "soak", Duration::from_secs(20));
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let client = driver
            .open_with(
                &dir.join("chromium-profile"),
                &["--enable-precise-memory-info", "--js-flags=--expose-gc"],
            )
            .await;
        client
            .goto(&format!("http://{addr}/watch/soak"))
            .await
            .expect("the watch page opens");
        client
            .execute(INSTRUMENT, vec![])
            .await
            .expect("instrumented");
        println!("| minute | JS heap (MiB) | buffered ranges | buffered (s) | DOM elements | stalls in the minute | behind live (s) | state |");
        println!("|---|---|---|---|---|---|---|---|");
        let start = Instant::now();
        let (mut last_waiting, mut last_time) = (0, 0.0);
        for minute in 0..=minutes {
            let due = start + Duration::from_secs(60 * minute);
            tokio::time::sleep_until(due.into()).await;
            // A collection first, so the heap figure is what is kept, not what is garbage.
            let _ = client
                .execute("if (window.gc) window.gc();", vec![])
                .await;
            let s = client.execute(SAMPLE, vec![]).await.expect("a sample");
            let waiting = s["waiting"].as_u64().unwrap_or(0);
            let time = s["time"].as_f64().unwrap_or(0.0);
            println!(
                "| {minute} | {:.1} | {} | {:.1} | {} | {} | {} | {} |",
                s["heap"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
                s["ranges"],
                s["buffered_s"].as_f64().unwrap_or(0.0),
                s["dom"],
                waiting - last_waiting,
                s["lag_s"],
                s["status"].as_str().unwrap_or_default()
            );
            if minute > 0 {
                assert!(
                    time > last_time + 30.0,
                    "the page played {:.1} s of media in minute {minute}; logs in {}",
                    time - last_time,
                    dir.display()
                );
            }
            (last_waiting, last_time) = (waiting, time);
        }
        let _ = client.close().await;
    });
}
