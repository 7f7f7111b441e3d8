//! ffmpeg publishing over RTMP to the session, served on a real socket by a minimal
//! blocking driver: the right key's stream remuxes into MP4 that ffprobe decodes; a wrong
//! key is refused and ffmpeg gives up.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use ingest::{PublishRefusal, Remuxer, RtmpSession, SessionEvent, StreamKey};

/// Serves one publisher; returns the remuxed MP4 and why the session ended.
fn serve(stream: TcpStream, key: &str) -> (Vec<u8>, String) {
    let key = StreamKey::new(key).unwrap();
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut session = RtmpSession::new("live");
    let mut remuxer = Remuxer::new();
    let mut mp4 = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let end = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break "closed".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("read: {e}"),
        };
        let result = session.handle_input(&buf[..n]);
        let mut refused = false;
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Publish(asked) if asked.matches(&key) => session.accept_publish(),
                SessionEvent::Publish(_) => {
                    session.refuse_publish(PublishRefusal::WrongKey);
                    refused = true;
                }
                SessionEvent::Media {
                    kind,
                    timestamp,
                    payload,
                } => remuxer
                    .push(kind, timestamp, &payload)
                    .expect("ffmpeg's stream remuxes"),
                SessionEvent::Unpublished => {}
            }
        }
        let _ = stream.write_all(&session.take_output());
        if refused {
            break "refused".to_owned();
        }
        if let Err(e) = result {
            break format!("error: {e}");
        }
    };
    remuxer.finish();
    mp4.extend(remuxer.take_output());
    (mp4, end)
}

fn ffmpeg_publish(url: &str) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x180:rate=30")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "30", "-c:a", "aac", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed (scripts/setup installs it)")
}

#[test]
fn ffmpeg_publishes_three_seconds_that_ffprobe_decodes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ffmpeg = ffmpeg_publish(&format!("rtmp://127.0.0.1:{port}/live/secret-key"));
    let (stream, _) = listener.accept().unwrap();
    let (mp4, end) = serve(stream, "secret-key");
    let output = ffmpeg.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(end, "closed");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rtmp-ffmpeg.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args(["stream=codec_name,nb_read_frames", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(
        text.lines().any(|l| l == "h264,90"),
        "3 s at 30 fps: {text}"
    );
    let audio: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("aac,"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no audio: {text}"));
    // 3 s at 48 kHz is 140.6 frames of 1024 samples; audio before the first keyframe and
    // after the last video frame is cut.
    assert!((135..=142).contains(&audio), "{audio} audio frames");
}

#[test]
fn a_wrong_key_is_refused_and_ffmpeg_gives_up() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ffmpeg = ffmpeg_publish(&format!("rtmp://127.0.0.1:{port}/live/guess"));
    let (stream, _) = listener.accept().unwrap();
    let (mp4, end) = serve(stream, "secret-key");
    assert_eq!(end, "refused");
    assert!(mp4.is_empty(), "nothing was remuxed");
    drop(listener);
    let output = ffmpeg.wait_with_output().unwrap();
    assert!(!output.status.success(), "ffmpeg reported success");
}
