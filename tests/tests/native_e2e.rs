//! signal-server + a broadcaster fed by ffmpeg + three headless viewers, over real WebRTC:
//! every viewer plays a contiguous run of chunks, each byte-identical to what the
//! broadcaster cut.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::netns;
use tests::process::{binary, broadcaster, scratch, signal_server, wait_for_channel};

const CHUNKS: u64 = 6;

#[test]
fn three_viewers_receive_every_chunk_byte_identical() {
    if !netns::enter("three_viewers_receive_every_chunk_byte_identical") {
        return;
    }
    let dir = scratch("native-e2e");
    let (_server, addr) = signal_server(&dir);
    let source_dir = dir.join("broadcaster");
    let (_ffmpeg, _broadcaster) =
        broadcaster(&addr, "e2e", &source_dir, &dir.join("broadcaster.log"));
    wait_for_channel(&addr, "e2e", Duration::from_secs(20));

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
