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
    let burst = budget.bytes_in(config.upload_burst_ms) as usize;
    let mut source = source_with_viewer(config);
    let mut sent = 0;
    // Every 10 ms, as often as the paced budget lets a piece go.
    for tick in 0..1_000u64 {
        let now = Millis(tick * 10);
        if tick % 100 == 0 {
            source.handle_input(now, Input::ChunkProduced(chunk(tick / 100, 250_000)));
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
    // 10 s at 100,000 B/s less the headroom, plus the initial burst and one piece of debt.
    let allowed = spendable(1_000_000) + burst + PIECE_BYTES;
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

/// Bytes this message takes of an upload budget: pieces their encoded size (their packets'
/// framing is what the budget leaves below the link's rate), anything else its size plus
/// a packet's framing, as it travels alone.
fn budget_bytes(message: &PeerMessage) -> usize {
    match message {
        PeerMessage::Piece { .. } => message.encoded_len(),
        _ => message.encoded_len() + swarm::CONTROL_PACKET_FRAMING,
    }
}

/// The upload budget of the busy source below.
const BUSY_BUDGET: BytesPerSec = BytesPerSec(100_000);

/// What a busy source sends in 10 s: a 250 KB chunk a second pushed to 16 viewers that
/// drain at once, on a budget of 100,000 B/s. With `told`, every viewer also sends it a
/// `Have` every 100 ms. Returns the budget bytes of its pieces and of its control
/// messages, and how many messages it received.
fn busy_source(told: bool) -> (usize, usize, usize) {
    let mut config = common::source_config();
    config.upload_limit = Some(BUSY_BUDGET);
    let viewers: Vec<PeerId> = (1..=16).map(PeerId).collect();
    let mut source = Swarm::new(config);
    let (mut pieces, mut control, mut received) = (0, 0, 0);
    for tick in 0..1_000u64 {
        let now = Millis(tick * 10);
        if tick == 0 {
            for viewer in &viewers {
                source.handle_input(now, Input::PeerConnected(*viewer));
            }
        }
        let seq = tick / 100;
        if tick % 100 == 0 {
            source.handle_input(now, Input::ChunkProduced(chunk(seq, 250_000)));
        }
        for viewer in &viewers {
            source.handle_input(
                now,
                Input::Buffered {
                    peer: *viewer,
                    bytes: 0,
                },
            );
            if told && tick % 10 == 5 {
                let have = PeerMessage::Have {
                    seq: ChunkSeq(seq),
                    keyframe: true,
                    total: 250_000,
                    first: 0,
                    count: 1,
                    pushed: false,
                };
                source.handle_input(now, Input::Message(*viewer, have));
                received += 1;
            }
        }
        source.handle_timeout(now);
        while let Some(output) = source.poll_output() {
            if let Output::Send(_, message) = output {
                match message {
                    PeerMessage::Piece { .. } => pieces += budget_bytes(&message),
                    _ => control += budget_bytes(&message),
                }
            }
        }
    }
    (pieces, control, received)
}

/// 10 s of the busy source's budget less its headroom, plus the initial burst and one
/// message of debt.
fn busy_allowance() -> usize {
    let rate = spendable(BUSY_BUDGET.0 as usize);
    let burst = rate * common::source_config().upload_burst_ms as usize / 1000;
    10 * rate + burst + PIECE_BYTES
}

/// What the token bucket spends of `bytes` of budget.
fn spendable(bytes: usize) -> usize {
    bytes - bytes * swarm::UPLOAD_HEADROOM_PERCENT as usize / 100
}

/// A source announcing to many viewers sends a manifest and `Have`s to each for every
/// chunk. Those count against the budget too: left out, they overran the uplink the
/// budget is set to fit, and pieces queued behind them.
#[test]
fn control_messages_count_against_the_upload_budget() {
    let (pieces, control, _) = busy_source(false);
    assert!(
        control > 30_000,
        "the scenario must send real control traffic: {control} bytes"
    );
    let allowed = busy_allowance();
    assert!(
        pieces + control <= allowed,
        "sent {pieces} bytes of pieces and {control} of control messages, budget allows {allowed}"
    );
    assert!(
        pieces + control >= 900_000,
        "sent only {} bytes of a 1,000,000-byte budget",
        pieces + control
    );
}

/// Every second packet a peer receives costs it a SACK on its own uplink. A source told
/// `Have`s by its viewers (one packet each) sends fewer bytes of its own by what the
/// SACKs take: counted only as what it sends, the budget overran the link it is set to
/// fit by the acknowledgements (12% of the stream's rate on a viewer's uplink).
#[test]
fn acknowledgements_of_what_a_peer_receives_count_against_its_upload_budget() {
    let (pieces, control, received) = busy_source(true);
    let sent = pieces + control;
    // One packet each, a SACK for every second.
    let acks = received / 2 * swarm::SACK_BYTES;
    assert!(
        acks > 50_000,
        "the scenario must receive enough to matter: {acks} bytes of SACKs"
    );
    let allowed = busy_allowance();
    assert!(
        sent + acks <= allowed,
        "sent {sent} bytes and {acks} of SACKs, budget allows {allowed}"
    );
    assert!(
        sent + acks >= 900_000,
        "sent only {sent} bytes and {acks} of SACKs"
    );
}

/// SACKs a router would drop are not charged: a neighbour flooding small messages puts
/// the budget at most `ACK_DEBT_LIMIT_MS` in debt, and the pieces go on.
#[test]
fn a_flood_of_small_messages_does_not_silence_uploads() {
    let mut config = common::source_config();
    config.upload_limit = Some(BUSY_BUDGET);
    let mut source = Swarm::new(config);
    source.handle_input(Millis(0), Input::PeerConnected(VIEWER));
    source.handle_input(Millis(0), Input::PeerConnected(PeerId(2)));
    source.handle_input(Millis(0), Input::ChunkProduced(chunk(0, 250_000)));
    pieces_out(&mut source);
    // 20,000 one-packet messages: 930 KB of SACKs, 9.3 s of this budget.
    for _ in 0..20_000 {
        let have = PeerMessage::Have {
            seq: ChunkSeq(0),
            keyframe: true,
            total: 250_000,
            first: 0,
            count: 1,
            pushed: false,
        };
        source.handle_input(Millis(1), Input::Message(PeerId(2), have));
    }
    let mut sent = 0;
    for ms in (10..=1_000).step_by(10) {
        for peer in [VIEWER, PeerId(2)] {
            source.handle_input(Millis(ms), Input::Buffered { peer, bytes: 0 });
        }
        source.handle_timeout(Millis(ms));
        while let Some(output) = source.poll_output() {
            if let Output::Send(_, PeerMessage::Piece { data, .. }) = output {
                sent += data.len();
            }
        }
    }
    // 0.8 s of the budget once the 200 ms of debt is repaid.
    assert!(
        sent >= 60_000,
        "a second after the flood the source sent only {sent} bytes of pieces"
    );
}

/// A source holding chunks 5 and 9, whose budget is spent for now, with requests for one
/// piece of each queued (5 first, from `OLDER`; then 9, from `NEWER`). Which chunk's piece
/// goes out once the budget allows one?
fn first_served(deadline_of_5: u16) -> ChunkSeq {
    const OLDER: PeerId = PeerId(1);
    const NEWER: PeerId = PeerId(2);
    let mut config = common::source_config();
    config.upload_limit = Some(BytesPerSec(100_000));
    // One piece at a time: a bucket of one byte, and each link stops after a piece.
    config.upload_burst_ms = 0;
    config.link_high_water = 1;
    let mut source = Swarm::new(config);
    source.handle_input(Millis(0), Input::ChunkProduced(chunk(5, 100_000)));
    source.handle_input(Millis(0), Input::ChunkProduced(chunk(9, 100_000)));
    source.handle_input(Millis(0), Input::PeerConnected(OLDER));
    source.handle_input(Millis(0), Input::PeerConnected(NEWER));
    for (peer, seq, deadline_ms) in [(OLDER, 5, deadline_of_5), (NEWER, 9, 5_000)] {
        let request = PeerMessage::Request {
            req: protocol::RequestId(1),
            seq: ChunkSeq(seq),
            first: 0,
            count: 1,
            deadline_ms,
        };
        source.handle_input(Millis(0), Input::Message(peer, request));
    }
    let early = std::iter::from_fn(|| source.poll_output())
        .filter(|o| matches!(o, Output::Send(_, PeerMessage::Piece { .. })))
        .count();
    assert_eq!(
        early, 0,
        "the announcements to both viewers spent the budget"
    );
    // Enough time to repay the debt; the bucket then holds one byte: one piece (after
    // the announcements due at 400 ms, charged to the budget too, are repaid).
    source.handle_timeout(Millis(1_000));
    let mut outputs: Vec<Output> = std::iter::from_fn(|| source.poll_output()).collect();
    source.handle_timeout(Millis(1_010));
    outputs.extend(std::iter::from_fn(|| source.poll_output()));
    let pieces: Vec<ChunkSeq> = outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(_, PeerMessage::Piece { seq, .. }) => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(pieces.len(), 1, "one piece fits the budget: {pieces:?}");
    pieces[0]
}

/// Requests not due soon are spreading the stream: the newest chunk, the rarest in the
/// swarm, goes first, whatever the order the requests came in. A request due soon still
/// goes before them.
#[test]
fn spare_upload_serves_the_newest_chunk_first_and_urgent_requests_before_it() {
    assert_eq!(
        first_served(5_000),
        ChunkSeq(9),
        "both spreading: newest first"
    );
    assert_eq!(
        first_served(1_500),
        ChunkSeq(5),
        "chunk 5 due soon: it goes first"
    );
}
