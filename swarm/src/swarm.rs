use std::collections::{BTreeMap, VecDeque};

use protocol::{ChunkSeq, EdgeUrl, PeerId, PeerMessage, RequestId};

use crate::chunk_store::ChunkStore;
use crate::config::{Config, SwarmRole};
use crate::content::{Signed, SignedInit};
use crate::download::BlockKey;
use crate::early::EarlyPieces;
use crate::fallback::{Fallback, FetchId, FetchOutcome};
use crate::hostile::{Banned, DropCause, Drops};
use crate::parents::Parents;
use crate::peer::{Download, PeerState};
use crate::playback::Clock;
use crate::rate::TokenBucket;
use crate::wire::{ACK_DEBT_LIMIT_MS, CONTROL_PACKET_FRAMING};
use crate::{Chunk, Millis, MsHistogram};

/// How much of the swarm's work an input calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    /// Uploads only.
    Pump,
    /// A neighbour announced these pieces: maybe request them.
    Announced(ChunkSeq, std::ops::Range<usize>),
    /// A piece arrived; the number of downloads before it, to see whether one finished.
    PieceArrived(usize),
    /// Playback and requests too.
    Schedule,
}

/// Chunk durations without news of a new chunk after which a viewer is starving.
const STARVING_AFTER_CHUNKS: u64 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A data channel to this peer opened.
    PeerConnected(PeerId),
    /// The link to this peer closed or failed.
    PeerDisconnected(PeerId),
    Message(PeerId, PeerMessage),
    /// Bytes still queued on the link to this peer (`bufferedAmount`). Drivers report it
    /// on every tick at least: pieces stop going to a link whose queue is over the high
    /// water mark until a report says it drained.
    Buffered {
        peer: PeerId,
        bytes: u64,
    },
    /// Source only: the stream's init segment and MSE type.
    InitProduced {
        mime: String,
        data: Vec<u8>,
    },
    /// Source only: a freshly cut chunk.
    ChunkProduced(Chunk),
    /// The signal server names the channel's broadcaster (`None`: it has none now). Only
    /// that peer may say it is the source; drivers report it before links open.
    Broadcaster(Option<PeerId>),
    /// The driver could not decode what this peer sent: it is dropped and banned.
    Malformed {
        peer: PeerId,
        reason: String,
    },
    /// Viewer: the HTTP edges the signal server names (`fallback/`).
    Edges(Vec<EdgeUrl>),
    /// What came of an `Output::Fetch`.
    Fetched {
        id: FetchId,
        outcome: FetchOutcome,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(PeerId, PeerMessage),
    /// Viewer: the init segment; comes before any `Play`.
    Init {
        mime: String,
        data: Vec<u8>,
    },
    /// Viewer: the next chunk to play, strictly in sequence order, handed over as soon as
    /// it is complete (and its predecessors are handed over or skipped). `due` is when the
    /// swarm's playout schedule starts playing it: later than now when it came early.
    Play {
        chunk: Chunk,
        due: Millis,
    },
    /// Viewer: this chunk missed its deadline and will never be played.
    Skipped(ChunkSeq),
    /// With `Config::exports_signed`: the init segment once verified, and each chunk as
    /// soon as it is complete, in any order, with what the channel key signed.
    Signed(Signed),
    /// Fetch `url` (HTTP GET; with `range`, only those bytes, first and last included, as
    /// a `Range` header says) and report it with `Input::Fetched` under `id`.
    Fetch {
        id: FetchId,
        url: String,
        range: Option<(u64, u64)>,
    },
    /// An edge failed or served content the channel key did not sign; it rests a while.
    EdgeTrouble {
        edge: EdgeUrl,
        reason: String,
    },
    /// The driver should close the link: the peer broke the protocol or is too slow.
    Disconnect {
        peer: PeerId,
        reason: String,
    },
}

