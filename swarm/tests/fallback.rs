//! A viewer and HTTP edges, on virtual time: with no neighbour it plays everything from
//! an edge, checked like peers' content; a forging edge's bytes are never played; with
//! neighbours that deliver, an edge is asked for nothing, and a chunk they do not deliver
//! in time is fetched.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use protocol::{
    BufferMapEntry, ChunkSeq, EdgeIndex, EdgeUrl, PeerId, PeerMessage, EDGE_VERSION, PIECE_BYTES,
};
use swarm::{Chunk, FetchId, FetchOutcome, Input, Millis, Output, Swarm};

const CHUNK_BYTES: usize = 40_000;
const SOURCE: PeerId = PeerId(0);

/// An edge holding genuine chunks `0..=newest` of the default test broadcast; it answers
/// 503 for the next one (as the real edge does after its wait).
struct FakeEdge {
    base: EdgeUrl,
    newest: u64,
    /// Flip a bit in every chunk served.
    forges: bool,
    /// Holds nothing yet (the channel is off the air): the index is 503.
    offline: bool,
    /// Ranges asked for: chunk, first and last byte.
    ranges: Vec<(u64, u64, u64)>,
    /// The index lies about the newest chunk (and lists it as a keyframe).
    lies_newest: Option<u64>,
    asked: Vec<String>,
}

impl FakeEdge {
    fn new(newest: u64) -> FakeEdge {
        FakeEdge {
            base: "http://edge.test".parse().expect("a valid URL"),
            newest,
            forges: false,
            offline: false,
            ranges: Vec::new(),
            lies_newest: None,
            asked: Vec::new(),
        }
    }

    /// Answers as the real edge does: a range with only those bytes.
    fn answer(&mut self, url: &str, range: Option<(u64, u64)>) -> FetchOutcome {
        self.asked.push(url.to_owned());
        let path = url
            .strip_prefix("http://edge.test/edge/v1/unnamed")
            .unwrap_or_else(|| panic!("asked for {url}"));
        let body = if path.is_empty() && self.offline {
            return not_yet();
        } else if path.is_empty() {
            let mut index = EdgeIndex {
                version: EDGE_VERSION,
                session: protocol::SessionId(0).to_string(),
                oldest: 0,
                newest: self.newest,
                newest_age_ms: 200,
                keyframes: (0..=self.newest).filter(|s| s % 2 == 0).collect(),
            };
            if let Some(newest) = self.lies_newest {
                index.newest = newest;
                index.keyframes.push(newest);
            }
            serde_json::to_vec(&index).expect("an index serialises")
        } else {
            let rest = path
                .strip_prefix("/s0000000000000000/")
                .unwrap_or_else(|| panic!("another session asked: {url}"));
            match rest.split_once('/') {
                _ if rest == "init" => common::init().encode(),
                Some((seq, "manifest")) => {
                    let seq: u64 = seq.parse().expect("a chunk number");
                    if seq > self.newest {
                        return not_yet();
                    }
                    PeerMessage::Manifest(keyframed_manifest(seq)).encode()
                }
                None => {
                    let seq: u64 = rest.parse().expect("a chunk number");
                    if seq > self.newest {
                        return not_yet();
                    }
                    let mut data = common::chunk_bytes(seq, CHUNK_BYTES);
                    if self.forges {
                        data[100] ^= 1;
                    }
                    if let Some((first, last)) = range {
                        self.ranges.push((seq, first, last));
                        data = data[first as usize..=last as usize].to_vec();
                    }
                    data
                }
                Some(_) => panic!("asked for {url}"),
            }
        };
        FetchOutcome::Body(Bytes::from(body))
    }
}

fn not_yet() -> FetchOutcome {
    FetchOutcome::Status {
        status: 503,
        retry_after_ms: Some(1_000),
    }
}

