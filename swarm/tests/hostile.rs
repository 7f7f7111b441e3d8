//! Hostile neighbours: garbage, request floods and lying announcements get the sender
//! dropped, counted by cause and banned, while honest neighbours keep being served.

mod common;

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId};
use swarm::{Chunk, Input, Millis, Output, Swarm};

const HONEST: PeerId = PeerId(1);
const HOSTILE: PeerId = PeerId(2);

fn drain(swarm: &mut Swarm) -> Vec<Output> {
    std::iter::from_fn(|| swarm.poll_output()).collect()
}

fn disconnected(outputs: &[Output], who: PeerId) -> Option<String> {
    outputs.iter().find_map(|o| match o {
        Output::Disconnect { peer, reason } if *peer == who => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn garbage_gets_the_sender_dropped_and_banned_for_good() {
    let mut viewer = Swarm::new(common::viewer_config());
    viewer.handle_input(Millis(0), Input::PeerConnected(HOSTILE));
    drain(&mut viewer);
    let reason = "unknown peer message tag 0x7f".to_owned();
    viewer.handle_input(
        Millis(10),
        Input::Malformed {
            peer: HOSTILE,
            reason,
        },
    );
    assert!(disconnected(&drain(&mut viewer), HOSTILE).is_some());
    assert!(viewer.is_banned(HOSTILE));
    assert_eq!(viewer.stats().drops.malformed, 1);
    // It connects again (a new link): dropped at once, nothing sent to it.
    viewer.handle_input(Millis(20), Input::PeerConnected(HOSTILE));
    let outputs = drain(&mut viewer);
    assert!(disconnected(&outputs, HOSTILE).unwrap().contains("banned"));
    assert!(!outputs.iter().any(|o| matches!(o, Output::Send(..))));
    assert_eq!(viewer.peer_count(), 0);
}

#[test]
fn a_request_flood_is_dropped_and_honest_requests_still_served() {
    let mut source = Swarm::new(common::source_config());
    for peer in [HONEST, HOSTILE] {
        source.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    let chunk = Chunk {
        seq: ChunkSeq(0),
        keyframe: true,
        data: vec![1; 100_000].into(),
    };
    source.handle_input(Millis(1), Input::ChunkProduced(chunk));
    drain(&mut source);
    let request = |req: u32| PeerMessage::Request {
        req: RequestId(req),
        seq: ChunkSeq(0),
        first: 0,
        count: 1,
        deadline_ms: 1000,
    };
    let mut dropped_after = None;
    for req in 0..200 {
        source.handle_input(Millis(2), Input::Message(HOSTILE, request(req)));
        if disconnected(&drain(&mut source), HOSTILE).is_some() {
            dropped_after = Some(req + 1);
            break;
        }
    }
    let dropped_after = dropped_after.expect("the flooder was dropped");
    assert!(
        (64..=100).contains(&dropped_after),
        "dropped after {dropped_after} requests"
    );
    assert_eq!(source.stats().drops.flooding, 1);
    assert!(source.is_banned(HOSTILE));
    // The honest viewer, asking once, is served.
    source.handle_input(
        Millis(3),
        Input::Buffered {
            peer: HONEST,
            bytes: 0,
        },
    );
    source.handle_input(Millis(3), Input::Message(HONEST, request(1)));
    source.handle_timeout(Millis(4));
    let served = drain(&mut source).iter().any(|o| {
        matches!(
            o,
            Output::Send(
                HONEST,
                PeerMessage::Piece {
                    req: RequestId(1),
                    ..
                }
            )
        )
    });
    assert!(served, "the honest viewer's request was served");
}

#[test]
fn announcing_chunks_far_past_the_live_edge_is_a_lie() {
    let source_peer = PeerId(9);
    let mut viewer = Swarm::new(common::viewer_config());
    viewer.handle_input(Millis(0), Input::Broadcaster(Some(source_peer)));
    for peer in [source_peer, HOSTILE] {
        viewer.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    let have = |seq: u64| PeerMessage::Have {
        seq: ChunkSeq(seq),
        keyframe: true,
        total: 1000,
        first: 0,
        count: 1,
        pushed: false,
    };
    // The live edge, as the source's buffer map tells it.
    let map = PeerMessage::BufferMap {
        is_source: true,
        upload_kbps: u32::MAX,
        edge_age_ms: 100,
        entries: vec![protocol::BufferMapEntry {
            seq: ChunkSeq(40),
            keyframe: true,
            total: 1000,
        }],
    };
    let vouch = |seq| PeerMessage::Manifest(common::manifest(seq, 1000));
    viewer.handle_input(Millis(1), Input::Message(source_peer, vouch(40)));
    viewer.handle_input(Millis(1), Input::Message(source_peer, map));
    assert!(viewer.stats().drops == Default::default());
    // Within a window ahead is plausible (a neighbour nearer the source).
    viewer.handle_input(Millis(2), Input::Message(HOSTILE, have(45)));
    assert!(disconnected(&drain(&mut viewer), HOSTILE).is_none());
    let reason = {
        viewer.handle_input(Millis(3), Input::Message(HOSTILE, have(1_000_000)));
        disconnected(&drain(&mut viewer), HOSTILE).expect("the liar was dropped")
    };
    assert!(reason.contains("past the newest known"), "{reason}");
    assert_eq!(viewer.stats().drops.lying, 1);
    assert!(viewer.is_banned(HOSTILE));
    // The source's announcements are still taken.
    viewer.handle_input(Millis(4), Input::Message(source_peer, vouch(41)));
    viewer.handle_input(Millis(4), Input::Message(source_peer, have(41)));
    assert!(disconnected(&drain(&mut viewer), source_peer).is_none());
}

#[test]
fn a_misaligned_piece_is_a_protocol_violation() {
    let mut viewer = Swarm::new(common::viewer_config());
    viewer.handle_input(Millis(0), Input::PeerConnected(HOSTILE));
    drain(&mut viewer);
    let piece = PeerMessage::Piece {
        req: RequestId(0),
        seq: ChunkSeq(0),
        offset: 7,
        total: 50_000,
        data: vec![0; 100].into(),
    };
    viewer.handle_input(Millis(1), Input::Message(HOSTILE, piece));
    let reason = disconnected(&drain(&mut viewer), HOSTILE).expect("dropped");
    assert!(reason.contains("not piece-aligned"), "{reason}");
    assert_eq!(viewer.stats().drops.violation, 1);
    assert!(viewer.is_banned(HOSTILE));
}

fn other_signer() -> protocol::ChannelSigner {
    protocol::ChannelSigner::from_seed(&[43; 32])
}

#[test]
fn a_manifest_not_signed_by_the_channel_key_gets_the_sender_banned() {
    let mut viewer = Swarm::new(common::viewer_config());
    viewer.handle_input(Millis(0), Input::PeerConnected(HOSTILE));
    drain(&mut viewer);
    let data = common::chunk_bytes(3, 20_000);
    let forged = protocol::ChunkManifest::sign(
        &other_signer(),
        &protocol::Broadcast::default(),
        ChunkSeq(3),
        true,
        data.chunks(protocol::PIECE_BYTES),
    )
    .unwrap();
    viewer.handle_input(
        Millis(1),
        Input::Message(HOSTILE, PeerMessage::Manifest(forged)),
    );
    let reason = disconnected(&drain(&mut viewer), HOSTILE).expect("dropped");
    assert!(reason.contains("not signed by the channel key"), "{reason}");
    assert_eq!(viewer.stats().drops.polluted, 1);
    assert!(viewer.is_banned(HOSTILE));
}

/// A peer that kept manifests of an earlier broadcast (chunk numbers restart at 0 with
/// every broadcast) replays one: genuine key, wrong broadcast. Were it kept, the honest
/// broadcaster's pieces of this chunk would "not match" it and the victim would ban the
/// broadcaster; instead it never verifies, and the replayer is the one dropped.
#[test]
fn a_manifest_replayed_from_an_earlier_broadcast_is_refused() {
    let now = protocol::Broadcast {
        channel: "news".parse().unwrap(),
        session: protocol::SessionId(2),
    };
    let earlier = protocol::Broadcast {
        session: protocol::SessionId(1),
        ..now.clone()
    };
    let mut config = common::viewer_config();
    config.broadcast = now.clone();
    let mut viewer = Swarm::new(config);
    viewer.handle_input(Millis(0), Input::PeerConnected(HOSTILE));
    viewer.handle_input(Millis(0), Input::PeerConnected(HONEST));
    drain(&mut viewer);
    let sign = |broadcast: &protocol::Broadcast, seq: u64| {
        let data = common::chunk_bytes(seq, 20_000);
        let pieces = data.chunks(protocol::PIECE_BYTES);
        protocol::ChunkManifest::sign(&common::signer(), broadcast, ChunkSeq(3), true, pieces)
            .unwrap()
    };
    let replayed = PeerMessage::Manifest(sign(&earlier, 99));
    viewer.handle_input(Millis(1), Input::Message(HOSTILE, replayed));
    let reason = disconnected(&drain(&mut viewer), HOSTILE).expect("the replayer is dropped");
    assert!(reason.contains("s0000000000000002"), "{reason}");
    assert_eq!(
        viewer.manifests_held(),
        0,
        "the replayed manifest was not kept"
    );
    let current = PeerMessage::Manifest(sign(&now, 3));
    viewer.handle_input(Millis(2), Input::Message(HONEST, current));
    assert!(disconnected(&drain(&mut viewer), HONEST).is_none());
    assert_eq!(viewer.manifests_held(), 1);
}

#[test]
fn an_init_segment_not_signed_by_the_channel_key_is_never_played() {
    let mut viewer = Swarm::new(common::viewer_config());
    for peer in [HONEST, HOSTILE] {
        viewer.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    drain(&mut viewer);
    let (mime, data) = ("video/mp4".to_owned(), vec![1u8; 300]);
    let message = protocol::init_message(&protocol::Broadcast::default(), &mime, &data);
    let init = |signature| PeerMessage::Init {
        mime: mime.clone(),
        data: data.clone(),
        signature,
    };
    let forged = init(other_signer().sign(&message));
    viewer.handle_input(Millis(1), Input::Message(HOSTILE, forged));
    viewer.handle_timeout(Millis(2));
    let outputs = drain(&mut viewer);
    assert!(disconnected(&outputs, HOSTILE).is_some());
    assert!(!outputs.iter().any(|o| matches!(o, Output::Init { .. })));
    assert_eq!(viewer.stats().drops.polluted, 1);
    // The real one, from an honest neighbour, is taken.
    let genuine = init(common::signer().sign(&message));
    viewer.handle_input(Millis(3), Input::Message(HONEST, genuine));
    viewer.handle_timeout(Millis(4));
    let outputs = drain(&mut viewer);
    assert!(outputs.iter().any(|o| matches!(o, Output::Init { .. })));
    assert!(disconnected(&outputs, HONEST).is_none());
}

/// A viewer linked to `source` (the broadcaster, as the signal server names it) and
/// `other`, having had the source's buffer map.
fn viewer_beside(source: PeerId, other: PeerId) -> Swarm {
    let mut viewer = Swarm::new(common::viewer_config());
    for peer in [source, other] {
        viewer.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    viewer.handle_input(Millis(1), Input::Broadcaster(Some(source)));
    let map = PeerMessage::BufferMap {
        is_source: true,
        upload_kbps: u32::MAX,
        edge_age_ms: protocol::EDGE_AGE_UNKNOWN,
        entries: Vec::new(),
    };
    viewer.handle_input(Millis(1), Input::Message(source, map));
    drain(&mut viewer);
    viewer
}

fn pushed_piece(seq: u64, data: Vec<u8>) -> PeerMessage {
    PeerMessage::Piece {
        req: RequestId::PUSH,
        seq: ChunkSeq(seq),
        offset: 0,
        total: data.len() as u32,
        data: data.into(),
    }
}

#[test]
fn a_piece_before_its_manifest_waits_for_it_and_is_checked_then() {
    let mut viewer = viewer_beside(HONEST, HOSTILE);
    // Pieces travel on an unordered channel: the source's push overtook the manifest
    // sent before it. It is neither taken nor blamed on its sender yet.
    let bytes = common::chunk_bytes(0, 100);
    viewer.handle_input(Millis(2), Input::Message(HONEST, pushed_piece(0, bytes)));
    // A viewer that may not push to us, pushing a piece nobody vouched for, breaks the
    // protocol as before.
    viewer.handle_input(
        Millis(2),
        Input::Message(HOSTILE, pushed_piece(0, vec![7; 100])),
    );
    let outputs = drain(&mut viewer);
    assert!(disconnected(&outputs, HONEST).is_none());
    let reason = disconnected(&outputs, HOSTILE).expect("an unasked push is refused");
    assert!(reason.contains("nobody vouched for"), "{reason}");
    assert_eq!(viewer.stats().pieces_held_early, 1);
    assert_eq!(
        viewer.stats().bytes_from_source,
        0,
        "nothing unchecked is taken"
    );
    // The manifest comes: the held piece is checked and taken.
    viewer.handle_input(
        Millis(3),
        Input::Message(HONEST, PeerMessage::Manifest(common::manifest(0, 100))),
    );
    assert_eq!(viewer.stats().bytes_from_source, 100);
    assert!(disconnected(&drain(&mut viewer), HONEST).is_none());

    // A forged piece held the same way is found out when its manifest comes.
    let mut viewer = viewer_beside(HOSTILE, HONEST);
    viewer.handle_input(
        Millis(2),
        Input::Message(HOSTILE, pushed_piece(0, vec![7; 100])),
    );
    assert!(
        disconnected(&drain(&mut viewer), HOSTILE).is_none(),
        "not yet"
    );
    viewer.handle_input(
        Millis(3),
        Input::Message(HOSTILE, PeerMessage::Manifest(common::manifest(0, 100))),
    );
    let reason = disconnected(&drain(&mut viewer), HOSTILE).expect("the forger is dropped");
    assert!(
        reason.contains("does not match its signed hash"),
        "{reason}"
    );
    assert_eq!(viewer.stats().bytes_from_source, 0);
}

#[test]
fn pieces_of_chunks_nobody_vouches_for_are_bounded_and_never_taken() {
    // Even the broadcaster's pushes, held for manifests that never come.
    let mut viewer = viewer_beside(HOSTILE, HONEST);
    for seq in 0..100u64 {
        let piece = PeerMessage::Piece {
            req: RequestId::PUSH,
            seq: ChunkSeq(seq),
            offset: 0,
            total: 100,
            data: vec![0; 100].into(),
        };
        viewer.handle_input(Millis(2 + seq), Input::Message(HOSTILE, piece));
    }
    drain(&mut viewer);
    let stats = viewer.stats();
    assert_eq!(stats.pieces_held_early, 100);
    assert_eq!(
        stats.bytes_given_up_early,
        (100 - swarm::EARLY_PIECES_PER_PEER as u64) * 100,
        "one neighbour holds at most its own places"
    );
    assert_eq!(stats.bytes_from_source + stats.bytes_from_peers, 0);
}

#[test]
fn announcements_contradicting_a_manifest_are_violations() {
    let mut viewer = Swarm::new(common::viewer_config());
    for peer in [HONEST, HOSTILE] {
        viewer.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    drain(&mut viewer);
    // Another announces a vouched-for chunk with the wrong size.
    let manifest = common::manifest(5, 30_000);
    viewer.handle_input(
        Millis(3),
        Input::Message(HONEST, PeerMessage::Manifest(manifest)),
    );
    let have = PeerMessage::Have {
        seq: ChunkSeq(5),
        keyframe: true,
        total: 29_999,
        first: 0,
        count: 1,
        pushed: false,
    };
    viewer.handle_input(Millis(4), Input::Message(HONEST, have));
    let reason = disconnected(&drain(&mut viewer), HONEST).expect("dropped");
    assert!(reason.contains("signed manifest says 30000"), "{reason}");
    assert_eq!(viewer.stats().drops.violation, 1);
}

/// Found by the simulator: a flood of requests for pieces this peer does not hold never
/// filled its queue (each is refused at once), so only the rate of refusals tells it.
#[test]
fn a_flood_of_requests_for_pieces_not_held_is_dropped_but_a_steady_asker_is_not() {
    let mut source = Swarm::new(common::source_config());
    for peer in [HONEST, HOSTILE] {
        source.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    drain(&mut source);
    let request = |req: u32| PeerMessage::Request {
        req: RequestId(req),
        seq: ChunkSeq(7),
        first: 0,
        count: 1,
        deadline_ms: 1000,
    };
    // Ten a second for ten seconds, each refused: more than an honest peer asks.
    for req in 0..100u32 {
        let at = Millis(10 + u64::from(req) * 100);
        source.handle_input(at, Input::Message(HONEST, request(req)));
        assert!(disconnected(&drain(&mut source), HONEST).is_none());
    }
    let mut dropped_after = None;
    for req in 0..100u32 {
        let at = Millis(20_000 + u64::from(req) * 5);
        source.handle_input(at, Input::Message(HOSTILE, request(req)));
        if disconnected(&drain(&mut source), HOSTILE).is_some() {
            dropped_after = Some(req + 1);
            break;
        }
    }
    assert_eq!(
        dropped_after,
        Some(64),
        "dropped at the 64th refusal within a second"
    );
    assert_eq!(source.stats().drops.flooding, 1);
}

#[test]
fn replayed_genuine_manifests_are_bounded_by_the_window() {
    let mut viewer = Swarm::new(common::viewer_config());
    viewer.handle_input(Millis(0), Input::PeerConnected(HOSTILE));
    drain(&mut viewer);
    // Every manifest the channel ever signed, replayed to a newcomer with no live edge yet.
    for seq in 0..200 {
        let manifest = PeerMessage::Manifest(common::manifest(seq, 1000));
        viewer.handle_input(Millis(1), Input::Message(HOSTILE, manifest));
    }
    assert!(
        disconnected(&drain(&mut viewer), HOSTILE).is_none(),
        "genuine, so not hostile"
    );
    let window = common::viewer_config().window as usize;
    assert!(
        viewer.manifests_held() <= 3 * window,
        "{} manifests held",
        viewer.manifests_held()
    );
}

#[test]
fn a_viewer_claiming_to_be_the_source_is_a_liar() {
    let broadcaster = PeerId(9);
    let mut viewer = Swarm::new(common::viewer_config());
    viewer.handle_input(Millis(0), Input::Broadcaster(Some(broadcaster)));
    for peer in [broadcaster, HOSTILE] {
        viewer.handle_input(Millis(0), Input::PeerConnected(peer));
    }
    drain(&mut viewer);
    let map = PeerMessage::BufferMap {
        is_source: true,
        upload_kbps: u32::MAX,
        edge_age_ms: protocol::EDGE_AGE_UNKNOWN,
        entries: Vec::new(),
    };
    viewer.handle_input(Millis(1), Input::Message(broadcaster, map.clone()));
    viewer.handle_input(Millis(1), Input::Message(HOSTILE, map));
    let outputs = drain(&mut viewer);
    assert!(disconnected(&outputs, broadcaster).is_none());
    let reason = disconnected(&outputs, HOSTILE).expect("the impostor was dropped");
    assert!(reason.contains("signal server names p9"), "{reason}");
    assert_eq!(viewer.stats().drops.lying, 1);
    assert!(viewer.is_banned(HOSTILE));
    let source = viewer.neighbours().find(|n| n.peer == broadcaster).unwrap();
    assert!(source.is_source);
}