/// Counters a stats panel, the simulator or a test reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunk payload received from viewers, counted once per byte held.
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    /// Chunk payload fetched from HTTP edges, counted once per byte held.
    pub bytes_from_http: u64,
    /// Of `bytes_from_peers`, what parents pushed along substreams, unasked.
    pub bytes_pushed: u64,
    /// Payload received that was already held (overlaps, late pieces).
    pub bytes_duplicate: u64,
    /// Payload received that did not match its chunk's signed manifest: thrown away
    /// before it was stored, forwarded or played.
    pub bytes_rejected: u64,
    pub bytes_uploaded: u64,
    pub chunks_played: u64,
    pub chunks_missed: u64,
    /// Chunks that arrived after their due time: playback stalled until they came.
    pub stalls: u64,
    /// Requests answered `Absent` because the chunk was missing or the upload busy.
    pub requests_refused: u64,
    /// Pulls that turned overdue and moved to another viewer holding the block (from the
    /// source at once, from a viewer once the chunk is urgent).
    pub pulls_moved: u64,
    /// Pieces that came before their chunk's manifest (on an unordered channel), held
    /// until it comes (or given up), and the payload of those given up to keep that
    /// bounded.
    pub pieces_held_early: u64,
    pub bytes_given_up_early: u64,
    /// Neighbours dropped for timing out or breaking the protocol…
    pub peers_dropped: u64,
    /// …by cause.
    pub drops: Drops,
    /// From the first input to the planned start of playback.
    pub startup_ms: Option<u64>,
    /// Pulls answered by the neighbour asked: from the request to its first piece, and
    /// to the whole block (where a hop's time goes, for comparing real runs with the
    /// simulator's).
    pub pull_first_piece_ms: MsHistogram,
    pub pull_complete_ms: MsHistogram,
    /// Requests served: from their arrival to their first piece leaving (the wait in
    /// this node's upload queue).
    pub serve_wait_ms: MsHistogram,
}

/// A neighbour as the driver's stats show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub peer: PeerId,
    pub is_source: bool,
    /// Payload bytes received from it (duplicates not counted) and sent to it.
    pub bytes_down: u64,
    pub bytes_up: u64,
}

/// One peer's view of the swarm. See the crate docs for how drivers use it.
#[derive(Debug)]
pub struct Swarm {
    pub(crate) config: Config,
    pub(crate) peers: BTreeMap<PeerId, PeerState>,
    pub(crate) store: ChunkStore,
    pub(crate) downloads: BTreeMap<BlockKey, Download>,
    pub(crate) init: Option<SignedInit>,
    pub(crate) init_delivered: bool,
    pub(crate) next_play: Option<ChunkSeq>,
    pub(crate) newest_known: Option<ChunkSeq>,
    pub(crate) clock: Clock,
    /// Peers a chunk was already tried from, so a retry goes elsewhere first.
    pub(crate) tried: BTreeMap<ChunkSeq, Vec<PeerId>>,
    pub(crate) next_req: u32,
    pub(crate) bucket: Option<TokenBucket>,
    /// Counts requests as they arrive, to serve equally urgent ones in order.
    pub(crate) serve_order: u64,
    /// Source: fresh chunks not yet announced to every viewer, and when they were cut.
    pub(crate) unannounced: VecDeque<(ChunkSeq, Millis)>,
    /// Source: where the rotating push continues.
    pub(crate) fanout_cursor: usize,
    /// Source: when recent chunks were produced and their sizes, to know the stream's rate.
    pub(crate) produced: VecDeque<(Millis, u64)>,
    pub(crate) first_input: Option<Millis>,
    /// The window's lower edge at the last eviction: evict again only when it moves.
    pub(crate) evicted_below: Option<ChunkSeq>,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) stats: Stats,
    pub(crate) banned: Banned,
    /// The broadcaster, as the signal server names it.
    pub(crate) broadcaster: Option<PeerId>,
    /// The latest time an input or time-out brought.
    pub(crate) now: Millis,
    /// When the last full round (time-outs and scheduling) ran; see `timers.rs`.
    pub(crate) upkept_at: Option<Millis>,
    /// Viewer: its parent for each substream (`substreams.rs`).
    pub(crate) parents: Parents,
    /// Viewer: its HTTP edges (`fallback/`).
    pub(crate) fallback: Fallback,
    /// Viewer: pieces that overtook their chunk's manifest (`early.rs`).
    pub(crate) early: EarlyPieces,
}

