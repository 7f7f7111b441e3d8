//! Real headless Chromium (Debian's) opens `/watch/<channel>` while the broadcaster runs:
//! the page joins over WebSocket, receives chunks over a WebRTC data channel and plays them
//! through Media Source Extensions; then the signal server is killed and restarted under
//! it, and the page keeps playing and rejoins; last the broadcaster restarts (a new
//! broadcast, the same key), and the open page follows it without a reload.

use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::Value;
use tests::browser::Chromedriver;
use tests::netns;
use tests::process::{
    broadcaster, free_port, go_live, http_get, scratch, signal_server_on, wait_for_channel,
    web_dist, workspace_root, BroadcastOptions, Guard,
};

/// Media that must play, in seconds of the video's own clock.
const PLAY_SECONDS: f64 = 10.0;
const MAX_WAITING_AFTER_START: u64 = 1;

/// Counts `waiting` events after the first `playing`, and where playback started.
const INSTRUMENT: &str = r#"
const v = document.getElementById('video');
window.__st = { started: false, first: 0, waiting: 0, log: [] };
const ranges = () => Array.from({ length: v.buffered.length }, (_, i) => [v.buffered.start(i).toFixed(3), v.buffered.end(i).toFixed(3)].join('-')).join(' ');
['playing', 'waiting', 'seeking', 'stalled'].forEach(e => v.addEventListener(e, () => window.__st.log.push(`${performance.now().toFixed(0)}ms ${e} t=${v.currentTime.toFixed(3)} [${ranges()}]`)));
const start = () => { if (!window.__st.started) { window.__st.started = true; window.__st.first = v.currentTime; window.__st.firstFrameMs = performance.now(); } };
if (!v.paused && v.currentTime > 0) start();
v.addEventListener('playing', start);
v.addEventListener('waiting', () => { if (window.__st.started) window.__st.waiting++; });
"#;

const PROBE: &str = r#"
const v = document.getElementById('video');
return { time: v.currentTime, first: window.__st.first, first_frame_ms: window.__st.firstFrameMs, started: window.__st.started,
         waiting: window.__st.waiting, status: document.getElementById('status').textContent + ' · ' + document.getElementById('signal-note').textContent,
         stats: document.getElementById('stats').textContent, error: v.error && v.error.message,
         log: window.__st.log };
"#;

#[test]
fn watch_page_plays_a_live_channel_in_chromium() {
    if !netns::enter("watch_page_plays_a_live_channel_in_chromium") {
        return;
    }
    let web_dir = web_dist();
    let dir = scratch("browser-e2e");
    // A fixed port, so the server can be restarted where the page expects it.
    let listen = format!("127.0.0.1:{}", free_port());
    let (server, addr) = signal_server_on(&listen, &web_dir);
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut broadcast = None;
    let result = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        // The channel list, open before anything is live, updates by itself.
        let mut outcome = channel_list_updates(&client, &addr, || {
            broadcast = Some(broadcaster(
                &addr,
                "demo",
                &dir.join("broadcaster"),
                &dir.join("broadcaster.log"),
            ));
        })
        .await;
        if outcome.is_ok() {
            wait_for_channel(&addr, "demo", Duration::from_secs(20));
            // Join a running channel, as viewers do: a few chunks exist already.
            tokio::time::sleep(Duration::from_secs(3)).await;
            outcome = watch(&client, &addr).await;
        }
        let mut restarted = None;
        if outcome.is_ok() {
            outcome = match survive_restart(&client, server, &listen, &web_dir, &addr).await {
                Ok((server, probe)) => {
                    restarted = Some(server);
                    Ok(probe)
                }
                Err(e) => Err(e),
            };
        }
        if outcome.is_ok() {
            drop(broadcast.take()); // ffmpeg and the broadcaster end: the broadcast is over.
            broadcast = Some(broadcaster(
                &addr,
                "demo",
                &dir.join("broadcaster"),
                &dir.join("broadcaster-2.log"),
            ));
            outcome = follow_new_broadcast(&client).await;
        }
        drop(restarted);
        let _ = client.close().await;
        outcome
    });
    let probe = result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    println!("browser played: {probe}");
}

