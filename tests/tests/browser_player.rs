//! The player as people use it, in real headless Chromium on a live channel: its controls
//! by mouse and keyboard on the watch page, its URL parameters on the embed page, its
//! iframe API driven by a site owner's page on another origin (the repository's
//! `web/iframe-example.html`, served by a plain HTTP server of the test's own), and the
//! iPhone's `ManagedMediaSource` path, with a stand-in for it (Safari cannot run here).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::Value;
use tests::browser::{before_every_page, Chromedriver};
use tests::netns;
use tests::process::{
    broadcaster, http_get, scratch, signal_server_with, wait_for_channel, web_dist, workspace_root,
};

/// The delay the normal preset plans: its 1.5 s target (`peer-wasm/src/latency.rs`) plus
/// one chunk of the test source (1 s), whose first frame was captured that much earlier.
const NORMAL_PLANNED_MS: f64 = 2_500.0;
/// What the high preset's target is.
const HIGH_TARGET_MS: u64 = 4_000;

/// Counts fullscreen and picture-in-picture requests (then makes them as asked), and
/// reads the player's state from the page.
const INSTRUMENT: &str = r#"
window.__requests = { fullscreen: 0, pip: 0 };
const fs = Element.prototype.requestFullscreen;
Element.prototype.requestFullscreen = function (...a) { window.__requests.fullscreen++; return fs.apply(this, a); };
const pip = HTMLVideoElement.prototype.requestPictureInPicture;
HTMLVideoElement.prototype.requestPictureInPicture = function (...a) {
  window.__requests.pip++;
  return pip ? pip.apply(this, a) : Promise.reject(new Error('no picture-in-picture here'));
};
"#;

const PROBE: &str = r#"
const v = document.getElementById('video');
const stats = document.getElementById('stats').textContent;
const lag = /Behind live([0-9.]+) s/.exec(stats);
return { time: v.currentTime, paused: v.paused, muted: v.muted, volume: v.volume,
         lag_ms: lag ? 1000 * parseFloat(lag[1]) : null,
         status: document.getElementById('status').textContent,
         live: document.getElementById('live').textContent,
         controls_hidden: document.getElementById('controls').hidden,
         latency: document.getElementById('latency').value,
         stats_hidden: document.getElementById('stats-panel').hidden,
         buffered: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0,
         requests: window.__requests || null };
"#;

#[test]
fn the_player_obeys_its_controls_its_url_and_a_host_page_and_plays_on_managed_media_source() {
    if !netns::enter(
        "the_player_obeys_its_controls_its_url_and_a_host_page_and_plays_on_managed_media_source",
    ) {
        return;
    }
    let web_dir = web_dist();
    let dir = scratch("browser-player");
    // Viewers report every second, so each page's reports reach /metrics while it plays.
    let (_server, addr) =
        signal_server_with("127.0.0.1:0", &web_dir, &["--viewer-report-secs", "1"]);
    let _live = broadcaster(
        &addr,
        "demo",
        &dir.join("broadcaster"),
        &dir.join("broadcaster.log"),
    );
    wait_for_channel(&addr, "demo", Duration::from_secs(20));
    let host = host_site(&web_dir.join("iframe-example.html"));
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        let mut outcome = channel_list(&client, &addr).await;
        if outcome.is_ok() {
            outcome = controls(&client, &addr).await;
        }
        if outcome.is_ok() {
            outcome = url_parameters(&client, &addr).await;
        }
        if outcome.is_ok() {
            outcome = host_page(&client, &addr, &host).await;
        }
        // Last: the shim stays in this browser for every page it opens from now on.
        if outcome.is_ok() {
            outcome = managed_media_source(&client, &addr).await;
        }
        let _ = client.close().await;
        outcome
    });
    result.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    pages_reported(&addr);
}

/// Every page that played told the server: its start-up once, bytes and delays, and none
/// of its reports was refused.
fn pages_reported(addr: &str) {
    let metrics = http_get(addr, "/metrics");
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}")) as u64
    };
    let from_broadcaster =
        value("streamtorrent_viewer_bytes_total{channel=\"demo\",from=\"broadcaster\"}");
    let startups = value("streamtorrent_viewer_startup_seconds_count{channel=\"demo\"}");
    let delays = value("streamtorrent_viewer_delay_seconds_count{channel=\"demo\"}");
    let refused = value("streamtorrent_rejections_total{reason=\"bad_report\"}");
    println!("pages reported: {from_broadcaster} bytes from the broadcaster, {startups} start-ups, {delays} delays");
    assert!(
        from_broadcaster > 100_000,
        "the pages reported {from_broadcaster} bytes"
    );
    // The watch page (twice), the embed with autoplay=0 never started, the host's embed.
    assert!(startups >= 3, "{startups} start-ups reported");
    assert!(delays >= 10, "{delays} delays reported");
    assert_eq!(refused, 0, "a page's report was refused");
}