impl Swarm {
    pub fn new(config: Config) -> Swarm {
        let bucket = config
            .upload_limit
            .map(|limit| TokenBucket::for_budget(limit, config.upload_burst_ms));
        let clock = Clock::new(config.chunk_ms_hint);
        let parents = match config.role() {
            SwarmRole::Viewer => Parents::new(config.substreams),
            SwarmRole::Source => Parents::new(0),
        };
        Swarm {
            config,
            peers: BTreeMap::new(),
            store: ChunkStore::default(),
            downloads: BTreeMap::new(),
            init: None,
            init_delivered: false,
            next_play: None,
            newest_known: None,
            clock,
            tried: BTreeMap::new(),
            next_req: 0,
            bucket,
            serve_order: 0,
            unannounced: VecDeque::new(),
            fanout_cursor: 0,
            produced: VecDeque::new(),
            first_input: None,
            evicted_below: None,
            outputs: VecDeque::new(),
            stats: Stats::default(),
            banned: Banned::default(),
            broadcaster: None,
            now: Millis(0),
            upkept_at: None,
            parents,
            fallback: Fallback::default(),
            early: EarlyPieces::default(),
        }
    }

    /// Whether this peer signs or accepts content of `key` (a driver checks that the
    /// signal server still names the same key).
    pub fn trusts(&self, key: &protocol::ChannelKey) -> bool {
        match &self.config.trust {
            crate::Trust::Signs(signer) => signer.public() == *key,
            crate::Trust::Verifies(trusted) => trusted == key,
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Each connected neighbour and the payload exchanged with it so far.
    pub fn neighbours(&self) -> impl Iterator<Item = Neighbour> + '_ {
        self.peers.iter().map(|(peer, state)| Neighbour {
            peer: *peer,
            is_source: state.is_source,
            bytes_down: state.bytes_down,
            bytes_up: state.bytes_up,
        })
    }

    /// When `seq` was cut at the source, on this peer's clock, judged from when the newest
    /// chunk was first heard of (so it runs late by the announcement's trip, tens of ms).
    pub fn cut_at(&self, seq: ChunkSeq) -> Option<Millis> {
        self.clock.cut_at(seq)
    }

    /// The stream's chunk duration, as observed (the configured hint until then).
    pub fn chunk_ms(&self) -> u64 {
        self.clock.chunk_ms()
    }

    /// How far behind live playback is at `now`: the time since the chunk playing now was
    /// cut, on the playout plan. `None` before playback starts.
    pub fn delay_behind_live(&self, now: Millis) -> Option<u64> {
        if !self.clock.started() {
            return None;
        }
        let playing = self.next_play?.0.checked_sub(1)?;
        Some(now - self.clock.cut_at(ChunkSeq(playing))?)
    }

    /// Chunks held whole or in part; bounded by the window (a test checks memory with it).
    pub fn chunks_held(&self) -> usize {
        self.store.chunks.len()
    }

    /// Signed manifests held; bounded by the window (a test checks memory with it).
    pub fn manifests_held(&self) -> usize {
        self.store.manifests.len()
    }

    /// A viewer that has heard of no new chunk for a few chunk durations: its neighbours
    /// are cut off from the stream (or it has none), so it should ask for more peers.
    pub fn starving(&self, now: Millis) -> bool {
        if self.config.role() != SwarmRole::Viewer {
            return false;
        }
        let Some(since) = self.clock.edge_heard().or(self.first_input) else {
            return false;
        };
        now - since > STARVING_AFTER_CHUNKS * self.clock.chunk_ms()
    }

    /// When a viewer hearing of no new chunk starts starving (`None`: the source, or a
    /// viewer that has had no input yet).
    pub fn starving_from(&self) -> Option<Millis> {
        if self.config.role() != SwarmRole::Viewer {
            return None;
        }
        let since = self.clock.edge_heard().or(self.first_input)?;
        Some(since + (STARVING_AFTER_CHUNKS * self.clock.chunk_ms() + 1))
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn handle_input(&mut self, now: Millis, input: Input) {
        self.first_input.get_or_insert(now);
        self.now = self.now.max(now);
        // Most inputs are pieces and requests, which only move uploads along (or finish a
        // block); the full round of scheduling runs when something it depends on changed.
        let work = match input {
            Input::PeerConnected(peer) if self.banned.contains(peer) => {
                let reason = "banned for earlier misbehaviour".to_owned();
                self.outputs.push_back(Output::Disconnect { peer, reason });
                Work::Pump
            }
            Input::PeerConnected(peer) => {
                self.on_connect(now, peer);
                Work::Schedule
            }
            Input::Broadcaster(peer) => {
                self.broadcaster = peer;
                Work::Pump
            }
            Input::Malformed { peer, reason } => {
                self.drop_peer(peer, DropCause::Malformed, reason);
                Work::Schedule
            }
            Input::PeerDisconnected(peer) => {
                self.peers.remove(&peer);
                self.downloads.retain(|_, d| d.from != peer);
                self.parents.lost(peer);
                self.early.forget(peer);
                Work::Schedule
            }
            Input::Message(peer, message) if self.peers.contains_key(&peer) => {
                let len = message.encoded_len();
                let acks = self.peer_mut(peer).acks.on_received(len);
                self.charge_acks(acks);
                let work = match &message {
                    PeerMessage::Request { .. } | PeerMessage::Cancel { .. } => Work::Pump,
                    PeerMessage::Piece { .. } => Work::PieceArrived(self.downloads.len()),
                    PeerMessage::Have {
                        seq, first, count, ..
                    } if self.next_play.is_some() && self.config.role() == SwarmRole::Viewer => {
                        let first = usize::from(*first);
                        Work::Announced(*seq, first..first + usize::from(*count))
                    }
                    _ => Work::Schedule,
                };
                self.on_message(now, peer, message);
                match work {
                    // A block finished (or a download ended): scheduling has news.
                    Work::PieceArrived(before) if before != self.downloads.len() => Work::Schedule,
                    Work::PieceArrived(_) => Work::Pump,
                    other => other,
                }
            }
            Input::Message(..) => Work::Pump,
            Input::Buffered { peer, bytes } => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.buffered = bytes;
                }
                Work::Pump
            }
            Input::InitProduced { mime, data } => {
                self.produce_init(mime, data);
                Work::Schedule
            }
            Input::ChunkProduced(chunk) => {
                self.produce(now, chunk);
                Work::Schedule
            }
            Input::Edges(edges) => {
                self.set_edges(edges);
                Work::Schedule
            }
            Input::Fetched { id, outcome } => {
                self.on_fetched(now, id, outcome);
                Work::Schedule
            }
        };
        match work {
            Work::Pump | Work::PieceArrived(_) => {}
            Work::Announced(seq, pieces) => self.schedule_announced(now, seq, pieces),
            Work::Schedule => self.maintain(now),
        }
        self.pump(now);
    }

