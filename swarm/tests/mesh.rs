//! Small swarms on virtual time with instant, lossless links: the scheduler's basic
//! promises (every chunk played in order, recovery from a departed peer).

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::{ChunkSeq, PeerId, PeerMessage};
use swarm::{Chunk, Input, Millis, Output, Signed, Swarm};

const SOURCE: PeerId = PeerId(0);

/// A viewer told, as the signal server would, which peer is the broadcaster.
fn viewer() -> Swarm {
    viewer_with(common::viewer_config())
}

fn viewer_with(config: swarm::Config) -> Swarm {
    let mut swarm = Swarm::new(config);
    swarm.handle_input(Millis(0), Input::Broadcaster(Some(SOURCE)));
    swarm
}

/// Peers wired all-to-all; messages are delivered in order at the current virtual time.
struct Mesh {
    nodes: BTreeMap<PeerId, Swarm>,
    played: BTreeMap<PeerId, Vec<Chunk>>,
    skipped: BTreeMap<PeerId, Vec<ChunkSeq>>,
    links: Vec<(PeerId, PeerId)>,
    now: Millis,
    /// Viewers whose every outgoing piece is corrupted (one bit flipped).
    polluters: BTreeSet<PeerId>,
    /// (who dropped, whom, why), for drops of polluters; any other drop fails the test.
    drops: Vec<(PeerId, PeerId, String)>,
    /// What viewers configured with `exports_signed` handed over.
    signed: BTreeMap<PeerId, Vec<Signed>>,
    /// What viewers asked of HTTP edges (never answered here).
    fetched: Vec<(PeerId, String)>,
}

impl Mesh {
    fn new(viewers: u64) -> Mesh {
        Mesh::pushing(viewers, 0)
    }

    /// Every peer striping chunks over `substreams` substreams (0: pull only).
    fn pushing(viewers: u64, substreams: usize) -> Mesh {
        Mesh::configured(viewers, substreams, |_, _| {})
    }

