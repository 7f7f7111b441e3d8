//! What a peer sends: back-pressure from the driver and the upload budget.

mod common;

use protocol::{ChunkSeq, PeerId, PeerMessage, PIECE_BYTES};
use swarm::{BytesPerSec, Chunk, Config, Input, Millis, Output, Swarm};

const VIEWER: PeerId = PeerId(1);

/// Piece bytes sent to the viewer by one input.
fn pieces_out(source: &mut Swarm) -> usize {
    let mut bytes = 0;
    while let Some(output) = source.poll_output() {
        if let Output::Send(VIEWER, PeerMessage::Piece { data, .. }) = output {
            bytes += data.len();
        }
    }
    bytes
}

fn source_with_viewer(config: Config) -> Swarm {
    let mut source = Swarm::new(config);
    source.handle_input(Millis(0), Input::PeerConnected(VIEWER));
    pieces_out(&mut source);
    source
}

fn chunk(seq: u64, bytes: usize) -> Chunk {
    Chunk {
        seq: ChunkSeq(seq),
        keyframe: true,
        data: vec![seq as u8; bytes].into(),
    }
}

#[test]
fn pieces_stop_at_the_link_high_water_mark_until_the_driver_reports_it_drained() {
    let config = common::source_config();
    let high_water = config.link_high_water as usize;
    let mut source = source_with_viewer(config);
    source.handle_input(Millis(10), Input::ChunkProduced(chunk(0, 250_000)));
    let first = pieces_out(&mut source);
    // Piece payload; the chunk's manifest and the piece headers fill the rest.
    assert!(
        first + PIECE_BYTES >= high_water && first < high_water + 2 * PIECE_BYTES,
        "sent {first} bytes into a link with a {high_water}-byte high-water mark"
    );
    source.handle_timeout(Millis(20));
    assert_eq!(
        pieces_out(&mut source),
        0,
        "nothing more until the queue drains"
    );
    source.handle_input(
        Millis(30),
        Input::Buffered {
            peer: VIEWER,
            bytes: 0,
        },
    );
    assert!(
        pieces_out(&mut source) >= high_water,
        "a drained link takes the next pieces"
    );
}

#[test]
fn uploads_keep_within_the_budget() {
    let mut config = common::source_config();
    let budget = BytesPerSec(100_000);
    config.upload_limit = Some(budget);
    let burst = config.link_high_water as usize;
    let mut source = source_with_viewer(config);
    let mut sent = 0;
    for tick in 0..100u64 {
        let now = Millis(tick * 100);
        if tick % 10 == 0 {
            source.handle_input(now, Input::ChunkProduced(chunk(tick / 10, 250_000)));
        }
        // The link itself never holds anything back: only the budget limits.
        source.handle_input(
            now,
            Input::Buffered {
                peer: VIEWER,
                bytes: 0,
            },
        );
        sent += pieces_out(&mut source);
    }
    // 10 s at 100,000 B/s, plus the initial burst and one piece of debt.
    let allowed = 1_000_000 + burst + PIECE_BYTES;
    assert!(
        sent <= allowed,
        "sent {sent} bytes, budget allows {allowed}"
    );
    assert!(
        sent >= 900_000,
        "sent only {sent} bytes of a 1,000,000-byte budget"
    );
}

#[test]
fn a_viewer_that_uploads_nothing_announces_nothing_and_refuses_requests() {
    let mut config = common::viewer_config();
    config.upload_limit = Some(BytesPerSec(0));
    let mut viewer = Swarm::new(config);
    viewer.handle_input(Millis(0), Input::PeerConnected(PeerId(5)));
    let mut told = Vec::new();
    while let Some(output) = viewer.poll_output() {
        told.push(output);
    }
    assert!(
        told.iter().any(|o| matches!(
            o,
            Output::Send(_, PeerMessage::BufferMap { upload_kbps: 0, entries, .. }) if entries.is_empty()
        )),
        "{told:?}"
    );
    let request = PeerMessage::Request {
        req: protocol::RequestId(1),
        seq: ChunkSeq(0),
        first: 0,
        count: 2,
        deadline_ms: 1000,
    };
    viewer.handle_input(Millis(1), Input::Message(PeerId(5), request));
    let absent = std::iter::from_fn(|| viewer.poll_output())
        .any(|o| matches!(o, Output::Send(_, PeerMessage::Absent { .. })));
    assert!(absent, "a request to a peer that serves nothing is refused");
}

/// Blocks of chunk `seq` the source announced as pushed, to any viewer.
fn pushed_blocks(source: &mut Swarm, seq: u64) -> usize {
    let mut blocks = 0;
    while let Some(output) = source.poll_output() {
        if let Output::Send(
            _,
            PeerMessage::Have {
                seq: have, pushed, ..
            },
        ) = output
        {
            if pushed && have == ChunkSeq(seq) {
                blocks += 1;
            }
        }
    }
    blocks
}

/// Pushes go out before any request, so a source that pushes more copies than its budget
/// carries delays the whole stream, a little more with every chunk. With a budget of 1.5×
/// the stream it pushes one copy of each block; with 4× it pushes two; and never two
/// copies to the same viewer.
#[test]
fn a_source_pushes_only_the_copies_its_budget_carries() {
    const CHUNK: usize = 125_000; // 1 Mbit/s at one chunk a second
    for (budget_kbps, viewers, copies) in [
        (1_500, 4, 1),
        (4_000, 4, 2),
        (u64::MAX, 4, 2),
        (u64::MAX, 1, 1),
    ] {
        let mut config = common::source_config();
        if budget_kbps != u64::MAX {
            config.upload_limit = Some(BytesPerSec::from_kbps(budget_kbps));
        }
        let blocks = CHUNK.div_ceil(PIECE_BYTES).div_ceil(config.block_pieces);
        let mut source = Swarm::new(config);
        for viewer in 1..=viewers {
            source.handle_input(Millis(0), Input::PeerConnected(PeerId(viewer)));
        }
        let mut last = 0;
        for seq in 0..10 {
            source.handle_input(Millis(1000 * seq), Input::ChunkProduced(chunk(seq, CHUNK)));
            last = pushed_blocks(&mut source, seq);
        }
        assert_eq!(
            last,
            blocks * copies,
            "budget {budget_kbps} kbit/s, {viewers} viewers: {last} pushed blocks for {blocks} blocks"
        );
    }
}