    /// Whether this peer forwards chunks at all; one that does not also announces none.
    pub(crate) fn serves(&self) -> bool {
        self.config.upload_limit != Some(crate::BytesPerSec(0))
    }

    pub(crate) fn maintain(&mut self, now: Millis) {
        if self.config.role() == SwarmRole::Source {
            self.announce_due(now);
        } else {
            self.choose_start();
            self.deliver(now);
            self.review_parents(now);
            self.schedule(now);
            self.fetch_from_edges(now);
        }
        self.evict(now);
    }

    fn evict(&mut self, now: Millis) {
        let Some(newest) = self.newest_known else {
            return;
        };
        let oldest_kept = ChunkSeq(newest.0.saturating_sub(self.config.window));
        if self.evicted_below == Some(oldest_kept) {
            return;
        }
        self.evicted_below = Some(oldest_kept);
        self.store.evict_before(oldest_kept);
        self.early.evict_below(oldest_kept);
        self.abandon_downloads_before(oldest_kept);
        self.tried = self.tried.split_off(&oldest_kept);
        for peer in self.peers.values_mut() {
            peer.has = peer.has.split_off(&oldest_kept);
            peer.manifests_known = peer.manifests_known.split_off(&oldest_kept);
        }
        if self.next_play.is_some_and(|next| next < oldest_kept) {
            self.next_play = Some(oldest_kept);
            self.clock.jump_to(oldest_kept);
        }
        self.drop_unservable(now);
    }