/// The manifest of test chunk `seq`, a keyframe every other chunk.
fn keyframed_manifest(seq: u64) -> protocol::ChunkManifest {
    let data = common::chunk_bytes(seq, CHUNK_BYTES);
    protocol::ChunkManifest::sign(
        &common::signer(),
        &protocol::Broadcast::default(),
        ChunkSeq(seq),
        seq.is_multiple_of(2),
        data.chunks(PIECE_BYTES),
    )
    .expect("test chunks are small enough to sign")
}

/// One viewer and what it did.
struct Viewer {
    swarm: Swarm,
    now: Millis,
    played: Vec<Chunk>,
    fetches: BTreeMap<FetchId, (String, Option<(u64, u64)>)>,
    troubles: Vec<String>,
    sent: Vec<(PeerId, PeerMessage)>,
}

impl Viewer {
    fn with_edge(edge: &FakeEdge) -> Viewer {
        let mut viewer = Viewer {
            swarm: Swarm::new(common::viewer_config()),
            now: Millis(0),
            played: Vec::new(),
            fetches: BTreeMap::new(),
            troubles: Vec::new(),
            sent: Vec::new(),
        };
        viewer.input(Input::Broadcaster(Some(SOURCE)));
        viewer.input(Input::Edges(vec![edge.base.clone()]));
        viewer
    }

    fn input(&mut self, input: Input) {
        self.swarm.handle_input(self.now, input);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(output) = self.swarm.poll_output() {
            match output {
                Output::Fetch { id, url, range } => {
                    self.fetches.insert(id, (url, range));
                }
                Output::Play { chunk, .. } => self.played.push(chunk),
                Output::EdgeTrouble { reason, .. } => self.troubles.push(reason),
                Output::Send(peer, message) => self.sent.push((peer, message)),
                _ => {}
            }
        }
    }

    /// Runs `ms` of virtual time in 50 ms steps, the edge answering every fetch at once.
    fn run(&mut self, ms: u64, edge: &mut FakeEdge) {
        self.run_answering(ms, edge, false);
    }

    /// As `run`; with `newest_first`, the latest fetches are answered first (a chunk
    /// before its manifest).
    fn run_answering(&mut self, ms: u64, edge: &mut FakeEdge, newest_first: bool) {
        let end = self.now + ms;
        while self.now < end {
            self.now = self.now + 50;
            if self.swarm.poll_timeout().is_some_and(|at| at <= self.now) {
                self.swarm.handle_timeout(self.now);
                self.collect();
            }
            while let Some((id, (url, range))) = if newest_first {
                self.fetches.pop_last()
            } else {
                self.fetches.pop_first()
            } {
                let outcome = edge.answer(&url, range);
                self.input(Input::Fetched { id, outcome });
            }
        }
    }

    fn played_seqs(&self) -> Vec<u64> {
        self.played.iter().map(|c| c.seq.0).collect()
    }
}

#[test]
fn a_viewer_without_neighbours_plays_from_the_edge_once_it_has_waited() {
    let mut edge = FakeEdge::new(6);
    let mut viewer = Viewer::with_edge(&edge);
    viewer.run(2_900, &mut edge);
    assert!(edge.asked.is_empty(), "asked before 3 s: {:?}", edge.asked);
    viewer.run(200, &mut edge);
    assert!(!edge.asked.is_empty(), "nothing asked after 3 s alone");
    // The edge cuts a chunk a second, as a live one does.
    for _ in 0..6 {
        viewer.run(1_000, &mut edge);
        edge.newest += 1;
    }
    viewer.run(3_000, &mut edge);
    let played = viewer.played_seqs();
    assert_eq!(
        played.first(),
        Some(&6),
        "starts at the newest keyframe: {played:?}"
    );
    assert!(played.len() >= 6, "played {played:?}");
    assert!(played.windows(2).all(|w| w[1] == w[0] + 1), "{played:?}");
    for chunk in &viewer.played {
        assert_eq!(
            chunk.data.to_vec(),
            common::chunk_bytes(chunk.seq.0, CHUNK_BYTES)
        );
    }
    let stats = viewer.swarm.stats();
    assert_eq!(stats.bytes_from_http, (CHUNK_BYTES * played.len()) as u64);
    assert_eq!(stats.bytes_from_peers + stats.bytes_from_source, 0);
    assert!(viewer.troubles.is_empty(), "{:?}", viewer.troubles);
    // Chunks were asked for once each (503s aside): not far ahead.
    let asked_chunks = edge
        .asked
        .iter()
        .filter(|u| !u.ends_with("manifest") && !u.ends_with("init"))
        .filter(|u| {
            u.rsplit('/')
                .next()
                .is_some_and(|s| s.parse::<u64>().is_ok())
        })
        .count();
    assert!(
        asked_chunks < 3 * played.len(),
        "{asked_chunks} chunk fetches"
    );
}

