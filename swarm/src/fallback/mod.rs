//! Fetching from the channel's HTTP edges (`streamtorrent edge`, or a cache in front of
//! one), which the signal server names in `welcome`: a chunk peers have not delivered
//! shortly before it is due, and everything while this viewer has no neighbour (WebRTC
//! blocked or missing, nobody reachable). The driver only carries out `Output::Fetch`
//! and reports `Input::Fetched`; what to fetch, when, and whether to believe it are
//! decided here. Everything fetched is checked exactly as what a neighbour sends: the
//! init segment's and each manifest's signature, each piece's hash. An edge that serves
//! anything else is not asked again for a minute, and nothing it sent is kept. What is
//! fetched and when is decided here; `fetched.rs` checks and keeps what comes back.

mod fetched;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use protocol::{ChunkSeq, EdgeUrl, PIECE_BYTES};

use crate::chunk_store::piece_count;
use crate::config::SwarmRole;
use crate::{Millis, Output, Swarm};

/// A fetch, named by the swarm; its outcome comes back under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FetchId(pub u64);

/// What became of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// `200 OK` with this body.
    Body(Bytes),
    /// Another status, and the `Retry-After` it gave, if any.
    Status {
        status: u16,
        retry_after_ms: Option<u64>,
    },
    /// No answer: the connection failed or timed out.
    Failed(String),
}

/// Fetches in flight at once: a chunk and its manifest, and the next ones (an edge holds
/// a request for a chunk not cut yet until it is).
const MAX_IN_FLIGHT: usize = 4;
/// Chunks a viewer without neighbours fetches ahead of the one it plays next.
const ALONE_LOOKAHEAD: u64 = 2;
/// How often the index is read again while it is needed; doubled after each reading that
/// found nothing to play (a channel off the air, an edge without it), up to 32 s, so an
/// audience waiting for a broadcast does not poll its edges every two seconds.
const INDEX_EVERY_MS: u64 = 2_000;
const MAX_INDEX_DOUBLINGS: u32 = 4;
/// A 503 or 429 without `Retry-After` is tried again after this; a longer one is capped.
const RETRY_MS: u64 = 1_000;
const MAX_RETRY_MS: u64 = 10_000;
/// A block asked of a neighbour that sent nothing of it for this long counts as stuck.
const STUCK_MS: u64 = 500;
/// An edge that did not answer rests this long; one that served forged content, longer.
const REST_FAILED_MS: u64 = 5_000;
const REST_FORGED_MS: u64 = 60_000;

/// An edge's index, as far as it is believed: not signed, so it only names what to ask
/// for. The chunks it names count once their signed manifests came.
#[derive(Debug, Clone, Copy)]
struct Listing {
    newest: ChunkSeq,
    /// The newest keyframe chunk listed: where a viewer without neighbours may start.
    start: Option<ChunkSeq>,
    newest_age_ms: u64,
    read_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Index,
    Init,
    Manifest(ChunkSeq),
    Chunk(ChunkSeq),
}

/// The viewer's state toward its edges.
#[derive(Debug, Default)]
pub(crate) struct Fallback {
    edges: Vec<EdgeUrl>,
    /// Per edge: not asked before this (it failed, or served forged content).
    resting: Vec<Millis>,
    /// What each fetch asks: of which edge, and for a chunk, from which piece on.
    in_flight: BTreeMap<FetchId, (usize, Part, usize)>,
    next_id: u64,
    /// Chunk bodies that came before their manifest: from which edge, from which piece.
    early: BTreeMap<ChunkSeq, (usize, usize, Bytes)>,
    /// Not asked again before this (a 503's `Retry-After`, a chunk not cut yet).
    not_before: BTreeMap<Part, Millis>,
    /// Chunks the edge no longer has (410): never asked for again.
    gone: BTreeSet<ChunkSeq>,
    index_read_at: Option<Millis>,
    /// What the last reading of the index said, if it showed this broadcast.
    listing: Option<Listing>,
    /// Readings of the index in a row that found nothing to play.
    index_misses: u32,
    /// The last reading of the index showed this broadcast.
    holds_broadcast: bool,
    /// Since when this viewer has had no neighbour.
    alone_since: Option<Millis>,
}

impl Fallback {
    /// Drops what concerns only chunks before `oldest`.
    fn forget_before(&mut self, oldest: ChunkSeq) {
        self.gone = self.gone.split_off(&oldest);
        self.early = self.early.split_off(&oldest);
        self.not_before.retain(|part, _| match part {
            Part::Manifest(seq) | Part::Chunk(seq) => *seq >= oldest,
            Part::Index | Part::Init => true,
        });
    }