    pub(crate) fn peer_mut(&mut self, peer: PeerId) -> &mut PeerState {
        self.peers
            .get_mut(&peer)
            .expect("callers pass only peers in the map")
    }

    pub(crate) fn new_request_id(&mut self) -> RequestId {
        let mut id = RequestId(self.next_req);
        self.next_req = self.next_req.wrapping_add(1);
        if id == RequestId::PUSH {
            id = RequestId(0);
            self.next_req = 1;
        }
        id
    }

    /// Stop a download, telling the peer so it stops sending. A push is left to run: the
    /// source's other pushes to that peer share its id.
    pub(crate) fn abandon(&mut self, download: Download) {
        if download.req != RequestId::PUSH {
            self.send(download.from, PeerMessage::Cancel { req: download.req });
        }
        self.release_slot(download.from, download.req);
    }

    /// Stop every download of a chunk older than `seq`.
    pub(crate) fn abandon_downloads_before(&mut self, seq: ChunkSeq) {
        let kept = self.downloads.split_off(&(seq, 0));
        for (_, stale) in std::mem::replace(&mut self.downloads, kept) {
            self.abandon(stale);
        }
    }

    pub(crate) fn release_slot(&mut self, peer: PeerId, req: RequestId) {
        if req == RequestId::PUSH {
            return; // Pushes never took a request slot.
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.inflight = state.inflight.saturating_sub(1);
        }
    }

    /// Every message to a neighbour leaves through here. Pieces are charged to the upload
    /// budget by `send_piece`, which the budget paces; everything else is charged as it
    /// goes. Control messages are small but many (a `Have` to each neighbour per block, a
    /// manifest per chunk, requests, refusals), about 8% of the stream's rate on a busy
    /// uploader, and each travels in a packet of its own: left out of the budget, they
    /// overran the uplink it is set to fit, and every piece queued behind them for
    /// seconds (measured in the simulator: requests timed out and honest links were
    /// dropped).
    pub(crate) fn send(&mut self, peer: PeerId, message: PeerMessage) {
        if !matches!(message, PeerMessage::Piece { .. }) {
            self.charge(message.encoded_len() + CONTROL_PACKET_FRAMING);
        }
        self.outputs.push_back(Output::Send(peer, message));
    }

    /// Charges the SACKs for what a neighbour sent us, but not beyond
    /// [`ACK_DEBT_LIMIT_MS`] of debt: past that a router would drop them (they are
    /// cumulative, the next covers a lost one), and a neighbour flooding small messages
    /// must not silence our uploads for longer than that.
    fn charge_acks(&mut self, bytes: usize) {
        let deep = self
            .bucket
            .as_ref()
            .is_some_and(|b| b.in_debt_for(ACK_DEBT_LIMIT_MS));
        if !deep {
            self.charge(bytes);
        }
    }

    /// Charges bytes that are not paced (control messages, acknowledgements) to the
    /// upload budget as they go.
    fn charge(&mut self, bytes: usize) {
        if let Some(bucket) = self.bucket.as_mut().filter(|_| bytes > 0) {
            // Earned up to now first: taken from a stale balance, the next refill's cap
            // at the burst would forgive the charge.
            bucket.refill(self.now);
            bucket.take(bytes);
        }
    }
}