    /// As `pushing`, with each viewer's config edited by `edit` first.
    fn configured(
        viewers: u64,
        substreams: usize,
        edit: impl Fn(PeerId, &mut swarm::Config),
    ) -> Mesh {
        let mut nodes = BTreeMap::new();
        let mut source = common::source_config();
        source.substreams = substreams;
        if substreams > 0 {
            // One copy of each block from the source: the rest must spread between
            // viewers.
            source.source_fanout = 1;
        }
        nodes.insert(SOURCE, Swarm::new(source));
        for v in 1..=viewers {
            let mut config = common::viewer_config();
            config.substreams = substreams;
            edit(PeerId(v), &mut config);
            nodes.insert(PeerId(v), viewer_with(config));
        }
        let mut mesh = Mesh {
            nodes,
            played: BTreeMap::new(),
            skipped: BTreeMap::new(),
            links: Vec::new(),
            now: Millis(0),
            polluters: BTreeSet::new(),
            drops: Vec::new(),
            signed: BTreeMap::new(),
            fetched: Vec::new(),
        };
        mesh.input(
            SOURCE,
            Input::InitProduced {
                mime: "video/mp4".into(),
                data: vec![7; 100],
            },
        );
        let ids: Vec<PeerId> = mesh.nodes.keys().copied().collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                mesh.connect(*a, *b);
            }
        }
        mesh
    }

    fn connect(&mut self, a: PeerId, b: PeerId) {
        // Both ends learn of the link before either's first message arrives, as with a
        // data channel, whose `open` precedes any `message`.
        self.links.push((a, b));
        self.deliver(VecDeque::from([
            (a, Input::PeerConnected(b)),
            (b, Input::PeerConnected(a)),
        ]));
    }

    fn remove(&mut self, gone: PeerId) {
        self.nodes.remove(&gone);
        let neighbours: Vec<PeerId> = self.nodes.keys().copied().collect();
        for peer in neighbours {
            self.input(peer, Input::PeerDisconnected(gone));
        }
    }

    fn input(&mut self, at: PeerId, input: Input) {
        self.deliver(VecDeque::from([(at, input)]));
    }

    /// Runs the node's timers if they are due, as a driver's timer does.
    fn timeout(&mut self, at: PeerId) {
        let Some(node) = self.nodes.get_mut(&at) else {
            return;
        };
        if node.poll_timeout().is_some_and(|due| due <= self.now) {
            node.handle_timeout(self.now);
            let mut queue = VecDeque::new();
            self.carry_out(at, &mut queue);
            self.deliver(queue);
        }
    }

    fn deliver(&mut self, mut queue: VecDeque<(PeerId, Input)>) {
        while let Some((to, input)) = queue.pop_front() {
            let Some(node) = self.nodes.get_mut(&to) else {
                continue;
            };
            node.handle_input(self.now, input);
            self.carry_out(to, &mut queue);
        }
    }

    fn carry_out(&mut self, to: PeerId, queue: &mut VecDeque<(PeerId, Input)>) {
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        let outputs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
        for output in outputs {
            match output {
                Output::Send(peer, message) => {
                    if !self.linked(to, peer) {
                        continue;
                    }
                    // Every message crosses the wire format, as in the real drivers.
                    let mut bytes = message.encode();
                    if self.polluters.contains(&to) && matches!(message, PeerMessage::Piece { .. })
                    {
                        *bytes.last_mut().expect("pieces carry data") ^= 1;
                    }
                    let decoded = PeerMessage::decode(&bytes).expect("own encoding decodes");
                    queue.push_back((peer, Input::Message(to, decoded)));
                }
                Output::Play { chunk, .. } => self.played.entry(to).or_default().push(chunk),
                Output::Skipped(seq) => self.skipped.entry(to).or_default().push(seq),
                Output::Init { .. } => {}
                Output::Signed(content) => self.signed.entry(to).or_default().push(content),
                Output::Fetch { url, .. } => self.fetched.push((to, url)),
                Output::EdgeTrouble { edge, reason } => panic!("{to}: edge {edge}: {reason}"),
                Output::Disconnect { peer, reason } if self.polluters.contains(&peer) => {
                    self.drops.push((to, peer, reason));
                    self.links
                        .retain(|&(a, b)| (a, b) != (to, peer) && (a, b) != (peer, to));
                    queue.push_back((peer, Input::PeerDisconnected(to)));
                }
                Output::Disconnect { peer, reason } => panic!("{to} dropped {peer}: {reason}"),
            }
        }
    }

    fn linked(&self, a: PeerId, b: PeerId) -> bool {
        self.links.contains(&(a, b)) || self.links.contains(&(b, a))
    }

    /// The source cuts one chunk a second; the clock moves in 100 ms steps, running the
    /// timers that came due in each.
    fn run_chunks(&mut self, from: u64, to: u64) {
        for seq in from..to {
            let data = common::chunk_bytes(seq, 40_000);
            self.input(
                SOURCE,
                Input::ChunkProduced(Chunk {
                    seq: ChunkSeq(seq),
                    keyframe: seq % 2 == 0,
                    data: data.into(),
                }),
            );
            for _ in 0..10 {
                self.now = self.now + 100;
                let ids: Vec<PeerId> = self.nodes.keys().copied().collect();
                for id in ids {
                    // Instant links: whatever was sent has left.
                    let neighbours: Vec<PeerId> = self
                        .links
                        .iter()
                        .filter_map(|&(a, b)| (a == id).then_some(b).or((b == id).then_some(a)))
                        .collect();
                    for peer in neighbours {
                        self.input(id, Input::Buffered { peer, bytes: 0 });
                    }
                    self.timeout(id);
                }
            }
        }
    }
}

fn assert_contiguous(chunks: &[Chunk], who: PeerId) {
    assert!(!chunks.is_empty(), "{who} played nothing");
    assert!(
        chunks[0].keyframe,
        "{who} started on a non-keyframe chunk {}",
        chunks[0].seq
    );
    for pair in chunks.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq.next(), "{who} played out of order");
    }
}

fn assert_genuine(chunks: &[Chunk], who: PeerId) {
    for chunk in chunks {
        let expected = common::chunk_bytes(chunk.seq.0, 40_000);
        assert!(
            chunk.data.to_vec() == expected,
            "{who} played corrupted {}",
            chunk.seq
        );
    }
}

