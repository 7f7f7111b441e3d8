//! The browser glue in real headless Chromium: MSE playback of real fMP4 (append queue,
//! eviction), data-channel back-pressure between two real peer connections, reconnecting
//! to a signal server that is down, and the protocol round trip under wasm32.

#![cfg(target_arch = "wasm32")]

use futures::channel::mpsc;
use futures::StreamExt;
use peer_wasm::media::{MediaLimits, MediaPlayer};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// 3 s of 160x120 video with a tone, one fragment a second (the native cutter's fixtures).
const H264_AAC: &[u8] = include_bytes!("../../fmp4/tests/fixtures/h264-aac.mp4");
const VP9_OPUS: &[u8] = include_bytes!("../../fmp4/tests/fixtures/vp9-opus.mp4");
/// 2 s of 320x180 H.264 + AAC as FLV, what an RTMP publisher sends (the ingest's fixture).
const FLV: &[u8] = include_bytes!("../../ingest/tests/data/testsrc-2s.flv");

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
    let (player, _inbox) = buffered_player(fixture, mime, MediaLimits::default()).await;
    let buffered = player.video().buffered();
    assert_eq!(buffered.length(), 1, "one contiguous range");
    buffered.end(0).unwrap()
}

/// A player with every fragment of a fixture appended, and its event stream.
async fn buffered_player(
    fixture: &[u8],
    mime: &str,
    limits: MediaLimits,
) -> (MediaPlayer, mpsc::UnboundedReceiver<peer_wasm::Event>) {
    let (events, mut inbox) = mpsc::unbounded();
    let mut player =
        MediaPlayer::new(video(), &events, limits, true).expect("MSE is available in Chromium");
    let (init, fragments) = segments(fixture);
    let appends = fragments.len() + 1;
    // Media queued before the source opens must wait, not fail.
    player.set_init(mime, init, &events).unwrap();
    for fragment in fragments {
        player.append(fragment).unwrap();
    }
    let mut updates = 0;
    while updates < appends {
        match inbox.next().await.expect("events keep coming") {
            peer_wasm::Event::SourceOpen => player.on_source_open(&events).unwrap(),
            peer_wasm::Event::UpdateEnd => {
                updates += 1;
                player.pump().unwrap();
            }
            _ => {}
        }
    }
    (player, inbox)
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

/// What `streamtorrent ingest` makes of an RTMP publisher's FLV, remuxed here in wasm by
/// the same code, plays through MSE: one contiguous range, both seconds.
#[wasm_bindgen_test]
async fn remuxed_flv_plays_through_mse() {
    let mut reader = ingest::FlvReader::new();
    let mut remuxer = ingest::Remuxer::new();
    for (kind, timestamp, payload) in reader.push(FLV).expect("the fixture is FLV") {
        remuxer
            .push(kind, timestamp, &payload)
            .expect("the fixture remuxes");
    }
    remuxer.finish();
    let mp4 = remuxer.take_output();
    assert_eq!(segments(&mp4).1.len(), 2, "a fragment per second");
    let end = buffer_fixture(&mp4, r#"video/mp4; codecs="avc1.64000d,mp4a.40.2""#).await;
    assert!(end > 1.9, "both seconds buffered, got {end}");
}

#[wasm_bindgen_test]
async fn unsupported_codec_is_reported_not_appended() {
    let (events, _inbox) = mpsc::unbounded();
    let mut player = MediaPlayer::new(video(), &events, MediaLimits::default(), true).unwrap();
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

/// The next event the test cares about, skipping the rest.
async fn next_matching<T>(
    inbox: &mut mpsc::UnboundedReceiver<peer_wasm::Event>,
    mut pick: impl FnMut(peer_wasm::Event) -> Option<T>,
) -> T {
    loop {
        let event = inbox.next().await.expect("events keep coming");
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

fn page_now() -> f64 {
    web_sys::window().unwrap().performance().unwrap().now()
}

#[wasm_bindgen_test]
async fn played_media_is_evicted_and_what_is_ahead_kept() {
    let limits = MediaLimits {
        keep_behind_s: 2.0,
        ..MediaLimits::default()
    };
    let (mut player, mut inbox) = buffered_player(
        H264_AAC,
        r#"video/mp4; codecs="avc1.64000b,mp4a.40.2""#,
        limits,
    )
    .await;
    player.tick(page_now(), &mpsc::unbounded().0);
    let before = player.video().buffered();
    assert_eq!(
        before.start(0).unwrap(),
        0.0,
        "nothing played yet, nothing evicted"
    );
    // 2.5 s played, more than `keep_behind_s`: media before 1.5 s goes.
    player.video().set_current_time(2.5);
    player.tick(page_now(), &mpsc::unbounded().0);
    next_matching(&mut inbox, |e| {
        matches!(e, peer_wasm::Event::UpdateEnd).then_some(())
    })
    .await;
    let after = player.video().buffered();
    assert_eq!(after.length(), 1);
    let (start, end) = (after.start(0).unwrap(), after.end(0).unwrap());
    assert!(
        start >= 1.5,
        "played media evicted up to 1.5 s, buffered from {start}"
    );
    assert!(
        end > 2.9,
        "media ahead of the play position kept, buffered to {end}"
    );
}

#[wasm_bindgen_test]
async fn data_channel_back_pressure_reports_a_full_queue_then_drained() {
    back_pressure(protocol::PiecesChannel::Shared).await;
}

#[wasm_bindgen_test]
async fn pieces_on_an_unordered_channel_of_their_own_arrive_with_back_pressure() {
    back_pressure(protocol::PiecesChannel::Unordered).await;
}

/// Two real peer connections in this page, pieces sent as `pieces` says: they queue,
/// the queue is reported, drains, and every piece arrives whole.
async fn back_pressure(pieces: protocol::PiecesChannel) {
    use peer_wasm::link::Link;
    use peer_wasm::Event;
    use swarm::LinkId;
    let (events, mut inbox) = mpsc::unbounded();
    // `a` is our link to `b`, `b` to `a`.
    let (to_b, to_a) = (LinkId::new(0, 1), LinkId::new(1, 1));
    let mut a = Link::new(to_b, &[], false, &events).unwrap();
    let mut b = Link::new(to_a, &[], false, &events).unwrap();
    a.offer(to_b, pieces, &events).await.unwrap();
    next_matching(&mut inbox, |e| {
        matches!(e, Event::GatheringComplete(p) if p == to_b).then_some(())
    })
    .await;
    b.answer(to_a, &a.local_sdp().unwrap(), &events)
        .await
        .unwrap();
    next_matching(&mut inbox, |e| {
        matches!(e, Event::GatheringComplete(p) if p == to_a).then_some(())
    })
    .await;
    a.accept_answer(&b.local_sdp().unwrap()).await.unwrap();
    let mut opened = (false, false);
    while opened != (true, true) {
        match inbox.next().await.expect("events keep coming") {
            Event::ChannelOpen(peer) if peer == to_b => opened.0 = true,
            Event::ChannelOpen(peer) if peer == to_a => opened.1 = true,
            Event::LinkFailed(peer) => panic!("link to {peer} failed"),
            _ => {}
        }
    }
    let own_channel = pieces != protocol::PiecesChannel::Shared;
    // The pieces channel opens on its own, without an event of the link's: look.
    for _ in 0..500 {
        if a.pieces_channel_open() == own_channel && b.pieces_channel_open() == own_channel {
            break;
        }
        gloo_timers::future::TimeoutFuture::new(10).await;
    }
    assert_eq!(a.pieces_channel_open(), own_channel, "{pieces:?}: offerer");
    assert_eq!(b.pieces_channel_open(), own_channel, "{pieces:?}: answerer");
    // 40 pieces at once: more than the channel sends in one go, so they queue.
    const PIECES: usize = 40;
    let piece = vec![7u8; 16_320];
    for _ in 0..PIECES {
        assert!(a.send(&piece, true), "the open channel takes the piece");
    }
    let queued = a.buffered();
    assert!(
        queued > 64 * 1024,
        "pieces queue in the channel: {queued} bytes"
    );
    let mut received = 0;
    let mut drained_at = None;
    while received < PIECES {
        match inbox.next().await.expect("events keep coming") {
            Event::ChannelDrained(peer) if peer == to_b => drained_at = Some(a.buffered()),
            Event::ChannelMessage(peer, bytes) if peer == to_a => {
                assert_eq!(bytes, piece, "pieces arrive whole and intact");
                received += 1;
            }
            _ => {}
        }
    }
    let drained_at = drained_at.expect("the sender heard that its queue drained");
    assert!(
        drained_at < 16 * 1024,
        "drained means below 16 KiB, was {drained_at}"
    );
}

#[wasm_bindgen_test]
async fn an_unreachable_signal_server_reports_a_close_for_that_attempt() {
    use peer_wasm::signalling::Signalling;
    use peer_wasm::Event;
    use swarm::SignalId;
    let (events, mut inbox) = mpsc::unbounded();
    // Port 9 (discard) has no WebSocket server: each attempt ends in a close, under its
    // own id (the core's back-off, tested natively, decides when to try again).
    let url = "ws://127.0.0.1:9/ws";
    let _first = Signalling::open(url, SignalId(1), &events).unwrap();
    let closed = next_matching(&mut inbox, |e| match e {
        Event::SocketClosed(id) => Some(id),
        _ => None,
    })
    .await;
    assert_eq!(closed, SignalId(1));
    let _second = Signalling::open(url, SignalId(2), &events).unwrap();
    let closed = next_matching(&mut inbox, |e| match e {
        Event::SocketClosed(id) => Some(id),
        _ => None,
    })
    .await;
    assert_eq!(closed, SignalId(2));
}

/// What checking content costs in the browser per 250 KB chunk (2 Mbit/s at one chunk a
/// second): a signature per chunk against a signed root per 10 chunks. Prints the figures
/// (docs/benchmarks.md); asserts only that both schemes ran. For the figure, run it
/// optimised: `scripts/in-netns cargo test --release -p peer-wasm --target
/// wasm32-unknown-unknown content_cost -- --nocapture`.
#[wasm_bindgen_test]
fn content_cost_per_chunk_in_chromium() {
    let cost = protocol::content_cost::measure(page_now, 250_000, 40, 10);
    console_log!("content cost in Chromium (µs per chunk): {cost:?}");
    assert!(cost.verify_per_chunk_us > 0.0 && cost.verify_batched_us > 0.0);
}
