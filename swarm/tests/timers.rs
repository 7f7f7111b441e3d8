//! The swarm's own timers: `poll_timeout` names each deadline exactly, so a driver that
//! sleeps until then runs it on time, and nothing waits for a periodic tick.

mod common;

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId};
use swarm::{BytesPerSec, Chunk, Input, Millis, Output, Swarm};

const A: PeerId = PeerId(1);
const B: PeerId = PeerId(2);

fn drain(swarm: &mut Swarm) -> Vec<Output> {
    std::iter::from_fn(|| swarm.poll_output()).collect()
}

fn piece_bytes(outputs: &[Output]) -> usize {
    outputs
        .iter()
        .map(|o| match o {
            Output::Send(_, PeerMessage::Piece { data, .. }) => data.len(),
            _ => 0,
        })
        .sum()
}

/// Requests in `outputs`: to whom, and for which block.
fn requests(outputs: &[Output]) -> Vec<(PeerId, RequestId, u16)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(to, PeerMessage::Request { req, first, .. }) => Some((*to, *req, *first)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_upload_budget_wakes_the_swarm_when_it_allows_the_next_piece() {
    let mut config = common::source_config();
    let budget = BytesPerSec(100_000);
    config.upload_limit = Some(budget);
    // The pushes stay useful for 10 s, and nobody else is told of the chunk meanwhile:
    // the budget is the only thing the source waits for.
    config.target_buffer_ms = 10_000;
    config.source_announce_delay_ms = 60_000;
    let mut source = Swarm::new(config);
    source.handle_input(Millis(0), Input::PeerConnected(A));
    drain(&mut source);
    let chunk = Chunk {
        seq: ChunkSeq(0),
        keyframe: true,
        data: vec![7; 900_000].into(),
    };
    source.handle_input(Millis(0), Input::ChunkProduced(chunk));
    // A full bucket after an idle start: what it saved up (20 ms of budget, less the
    // announcements charged to it) and a piece of debt at most go at once, not a burst
    // an uplink's queue would drop; and the first piece is not kept waiting.
    let at_once = piece_bytes(&drain(&mut source));
    assert!(
        at_once <= protocol::PIECE_BYTES,
        "{at_once} bytes at once: pieces are paced"
    );
    let first_wake = source.poll_timeout().expect("a wake-up for the pieces");
    assert!(
        at_once > 0 || first_wake.0 <= 50,
        "the first piece waits until {first_wake:?}"
    );
    // The link drained (as its driver reports): only the budget holds the rest back.
    source.handle_input(Millis(0), Input::Buffered { peer: A, bytes: 0 });
    drain(&mut source);
    // A driver that only sleeps until `poll_timeout` (the link drains at once).
    let mut sent = 0;
    let mut wakes = 0;
    while let Some(at) = source.poll_timeout().filter(|at| at.0 <= 5_000) {
        assert!(wakes < 1_000, "spinning on {at:?}");
        let early = Millis(at.0 - 1);
        source.handle_input(early, Input::Buffered { peer: A, bytes: 0 });
        assert_eq!(
            piece_bytes(&drain(&mut source)),
            0,
            "nothing is allowed a millisecond before the named time"
        );
        source.handle_timeout(at);
        sent += piece_bytes(&drain(&mut source));
        wakes += 1;
    }
    assert!(wakes > 0, "the source never woke up");
    // Five seconds of budget, give or take a piece of debt.
    let expected = budget.bytes_in(5_000) as usize;
    assert!(
        sent + protocol::PIECE_BYTES >= expected && sent <= expected + protocol::PIECE_BYTES,
        "sent {sent} bytes after the start in {wakes} wake-ups; the budget allows {expected}"
    );
}

/// A viewer with two neighbours holding a one-piece chunk, that just asked one of them
/// for it at 10 ms: the viewer, whom it asked and under which id, the other.
fn viewer_asking() -> (Swarm, (PeerId, RequestId), PeerId) {
    let (viewer, asked) = viewer_asking_of(&[A, B]);
    let other = if asked.0 == A { B } else { A };
    (viewer, asked, other)
}

/// A viewer linked to A and B, of which `holders` hold a one-piece chunk, that just
/// asked one of them for it at 10 ms: the viewer, and whom it asked under which id.
fn viewer_asking_of(holders: &[PeerId]) -> (Swarm, (PeerId, RequestId)) {
    let config = common::viewer_config();
    let mut viewer = Swarm::new(config);
    for peer in [A, B] {
        viewer.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    let (mime, data) = ("video/mp4".to_owned(), vec![1u8; 100]);
    let message = protocol::init_message(&protocol::Broadcast::default(), &mime, &data);
    let signature = common::signer().sign(&message);
    let init = PeerMessage::Init {
        mime,
        data,
        signature,
    };
    viewer.handle_input(Millis(0), Input::Message(A, init));
    let have = PeerMessage::Have {
        seq: ChunkSeq(0),
        keyframe: true,
        total: 1000,
        first: 0,
        count: 1,
        pushed: false,
    };
    for &peer in holders {
        viewer.handle_input(Millis(10), Input::Message(peer, have.clone()));
    }
    let asked = requests(&drain(&mut viewer));
    let [(first, req, 0)] = asked[..] else {
        panic!("one request for the one-piece chunk: {asked:?}")
    };
    (viewer, (first, req))
}

#[test]
fn an_unanswered_request_with_nowhere_else_to_go_is_asked_again_exactly_at_its_time_out() {
    let timeout = common::viewer_config().request_timeout_ms;
    // Only A holds the chunk: an overdue pull has nowhere to move, so the request
    // time-out is what asks again. It is a named deadline, met to the millisecond; other
    // wake-ups before it ask nobody.
    let (mut viewer, (first, _)) = viewer_asking_of(&[A]);
    assert_eq!(first, A);
    let due = Millis(10 + timeout + 1);
    let mut named = Vec::new();
    while let Some(at) = viewer.poll_timeout().filter(|at| *at < due) {
        named.push(at);
        assert!(named.len() < 100, "spinning on {at:?}");
        viewer.handle_timeout(at);
        assert!(requests(&drain(&mut viewer)).is_empty(), "asked at {at:?}");
    }
    assert_eq!(viewer.poll_timeout(), Some(due), "after {named:?}");
    viewer.handle_timeout(due);
    let outputs = drain(&mut viewer);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Send(to, PeerMessage::Cancel { .. }) if *to == A)),
        "the silent request is cancelled at its time-out: {outputs:?}"
    );
    let again = requests(&outputs);
    assert_eq!(
        again.len(),
        1,
        "and asked again, of the only holder: {outputs:?}"
    );
    assert_eq!(again[0].0, A);
    assert_eq!(viewer.stats().pulls_moved, 0);
}

