//! A Chromium whose UDP is blocked (no WebRTC link can open) plays the channel from the
//! HTTP edge the signal server names, says "Playing via server", and stalls at most once.

use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::Value;
use tests::browser::Chromedriver;
use tests::netns;
use tests::process::{
    edge_on, free_port, go_live, scratch, signal_server_with, web_dist, BroadcastOptions, NOBODY,
};

const CHANNEL: &str = "fallback";

/// The video, the status line and the stats panel's rows.
const PROBE: &str = r#"
const v = document.getElementById('video');
if (window.__waiting === undefined) {
  window.__waiting = 0;
  window.__log = [];
  const ranges = () => Array.from({ length: v.buffered.length }, (_, i) => `${v.buffered.start(i).toFixed(2)}-${v.buffered.end(i).toFixed(2)}`).join(' ');
  ['playing', 'waiting', 'seeking'].forEach((e) => v.addEventListener(e, () => window.__log.push(`${performance.now().toFixed(0)}ms ${e} t=${v.currentTime.toFixed(2)} [${ranges()}]`)));
  v.addEventListener('waiting', () => { if (v.currentTime > 0) window.__waiting++; });
}
const rows = {};
document.querySelectorAll('#stats div').forEach((d) => {
  rows[d.querySelector('dt').textContent] = d.querySelector('dd').textContent;
});
return { time: v.currentTime, status: document.getElementById('status').textContent,
         waiting: window.__waiting, log: window.__log, rows, error: v.error && v.error.message };
"#;

#[test]
fn a_browser_without_webrtc_plays_from_the_edge_via_server() {
    if !netns::enter("a_browser_without_webrtc_plays_from_the_edge_via_server") {
        return;
    }
    let web_dir = web_dist();
    let dir = scratch("browser-edge");
    // Chromium runs as nobody, with its profile here.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("the scratch folder's mode can be set");
    netns::block_udp_of(NOBODY);
    let edge_port = free_port();
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    let (_server, addr) = signal_server_with("127.0.0.1:0", &web_dir, &["--edge-url", &edge_url]);
    let (_ffmpeg, _broadcaster) = go_live(&addr, CHANNEL, &dir, BroadcastOptions::default());
    let _edge = edge_on(
        &addr,
        &format!("127.0.0.1:{edge_port}"),
        &["--channel", CHANNEL],
        &dir.join("edge.log"),
    );

    let driver = Chromedriver::start_as(NOBODY, &dir);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        let outcome = plays_via_server(&client, &addr).await;
        let _ = client.close().await;
        outcome
    });
    let page = result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    println!("without WebRTC: {page}");
}

async fn plays_via_server(client: &Client, addr: &str) -> Result<Value, String> {
    client
        .goto(&format!("http://{addr}/watch/{CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    let opened = Instant::now();
    let deadline = opened + Duration::from_secs(45);
    let mut started: Option<(f64, Instant)> = None;
    loop {
        let p = client
            .execute(PROBE, vec![])
            .await
            .map_err(|e| format!("probe: {e}"))?;
        if p["error"].is_string() {
            return Err(format!("the video failed: {p}"));
        }
        let time = p["time"].as_f64().unwrap_or(0.0);
        if time > 0.0 && p["status"] == "Playing via server" {
            let (since, at) = *started.get_or_insert((time, Instant::now()));
            if time - since >= 8.0 {
                let first_frame = at - opened;
                if p["rows"]["Neighbours"] != "0" {
                    return Err(format!("a peer link opened despite blocked UDP: {p}"));
                }
                if p["waiting"].as_u64() > Some(1) {
                    return Err(format!("stalled more than once from the edge: {p}"));
                }
                println!("first frame via the edge after {first_frame:?}");
                return Ok(p);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("did not play 8 s via the server in 45 s: {p}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