#[test]
fn a_forging_edge_is_caught_and_none_of_its_bytes_play() {
    let mut edge = FakeEdge::new(6);
    edge.forges = true;
    let mut viewer = Viewer::with_edge(&edge);
    viewer.run(6_000, &mut edge);
    assert!(
        viewer.played.is_empty(),
        "played {:?}",
        viewer.played_seqs()
    );
    assert!(
        viewer
            .troubles
            .iter()
            .any(|t| t.contains("does not match its signed hash")),
        "{:?}",
        viewer.troubles
    );
    let stats = viewer.swarm.stats();
    assert_eq!(stats.bytes_from_http, 0);
    assert!(stats.bytes_rejected >= CHUNK_BYTES as u64);
    // It rests: not asked again right away.
    let asked = edge.asked.len();
    viewer.run(20_000, &mut edge);
    assert_eq!(
        edge.asked.len(),
        asked,
        "a forging edge asked again within its rest"
    );
}

/// A viewer linked to a source that announces chunks `0..=4` and sends their manifests
/// (and the init segment), then sends the pieces `pushed` gives for chunk 4, and nothing
/// more.
fn with_a_silent_source(edge: &FakeEdge, pushed: std::ops::Range<usize>) -> Viewer {
    let mut viewer = Viewer::with_edge(edge);
    viewer.input(Input::PeerConnected(SOURCE));
    viewer.input(Input::Message(SOURCE, common::init()));
    viewer.input(Input::Message(
        SOURCE,
        PeerMessage::BufferMap {
            is_source: true,
            upload_kbps: u32::MAX,
            edge_age_ms: 100,
            entries: (0..=4)
                .map(|seq| BufferMapEntry {
                    seq: ChunkSeq(seq),
                    keyframe: seq % 2 == 0,
                    total: CHUNK_BYTES as u32,
                })
                .collect(),
        },
    ));
    for seq in 0..=4 {
        viewer.input(Input::Message(
            SOURCE,
            PeerMessage::Manifest(keyframed_manifest(seq)),
        ));
    }
    let data = common::chunk_bytes(4, CHUNK_BYTES);
    for index in pushed {
        let offset = index * PIECE_BYTES;
        let end = (offset + PIECE_BYTES).min(CHUNK_BYTES);
        viewer.input(Input::Message(
            SOURCE,
            PeerMessage::Piece {
                req: protocol::RequestId::PUSH,
                seq: ChunkSeq(4),
                offset: offset as u32,
                total: CHUNK_BYTES as u32,
                data: Bytes::copy_from_slice(&data[offset..end]),
            },
        ));
    }
    viewer
}

/// A neighbour that announces chunks but never sends a piece: the viewer asks it, and
/// shortly before the chunk is due, the edge.
#[test]
fn a_chunk_neighbours_do_not_deliver_in_time_comes_from_the_edge() {
    let mut edge = FakeEdge::new(4);
    let mut viewer = with_a_silent_source(&edge, 0..0);
    viewer.run(500, &mut edge);
    assert!(
        viewer
            .sent
            .iter()
            .any(|(_, m)| matches!(m, PeerMessage::Request { .. })),
        "the neighbour was asked first"
    );
    assert!(
        edge.asked.is_empty(),
        "the edge asked at once: {:?}",
        edge.asked
    );
    viewer.run(3_000, &mut edge);
    let played = viewer.played_seqs();
    assert_eq!(played.first(), Some(&4), "{played:?}");
    assert!(
        edge.asked.iter().any(|u| u.ends_with("/4")),
        "{:?}",
        edge.asked
    );
    assert!(
        !edge.asked.iter().any(|u| u.ends_with("/init")),
        "the neighbour gave the init segment: {:?}",
        edge.asked
    );
    assert_eq!(viewer.swarm.stats().bytes_from_http, CHUNK_BYTES as u64);
    assert_genuine(&viewer);
}

