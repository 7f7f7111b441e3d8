//! `streamtorrent ingest` takes RTMP the way OBS sends it (ffmpeg plays OBS here): the
//! stream is remuxed in Rust and broadcast; a native viewer gets it byte-identical to what
//! the ingest cut and ffprobe decodes it; Chromium plays it and says when it ended. Wrong
//! keys, a second publisher, garbage and a flood are refused while the channel plays on.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::browser::Chromedriver;
use tests::netns;
use tests::process::{
    channel_key, http_get, ingest, rtmp_publisher, scratch, signal_server, wait_for_channel,
    watcher, web_dist, Guard,
};

const STREAM_KEY: &str = "obs-stream-key-1";
const CHUNKS: u64 = 5;

#[test]
fn an_rtmp_publisher_plays_in_a_native_viewer_and_chromium_until_it_stops() {
    if !netns::enter("an_rtmp_publisher_plays_in_a_native_viewer_and_chromium_until_it_stops") {
        return;
    }
    let dir = scratch("ingest-e2e");
    let (_server, addr) = signal_server(&web_dist());
    let key = channel_key(&dir.join("live.key"));
    let record = dir.join("ingest");
    let args: Vec<&OsStr> = [
        OsStr::new("--channel"),
        OsStr::new("live"),
        OsStr::new("--stream-key"),
        OsStr::new(STREAM_KEY),
        OsStr::new("--record-dir"),
        record.as_os_str(),
        OsStr::new("--key"),
        key.as_os_str(),
    ]
    .to_vec();
    let (_ingest, url) = ingest(&addr, &args, &dir.join("ingest.log"));
    let mut ffmpeg = rtmp_publisher(
        &format!("{url}/{STREAM_KEY}"),
        None,
        &dir.join("ffmpeg.log"),
    );
    wait_for_channel(&addr, "live", Duration::from_secs(20));

    let (name, viewer) = watcher(&addr, "live", &dir, "viewer", CHUNKS, &[]);
    check_viewer(&dir, &name, viewer, CHUNKS, &record.join("live"));
    let frames = decoded_frames(&dir.join("viewer.mp4"));
    assert!(
        frames.0 >= 100,
        "{frames:?} video frames decoded from {CHUNKS} chunks"
    );
    assert!(
        frames.1 >= 150,
        "{frames:?} audio frames decoded from {CHUNKS} chunks"
    );

    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let client = driver.open(&dir.join("chromium-profile")).await;
        let outcome = chromium_plays_then_sees_the_end(&client, &addr, &mut ffmpeg).await;
        let _ = client.close().await;
        outcome
    });
    let probe = outcome.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    println!("Chromium: {probe}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(&addr, "/api/channels").contains("\"live\"") {
        assert!(
            Instant::now() < deadline,
            "the channel is still listed 15 s after the publisher stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.join("ingest.log")).unwrap();
    assert!(
        log.contains("publisher stopped; the channel ends"),
        "ingest log:\n{log}"
    );
}

#[test]
fn wrong_keys_a_second_publisher_garbage_and_a_flood_are_refused_while_the_channel_plays() {
    if !netns::enter(
        "wrong_keys_a_second_publisher_garbage_and_a_flood_are_refused_while_the_channel_plays",
    ) {
        return;
    }
    let dir = scratch("ingest-hostile");
    let (_server, addr) = signal_server(&web_dist());
    channel_key(&dir.join("news.key"));
    channel_key(&dir.join("sport.key"));
    let config = dir.join("channels.toml");
    std::fs::write(
        &config,
        format!(
            "[[channel]]\nname = \"news\"\nkey = \"news.key\"\nstream_key = \"{STREAM_KEY}\"\n\
             [[channel]]\nname = \"sport\"\nkey = \"sport.key\"\nstream_key = \"sport-stream-key\"\n"
        ),
    )
    .unwrap();
    // 3 Mbit/s: the test source sends well under 1, a flood far more.
    let record = dir.join("ingest");
    let args: Vec<&OsStr> = [
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--max-publish-kbps"),
        OsStr::new("3000"),
        OsStr::new("--record-dir"),
        record.as_os_str(),
    ]
    .to_vec();
    let (_ingest, url) = ingest(&addr, &args, &dir.join("ingest.log"));
    let _news = Guard(rtmp_publisher(
        &format!("{url}/{STREAM_KEY}"),
        None,
        &dir.join("news.log"),
    ));
    wait_for_channel(&addr, "news", Duration::from_secs(20));
    let (name, viewer) = watcher(&addr, "news", &dir, "viewer", 8, &[]);
    // A client without a key that trickles a byte a second after its handshake: it must be
    // closed 10 s after it connected, however it keeps the socket busy.
    let mut trickler = handshake(&url);
    let trickling = std::thread::spawn(move || {
        let started = Instant::now();
        let mut byte = [0u8; 1];
        // Valid messages (acknowledgements), so only the deadline can end it.
        let ack = [0x02, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut next = ack.iter().cycle();
        trickler
            .set_read_timeout(Some(Duration::from_millis(900)))
            .unwrap();
        while started.elapsed() < Duration::from_secs(30) {
            if trickler
                .write_all(&[*next.next().expect("cycles")])
                .is_err()
            {
                break;
            }
            match trickler.read(&mut byte) {
                Ok(0) => break,
                Err(e)
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                _ => {}
            }
        }
        started.elapsed()
    });

    // A wrong key, and the right key while the channel has its publisher: ffmpeg is told
    // at once and gives up.
    for (key, log, reason) in [
        (
            "guessed-key-123",
            "wrong-key.log",
            "refused: wrong stream key",
        ),
        (
            STREAM_KEY,
            "second.log",
            "refused: the channel already has a publisher",
        ),
    ] {
        let started = Instant::now();
        let status = rtmp_publisher(&format!("{url}/{key}"), Some(30), &dir.join(log))
            .wait()
            .unwrap();
        assert!(!status.success(), "ffmpeg with {log} was let publish");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{log}: refused only after {:?}",
            started.elapsed()
        );
        wait_for_log(&dir, reason);
    }
    // Garbage after a good handshake.
    let mut garbage = handshake(&url);
    let _ = garbage.write_all(&[0x43, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 20]);
    assert_closed(&mut garbage, "garbage");
    wait_for_log(&dir, "begins with a compressed header");
    // A flood: valid messages (acknowledgements) as fast as the socket takes them.
    let mut flood = handshake(&url);
    let ack = [0x02, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0, 0, 0, 0, 1];
    let burst: Vec<u8> = ack.iter().copied().cycle().take(ack.len() * 4096).collect();
    let started = Instant::now();
    while flood.write_all(&burst).is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a flood was never dropped"
        );
    }
    wait_for_log(&dir, "sending faster than 3000 kbit/s");

    let trickled = trickling.join().unwrap();
    assert!(
        trickled < Duration::from_secs(15),
        "a trickling client was kept {trickled:?}"
    );
    wait_for_log(&dir, "not publishing 10s after connecting");

    // Through all of it the channel kept playing.
    check_viewer(&dir, &name, viewer, 8, &record.join("news"));
    let log = std::fs::read_to_string(dir.join("ingest.log")).unwrap();
    assert_eq!(
        log.matches("publisher live").count(),
        1,
        "ingest log:\n{log}"
    );
}

