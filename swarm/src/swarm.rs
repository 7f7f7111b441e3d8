use std::collections::{BTreeMap, VecDeque};

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId, MAX_PIECE_BYTES};

use crate::chunk_store::{ChunkStore, Download};
use crate::{Chunk, Millis};

/// What this peer is in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmRole {
    /// The broadcaster: produces chunks, serves them, never plays.
    Source,
    /// A viewer: fetches chunks, plays them in order, serves what it holds.
    Viewer,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub role: SwarmRole,
    /// Chunks kept behind the newest known one; bounds memory.
    pub window: u64,
    /// Requests outstanding to one peer at a time.
    pub max_requests_per_peer: usize,
    /// How far past the play position a viewer fetches ahead.
    pub lookahead: u64,
    /// A request not completed within this is cancelled and tried elsewhere.
    pub request_timeout_ms: u64,
    /// How long playback waits for a missing chunk while later ones are ready, before
    /// skipping it: late live data is worthless.
    pub skip_after_ms: u64,
    /// A joining viewer starts this many keyframe chunks behind the newest one, trading a
    /// little delay for a buffer that survives a slow first fetch.
    pub start_keyframes_behind: usize,
    pub piece_bytes: usize,
    /// Source: how many viewers hear of a fresh chunk at once (rotating), so most viewers
    /// fetch it from each other rather than all from the source.
    pub source_fanout: usize,
    /// Source: when the remaining viewers hear of a chunk, as a fallback for those the
    /// first copies do not reach through the mesh.
    pub source_announce_delay_ms: u64,
}