    /// A reading of the index found nothing to play: read it less often.
    fn index_missed(&mut self) {
        self.index_misses += 1;
        self.holds_broadcast = false;
    }

    fn index_every_ms(&self) -> u64 {
        INDEX_EVERY_MS << self.index_misses.min(MAX_INDEX_DOUBLINGS)
    }

    /// The edge to ask: the first in the server's order that is not resting. Later ones
    /// are for failover; an audience larger than one edge carries belongs behind a load
    /// balancer or CDN named as one edge.
    fn edge(&self, now: Millis) -> Option<usize> {
        (0..self.edges.len()).find(|&i| self.resting.get(i).is_none_or(|until| now >= *until))
    }

    fn asked(&self, part: Part) -> bool {
        self.in_flight.values().any(|(_, p, _)| *p == part)
    }

    fn may_ask(&self, part: Part, now: Millis) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT
            && !self.asked(part)
            && self.not_before.get(&part).is_none_or(|at| now >= *at)
    }

    fn rest(&mut self, edge: usize, until: Millis) {
        if let Some(resting) = self.resting.get_mut(edge) {
            *resting = (*resting).max(until);
        }
    }
}

impl Swarm {
    /// The signal server named these edges (maybe none).
    pub(crate) fn set_edges(&mut self, edges: Vec<EdgeUrl>) {
        if self.fallback.edges != edges {
            // Fetches in flight name edges of the old list: their answers are dropped.
            self.fallback = Fallback {
                resting: vec![Millis(0); edges.len()],
                edges,
                next_id: self.fallback.next_id,
                alone_since: self.fallback.alone_since,
                ..Fallback::default()
            };
        }
    }

    /// Where a viewer without neighbours starts: the newest keyframe chunk the edge listed,
    /// once its signed manifest (which says it is a keyframe) came.
    pub(crate) fn edge_start(&self) -> Option<ChunkSeq> {
        let start = self.fallback.listing?.start?;
        self.store
            .manifests
            .get(&start)
            .is_some_and(|m| m.keyframe)
            .then_some(start)
    }

    /// Whether this viewer has been without neighbours for `Config::edge_after_ms`.
    fn cut_off(&self, now: Millis) -> bool {
        self.fallback
            .alone_since
            .is_some_and(|since| now >= since + self.config.edge_after_ms)
    }

    /// Whether the start is overdue: no init segment or start chunk yet.
    fn start_overdue(&self, now: Millis) -> bool {
        (self.init.is_none() || self.next_play.is_none())
            && self
                .first_input
                .is_some_and(|at| now >= at + self.config.edge_after_ms)
    }

    /// Asks the edges for whatever is due now; part of each round of scheduling.
    pub(crate) fn fetch_from_edges(&mut self, now: Millis) {
        if self.peers.is_empty() {
            self.fallback.alone_since.get_or_insert(now);
        } else {
            self.fallback.alone_since = None;
        }
        if self.fallback.edges.is_empty() || self.config.role() != SwarmRole::Viewer {
            return;
        }
        let oldest = self.next_play.or(self.evicted_below).unwrap_or(ChunkSeq(0));
        self.fallback.forget_before(oldest);
        self.store_early(now);
        let cut_off = self.cut_off(now);
        let lost = cut_off || self.start_overdue(now) || self.starving(now);
        let every = self.fallback.index_every_ms();
        let index_due = self
            .fallback
            .index_read_at
            .is_none_or(|at| now >= at + every);
        if lost && index_due {
            self.fetch(now, Part::Index);
        }
        // Once the edge's index shows it holds this broadcast: before that, an audience
        // waiting for a broadcast would poll for its init segment.
        if self.init.is_none()
            && self.fallback.holds_broadcast
            && (cut_off || self.start_overdue(now))
        {
            self.fetch(now, Part::Init);
        }
        // Before the start: the manifests that make the listing's chunks count.
        if let Some(listing) = self.fallback.listing.filter(|_| self.next_play.is_none()) {
            for seq in listing.start.into_iter().chain([listing.newest]) {
                if !self.store.manifests.contains_key(&seq) {
                    self.fetch(now, Part::Manifest(seq));
                }
            }
        }
        for seq in self.edge_window(now) {
            if !self.store.manifests.contains_key(&seq) {
                self.fetch(now, Part::Manifest(seq));
            }
            // A body here waits for its manifest.
            if !self.fallback.early.contains_key(&seq) {
                self.fetch(now, Part::Chunk(seq));
            }
        }
    }

