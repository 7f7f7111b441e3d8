//! The browser glue in real headless Chromium: MSE playback of real fMP4 through the
//! `Player`, and the protocol round trip under wasm32.

#![cfg(target_arch = "wasm32")]

use futures::channel::mpsc;
use futures::StreamExt;
use peer_wasm::player::Player;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// 3 s of 160x120 video with a tone, one fragment a second (the native cutter's fixtures).
const H264_AAC: &[u8] = include_bytes!("../../peer-native/tests/fixtures/h264-aac.mp4");
const VP9_OPUS: &[u8] = include_bytes!("../../peer-native/tests/fixtures/vp9-opus.mp4");

/// Top-level boxes of a fixture: init = ftyp+moov, then moof+mdat pairs.
fn segments(fixture: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut boxes = Vec::new();
    let mut rest = fixture;
    while rest.len() >= 8 {
        let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        boxes.push((&rest[4..8], &rest[..size]));
        rest = &rest[size..];
    }
    let init = [boxes[0].1, boxes[1].1].concat();
    let fragments = boxes[2..]
        .chunks(2)
        .filter(|pair| pair.len() == 2 && pair[0].0 == b"moof")
        .map(|pair| [pair[0].1, pair[1].1].concat())
        .collect();
    (init, fragments)
}

fn video() -> web_sys::HtmlVideoElement {
    let document = web_sys::window().unwrap().document().unwrap();
    let video: web_sys::HtmlVideoElement = document
        .create_element("video")
        .unwrap()
        .dyn_into()
        .unwrap();
    video.set_muted(true);
    document.body().unwrap().append_child(&video).unwrap();
    video
}

/// Plays a fixture through the `Player` until every append completed; returns the end of
/// the buffered media.
async fn buffer_fixture(fixture: &[u8], mime: &str) -> f64 {
    let (events, mut inbox) = mpsc::unbounded();
    let mut player = Player::new(video(), &events).expect("MSE is available in Chromium");
    let (init, fragments) = segments(fixture);
    assert_eq!(fragments.len(), 3);
    // Media queued before the source opens must wait, not fail.
    player.set_init(mime, init, &events).unwrap();
    for fragment in fragments {
        player.append(fragment).unwrap();
    }
    let mut updates = 0;
    while updates < 4 {
        match inbox.next().await.expect("events keep coming") {
            peer_wasm::Event::SourceOpen => player.on_source_open(&events).unwrap(),
            peer_wasm::Event::UpdateEnd => {
                updates += 1;
                player.pump().unwrap();
            }
            _ => {}
        }
    }
    let buffered = player.video().buffered();
    assert_eq!(buffered.length(), 1, "one contiguous range");
    buffered.end(0).unwrap()
}

#[wasm_bindgen_test]
async fn player_buffers_h264_aac_in_order() {
    let end = buffer_fixture(H264_AAC, r#"video/mp4; codecs="avc1.64000b,mp4a.40.2""#).await;
    assert!(end > 2.9, "all three seconds buffered, got {end}");
}

#[wasm_bindgen_test]
async fn player_buffers_vp9_opus_in_order() {
    let end = buffer_fixture(VP9_OPUS, r#"video/mp4; codecs="vp09.00.10.08,opus""#).await;
    assert!(end > 2.9, "all three seconds buffered, got {end}");
}

#[wasm_bindgen_test]
async fn unsupported_codec_is_reported_not_appended() {
    let (events, _inbox) = mpsc::unbounded();
    let mut player = Player::new(video(), &events).unwrap();
    let error = player
        .set_init(r#"video/mp4; codecs="nope.1""#, vec![0; 8], &events)
        .unwrap_err();
    assert!(error.to_string().contains("cannot play"), "{error}");
}

#[wasm_bindgen_test]
fn peer_messages_round_trip_in_wasm() {
    use protocol::{ChunkSeq, PeerMessage, RequestId};
    let piece = PeerMessage::Piece {
        req: RequestId(1),
        seq: ChunkSeq(u64::MAX),
        offset: 0,
        total: 3,
        data: vec![1, 2, 3].into(),
    };
    assert_eq!(PeerMessage::decode(&piece.encode()), Ok(piece));
}