#[test]
fn every_viewer_plays_every_chunk_in_order_from_a_keyframe() {
    let mut mesh = Mesh::new(4);
    mesh.run_chunks(0, 20);
    for v in 1..=4 {
        let who = PeerId(v);
        let played = &mesh.played[&who];
        assert_contiguous(played, who);
        assert_eq!(
            played.last().unwrap().seq,
            ChunkSeq(19),
            "{who} fell behind"
        );
        assert_genuine(played, who);
        assert!(!mesh.skipped.contains_key(&who), "{who} skipped chunks");
    }
    let from_peers: u64 = (1..=4)
        .map(|v| mesh.nodes[&PeerId(v)].stats().bytes_from_peers)
        .sum();
    assert!(from_peers > 0, "viewers never fetched from each other");
}

/// Pulls answered are timed (request to first piece, to the whole block) and requests
/// served are timed too, for comparing real runs with the simulator's.
#[test]
fn pulls_and_serving_are_timed_in_the_stats() {
    let mut mesh = Mesh::new(4);
    mesh.run_chunks(0, 20);
    let stats: Vec<swarm::Stats> = (1..=4).map(|v| mesh.nodes[&PeerId(v)].stats()).collect();
    let pulls: u64 = stats.iter().map(|s| s.pull_complete_ms.count()).sum();
    let first: u64 = stats.iter().map(|s| s.pull_first_piece_ms.count()).sum();
    let served: u64 = stats.iter().map(|s| s.serve_wait_ms.count()).sum();
    assert!(pulls > 0, "no pull was timed");
    assert_eq!(
        first, pulls,
        "each pull timed to its first piece and to its end"
    );
    assert!(served > 0, "no request served by a viewer was timed");
    for s in &stats {
        assert!(
            s.pull_first_piece_ms.percentile(50) <= s.pull_complete_ms.percentile(50),
            "a block completes no sooner than its first piece"
        );
    }
}

#[test]
fn a_viewer_that_joins_late_starts_near_live() {
    let mut mesh = Mesh::new(2);
    mesh.run_chunks(0, 20);
    mesh.nodes.insert(PeerId(9), viewer());
    for peer in [SOURCE, PeerId(1), PeerId(2)] {
        mesh.connect(PeerId(9), peer);
    }
    mesh.run_chunks(20, 25);
    let played = &mesh.played[&PeerId(9)];
    assert_contiguous(played, PeerId(9));
    assert!(
        played[0].seq >= ChunkSeq(16),
        "late joiner started far behind live at {}",
        played[0].seq
    );
    assert_eq!(played.last().unwrap().seq, ChunkSeq(24));
}

#[test]
fn a_departed_peer_does_not_stall_the_others() {
    let mut mesh = Mesh::new(3);
    mesh.run_chunks(0, 5);
    mesh.remove(PeerId(1));
    mesh.run_chunks(5, 15);
    for v in [2, 3] {
        let played = &mesh.played[&PeerId(v)];
        assert_contiguous(played, PeerId(v));
        assert_eq!(played.last().unwrap().seq, ChunkSeq(14));
    }
}

#[test]
fn a_polluter_is_dropped_by_whoever_it_serves_and_nobody_plays_its_bytes() {
    let polluter = PeerId(1);
    let mut mesh = Mesh::new(4);
    mesh.polluters.insert(polluter);
    mesh.run_chunks(0, 20);
    let honest = [PeerId(2), PeerId(3), PeerId(4)];
    for who in honest {
        let played = &mesh.played[&who];
        assert_contiguous(played, who);
        assert_genuine(played, who);
        assert_eq!(
            played.last().unwrap().seq,
            ChunkSeq(19),
            "{who} fell behind"
        );
        assert!(!mesh.skipped.contains_key(&who), "{who} skipped chunks");
    }
    assert!(
        !mesh.drops.is_empty(),
        "nobody took a piece from the polluter"
    );
    for (by, _, reason) in &mesh.drops {
        assert!(
            reason.contains("does not match its signed hash"),
            "{reason}"
        );
        let stats = mesh.nodes[by].stats();
        assert_eq!(stats.drops.polluted, 1);
        assert!(stats.bytes_rejected > 0);
        assert!(mesh.nodes[by].is_banned(polluter));
    }
}

