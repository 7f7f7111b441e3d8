//! signal-server + a broadcaster fed by ffmpeg + three headless viewers, over real WebRTC:
//! every viewer plays a contiguous run of chunks, each byte-identical to what the
//! broadcaster cut.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::netns;
use tests::process::{
    binary, free_port, go_live, scratch, signal_server, signal_server_on, wait_for_channel,
    BroadcastOptions,
};

const CHUNKS: u64 = 6;

#[test]
fn three_viewers_receive_every_chunk_byte_identical() {
    if !netns::enter("three_viewers_receive_every_chunk_byte_identical") {
        return;
    }
    let dir = scratch("native-e2e");
    let (_server, addr) = signal_server(&dir);
    let source_dir = dir.join("broadcaster");
    let (_ffmpeg, _broadcaster) = go_live(&addr, "e2e", &dir, BroadcastOptions::default());

    let mut viewers = Vec::new();
    for i in 0..3 {
        let record = dir.join(format!("viewer-{i}"));
        let child = Command::new(binary("streamtorrent"))
            .args([
                "watch",
                "--server",
                &format!("ws://{addr}/ws"),
                "--channel",
                "e2e",
            ])
            .args([
                "--chunks",
                &CHUNKS.to_string(),
                "--timeout-secs",
                "60",
                "--record-dir",
            ])
            .arg(&record)
            .arg("--output")
            .arg(dir.join(format!("viewer-{i}.mp4")))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("viewer-{i}.log"))).unwrap())
            .spawn()
            .expect("streamtorrent watch starts");
        viewers.push((record, child));
        // Staggered, so later viewers find chunks at earlier ones.
        std::thread::sleep(Duration::from_millis(700));
    }

    let mut from_peers = 0;
    for (i, (record, child)) in viewers.into_iter().enumerate() {
        let output = child.wait_with_output().expect("viewer runs to completion");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "viewer {i} failed; see {}/viewer-{i}.log",
            dir.display()
        );
        let summary: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("viewer {i} summary {stdout:?}: {e}"));
        assert_eq!(summary["chunks_played"], CHUNKS, "viewer {i}: {summary}");
        assert_eq!(
            summary["skipped"],
            serde_json::json!([]),
            "viewer {i}: {summary}"
        );
        let first = summary["first_seq"].as_u64().expect("a first chunk");
        assert_eq!(
            summary["last_seq"].as_u64(),
            Some(first + CHUNKS - 1),
            "viewer {i} played a gap: {summary}"
        );
        from_peers += summary["bytes_from_peers"].as_u64().unwrap_or(0);

        assert_same(&record.join("init.mp4"), &source_dir.join("init.mp4"));
        let mut stream = std::fs::read(record.join("init.mp4")).unwrap();
        for seq in first..first + CHUNKS {
            let name = format!("chunk-{seq:08}.m4s");
            assert_same(&record.join(&name), &source_dir.join(&name));
            stream.extend(std::fs::read(record.join(&name)).unwrap());
        }
        // The written stream is exactly init + the played chunks, in order.
        assert_eq!(
            std::fs::read(dir.join(format!("viewer-{i}.mp4"))).unwrap(),
            stream,
            "viewer {i} output file"
        );
    }
    println!("bytes viewers received from other viewers: {from_peers}");
}

fn assert_same(got: &Path, expected: &Path) {
    let got_bytes = std::fs::read(got).unwrap_or_else(|e| panic!("{}: {e}", got.display()));
    let expected_bytes =
        std::fs::read(expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    assert!(
        got_bytes == expected_bytes,
        "{} differs from {}",
        got.display(),
        expected.display()
    );
}

#[test]
fn peers_keep_streaming_while_the_signal_server_restarts() {
    if !netns::enter("peers_keep_streaming_while_the_signal_server_restarts") {
        return;
    }
    let dir = scratch("restart-e2e");
    let listen = format!("127.0.0.1:{}", free_port());
    let (server, addr) = signal_server_on(&listen, &dir);
    let (_ffmpeg, _broadcaster) = go_live(&addr, "live", &dir, BroadcastOptions::default());
    let record = dir.join("viewer");
    let viewer = Command::new(binary("streamtorrent"))
        .args([
            "watch",
            "--server",
            &format!("ws://{addr}/ws"),
            "--channel",
            "live",
            "--chunks",
            "14",
            "--timeout-secs",
            "60",
            "--record-dir",
        ])
        .arg(&record)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("viewer.log")).unwrap())
        .spawn()
        .expect("streamtorrent watch starts");
    let chunks = || {
        std::fs::read_dir(&record).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("chunk-"))
            })
            .count()
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while chunks() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "viewer got no chunks; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    drop(server); // SIGKILL: the server vanishes as in a crash.
    let before = chunks();
    std::thread::sleep(Duration::from_secs(4));
    let during = chunks();
    assert!(
        during >= before + 2,
        "the stream stalled without the signal server: {before} -> {during} chunks"
    );

    let (_server, _) = signal_server_on(&listen, &dir);
    // The broadcaster rejoins on its own (back-off 0.5, 1, 2, 4 s...).
    wait_for_channel(&addr, "live", Duration::from_secs(20));

    let output = viewer
        .wait_with_output()
        .expect("viewer runs to completion");
    assert!(
        output.status.success(),
        "viewer failed; see {}/viewer.log",
        dir.display()
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["chunks_played"], 14, "{summary}");
    assert_eq!(summary["skipped"], serde_json::json!([]), "{summary}");
    let log = std::fs::read_to_string(dir.join("viewer.log")).unwrap();
    assert!(
        log.contains("reconnected to the signal server"),
        "the viewer never reconnected; see {}/viewer.log",
        dir.display()
    );
}