/// `/` lists the live channel and passes the accessibility check.
async fn channel_list(client: &Client, addr: &str) -> Result<(), String> {
    goto(client, &format!("http://{addr}/")).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = script(
            client,
            "return document.getElementById('channel-list').textContent;",
        )
        .await?;
        if list.as_str().unwrap_or_default().contains("demo") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("/ never listed the live channel: {list}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    accessible(client, "/").await
}

/// Pause, play, Go live, mute, volume, stats, fullscreen and picture-in-picture, by
/// clicks and keys, on `/watch/demo`.
async fn controls(client: &Client, addr: &str) -> Result<(), String> {
    goto(client, &format!("http://{addr}/watch/demo")).await?;
    script(client, INSTRUMENT).await?;
    let playing = until(client, "playing", 30, |p| {
        p["status"] == "Playing" && p["paused"] == false && p["lag_ms"].is_number()
    })
    .await?;
    println!("playing: {playing}");
    accessible(client, "the watch page").await?;

    // A click pauses, and the video stops where it is.
    click(client, "play").await?;
    let paused = until(client, "paused, and the status says so", 5, |p| {
        p["paused"] == true && p["status"] == "Paused"
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = probe(client).await?;
    if still["time"] != paused["time"] {
        return Err(format!(
            "currentTime moved while paused: {paused} then {still}"
        ));
    }
    // `k` plays again from where it stopped: now well behind live, and the badge says so.
    press(client, 'k').await?;
    let behind = until(client, "behind live after the pause", 10, |p| {
        p["paused"] == false && p["live"].as_str().unwrap_or_default().contains("behind")
    })
    .await?;
    println!("after the pause: {behind}");
    // Go live by mouse: back at the planned delay (within half a second).
    click(client, "live").await?;
    let live = until(client, "back at the live edge", 10, |p| {
        p["lag_ms"]
            .as_f64()
            .is_some_and(|lag| lag <= NORMAL_PLANNED_MS + 500.0)
            && p["live"].as_str().unwrap_or_default().contains("LIVE")
    })
    .await?;
    println!("after Go live: {live}");

    // The page starts muted; `m` unmutes, ArrowDown lowers the volume.
    if live["muted"] != true {
        return Err(format!("the page did not start muted: {live}"));
    }
    press(client, 'm').await?;
    until(client, "unmuted by m", 5, |p| p["muted"] == false).await?;
    press(client, Key::Down.into()).await?;
    until(client, "volume lowered by ArrowDown", 5, |p| {
        p["volume"].as_f64().is_some_and(|v| v < 1.0)
    })
    .await?;

    click(client, "stats-toggle").await?;
    until(client, "stats collapsed", 5, |p| p["stats_hidden"] == true).await?;
    // Each by key, then (once whatever it opened is closed again) by mouse.
    const LEAVE: &str = "if (document.fullscreenElement) await document.exitFullscreen(); \
                         if (document.pictureInPictureElement) await document.exitPictureInPicture();";
    press(client, 'f').await?;
    press(client, 'i').await?;
    until(
        client,
        "fullscreen and picture-in-picture requested by key",
        5,
        |p| p["requests"]["fullscreen"] == 1 && p["requests"]["pip"] == 1,
    )
    .await?;
    leave(client, LEAVE).await?;
    click(client, "fullscreen").await?;
    click(client, "pip").await?;
    let requested = until(client, "and by mouse", 5, |p| {
        p["requests"]["fullscreen"] == 2 && p["requests"]["pip"] == 2
    })
    .await?;
    println!("requested: {}", requested["requests"]);
    leave(client, LEAVE).await?;
    Ok(())
}

/// `/embed/demo?autoplay=0&controls=0&latency=high`: no controls, nothing plays until
/// asked, the high preset chosen.
async fn url_parameters(client: &Client, addr: &str) -> Result<(), String> {
    goto(
        client,
        &format!("http://{addr}/embed/demo?autoplay=0&controls=0&latency=high"),
    )
    .await?;
    // Wait until video is there to play: only then does not playing it mean anything.
    let ready = until(client, "media buffered, not played", 30, |p| {
        p["buffered"].as_f64() > Some(1.0)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = probe(client).await?;
    if later["time"] != ready["time"] {
        return Err(format!("autoplay=0 played anyway: {ready} then {later}"));
    }
    for p in [&ready, &later] {
        if p["paused"] != true {
            return Err(format!("autoplay=0 played anyway: {p}"));
        }
        if p["controls_hidden"] != true {
            return Err(format!("controls=0 shows the controls: {p}"));
        }
        if p["latency"] != "high" {
            return Err(format!("latency=high not chosen: {p}"));
        }
    }
    accessible(client, "the embed page").await?;
    // controls=0 takes no shortcuts either.
    press(client, 'k').await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_key = probe(client).await?;
    if after_key["paused"] != true {
        return Err(format!("controls=0 obeyed a shortcut: {after_key}"));
    }
    Ok(())
}

/// The site owner's page (another origin) drives the embed through `EmbeddedPlayer`.
async fn host_page(client: &Client, addr: &str, host: &str) -> Result<(), String> {
    goto(
        client,
        &format!("http://{host}/iframe-example.html?channel=demo&server=http://{addr}"),
    )
    .await?;
    const HOST_PROBE: &str = r#"
        const p = window.player;
        return p ? { ready: p.ready, state: p.state, stats: p.stats,
                     shown: document.getElementById('state').textContent,
                     messages: window.__messages || null } : null;
    "#;
    let host_until = |what: &'static str, secs: u64, ok: fn(&Value) -> bool| async move {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let p = script(client, HOST_PROBE).await?;
            if !p.is_null() && ok(&p) {
                return Ok::<Value, String>(p);
            }
            if Instant::now() > deadline {
                return Err(format!("host page: {what} not within {secs} s: {p}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let playing = host_until("ready and playing", 30, |p| {
        p["ready"] == true
            && p["state"] == "playing"
            && p["shown"] == "playing"
            && p["stats"]["peer_share"].is_number()
    })
    .await?;
    println!("host page: {playing}");
    // Stats about once a second.
    script(
        client,
        "window.__messages = 0; window.player.addEventListener('stats', () => window.__messages++);",
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let counted = script(client, "return window.__messages;").await?;
    if !counted.as_u64().is_some_and(|n| (2..=8).contains(&n)) {
        return Err(format!("{counted} stats messages in 4 s"));
    }

    // The host's own Pause button, then the API.
    client
        .find(Locator::Css("button[data-command=pause]"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    host_until("paused by the host", 10, |p| {
        p["state"] == "paused" && p["stats"]["paused"] == true
    })
    .await?;
    script(
        client,
        "player.play(); player.setVolume(0.5); player.setLatency('high');",
    )
    .await?;
    host_until("playing at volume 0.5 on the high preset", 10, |p| {
        p["state"] == "playing"
            && p["stats"]["volume"] == 0.5
            && p["stats"]["latency"] == "high"
            && p["stats"]["target_latency_ms"] == HIGH_TARGET_MS
    })
    .await?;
    // Bad commands are ignored (with a console warning) and change nothing.
    script(
        client,
        r#"const w = document.getElementById('tv').contentWindow;
           w.postMessage({ type: 'streamtorrent:command', command: 'explode' }, '*');
           w.postMessage({ type: 'streamtorrent:command', command: 'volume', value: 7 }, '*');
           w.postMessage({ type: 'streamtorrent:command', command: 'latency', value: 'instant' }, '*');
           w.postMessage('streamtorrent:command', '*');"#,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    host_until("unchanged by bad commands", 5, |p| {
        p["state"] == "playing" && p["stats"]["volume"] == 0.5 && p["stats"]["latency"] == "high"
    })
    .await?;
    // An embed told to obey another origin neither obeys nor tells this page anything.
    script(
        client,
        &format!(
            r#"window.__foreign = 0;
               const f = document.createElement('iframe');
               f.src = 'http://{addr}/embed/demo?controls=0&origin=https%3A%2F%2Felsewhere.example';
               f.title = 'Foreign';
               document.body.append(f);
               window.addEventListener('message', (e) => {{ if (e.source === f.contentWindow) window.__foreign++; }});"#
        ),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let foreign = script(client, "return window.__foreign;").await?;
    if foreign != 0 {
        return Err(format!(
            "an embed restricted to another origin posted {foreign} messages here"
        ));
    }
    Ok(())
}

/// iPhone and iPad Safari have `ManagedMediaSource` and no `MediaSource`: with a faithful
/// stand-in (`tests/js/managed-media-source-shim.js`) the watch page plays through it,
/// sets `disableRemotePlayback`, and appends only while the source asks for media.
async fn managed_media_source(client: &Client, addr: &str) -> Result<(), String> {
    let shim = std::fs::read_to_string(
        workspace_root()
            .join("tests")
            .join("js")
            .join("managed-media-source-shim.js"),
    )
    .map_err(|e| format!("the shim: {e}"))?;
    before_every_page(client, &shim).await?;
    goto(client, &format!("http://{addr}/watch/demo")).await?;
    const MMS: &str = r#"
        const v = document.getElementById('video');
        return { mms: window.__mms || null, standard_hidden: typeof MediaSource === 'undefined',
                 disable_remote: v.disableRemotePlayback, time: v.currentTime, paused: v.paused,
                 status: document.getElementById('status').textContent };
    "#;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut first_time = None;
    loop {
        let p = script(client, MMS).await?;
        if p["mms"].is_null() || p["standard_hidden"] != true {
            return Err(format!("the shim did not take: {p}"));
        }
        let time = p["time"].as_f64().unwrap_or(0.0);
        if p["status"] == "Playing" && first_time.is_none() {
            first_time = Some(time);
        }
        let played = first_time.map_or(0.0, |t| time - t);
        // Through at least two holds, playing on after each.
        if played > 8.0 && p["mms"]["holds"].as_u64() >= Some(2) {
            println!("managed media source: {p}");
            let mms = &p["mms"];
            if mms["created"] != 1 || p["disable_remote"] != true {
                return Err(format!("not played through one managed source: {p}"));
            }
            if mms["refused_without_disable"] != 0 || mms["appends_while_held"] != 0 {
                return Err(format!("fed the managed source when it said not to: {p}"));
            }
            if mms["appends_after_resume"].as_u64() < Some(2) {
                return Err(format!("appends did not resume after a hold: {p}"));
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the managed media source path did not play 8 s through two holds in 40 s: {p}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A site owner's web server: serves `page` at `/iframe-example.html` from its own port
/// (so its own origin), with no policy of ours.
fn host_site(page: &std::path::Path) -> String {
    let html = std::fs::read(page).expect("web/dist has iframe-example.html");
    let listener = TcpListener::bind("127.0.0.1:0").expect("can bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            // Headers up to the blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = &stream;
            let (status, body): (&str, &[u8]) = if request.starts_with("GET /iframe-example.html") {
                ("200 OK", &html)
            } else {
                ("404 Not Found", b"not here")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    addr
}

async fn goto(client: &Client, url: &str) -> Result<(), String> {
    client.goto(url).await.map_err(|e| format!("{url}: {e}"))
}

async fn script(client: &Client, code: &str) -> Result<Value, String> {
    client
        .execute(code, vec![])
        .await
        .map_err(|e| format!("script failed: {e}"))
}

/// axe-core (installed by `scripts/setup`) finds no serious or critical accessibility
/// violation in the page as it is now; lesser findings are printed.
async fn accessible(client: &Client, page: &str) -> Result<(), String> {
    let axe = workspace_root().join(".tools/axe/node_modules/axe-core/axe.min.js");
    let engine = std::fs::read_to_string(&axe)
        .map_err(|e| format!("{}: {e} (scripts/setup installs axe-core)", axe.display()))?;
    script(client, &engine).await?;
    let run = r#"const done = arguments[0];
        axe.run(document, { resultTypes: ['violations'] })
          .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.map(n => n.target.join(' ')) }))),
                e => done([{ id: 'axe-failed', impact: 'critical', help: String(e), nodes: [] }]));"#;
    let violations = client
        .execute_async(run, vec![])
        .await
        .map_err(|e| format!("axe on {page}: {e}"))?;
    let violations = violations.as_array().cloned().unwrap_or_default();
    let (grave, lesser): (Vec<Value>, Vec<Value>) = violations
        .into_iter()
        .partition(|v| v["impact"] == "serious" || v["impact"] == "critical");
    for v in &lesser {
        println!("axe on {page} ({}): {} {}", v["impact"], v["id"], v["help"]);
    }
    if grave.is_empty() {
        println!("axe on {page}: no serious or critical violations");
        Ok(())
    } else {
        Err(format!("axe on {page}: {}", Value::Array(grave)))
    }
}

/// Runs `code` as the body of an async function and waits for it.
async fn leave(client: &Client, code: &str) -> Result<(), String> {
    let wrapped = format!(
        "const done = arguments[0]; (async () => {{ {code} }})().then(() => done(), () => done());"
    );
    client
        .execute_async(&wrapped, vec![])
        .await
        .map(|_| ())
        .map_err(|e| format!("script failed: {e}"))
}

async fn probe(client: &Client) -> Result<Value, String> {
    script(client, PROBE).await
}

/// Probes until `ok`, for at most `secs`.
async fn until(
    client: &Client,
    what: &str,
    secs: u64,
    ok: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = probe(client).await?;
        if ok(&p) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {secs} s: {p}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn click(client: &Client, id: &str) -> Result<(), String> {
    client
        .find(Locator::Id(id))
        .await
        .map_err(|e| format!("#{id}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("click #{id}: {e}"))
}

/// One key pressed and released, as a person types it, to whatever has focus.
async fn press(client: &Client, key: char) -> Result<(), String> {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    client
        .perform_actions(keys)
        .await
        .map_err(|e| format!("key {key:?}: {e}"))
}