    /// Bodies that came before their manifest, whose manifest is here now (from an edge
    /// or a neighbour).
    fn store_early(&mut self, now: Millis) {
        let ready: Vec<ChunkSeq> = (self.fallback.early.keys())
            .filter(|seq| self.store.manifests.contains_key(seq))
            .copied()
            .collect();
        for seq in ready {
            if let Some((edge, first_piece, body)) = self.fallback.early.remove(&seq) {
                self.store_fetched(now, edge, seq, first_piece, body);
            }
        }
    }

    /// The pieces of chunk `seq` to fetch: from its first missing piece to its last (the
    /// whole chunk while its size is unknown), as piece indices and their byte range.
    fn missing_span(&self, seq: ChunkSeq) -> Option<(usize, (u64, u64))> {
        let total = self.store.manifests.get(&seq)?.total as usize;
        let held = self.store.chunks.get(&seq)?;
        let count = piece_count(total);
        let first = held.first_missing(0..count)?;
        let last = (first..count).rev().find(|&i| held.piece(i).is_none())?;
        let end_byte = ((last + 1) * PIECE_BYTES).min(total);
        Some((first, ((first * PIECE_BYTES) as u64, end_byte as u64 - 1)))
    }

    /// Whether peers will not deliver chunk `seq` by themselves: a block of it is asked of
    /// nobody, or of a neighbour that sent nothing of it for `STUCK_MS`.
    fn stuck(&self, seq: ChunkSeq, now: Millis) -> bool {
        let Some(total) = self.store.manifests.get(&seq).map(|m| m.total as usize) else {
            return true; // No neighbour sent any of it yet.
        };
        let held = self.store.chunks.get(&seq);
        let block = self.config.block_pieces.max(1);
        let count = piece_count(total);
        (0..count).step_by(block).any(|first| {
            let end = (first + block).min(count);
            if held.is_some_and(|h| h.first_missing(first..end).is_none()) {
                return false;
            }
            match self.downloads.get(&(seq, first / block)) {
                None => true,
                Some(download) => now - download.last_progress > STUCK_MS,
            }
        })
    }

    /// When the edges may next need a round: the start turning overdue, the index to
    /// read again, a chunk nearing its deadline without its pieces, a retry, an edge back
    /// from its rest. Deadlines already past are among them: the upkeep names only those
    /// after its last round (`timers.rs`).
    pub(crate) fn edges_due(&self) -> Vec<Millis> {
        if self.fallback.edges.is_empty() || self.config.role() != SwarmRole::Viewer {
            return Vec::new();
        }
        let after = self.config.edge_after_ms;
        let alone = self.fallback.alone_since.map(|since| since + after);
        let start = self
            .first_input
            .filter(|_| self.init.is_none() || self.next_play.is_none())
            .map(|at| at + after);
        let every = self.fallback.index_every_ms();
        let index = self.fallback.index_read_at.map(|at| at + every);
        let retries = self.fallback.not_before.values().copied();
        let resting = self.fallback.resting.iter().copied();
        // A neighbour's block turning stuck, and the swarm starting to starve.
        let window = self.fetch_window();
        let stuck = self
            .downloads
            .iter()
            .filter(|((seq, _), _)| window.as_ref().is_some_and(|w| w.contains(&seq.0)))
            .map(|(_, d)| d.last_progress + (STUCK_MS + 1));
        let starving = self.starving_from();
        let leads = self.fetch_window().into_iter().flatten().filter_map(|seq| {
            let seq = ChunkSeq(seq);
            if self.store.is_complete(seq) || self.fallback.gone.contains(&seq) {
                return None;
            }
            let due = self
                .clock
                .expected(seq, self.config.target_buffer_ms, self.now)?;
            Some(Millis(due.0.saturating_sub(self.config.edge_lead_ms)))
        });
        alone
            .into_iter()
            .chain(start)
            .chain(index)
            .chain(retries)
            .chain(resting)
            .chain(leads)
            .chain(stuck)
            .chain(starving)
            .collect()
    }

