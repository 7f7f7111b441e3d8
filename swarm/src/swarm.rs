use std::collections::{BTreeMap, VecDeque};

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId};

use crate::chunk_store::ChunkStore;
use crate::config::{Config, SwarmRole};
use crate::{Chunk, Millis};

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
pub(crate) struct PeerState {
    pub(crate) is_source: bool,
    /// Chunks the peer announced, with their keyframe flag.
    pub(crate) has: BTreeMap<ChunkSeq, bool>,
    pub(crate) inflight: usize,
}

/// One peer's view of the swarm. See the crate docs for how drivers use it.
#[derive(Debug)]
pub struct Swarm {
    pub(crate) config: Config,
    pub(crate) peers: BTreeMap<PeerId, PeerState>,
    pub(crate) store: ChunkStore,
    pub(crate) init: Option<(String, Vec<u8>)>,
    pub(crate) init_delivered: bool,
    pub(crate) next_play: Option<ChunkSeq>,
    /// When playback began waiting on `next_play` while later chunks were ready.
    pub(crate) stalled_since: Option<Millis>,
    pub(crate) newest_known: Option<ChunkSeq>,
    /// Peers a chunk was already tried from, so a retry goes elsewhere first.
    pub(crate) tried: BTreeMap<ChunkSeq, Vec<PeerId>>,
    pub(crate) next_req: u32,
    /// Source: fresh chunks not yet announced to every viewer, with when they were cut.
    pub(crate) unannounced: VecDeque<(ChunkSeq, bool, Millis)>,
    /// Source: where the rotating fan-out continues.
    pub(crate) fanout_cursor: usize,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) stats: Stats,
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

    pub(crate) fn add_complete(&mut self, chunk: Chunk) {
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

    pub(crate) fn release_slot(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.inflight = state.inflight.saturating_sub(1);
        }
    }

    pub(crate) fn drop_peer(&mut self, peer: PeerId, reason: String) {
        self.peers.remove(&peer);
        self.store.downloads.retain(|_, d| d.from != peer);
        self.outputs.push_back(Output::Disconnect { peer, reason });
    }

    pub(crate) fn send(&mut self, peer: PeerId, message: PeerMessage) {
        self.outputs.push_back(Output::Send(peer, message));
    }
}
