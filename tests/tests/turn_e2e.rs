//! TURN for real: a coturn server with the REST shared secret the signal server issues
//! credentials for, and viewers in privacy mode (relay candidates only) that play through
//! it — the native `watch --relay-only`, and a Chromium page with `?relay=1`, whose
//! `getStats()` shows that its links use relay candidates and nothing else.

use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::{json, Value};
use tests::browser::{before_every_page, Chromedriver};
use tests::netns;
use tests::process::{
    broadcaster, scratch, signal_server_with, wait_for_channel, watcher, workspace_root,
};
use tests::turn::Coturn;

const CHUNKS: u64 = 6;

/// Keeps every RTCPeerConnection the page makes, for `getStats()`.
const TRACK_CONNECTIONS: &str = r#"
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native) return;
  window.__pcs = [];
  function Tracked(...args) { const pc = new Native(...args); window.__pcs.push(pc); return pc; }
  Tracked.prototype = Native.prototype;
  Object.setPrototypeOf(Tracked, Native);
  window.RTCPeerConnection = Tracked;
})();
"#;

/// For each connected link: the types of its local candidates and of its selected pair's
/// local candidate.
const CANDIDATES: &str = r#"
const done = arguments[0];
(async () => {
  const links = [];
  for (const pc of window.__pcs || []) {
    if (pc.connectionState !== 'connected') continue;
    const stats = await pc.getStats();
    const byId = new Map();
    stats.forEach((s) => byId.set(s.id, s));
    const local = [];
    let selected = null;
    stats.forEach((s) => {
      if (s.type === 'local-candidate') local.push(s.candidateType);
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        selected = pair && byId.get(pair.localCandidateId)?.candidateType;
      }
    });
    links.push({ local, selected });
  }
  const v = document.getElementById('video');
  return { links, time: v.currentTime, status: document.getElementById('status').textContent };
})().then(done, (e) => done({ error: String(e) }));
"#;

#[test]
fn relay_only_viewers_play_through_coturn_natively_and_in_chromium() {
    if !netns::enter("relay_only_viewers_play_through_coturn_natively_and_in_chromium") {
        return;
    }
    let dir = scratch("turn-e2e");
    let turn = Coturn::start(&dir);
    let web_dir = workspace_root().join("web").join("dist");
    let (_server, addr) = signal_server_with(
        "127.0.0.1:0",
        &web_dir,
        &["--turn", &turn.url, "--turn-secret", &turn.secret],
    );
    let _live = broadcaster(
        &addr,
        "private",
        &dir.join("broadcaster"),
        &dir.join("broadcaster.log"),
    );
    wait_for_channel(&addr, "private", Duration::from_secs(20));

    // The native viewer: it can only have reached the broadcaster through the relay.
    let (name, viewer) = watcher(&addr, "private", &dir, "relayed", CHUNKS, &["--relay-only"]);
    let output = viewer.wait_with_output().expect("the viewer runs");
    assert!(
        output.status.success(),
        "the relay-only viewer did not play {CHUNKS} chunks; see {}/{name}.log and coturn.log",
        dir.display()
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["chunks_played"], CHUNKS, "{summary}");
    // Every played chunk is compared below: a gap would read as a missing recording.
    assert_eq!(summary["skipped"], json!([]), "{summary}");
    let first = summary["first_seq"].as_u64().expect("a first chunk");
    for seq in first..first + CHUNKS {
        let chunk = format!("chunk-{seq:08}.m4s");
        let got = std::fs::read(dir.join(&name).join(&chunk)).expect("recorded");
        let cut = std::fs::read(dir.join("broadcaster").join(&chunk)).expect("cut");
        assert!(got == cut, "{chunk} differs from the broadcaster's");
    }
    // It offered its peers nothing but relay addresses, on every link.
    let log = plain(&std::fs::read_to_string(dir.join(format!("{name}.log"))).expect("its log"));
    let offered: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("local description ready"))
        .filter_map(|l| l.split("candidates=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect();
    assert!(
        !offered.is_empty(),
        "no link described; see {}/{name}.log",
        dir.display()
    );
    for types in &offered {
        assert!(
            !types.is_empty() && types.split(',').all(|t| t == "relay"),
            "a relay-only link offered {types:?}; see {}/{name}.log",
            dir.display()
        );
    }
    assert!(
        turn.log_text().contains("ALLOCATE processed, success"),
        "coturn granted no allocation; see {}",
        turn.log.display()
    );

    // The page in privacy mode.
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        let outcome = relayed_page(&client, &addr).await;
        let _ = client.close().await;
        outcome
    });
    let page = result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    println!("relay-only page: {page}");
}

async fn relayed_page(client: &Client, addr: &str) -> Result<Value, String> {
    before_every_page(client, TRACK_CONNECTIONS).await?;
    client
        .goto(&format!("http://{addr}/watch/private?relay=1"))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut started_at = None;
    loop {
        let p = client
            .execute_async(CANDIDATES, vec![])
            .await
            .map_err(|e| format!("getStats: {e}"))?;
        let links = p["links"].as_array().cloned().unwrap_or_default();
        for link in &links {
            let local = link["local"].as_array().cloned().unwrap_or_default();
            if local.iter().any(|t| t != "relay") || link["selected"] != "relay" {
                return Err(format!("a relay-only link used another candidate: {p}"));
            }
        }
        let time = p["time"].as_f64().unwrap_or(0.0);
        if p["status"] == "Playing" && !links.is_empty() {
            let since = *started_at.get_or_insert(time);
            if time - since > 4.0 {
                return Ok(p);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the relay-only page did not play 4 s in 40 s: {p}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `text` without terminal colour codes (the log's `ESC[…m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