#[test]
fn with_substreams_parents_push_blocks_unasked_and_everyone_plays_every_chunk() {
    let mut mesh = Mesh::pushing(6, 4);
    mesh.run_chunks(0, 30);
    let mut pushed = 0;
    let mut from_peers = 0;
    for v in 1..=6 {
        let who = PeerId(v);
        let played = &mesh.played[&who];
        assert_contiguous(played, who);
        assert_genuine(played, who);
        assert_eq!(
            played.last().unwrap().seq,
            ChunkSeq(29),
            "{who} fell behind"
        );
        assert!(!mesh.skipped.contains_key(&who), "{who} skipped chunks");
        let stats = mesh.nodes[&who].stats();
        pushed += stats.bytes_pushed;
        from_peers += stats.bytes_from_peers;
    }
    // Once the parents are chosen (a few seconds), blocks move by push: most of what
    // viewers get from each other came unasked.
    assert!(
        pushed * 2 > from_peers,
        "only {pushed} of {from_peers} bytes from peers were pushed"
    );
}

#[test]
fn with_substreams_a_departed_parent_is_replaced_and_nobody_skips() {
    let mut mesh = Mesh::pushing(5, 4);
    mesh.run_chunks(0, 10);
    // The viewer that pushes the most is the one whose loss hurts.
    let parent = (1..=5)
        .map(PeerId)
        .max_by_key(|p| mesh.nodes[p].stats().bytes_uploaded)
        .expect("five viewers");
    mesh.remove(parent);
    let pushed_before: u64 = mesh.nodes.values().map(|n| n.stats().bytes_pushed).sum();
    mesh.run_chunks(10, 25);
    let pushed_after: u64 = mesh.nodes.values().map(|n| n.stats().bytes_pushed).sum();
    for who in (1..=5).map(PeerId).filter(|p| *p != parent) {
        let played = &mesh.played[&who];
        assert_contiguous(played, who);
        assert_eq!(
            played.last().unwrap().seq,
            ChunkSeq(24),
            "{who} fell behind"
        );
        assert!(!mesh.skipped.contains_key(&who), "{who} skipped chunks");
    }
    assert!(
        pushed_after > pushed_before,
        "nobody pushed after {parent} left"
    );
}

#[test]
fn an_exporting_viewer_hands_over_each_chunk_once_with_its_signed_manifest() {
    let edge = PeerId(1);
    let mut mesh = Mesh::configured(3, 0, |peer, config| {
        config.exports_signed = peer == edge;
    });
    mesh.run_chunks(0, 12);
    let signed = &mesh.signed[&edge];
    let key = common::channel_key();
    let broadcast = protocol::Broadcast::default();
    let Some(Signed::Init {
        mime,
        data,
        signature,
    }) = signed.first()
    else {
        panic!("the init segment did not come first: {:?}", signed.first());
    };
    assert!(key.verify(&protocol::init_message(&broadcast, mime, data), signature));
    let mut seqs = Vec::new();
    for content in &signed[1..] {
        let Signed::Chunk { manifest, chunk } = content else {
            panic!("a second init segment");
        };
        manifest
            .verify(&key, &broadcast)
            .expect("a signed manifest");
        assert_eq!(manifest.seq, chunk.seq);
        assert_eq!(manifest.total as usize, chunk.data.len());
        assert_eq!(
            chunk.data.to_vec(),
            common::chunk_bytes(chunk.seq.0, 40_000)
        );
        seqs.push(chunk.seq.0);
    }
    let played: Vec<u64> = mesh.played[&edge].iter().map(|c| c.seq.0).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seqs.len(),
        "a chunk handed over twice: {seqs:?}"
    );
    assert!(
        played.iter().all(|seq| seqs.contains(seq)),
        "played {played:?} but handed over {seqs:?}"
    );
    // The others were not asked to export anything.
    assert_eq!(mesh.signed.keys().collect::<Vec<_>>(), vec![&edge]);
}

/// When peers deliver, an HTTP edge the server names is asked for nothing.
#[test]
fn a_mesh_that_delivers_asks_its_edge_for_nothing() {
    let mut mesh = Mesh::new(4);
    let edge: protocol::EdgeUrl = "http://edge.test".parse().unwrap();
    for v in 1..=4 {
        mesh.input(PeerId(v), Input::Edges(vec![edge.clone()]));
    }
    mesh.run_chunks(0, 20);
    for v in 1..=4 {
        let who = PeerId(v);
        assert_contiguous(&mesh.played[&who], who);
        assert!(!mesh.skipped.contains_key(&who), "{who} skipped chunks");
    }
    assert!(
        mesh.fetched.is_empty(),
        "asked of the edge: {:?}",
        mesh.fetched
    );
}