impl Config {
    pub fn new(role: SwarmRole) -> Config {
        Config {
            role,
            window: 30,
            max_requests_per_peer: 4,
            lookahead: 6,
            request_timeout_ms: 4_000,
            skip_after_ms: 5_000,
            start_keyframes_behind: 1,
            piece_bytes: MAX_PIECE_BYTES,
            source_fanout: 2,
            source_announce_delay_ms: 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A data channel to this peer opened.
    PeerConnected(PeerId),
    /// The link to this peer closed or failed.
    PeerDisconnected(PeerId),
    Message(PeerId, PeerMessage),
    /// Source only: the stream's init segment and MSE type.
    InitProduced {
        mime: String,
        data: Vec<u8>,
    },
    /// Source only: a freshly cut chunk.
    ChunkProduced(Chunk),
    /// Time passed; lets time-outs and skips fire when nothing else happens.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(PeerId, PeerMessage),
    /// Viewer: the init segment; comes before any `Play`.
    Init {
        mime: String,
        data: Vec<u8>,
    },
    /// Viewer: the next chunk to play, strictly in sequence order.
    Play(Chunk),
    /// Viewer: this chunk missed its deadline and will never be played.
    Skipped(ChunkSeq),
    /// The driver should close the link: the peer broke the protocol.
    Disconnect {
        peer: PeerId,
        reason: String,
    },
}

/// Counters a stats panel or a test reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    pub bytes_uploaded: u64,
    pub chunks_played: u64,
    pub chunks_missed: u64,
}

#[derive(Debug, Default)]
struct PeerState {
    is_source: bool,
    /// Chunks the peer announced, with their keyframe flag.
    has: BTreeMap<ChunkSeq, bool>,
    inflight: usize,
}

/// One peer's view of the swarm. See the crate docs for how drivers use it.
#[derive(Debug)]
pub struct Swarm {
    config: Config,
    peers: BTreeMap<PeerId, PeerState>,
    store: ChunkStore,
    init: Option<(String, Vec<u8>)>,
    init_delivered: bool,
    next_play: Option<ChunkSeq>,
    /// When playback began waiting on `next_play` while later chunks were ready.
    stalled_since: Option<Millis>,
    newest_known: Option<ChunkSeq>,
    /// Peers a chunk was already tried from, so a retry goes elsewhere first.
    tried: BTreeMap<ChunkSeq, Vec<PeerId>>,
    next_req: u32,
    /// Source: fresh chunks not yet announced to every viewer, with when they were cut.
    unannounced: VecDeque<(ChunkSeq, bool, Millis)>,
    /// Source: where the rotating fan-out continues.
    fanout_cursor: usize,
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Swarm {
    pub fn new(config: Config) -> Swarm {
        Swarm {
            config,
            peers: BTreeMap::new(),
            store: ChunkStore::default(),
            init: None,
            init_delivered: false,
            next_play: None,
            stalled_since: None,
            newest_known: None,
            tried: BTreeMap::new(),
            next_req: 0,
            unannounced: VecDeque::new(),
            fanout_cursor: 0,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn handle_input(&mut self, now: Millis, input: Input) {
        match input {
            Input::PeerConnected(peer) => {
                self.peers.insert(peer, PeerState::default());
                let is_source = self.config.role == SwarmRole::Source;
                self.send(
                    peer,
                    PeerMessage::BufferMap {
                        is_source,
                        entries: self.store.buffer_map(),
                    },
                );
                if let Some((mime, data)) = &self.init {
                    let init = PeerMessage::Init {
                        mime: mime.clone(),
                        data: data.clone(),
                    };
                    self.send(peer, init);
                }
            }
            Input::PeerDisconnected(peer) => {
                self.peers.remove(&peer);
                self.store.downloads.retain(|_, d| d.from != peer);
            }
            Input::Message(peer, message) => {
                if self.peers.contains_key(&peer) {
                    self.on_message(peer, message);
                }
            }
            Input::InitProduced { mime, data } => self.learn_init(mime, data),
            Input::ChunkProduced(chunk) => self.produce(now, chunk),
            Input::Tick => {}
        }
        self.maintain(now);
    }

    fn on_message(&mut self, peer: PeerId, message: PeerMessage) {
        match message {
            PeerMessage::BufferMap { is_source, entries } => {
                let state = self
                    .peers
                    .get_mut(&peer)
                    .expect("caller checked the peer is known");
                state.is_source = is_source;
                for entry in entries {
                    state.has.insert(entry.seq, entry.keyframe);
                    self.newest_known = self.newest_known.max(Some(entry.seq));
                }
            }
            PeerMessage::Have { seq, keyframe } => {
                let state = self
                    .peers
                    .get_mut(&peer)
                    .expect("caller checked the peer is known");
                state.has.insert(seq, keyframe);
                self.newest_known = self.newest_known.max(Some(seq));
            }
            PeerMessage::Request { req, seq } => self.serve(peer, req, seq),
            PeerMessage::Piece {
                req,
                seq,
                offset,
                total,
                data,
            } => self.on_piece(peer, req, seq, offset, total, data),
            PeerMessage::Absent { req, seq } => {
                if self
                    .store
                    .downloads
                    .get(&seq)
                    .is_some_and(|d| d.from == peer && d.req == req)
                {
                    self.store.downloads.remove(&seq);
                    self.release_slot(peer);
                }
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.has.remove(&seq);
                }
            }
            // Pieces of a chunk go out in one burst, so there is nothing left to cancel.
            PeerMessage::Cancel { .. } => {}
            PeerMessage::Init { mime, data } => self.learn_init(mime, data),
        }
    }

    fn serve(&mut self, peer: PeerId, req: RequestId, seq: ChunkSeq) {
        let Some(chunk) = self.store.complete.get(&seq) else {
            self.send(peer, PeerMessage::Absent { req, seq });
            return;
        };
        let total = chunk.data.len() as u32;
        let pieces: Vec<PeerMessage> = chunk
            .data
            .chunks(self.config.piece_bytes)
            .enumerate()
            .map(|(i, data)| PeerMessage::Piece {
                req,
                seq,
                offset: (i * self.config.piece_bytes) as u32,
                total,
                data: data.to_vec(),
            })
            .collect();
        self.stats.bytes_uploaded += u64::from(total);
        for piece in pieces {
            self.send(peer, piece);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_piece(
        &mut self,
        peer: PeerId,
        req: RequestId,
        seq: ChunkSeq,
        offset: u32,
        total: u32,
        data: Vec<u8>,
    ) {
        let Some(download) = self.store.downloads.get_mut(&seq) else {
            return; // A late piece of a cancelled or finished request.
        };
        if download.from != peer || download.req != req {
            return;
        }
        if download.data.is_empty() {
            download.data = vec![0; total as usize];
        }
        if download.data.len() != total as usize {
            let reason = format!(
                "piece of {seq} claims {total} bytes, earlier pieces said {}",
                download.data.len()
            );
            self.store.downloads.remove(&seq);
            self.drop_peer(peer, reason);
            return;
        }
        let start = offset as usize;
        download.data[start..start + data.len()].copy_from_slice(&data);
        if download.pieces.insert(offset, data.len()).is_none() {
            download.received += data.len();
        }
        if download.received < download.data.len() {
            return;
        }
        let download = self
            .store
            .downloads
            .remove(&seq)
            .expect("download was just looked up");
        let from_source = self.peers.get(&peer).is_some_and(|p| p.is_source);
        let bytes = download.data.len() as u64;
        if from_source {
            self.stats.bytes_from_source += bytes;
        } else {
            self.stats.bytes_from_peers += bytes;
        }
        self.release_slot(peer);
        self.add_complete(Chunk {
            seq,
            keyframe: download.keyframe,
            data: download.data,
        });
    }

    fn learn_init(&mut self, mime: String, data: Vec<u8>) {
        if self.init.is_some() {
            return;
        }
        for peer in self.peers.keys().copied().collect::<Vec<_>>() {
            self.send(
                peer,
                PeerMessage::Init {
                    mime: mime.clone(),
                    data: data.clone(),
                },
            );
        }
        self.init = Some((mime, data));
    }

    fn produce(&mut self, now: Millis, chunk: Chunk) {
        let (seq, keyframe) = (chunk.seq, chunk.keyframe);
        self.newest_known = self.newest_known.max(Some(seq));
        self.store.complete.insert(seq, chunk);
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        if peers.is_empty() {
            return;
        }
        let fanout = self.config.source_fanout.min(peers.len());
        for i in 0..fanout {
            let peer = peers[(self.fanout_cursor + i) % peers.len()];
            self.send(peer, PeerMessage::Have { seq, keyframe });
        }
        self.fanout_cursor = (self.fanout_cursor + fanout) % peers.len();
        if fanout < peers.len() {
            self.unannounced.push_back((seq, keyframe, now));
        }
    }

    /// Source: tell every viewer about chunks old enough that the mesh had its chance.
    fn announce_due(&mut self, now: Millis) {
        while let Some(&(seq, keyframe, cut_at)) = self.unannounced.front() {
            if now - cut_at < self.config.source_announce_delay_ms {
                break;
            }
            self.unannounced.pop_front();
            // A peer that already had the Have just updates a map entry; simpler than
            // remembering which viewers were in the fan-out.
            for peer in self.peers.keys().copied().collect::<Vec<_>>() {
                self.send(peer, PeerMessage::Have { seq, keyframe });
            }
        }
    }

    fn add_complete(&mut self, chunk: Chunk) {
        let (seq, keyframe) = (chunk.seq, chunk.keyframe);
        self.newest_known = self.newest_known.max(Some(seq));
        self.store.complete.insert(seq, chunk);
        for peer in self.peers.keys().copied().collect::<Vec<_>>() {
            self.send(peer, PeerMessage::Have { seq, keyframe });
        }
    }

    fn maintain(&mut self, now: Millis) {
        self.expire_requests(now);
        if self.config.role == SwarmRole::Source {
            self.announce_due(now);
        } else {
            self.choose_start();
            self.deliver(now);
            self.schedule(now);
        }
        self.evict();
    }

    fn expire_requests(&mut self, now: Millis) {
        let timeout = self.config.request_timeout_ms;
        let expired: Vec<(ChunkSeq, PeerId, RequestId)> = self
            .store
            .downloads
            .iter()
            .filter(|(_, d)| now - d.started > timeout)
            .map(|(seq, d)| (*seq, d.from, d.req))
            .collect();
        for (seq, peer, req) in expired {
            self.store.downloads.remove(&seq);
            self.release_slot(peer);
            self.send(peer, PeerMessage::Cancel { req });
        }
    }

    /// A joining viewer starts at a recent keyframe chunk, not at the oldest one held.
    fn choose_start(&mut self) {
        if self.next_play.is_some() || self.init.is_none() {
            return;
        }
        let mut keyframes: Vec<ChunkSeq> = self
            .peers
            .values()
            .flat_map(|p| p.has.iter().filter(|(_, kf)| **kf).map(|(seq, _)| *seq))
            .chain(
                self.store
                    .complete
                    .values()
                    .filter(|c| c.keyframe)
                    .map(|c| c.seq),
            )
            .collect();
        keyframes.sort_unstable();
        keyframes.dedup();
        let behind = self
            .config
            .start_keyframes_behind
            .min(keyframes.len().saturating_sub(1));
        self.next_play = keyframes.iter().rev().nth(behind).copied();
    }

    fn deliver(&mut self, now: Millis) {
        if !self.init_delivered {
            let Some((mime, data)) = self.init.clone() else {
                return;
            };
            self.outputs.push_back(Output::Init { mime, data });
            self.init_delivered = true;
        }
        while let Some(seq) = self.next_play {
            if let Some(chunk) = self.store.complete.get(&seq) {
                self.outputs.push_back(Output::Play(chunk.clone()));
                self.stats.chunks_played += 1;
                self.next_play = Some(seq.next());
                self.stalled_since = None;
                continue;
            }
            let later_ready = self.store.complete.range(seq..).next().is_some();
            if !later_ready {
                self.stalled_since = None;
                break;
            }
            let since = *self.stalled_since.get_or_insert(now);
            if now - since < self.config.skip_after_ms {
                break;
            }
            self.outputs.push_back(Output::Skipped(seq));
            self.stats.chunks_missed += 1;
            self.store.downloads.remove(&seq);
            self.next_play = Some(seq.next());
            self.stalled_since = Some(now);
        }
    }

    fn schedule(&mut self, now: Millis) {
        let (Some(start), Some(newest)) = (self.next_play, self.newest_known) else {
            return;
        };
        let end = newest.0.min(start.0 + self.config.lookahead);
        for seq in (start.0..=end).map(ChunkSeq) {
            if self.store.has(seq) || self.store.downloads.contains_key(&seq) {
                continue;
            }
            let tried = self.tried.get(&seq).map(Vec::as_slice).unwrap_or_default();
            let max = self.config.max_requests_per_peer;
            // Viewers first so the source's upload is spent on fresh chunks; then peers
            // not yet tried for this chunk; then the least busy.
            let best = self
                .peers
                .iter()
                .filter(|(_, p)| p.inflight < max && p.has.contains_key(&seq))
                .min_by_key(|(id, p)| (p.is_source, tried.contains(id), p.inflight))
                .map(|(id, p)| (*id, p.has[&seq]));
            let Some((peer, keyframe)) = best else {
                continue;
            };
            let req = RequestId(self.next_req);
            self.next_req = self.next_req.wrapping_add(1);
            self.peers
                .get_mut(&peer)
                .expect("peer was just chosen from the map")
                .inflight += 1;
            self.tried.entry(seq).or_default().push(peer);
            self.store.downloads.insert(
                seq,
                Download {
                    from: peer,
                    req,
                    started: now,
                    keyframe,
                    data: Vec::new(),
                    received: 0,
                    pieces: BTreeMap::new(),
                },
            );
            self.send(peer, PeerMessage::Request { req, seq });
        }
    }

    fn evict(&mut self) {
        let Some(newest) = self.newest_known else {
            return;
        };
        let oldest_kept = ChunkSeq(newest.0.saturating_sub(self.config.window));
        self.store.evict_before(oldest_kept);
        self.tried = self.tried.split_off(&oldest_kept);
        for peer in self.peers.values_mut() {
            peer.has = peer.has.split_off(&oldest_kept);
        }
        if let Some(next) = self.next_play {
            if next < oldest_kept {
                self.next_play = Some(oldest_kept);
            }
        }
    }

    fn release_slot(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.inflight = state.inflight.saturating_sub(1);
        }
    }

    fn drop_peer(&mut self, peer: PeerId, reason: String) {
        self.peers.remove(&peer);
        self.store.downloads.retain(|_, d| d.from != peer);
        self.outputs.push_back(Output::Disconnect { peer, reason });
    }

    fn send(&mut self, peer: PeerId, message: PeerMessage) {
        self.outputs.push_back(Output::Send(peer, message));
    }
}
