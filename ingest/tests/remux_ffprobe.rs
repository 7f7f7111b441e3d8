//! A fixed FLV file (2 s of ffmpeg's test source: 60 frames of H.264 with a keyframe each
//! second, AAC stereo at 44.1 kHz) remuxed to fragmented MP4, then checked by the project's
//! own cutter (what the broadcaster runs) and by ffprobe (what a player decodes).

use std::path::PathBuf;
use std::process::Command;

use ingest::{FlvReader, Remuxer};

fn fixture() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/testsrc-2s.flv");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture remuxed, fed in pieces of `piece` bytes.
fn remux(piece: usize) -> Vec<u8> {
    let mut reader = FlvReader::new();
    let mut remuxer = Remuxer::new();
    let mut out = Vec::new();
    for bytes in fixture().chunks(piece) {
        for (kind, timestamp, payload) in reader.push(bytes).expect("the fixture is valid FLV") {
            remuxer
                .push(kind, timestamp, &payload)
                .expect("the fixture remuxes");
        }
        out.extend(remuxer.take_output());
    }
    reader.finish().expect("the fixture ends between tags");
    remuxer.finish();
    out.extend(remuxer.take_output());
    out
}

#[test]
fn the_cutter_finds_an_init_and_one_keyframe_fragment_per_second() {
    let mp4 = remux(4096);
    let mut cutter = fmp4::Cutter::new();
    let mut segments = cutter
        .push(&mp4)
        .expect("the cutter takes the remuxer's output");
    cutter.finish().expect("nothing left over");
    let fmp4::Segment::Init { mime, .. } = segments.remove(0) else {
        panic!("the first segment is not the init segment");
    };
    assert_eq!(mime, "video/mp4; codecs=\"avc1.64000d,mp4a.40.2\"");
    let keyframes: Vec<bool> = segments
        .iter()
        .map(|s| match s {
            fmp4::Segment::Media { keyframe, .. } => *keyframe,
            fmp4::Segment::Init { .. } => panic!("a second init segment"),
        })
        .collect();
    assert_eq!(keyframes, [true, true], "a fragment per 30-frame GOP");
    // However the bytes arrive, the output is the same.
    assert_eq!(remux(7), mp4);
}

#[test]
fn ffprobe_decodes_every_frame_with_rising_timestamps() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("remuxed-testsrc-2s.mp4");
    std::fs::write(&path, remux(4096)).expect("can write under the target dir");
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_name,width,height,sample_rate,channels,nb_read_frames")
        .args([
            "-show_entries",
            "packet=stream_index,dts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe is installed (scripts/setup installs ffmpeg)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&"h264,320,180,60"), "video stream: {text}");
    // 2 s at 44.1 kHz is 86.1 frames of 1024 samples; the encoder's priming frame makes 87.
    let audio = lines
        .iter()
        .find(|l| l.starts_with("aac,"))
        .expect("an audio stream");
    assert_eq!(*audio, "aac,44100,2,87", "audio stream");
    for stream in ["0", "1"] {
        let dts: Vec<f64> = lines
            .iter()
            .filter_map(|l| l.split_once(','))
            .filter(|(s, _)| *s == stream)
            .filter_map(|(_, t)| t.parse().ok())
            .collect();
        assert!(dts.len() > 50, "stream {stream}: {} packets", dts.len());
        assert!(
            dts.windows(2).all(|w| w[1] > w[0]),
            "stream {stream}: decode times not rising: {dts:?}"
        );
    }
}

/// Video decode times are 64-bit: 13.3 hours into a stream they pass u32::MAX at 90 kHz,
/// and a fragment after that must not repeat an earlier decode time.
#[test]
fn decode_times_keep_rising_past_thirteen_hours() {
    let tags = FlvReader::new()
        .push(&fixture())
        .expect("the fixture is valid FLV");
    let video: Vec<&Vec<u8>> = tags
        .iter()
        .filter(|(kind, ..)| *kind == ingest::MediaKind::Video)
        .map(|(.., payload)| payload)
        .collect();
    let (config, keyframe) = (video[0], video[1]);
    let mut remuxer = Remuxer::new();
    remuxer.push(ingest::MediaKind::Video, 0, config).unwrap();
    // Keyframes at 0, 13.3 h, 13.3 h + 1 s, 13.3 h + 2 s (in ms).
    for at in [0, 48_000_000, 48_001_000, 48_002_000] {
        remuxer
            .push(ingest::MediaKind::Video, at, keyframe)
            .unwrap();
    }
    let mp4 = remuxer.take_output();
    let decode_times: Vec<u64> = mp4
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"tfdt")
        .map(|(at, _)| {
            let field = &mp4[at + 8..at + 16]; // after the type, version and flags
            u64::from_be_bytes(field.try_into().unwrap())
        })
        .collect();
    assert_eq!(
        decode_times,
        [0, 48_000_000 * 90, 48_001_000 * 90],
        "tfdt of each fragment, in 90 kHz units"
    );
}