/// `/` shows its empty state; once `go_live` started a channel, the open page lists it
/// with its audience, without a reload.
async fn channel_list_updates(
    client: &Client,
    addr: &str,
    go_live: impl FnOnce(),
) -> Result<Value, String> {
    const LIST: &str = "return document.getElementById('channel-list').textContent;";
    client
        .goto(&format!("http://{addr}/"))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = client
            .execute(LIST, vec![])
            .await
            .map_err(|e| e.to_string())?;
        if list
            .as_str()
            .unwrap_or_default()
            .contains("No channel is live")
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the empty channel list does not say so: {list}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    go_live();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = client
            .execute(LIST, vec![])
            .await
            .map_err(|e| e.to_string())?;
        if list.as_str().unwrap_or_default().contains("demo 0 viewers") {
            return Ok(list);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the open channel list never showed the new channel: {list}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn watch(client: &Client, addr: &str) -> Result<Value, String> {
    client
        .goto(&format!("http://{addr}/watch/demo"))
        .await
        .map_err(|e| e.to_string())?;
    client
        .execute(INSTRUMENT, vec![])
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = client
            .execute(PROBE, vec![])
            .await
            .map_err(|e| e.to_string())?;
        let waiting = probe["waiting"].as_u64().unwrap_or(0);
        if waiting > MAX_WAITING_AFTER_START {
            return Err(format!(
                "playback stalled {waiting} times after it started: {probe}"
            ));
        }
        if !probe["error"].is_null() {
            return Err(format!("the video element failed: {probe}"));
        }
        let played = probe["time"].as_f64().unwrap_or(0.0) - probe["first"].as_f64().unwrap_or(0.0);
        if probe["started"] == true && played >= PLAY_SECONDS {
            return Ok(probe);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "did not play {PLAY_SECONDS} s within 60 s: {probe}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Kills the signal server under a playing page: the video must keep playing over its peer
/// link and the page must say it is reconnecting; after a restart on the same port the page
/// must rejoin on its own. Returns the restarted server.
async fn survive_restart(
    client: &Client,
    server: Guard,
    listen: &str,
    web_dir: &std::path::Path,
    addr: &str,
) -> Result<(Guard, Value), String> {
    drop(server); // SIGKILL, as in a crash.
    let before = client
        .execute(PROBE, vec![])
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = client
        .execute(PROBE, vec![])
        .await
        .map_err(|e| e.to_string())?;
    let advanced = during["time"].as_f64().unwrap_or(0.0) - before["time"].as_f64().unwrap_or(0.0);
    if advanced < 3.0 {
        return Err(format!(
            "video advanced only {advanced:.1} s in 4 s without the signal server: {during}"
        ));
    }
    if !during["status"]
        .as_str()
        .unwrap_or_default()
        .contains("reconnecting")
    {
        return Err(format!(
            "the page does not say it is reconnecting: {during}"
        ));
    }
    let (server, _) = signal_server_on(listen, web_dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The broadcaster and the page both rejoin: the channel lists one viewer again.
        let channels = http_get(addr, "/api/channels");
        let probe = client
            .execute(PROBE, vec![])
            .await
            .map_err(|e| e.to_string())?;
        let rejoined = channels.contains("\"viewers\":1") && probe["status"] == "Playing · ";
        if rejoined {
            if probe["waiting"].as_u64().unwrap_or(0) > MAX_WAITING_AFTER_START {
                return Err(format!("playback stalled during the restart: {probe}"));
            }
            return Ok((server, probe));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "page did not rejoin within 30 s of the restart: {channels} {probe}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The broadcaster was restarted under an open page: its chunks start over, signed for a
/// new broadcast. The page must take the new broadcast and play it:
/// the old one's buffer holds a few seconds at most, so 8 s of playback can only come
/// from the new one. Its clock starts over with the new player, so progress is measured
/// from the lowest time seen after the restart.
async fn follow_new_broadcast(client: &Client) -> Result<Value, String> {
    const PLAY_AFTER_RESTART: f64 = 8.0;
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut lowest = f64::MAX;
    loop {
        let probe = client
            .execute(PROBE, vec![])
            .await
            .map_err(|e| e.to_string())?;
        if !probe["error"].is_null() {
            return Err(format!("the video element failed: {probe}"));
        }
        let time = probe["time"].as_f64().unwrap_or(0.0);
        lowest = lowest.min(time);
        if time - lowest >= PLAY_AFTER_RESTART {
            return Ok(probe);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the page did not play {PLAY_AFTER_RESTART} s of the new broadcast within \
                 45 s (from t={lowest:.1}): {probe}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a site owner does: copies the snippet behind the watch page's Embed button into a
/// plain HTML file, and separately uses the JS API example page, both opened from disk
/// (`file://`, another origin than the server). Both must play the channel.
#[test]
fn embed_snippet_and_js_api_play_from_a_plain_html_file() {
    if !netns::enter("embed_snippet_and_js_api_play_from_a_plain_html_file") {
        return;
    }
    let web_dir = workspace_root().join("web").join("dist");
    let dir = scratch("embed-e2e");
    let (_server, addr) = tests::process::signal_server(&web_dir);
    let (_ffmpeg, _broadcaster) = go_live(&addr, "demo", &dir, BroadcastOptions::default());
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result: Result<(), String> = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        let outcome = embed_and_api(&client, &addr, &dir).await;
        let _ = client.close().await;
        outcome
    });
    result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
}

async fn embed_and_api(client: &Client, addr: &str, dir: &std::path::Path) -> Result<(), String> {
    let js = |e: fantoccini::error::CmdError| e.to_string();
    // A channel nobody broadcasts says so, over the video too.
    client
        .goto(&format!("http://{addr}/watch/nobody-here"))
        .await
        .map_err(js)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = client
            .execute(
                "return [window.streamtorrent && window.streamtorrent.state(), document.getElementById('overlay').textContent];",
                vec![],
            )
            .await
            .map_err(js)?;
        if seen[0] == "offline"
            && seen[1]
                .as_str()
                .unwrap_or_default()
                .contains("nobody-hereNot live right now")
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("an empty channel does not read offline: {seen}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The Embed button shows the snippet.
    client
        .goto(&format!("http://{addr}/watch/demo"))
        .await
        .map_err(js)?;
    client
        .execute("document.getElementById('embed-button').click()", vec![])
        .await
        .map_err(js)?;
    let shown = client
        .execute(
            "const p = document.getElementById('embed-panel'); return [!p.hidden, document.getElementById('embed-snippet').value];",
            vec![],
        )
        .await
        .map_err(js)?;
    let snippet = shown[1].as_str().unwrap_or_default().to_owned();
    if shown[0] != true || !snippet.contains(&format!("http://{addr}/embed/demo")) {
        return Err(format!("the Embed button did not show a snippet: {shown}"));
    }
    // Pasted into a plain HTML file.
    let site = dir.join("my-site.html");
    std::fs::write(
        &site,
        format!("<!doctype html><title>My site</title><h1>Live</h1>\n{snippet}\n"),
    )
    .map_err(|e| e.to_string())?;
    client
        .goto(&format!("file://{}", site.display()))
        .await
        .map_err(js)?;
    client.enter_frame(0).await.map_err(js)?;
    let stats = played(
        client,
        "window.streamtorrent && window.streamtorrent.stats()",
    )
    .await?;
    let size = client
        .execute(
            "const v = document.getElementById('video'); return [v.clientWidth, v.clientHeight];",
            vec![],
        )
        .await
        .map_err(js)?;
    if size[0].as_u64() != Some(640) || size[1].as_u64() != Some(360) {
        return Err(format!(
            "the player does not fill the 640x360 iframe: {size}"
        ));
    }
    println!("embedded iframe played: {stats}");
    client.enter_parent_frame().await.map_err(js)?;

    // The JS API example, from disk, loading streamtorrent.js from the server.
    let example = dir.join("embed-example.html");
    std::fs::copy(
        workspace_root().join("web").join("embed-example.html"),
        &example,
    )
    .map_err(|e| e.to_string())?;
    client
        .goto(&format!(
            "file://{}?server=http://{addr}&channel=demo",
            example.display()
        ))
        .await
        .map_err(js)?;
    let stats = played(client, "window.player && window.player.stats()").await?;
    let page = client
        .execute(
            "return [document.getElementById('state').textContent, document.getElementById('stats').textContent];",
            vec![],
        )
        .await
        .map_err(js)?;
    if page[0] != "Playing" || !page[1].as_str().unwrap_or_default().contains("peers") {
        return Err(format!(
            "state and stats events did not reach the page: {page}"
        ));
    }
    println!("JS API played: {stats}; page shows {page}");
    Ok(())
}

/// Polls `stats_expr` until 5 chunks played in the `playing` state.
async fn played(client: &Client, stats_expr: &str) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let stats = client
            .execute(&format!("return {stats_expr};"), vec![])
            .await
            .map_err(|e| e.to_string())?;
        if stats["state"] == "playing" && stats["chunks_played"].as_u64().unwrap_or(0) >= 5 {
            return Ok(stats);
        }
        if Instant::now() > deadline {
            return Err(format!("did not play 5 chunks within 45 s: {stats}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
