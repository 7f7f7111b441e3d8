//! Repairs: a block no viewer held when it turned urgent is asked of the source, the last
//! resort; once that pull is overdue and a viewer holds the block, it moves there.

mod common;

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId, EDGE_AGE_UNKNOWN, PIECE_BYTES};
use swarm::{Input, Millis, Output, Swarm};

const SOURCE: PeerId = PeerId(0);
const NEIGHBOUR: PeerId = PeerId(1);
/// Four pieces: two blocks of two.
const TOTAL: usize = 4 * PIECE_BYTES;

/// A viewer linked to the source and a neighbour, both empty-handed so far; it has the
/// channel's init segment.
fn viewer_beside_source_and_neighbour() -> Swarm {
    let mut viewer = Swarm::new(common::viewer_config());
    viewer.handle_input(Millis(0), Input::Broadcaster(Some(SOURCE)));
    for (peer, is_source) in [(SOURCE, true), (NEIGHBOUR, false)] {
        viewer.handle_input(Millis(0), Input::PeerConnected(peer));
        let map = PeerMessage::BufferMap {
            is_source,
            upload_kbps: 10_000,
            edge_age_ms: EDGE_AGE_UNKNOWN,
            entries: Vec::new(),
        };
        viewer.handle_input(Millis(0), Input::Message(peer, map));
    }
    viewer.handle_input(Millis(0), Input::Message(SOURCE, common::init()));
    drain(&mut viewer);
    viewer
}

fn drain(swarm: &mut Swarm) -> Vec<Output> {
    std::iter::from_fn(|| swarm.poll_output()).collect()
}

/// Every block announced, as a peer holding the whole chunk does (or pushing it).
fn have_all(seq: u64) -> PeerMessage {
    announce(seq, false)
}

fn announce(seq: u64, pushed: bool) -> PeerMessage {
    PeerMessage::Have {
        seq: ChunkSeq(seq),
        keyframe: true,
        total: TOTAL as u32,
        first: 0,
        count: 4,
        pushed,
    }
}

/// (to, req, first piece, count) of each request sent.
fn requests(outputs: &[Output]) -> Vec<(PeerId, RequestId, u16, u16)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(
                to,
                PeerMessage::Request {
                    req, first, count, ..
                },
            ) => Some((*to, *req, *first, *count)),
            _ => None,
        })
        .collect()
}

fn cancels(outputs: &[Output], to: PeerId) -> Vec<RequestId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(peer, PeerMessage::Cancel { req }) if *peer == to => Some(*req),
            _ => None,
        })
        .collect()
}

#[test]
fn an_overdue_request_to_the_source_moves_to_a_viewer_holding_the_block() {
    let mut viewer = viewer_beside_source_and_neighbour();
    // Only the source holds the first chunk to play: it is asked for both blocks.
    let manifest = PeerMessage::Manifest(common::manifest(0, TOTAL));
    viewer.handle_input(Millis(10), Input::Message(SOURCE, manifest));
    viewer.handle_input(Millis(10), Input::Message(SOURCE, have_all(0)));
    let asked = requests(&drain(&mut viewer));
    assert_eq!(
        asked.iter().map(|r| (r.0, r.2, r.3)).collect::<Vec<_>>(),
        [(SOURCE, 0, 2), (SOURCE, 2, 2)],
        "the source is asked for what only it holds"
    );
    // The source serves the first piece, then nothing more (its upload is busy).
    let piece = PeerMessage::Piece {
        req: asked[0].1,
        seq: ChunkSeq(0),
        offset: 0,
        total: TOTAL as u32,
        data: common::chunk_bytes(0, TOTAL)[..PIECE_BYTES].to_vec().into(),
    };
    viewer.handle_input(Millis(40), Input::Message(SOURCE, piece));
    drain(&mut viewer);
    // A neighbour announces the chunk while the source is still on time: nothing moves
    // (the source is usually the faster of the two).
    viewer.handle_input(Millis(60), Input::Message(NEIGHBOUR, have_all(0)));
    let outputs = drain(&mut viewer);
    assert!(cancels(&outputs, SOURCE).is_empty(), "{outputs:?}");
    // Once overdue, at the timer it names, what the source still owes is asked of the
    // neighbour.
    let mut outputs = Vec::new();
    let mut moved_at = Vec::new();
    while let Some(at) = viewer.poll_timeout().filter(|at| at.0 <= 1_000) {
        viewer.handle_timeout(at);
        let round = drain(&mut viewer);
        if !cancels(&round, SOURCE).is_empty() {
            moved_at.push(at.0);
        }
        outputs.extend(round);
    }
    assert_eq!(
        cancels(&outputs, SOURCE),
        [asked[0].1, asked[1].1],
        "both overdue requests to the source are cancelled"
    );
    assert_eq!(
        requests(&outputs)
            .iter()
            .map(|r| (r.0, r.2, r.3))
            .collect::<Vec<_>>(),
        [(NEIGHBOUR, 1, 1), (NEIGHBOUR, 2, 2)],
        "the pieces still missing are asked of the neighbour"
    );
    // Assumed 150 ms round trip and half the source's 10 Mbit/s: the half-served block is
    // overdue first, a round trip after its second piece was expected.
    assert!(
        moved_at.len() == 2 && moved_at[0] > 60 && moved_at[0] < moved_at[1],
        "moved at {moved_at:?} ms"
    );
}