    /// What came of a fetch.
    pub(crate) fn on_fetched(&mut self, now: Millis, id: FetchId, outcome: FetchOutcome) {
        let Some((edge, part, first_piece)) = self.fallback.in_flight.remove(&id) else {
            return; // Not ours, or answered already.
        };
        if part == Part::Index && !matches!(outcome, FetchOutcome::Body(_)) {
            self.fallback.index_missed();
        }
        match outcome {
            FetchOutcome::Body(body) => self.on_body(now, edge, part, first_piece, body),
            FetchOutcome::Status { status: 410, .. } => match part {
                Part::Manifest(seq) | Part::Chunk(seq) => {
                    self.fallback.gone.insert(seq);
                }
                // Another broadcast: the server will name it.
                Part::Index | Part::Init => self.retry(part, now, Some(INDEX_EVERY_MS)),
            },
            FetchOutcome::Status {
                status: 503 | 429,
                retry_after_ms,
            } => self.retry(part, now, retry_after_ms),
            // Too far ahead, for a viewer whose clock runs ahead of the edge, or of a
            // broadcast the edge has not seen yet.
            FetchOutcome::Status { status: 404, .. }
                if matches!(part, Part::Chunk(_) | Part::Manifest(_)) =>
            {
                self.retry(part, now, None)
            }
            FetchOutcome::Status { status, .. } => {
                self.edge_failed(now, edge, format!("answered {status}"))
            }
            FetchOutcome::Failed(reason) => self.edge_failed(now, edge, reason),
        }
    }

    /// The chunks to fetch from an edge now: any still missing, for a viewer cut off from
    /// peers; otherwise those due within `edge_lead_ms` that peers are not delivering.
    fn edge_window(&self, now: Millis) -> Vec<ChunkSeq> {
        let (Some(start), Some(newest)) = (self.next_play, self.newest_known) else {
            return Vec::new();
        };
        let cut_off = self.cut_off(now);
        // Cut off, the next chunk is asked for before it is cut: the edge holds the
        // request until it is.
        let end = if cut_off {
            (newest.0.saturating_add(1)).min(start.0.saturating_add(ALONE_LOOKAHEAD))
        } else {
            newest.0.min(start.0.saturating_add(self.config.lookahead))
        };
        (start.0..=end)
            .map(ChunkSeq)
            .filter(|seq| !self.store.is_complete(*seq) && !self.fallback.gone.contains(seq))
            .filter(|seq| {
                cut_off
                    || (self
                        .clock
                        .expected(*seq, self.config.target_buffer_ms, now)
                        .is_some_and(|due| now + self.config.edge_lead_ms >= due)
                        && self.stuck(*seq, now))
            })
            .collect()
    }

    fn fetch(&mut self, now: Millis, part: Part) {
        if !self.fallback.may_ask(part, now) {
            return;
        }
        let Some(edge) = self.fallback.edge(now) else {
            return;
        };
        let base = &self.fallback.edges[edge];
        let (channel, session) = (
            &self.config.broadcast.channel,
            self.config.broadcast.session,
        );
        let (mut first_piece, mut range) = (0, None);
        let url = match part {
            Part::Index => base.index(channel),
            Part::Init => base.init(channel, session),
            Part::Manifest(seq) => base.manifest(channel, session, seq),
            Part::Chunk(seq) => {
                // Only what is missing of a chunk partly here.
                if let Some((first, bytes)) = self.missing_span(seq) {
                    (first_piece, range) = (first, Some(bytes));
                }
                base.chunk(channel, session, seq)
            }
        };
        if part == Part::Index {
            self.fallback.index_read_at = Some(now);
        }
        let id = FetchId(self.fallback.next_id);
        self.fallback.next_id += 1;
        self.fallback
            .in_flight
            .insert(id, (edge, part, first_piece));
        self.outputs.push_back(Output::Fetch { id, url, range });
    }

    fn retry(&mut self, part: Part, now: Millis, after_ms: Option<u64>) {
        let wait = after_ms
            .unwrap_or(RETRY_MS)
            .clamp(RETRY_MS / 4, MAX_RETRY_MS);
        self.fallback.not_before.insert(part, now + wait);
    }

    fn edge_failed(&mut self, now: Millis, edge: usize, reason: String) {
        self.fallback.rest(edge, now + REST_FAILED_MS);
        self.edge_trouble(edge, reason);
    }

    /// The edge served something the channel key did not sign: none of it is kept.
    fn edge_forged(&mut self, now: Millis, edge: usize, reason: String) {
        self.fallback.rest(edge, now + REST_FORGED_MS);
        self.edge_trouble(edge, reason);
    }

    fn edge_trouble(&mut self, edge: usize, reason: String) {
        if let Some(edge) = self.fallback.edges.get(edge).cloned() {
            self.outputs.push_back(Output::EdgeTrouble { edge, reason });
        }
    }
}