/// A neighbour that sent the first two pieces of a chunk and stopped: only the rest is
/// fetched, as a byte range.
#[test]
fn only_the_missing_pieces_of_a_chunk_are_fetched() {
    let mut edge = FakeEdge::new(4);
    let mut viewer = with_a_silent_source(&edge, 0..2);
    viewer.run(3_500, &mut edge);
    assert_eq!(viewer.played_seqs().first(), Some(&4));
    let from = 2 * PIECE_BYTES as u64;
    assert_eq!(edge.ranges, vec![(4, from, CHUNK_BYTES as u64 - 1)]);
    let stats = viewer.swarm.stats();
    assert_eq!(stats.bytes_from_http, CHUNK_BYTES as u64 - from);
    assert_eq!(stats.bytes_from_source, from);
    assert_genuine(&viewer);
}

fn assert_genuine(viewer: &Viewer) {
    for chunk in &viewer.played {
        let expected = common::chunk_bytes(chunk.seq.0, CHUNK_BYTES);
        assert!(
            chunk.data.to_vec() == expected,
            "chunk {} altered",
            chunk.seq
        );
    }
}

/// A channel off the air: its waiting audience reads the edge's index less and less often.
#[test]
fn an_edge_without_the_broadcast_is_asked_less_and_less_often() {
    let mut edge = FakeEdge::new(0);
    edge.offline = true;
    let mut viewer = Viewer::with_edge(&edge);
    viewer.run(60_000, &mut edge);
    // At 3 s, then 4, 8 and 16 s later; the next would be 32 s later. Nothing else.
    let reads = edge
        .asked
        .iter()
        .filter(|u| u.ends_with("/unnamed"))
        .count();
    assert_eq!((reads, edge.asked.len()), (4, 4), "{:?}", edge.asked);
    assert!(viewer.played.is_empty());
}

/// Chunks answered before their manifests wait for them, and play.
#[test]
fn a_chunk_that_comes_before_its_manifest_waits_for_it() {
    let mut edge = FakeEdge::new(6);
    let mut viewer = Viewer::with_edge(&edge);
    for _ in 0..8 {
        viewer.run_answering(1_000, &mut edge, true);
        edge.newest += 1;
    }
    let played = viewer.played_seqs();
    assert!(played.len() >= 5, "played {played:?}");
    assert!(played.windows(2).all(|w| w[1] == w[0] + 1), "{played:?}");
    assert_genuine(&viewer);
}

/// An index claiming a chunk far ahead of what peers announce is not believed: the
/// viewer's window stays where the signed content is, and it plays on.
#[test]
fn a_lying_index_cannot_move_the_viewer() {
    let mut edge = FakeEdge::new(4);
    edge.lies_newest = Some(1_000_000);
    let mut viewer = with_a_silent_source(&edge, 0..0);
    viewer.run(8_000, &mut edge);
    assert_eq!(viewer.played_seqs().first(), Some(&4));
    assert!(
        !edge.asked.iter().any(|u| u.contains("1000000")),
        "asked for what the index alone named: {:?}",
        edge.asked
    );
    assert_genuine(&viewer);

    // Alone, the viewer asks for the named chunk's manifest, which never comes: nothing
    // is believed without it, and nothing panics.
    let mut alone = Viewer::with_edge(&edge);
    alone.run(8_000, &mut edge);
    assert!(alone.played.is_empty(), "{:?}", alone.played_seqs());
}
