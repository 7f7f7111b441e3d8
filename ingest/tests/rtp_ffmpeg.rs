//! ffmpeg sends H.264 and Opus over RTP (as a browser does over WebRTC, less the
//! encryption), the test reads the UDP packets and feeds `RtpIngest`; its MP4 must decode
//! in ffprobe with every frame after the first keyframe, and pass the broadcaster's cutter.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest::{RtpIngest, RtpPacket};

/// An RTP packet's header fields and payload (RFC 3550 §5.1), or `None` if malformed.
fn parse(packet: &[u8]) -> Option<(u8, RtpPacket<'_>)> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let csrcs = usize::from(packet[0] & 0x0f);
    let mut at = 12 + 4 * csrcs;
    if packet[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([
            *packet.get(at + 2)?,
            *packet.get(at + 3)?,
        ]));
        at += 4 + 4 * words;
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    Some((
        packet[1] & 0x7f,
        RtpPacket {
            sequence: u16::from_be_bytes([packet[2], packet[3]]),
            timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            marker: packet[1] & 0x80 != 0,
            payload: packet.get(at..end)?,
        },
    ))
}

#[test]
fn h264_and_opus_over_rtp_remux_into_mp4_that_decodes() {
    let video = UdpSocket::bind("127.0.0.1:0").unwrap();
    let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
    for socket in [&video, &audio] {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
    }
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re", "-f", "lavfi", "-t", "3"])
        .args([
            "-i",
            "testsrc2=size=320x180:rate=30",
            "-re",
            "-f",
            "lavfi",
            "-t",
            "3",
        ])
        .args(["-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-map",
            "0:v",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "30", "-payload_type", "96", "-f", "rtp"])
        .arg(format!(
            "rtp://127.0.0.1:{}?pkt_size=1200",
            video.local_addr().unwrap().port()
        ))
        .args([
            "-map",
            "1:a",
            "-c:a",
            "libopus",
            "-payload_type",
            "111",
            "-f",
            "rtp",
        ])
        .arg(format!(
            "rtp://127.0.0.1:{}",
            audio.local_addr().unwrap().port()
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("ffmpeg is installed (scripts/setup installs it)");
    let start = Instant::now();
    let mut ingest = RtpIngest::new(Some(2));
    let mut mp4 = Vec::new();
    let mut buf = [0u8; 2048];
    let mut packets = 0;
    let mut requests = 0;
    let mut last_packet = Instant::now();
    while last_packet.elapsed() < Duration::from_secs(2) {
        for (socket, is_video) in [(&video, true), (&audio, false)] {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            last_packet = Instant::now();
            let now = start.elapsed().as_millis() as u64;
            let (_, packet) = parse(&buf[..n]).expect("ffmpeg sends well-formed RTP");
            packets += 1;
            let result = if is_video {
                ingest.handle_video(now, packet)
            } else {
                ingest.handle_audio(now, packet)
            };
            result.expect("ffmpeg's RTP remuxes");
            if ingest.poll_keyframe_request(now) {
                requests += 1;
            }
            mp4.extend(ingest.take_output());
        }
    }
    ingest.finish(start.elapsed().as_millis() as u64);
    mp4.extend(ingest.take_output());
    assert!(ffmpeg.wait().unwrap().success());
    assert!(packets > 200, "{packets} packets");
    // One request at the start, then one a second (ffmpeg ignores them: it sends no RTCP).
    assert!(
        (2..=5).contains(&requests),
        "{requests} keyframe requests in 3 s"
    );

    let mut cutter = fmp4::Cutter::new();
    let segments = cutter.push(&mp4).expect("the cutter takes the output");
    let fmp4::Segment::Init { mime, .. } = &segments[0] else {
        panic!("no init segment first");
    };
    assert_eq!(mime, "video/mp4; codecs=\"avc3.42c00d,opus\"");
    assert!(segments[1..]
        .iter()
        .all(|s| matches!(s, fmp4::Segment::Media { keyframe: true, .. })));
    assert_eq!(segments.len(), 4, "init and a fragment per 30-frame GOP");

    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rtp-ffmpeg.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .args([
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(
        text.lines().any(|l| l == "h264,320,180,90"),
        "every frame of 3 s at 30 fps: {text}"
    );
    let opus: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("opus,"))
        .and_then(|n| n.trim_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no Opus stream: {text}"));
    // 3 s of 20 ms packets is 150; those before the first keyframe are dropped.
    assert!((140..=151).contains(&opus), "{opus} Opus packets decoded");
}