/// A raw connection to the ingest's RTMP port that did the handshake (C0+C1, read S0-S2, C2).
fn handshake(url: &str) -> TcpStream {
    let host = url
        .strip_prefix("rtmp://")
        .and_then(|rest| rest.split('/').next())
        .expect("an rtmp:// URL");
    let mut socket = TcpStream::connect(host).expect("the ingest accepts connections");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.write_all(&[3]).unwrap();
    socket.write_all(&[0; 1536]).unwrap();
    let mut reply = vec![0; 1 + 2 * 1536];
    socket.read_exact(&mut reply).expect("S0, S1 and S2");
    assert_eq!(reply[0], 3, "RTMP version 3");
    socket.write_all(&reply[1..1537]).unwrap();
    socket
}

/// The ingest closed `socket` (within its 10 s read time-out).
fn assert_closed(socket: &mut TcpStream, what: &str) {
    let mut buf = [0; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: the connection is still open after 10 s")
            }
            Err(_) => return, // reset
        }
    }
}

fn wait_for_log(dir: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(dir.join("ingest.log")).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the ingest never logged {text:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The viewer played `chunks` chunks in a row, each byte-identical to what the ingest cut
/// (its record of the channel, `source`), and wrote exactly init + those chunks.
fn check_viewer(dir: &Path, name: &str, child: Child, chunks: u64, source: &Path) {
    let output = child
        .wait_with_output()
        .expect("the viewer runs to completion");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name} failed; see {}/{name}.log",
        dir.display()
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{name} summary {stdout:?}: {e}"));
    assert_eq!(summary["chunks_played"], chunks, "{summary}");
    assert_eq!(summary["skipped"], serde_json::json!([]), "{summary}");
    let first = summary["first_seq"].as_u64().expect("a first chunk");
    let record = dir.join(name);
    let read =
        |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut stream = read(&record.join("init.mp4"));
    assert_eq!(stream, read(&source.join("init.mp4")), "init segment");
    for seq in first..first + chunks {
        let chunk = format!("chunk-{seq:08}.m4s");
        let got = read(&record.join(&chunk));
        assert!(got == read(&source.join(&chunk)), "{chunk} differs");
        stream.extend(got);
    }
    assert!(
        std::fs::read(dir.join(format!("{name}.mp4"))).unwrap() == stream,
        "{name}.mp4 is not init + its chunks"
    );
}

/// Video and audio frames ffprobe decodes from `path`.
fn decoded_frames(path: &Path) -> (u64, u64) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args(["stream=codec_type,nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let count = |kind: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{kind},")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    (count("video"), count("audio"))
}

const PROBE: &str = r#"
const v = document.getElementById('video');
const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : { totalVideoFrames: 0 };
return { time: v.currentTime, frames: q.totalVideoFrames, error: v.error && v.error.message,
         overlay: document.getElementById('overlay-text').textContent,
         overlay_hidden: document.getElementById('overlay').hidden };
"#;

/// Chromium plays 5 s of the channel (frames decoded, the clock moving), then ffmpeg stops
/// and the page says the broadcast ended.
async fn chromium_plays_then_sees_the_end(
    client: &fantoccini::Client,
    addr: &str,
    ffmpeg: &mut Child,
) -> Result<Value, String> {
    client
        .goto(&format!("http://{addr}/watch/live"))
        .await
        .map_err(|e| e.to_string())?;
    let probe = || async {
        client
            .execute(PROBE, vec![])
            .await
            .map_err(|e| e.to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut started: Option<f64> = None;
    let played = loop {
        let p = probe().await?;
        if !p["error"].is_null() {
            return Err(format!("the video element failed: {p}"));
        }
        let time = p["time"].as_f64().unwrap_or(0.0);
        if time > 0.0 {
            let first = *started.get_or_insert(time);
            if time - first >= 5.0 && p["frames"].as_u64().unwrap_or(0) >= 100 {
                break p;
            }
        }
        if Instant::now() > deadline {
            return Err(format!("Chromium did not play 5 s within 60 s: {p}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = probe().await?;
        if p["overlay"] == "The broadcast has ended." && p["overlay_hidden"] == false {
            return Ok(serde_json::json!({ "played": played, "ended": p }));
        }
        if Instant::now() > deadline {
            return Err(format!("the page never said the broadcast ended: {p}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the studio page says about itself (`window.studio`).
const STUDIO: &str = "return window.studio;";

const VIEWER_PROBE: &str = r#"
const v = document.getElementById('video');
const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : { totalVideoFrames: 0 };
return { time: v.currentTime, frames: q.totalVideoFrames, audio_bytes: v.webkitAudioDecodedByteCount || 0,
         width: v.videoWidth, error: v.error && v.error.message,
         overlay: document.getElementById('overlay-text').textContent,
         overlay_hidden: document.getElementById('overlay').hidden };
"#;

/// Chromium with a fake camera and microphone goes live from the ingest's studio page over
/// WHIP; a second publisher is refused (409); a second Chromium watches the channel with
/// picture and sound; Stop ends it for the viewer. Before that, WHIP without the right key
/// is refused with 401.
#[test]
fn a_browser_goes_live_from_the_studio_page_and_another_watches_with_sound() {
    if !netns::enter("a_browser_goes_live_from_the_studio_page_and_another_watches_with_sound") {
        return;
    }
    let dir = scratch("ingest-whip");
    let (_server, addr) = signal_server(&web_dist());
    let key = channel_key(&dir.join("studio.key"));
    let args: Vec<&OsStr> = [
        OsStr::new("--channel"),
        OsStr::new("studio"),
        OsStr::new("--stream-key"),
        OsStr::new(STREAM_KEY),
        OsStr::new("--key"),
        key.as_os_str(),
    ]
    .to_vec();
    let (_ingest, whip) = tests::process::ingest_with_whip(&addr, &args, &dir.join("ingest.log"));
    for (headers, status) in [
        (vec![("Content-Type", "application/sdp")], 401),
        (
            vec![
                ("Content-Type", "application/sdp"),
                ("Authorization", "Bearer guessed-key-123"),
            ],
            401,
        ),
        (
            vec![("Authorization", &*format!("Bearer {STREAM_KEY}"))],
            415,
        ),
    ] {
        let response = tests::http::request(&whip, "POST", "/whip", &headers);
        assert_eq!(response.status, status, "{headers:?}: {}", response.text());
    }
    assert!(
        !http_get(&addr, "/api/channels").contains("\"studio\""),
        "a refused offer went live"
    );

    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let fake = [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
        ];
        let publisher = driver
            .open_with(&dir.join("publisher-profile"), &fake)
            .await;
        let viewer = driver.open(&dir.join("viewer-profile")).await;
        let outcome = studio_to_viewer(&publisher, &viewer, &whip, &addr).await;
        let _ = publisher.close().await;
        let _ = viewer.close().await;
        outcome
    });
    let probe = outcome.unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    println!("studio to viewer: {probe}");
    let log = std::fs::read_to_string(dir.join("ingest.log")).unwrap();
    assert!(
        log.contains("WHIP publisher stopped (DELETE)"),
        "ingest log:\n{log}"
    );
}

async fn studio_to_viewer(
    publisher: &fantoccini::Client,
    viewer: &fantoccini::Client,
    whip: &str,
    addr: &str,
) -> Result<Value, String> {
    let err = |e: fantoccini::error::CmdError| e.to_string();
    publisher
        .goto(&format!("http://{whip}/live"))
        .await
        .map_err(err)?;
    let go = format!(
        "document.getElementById('key').value = '{STREAM_KEY}'; document.getElementById('go').click();"
    );
    // The page captures on load; Go live waits for it if it has not finished.
    publisher.execute(&go, vec![]).await.map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let studio = publisher.execute(STUDIO, vec![]).await.map_err(err)?;
        if studio["state"] == "live" && studio["framesSent"].as_u64().unwrap_or(0) >= 30 {
            break;
        }
        if studio["state"] == "error" || Instant::now() > deadline {
            let health = publisher
                .execute(
                    "return document.getElementById('health').textContent",
                    vec![],
                )
                .await
                .map_err(err)?;
            return Err(format!("the studio did not go live: {studio} {health}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // While the studio is live, a second publisher with the right key is refused.
    let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
    let bearer = format!("Bearer {STREAM_KEY}");
    let second = tests::http::request_with_body(
        whip,
        "POST",
        "/whip",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &bearer),
        ],
        offer.as_bytes(),
    );
    if second.status != 409 {
        return Err(format!(
            "a second WHIP publisher got {}: {}",
            second.status,
            second.text()
        ));
    }
    viewer
        .goto(&format!("http://{addr}/watch/studio"))
        .await
        .map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first: Option<f64> = None;
    let played = loop {
        let p = viewer.execute(VIEWER_PROBE, vec![]).await.map_err(err)?;
        if !p["error"].is_null() {
            return Err(format!("the viewer's video failed: {p}"));
        }
        let time = p["time"].as_f64().unwrap_or(0.0);
        if time > 0.0 {
            let start = *first.get_or_insert(time);
            if time - start >= 5.0
                && p["frames"].as_u64().unwrap_or(0) >= 60
                && p["audio_bytes"].as_u64().unwrap_or(0) > 0
                && p["width"].as_u64().unwrap_or(0) > 0
            {
                break p;
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the viewer did not play 5 s with sound within 60 s: {p}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    publisher
        .execute("document.getElementById('stop').click();", vec![])
        .await
        .map_err(err)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = viewer.execute(VIEWER_PROBE, vec![]).await.map_err(err)?;
        if p["overlay"] == "The broadcast has ended." && p["overlay_hidden"] == false {
            return Ok(serde_json::json!({ "played": played, "ended": p }));
        }
        if Instant::now() > deadline {
            return Err(format!("the viewer never heard the broadcast ended: {p}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