#[test]
fn a_push_from_the_source_is_not_moved() {
    let mut viewer = viewer_beside_source_and_neighbour();
    let manifest = PeerMessage::Manifest(common::manifest(0, TOTAL));
    viewer.handle_input(Millis(10), Input::Message(SOURCE, manifest));
    viewer.handle_input(Millis(10), Input::Message(SOURCE, announce(0, true)));
    assert!(
        requests(&drain(&mut viewer)).is_empty(),
        "a push needs no request"
    );
    viewer.handle_input(Millis(60), Input::Message(NEIGHBOUR, have_all(0)));
    let outputs = drain(&mut viewer);
    assert!(cancels(&outputs, SOURCE).is_empty());
    assert!(
        requests(&outputs).is_empty(),
        "the pushed blocks are on their way"
    );
}

/// A piece lost at the tail of what a link sends waits for SCTP's 1 s retransmission
/// time-out, and a loaded viewer falls behind: an overdue pull of an urgent chunk from a
/// viewer moves to another viewer holding the block, long before the request time-out.
#[test]
fn an_overdue_request_to_a_viewer_moves_to_another_once_urgent() {
    const OTHER: PeerId = PeerId(2);
    let mut viewer = viewer_beside_source_and_neighbour();
    viewer.handle_input(Millis(0), Input::PeerConnected(OTHER));
    let map = PeerMessage::BufferMap {
        is_source: false,
        upload_kbps: 10_000,
        edge_age_ms: EDGE_AGE_UNKNOWN,
        entries: Vec::new(),
    };
    viewer.handle_input(Millis(0), Input::Message(OTHER, map));
    drain(&mut viewer);
    // Two viewers hold the first chunk to play (urgent: playback cannot start without it).
    let manifest = PeerMessage::Manifest(common::manifest(0, TOTAL));
    viewer.handle_input(Millis(10), Input::Message(NEIGHBOUR, manifest));
    viewer.handle_input(Millis(10), Input::Message(NEIGHBOUR, have_all(0)));
    viewer.handle_input(Millis(10), Input::Message(OTHER, have_all(0)));
    let asked = requests(&drain(&mut viewer));
    assert!(!asked.is_empty(), "the chunk is asked for");
    let (slow, req) = (asked[0].0, asked[0].1);
    let other = if slow == NEIGHBOUR { OTHER } else { NEIGHBOUR };
    // The one asked sends the block's first piece, then nothing: its second piece was
    // lost at the tail and waits for a retransmission.
    let piece = PeerMessage::Piece {
        req,
        seq: ChunkSeq(0),
        offset: (usize::from(asked[0].2) * PIECE_BYTES) as u32,
        total: TOTAL as u32,
        data: common::chunk_bytes(0, TOTAL)[usize::from(asked[0].2) * PIECE_BYTES..][..PIECE_BYTES]
            .to_vec()
            .into(),
    };
    viewer.handle_input(Millis(40), Input::Message(slow, piece));
    drain(&mut viewer);
    let mut moved = None;
    while let Some(at) = viewer.poll_timeout().filter(|at| at.0 <= 2_000) {
        viewer.handle_timeout(at);
        let round = drain(&mut viewer);
        if cancels(&round, slow).contains(&req) {
            let again: Vec<_> = requests(&round)
                .into_iter()
                .filter(|r| r.0 == other)
                .collect();
            moved = Some((at.0, again));
            break;
        }
    }
    let (at, again) = moved.expect("the overdue pull moved");
    assert!(
        at < 1_000,
        "moved at {at} ms, before the 2.5 s request time-out"
    );
    assert!(
        again.iter().any(|r| r.2 == asked[0].2 + 1 && r.3 == 1),
        "the missing piece is asked of the other viewer: {again:?}"
    );
    assert_eq!(viewer.stats().pulls_moved, 1);
}

/// Pieces travel on an unordered channel, so the source's pushed pieces may come before
/// the `Have` that announces them. Blocks already here are not expected again: a push
/// download for a held block would time out and count against the source, three of them
/// at once would drop it.
#[test]
fn pushed_pieces_before_their_announcement_are_not_expected_again() {
    const SIX: usize = 6 * PIECE_BYTES;
    let mut viewer = viewer_beside_source_and_neighbour();
    let manifest = PeerMessage::Manifest(common::manifest(0, SIX));
    viewer.handle_input(Millis(10), Input::Message(SOURCE, manifest));
    let bytes = common::chunk_bytes(0, SIX);
    for (i, piece) in bytes.chunks(PIECE_BYTES).enumerate() {
        let piece = PeerMessage::Piece {
            req: RequestId::PUSH,
            seq: ChunkSeq(0),
            offset: (i * PIECE_BYTES) as u32,
            total: SIX as u32,
            data: piece.to_vec().into(),
        };
        viewer.handle_input(Millis(20), Input::Message(SOURCE, piece));
    }
    let announced = PeerMessage::Have {
        seq: ChunkSeq(0),
        keyframe: true,
        total: SIX as u32,
        first: 0,
        count: 6,
        pushed: true,
    };
    viewer.handle_input(Millis(30), Input::Message(SOURCE, announced));
    let mut outputs = drain(&mut viewer);
    while let Some(at) = viewer.poll_timeout().filter(|at| at.0 <= 5_000) {
        viewer.handle_timeout(at);
        outputs.extend(drain(&mut viewer));
    }
    let dropped = outputs
        .iter()
        .any(|o| matches!(o, Output::Disconnect { peer, .. } if *peer == SOURCE));
    assert!(
        !dropped,
        "the source is not dropped for what it delivered: {outputs:?}"
    );
    assert_eq!(viewer.stats().peers_dropped, 0);
}