#[test]
fn an_unanswered_request_is_asked_elsewhere_at_a_named_deadline_before_its_time_out() {
    let timeout = common::viewer_config().request_timeout_ms;
    let (mut viewer, (first, _), other) = viewer_asking();
    // It never answers (a lost request waits a second for SCTP to send it again). The
    // chunk is urgent, the first to play, so the pull moves once overdue, at a deadline
    // the swarm names; the time-out is the latest it could.
    let due = Millis(10 + timeout + 1);
    let mut named = Vec::new();
    let outputs = loop {
        let at = viewer
            .poll_timeout()
            .expect("a deadline while a request is open");
        assert!(at <= due, "not asked again by the time-out: {named:?}");
        named.push(at);
        assert!(named.len() < 100, "spinning on {at:?}");
        viewer.handle_timeout(at);
        let outputs = drain(&mut viewer);
        if !requests(&outputs).is_empty() {
            break outputs;
        }
    };
    let again = requests(&outputs);
    assert_eq!(again.len(), 1, "asked again: {outputs:?}");
    assert_eq!(again[0].0, other, "of the other holder");
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Send(to, PeerMessage::Cancel { .. }) if *to == first)),
        "the silent one is told to stop: {outputs:?}"
    );
    assert_eq!(
        viewer.stats().pulls_moved,
        1,
        "moved as overdue, after {named:?}"
    );
}

#[test]
fn a_deadline_whose_round_changes_nothing_is_not_named_again() {
    let (mut viewer, (first, req), other) = viewer_asking();
    // Refused: the viewer asks the other at once and avoids the first for a while. When
    // that back-off ends there is nothing left to ask it of; the round that finds so must
    // not be named again, or a driver would spin on it.
    let absent = PeerMessage::Absent {
        req,
        seq: ChunkSeq(0),
    };
    viewer.handle_input(Millis(20), Input::Message(first, absent));
    let asked = requests(&drain(&mut viewer));
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, other);
    let mut last = Millis(20);
    let mut wakes = 0;
    while let Some(at) = viewer.poll_timeout().filter(|at| at.0 < 2_000) {
        assert!(at > last, "{at:?} named again after a round at {last:?}");
        viewer.handle_timeout(at);
        drain(&mut viewer);
        last = at;
        wakes += 1;
    }
    assert!(wakes >= 1, "the back-off's end was a deadline");
}
