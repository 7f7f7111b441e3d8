//! What this peer knows about each neighbour, and the transfers between them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::{ChunkSeq, PeerId, RequestId};

use crate::hostile::RefusalWindow;
use crate::parents::AsParent;
use crate::piece_set::PieceSet;
use crate::{BytesPerSec, Millis};

/// Assumed delivery rate of a neighbour nothing has been fetched from yet (bytes/s).
pub(crate) const PRIOR_RATE: u64 = 200_000;
/// Assumed round trip of a neighbour nothing has been fetched from yet.
pub(crate) const PRIOR_LATENCY_MS: u64 = 150;

/// A chunk a neighbour announced, and which of its pieces it holds.
#[derive(Debug, Clone)]
pub(crate) struct Announced {
    pub keyframe: bool,
    pub total: usize,
    pub pieces: PieceSet,
}

#[derive(Debug, Default)]
pub(crate) struct PeerState {
    pub is_source: bool,
    /// The SACKs our end of the link sends for what it receives, charged to the budget.
    pub acks: crate::wire::Acknowledgements,
    /// Chunks the peer announced, whole or in blocks.
    pub has: BTreeMap<ChunkSeq, Announced>,
    /// Our block requests outstanding to it.
    pub inflight: usize,
    /// Bytes per second of our block downloads from it once they flow, smoothed; `None`
    /// until measured.
    pub rate: Option<u64>,
    /// From our request to its first piece, smoothed.
    pub latency_ms: Option<u64>,
    /// Consecutive requests that timed out.
    pub strikes: u8,
    /// Bytes the driver last reported still queued on the link, plus what went out since.
    pub buffered: u64,
    /// Pieces it asked us for (or the source pushes), served most urgent first.
    pub serving: VecDeque<ServeJob>,
    /// It refused a request (busy or missing the piece): ask others until then.
    pub busy_until: Millis,
    /// The upload budget it advertised; `None` for unlimited (or not yet told).
    pub upload: Option<BytesPerSec>,
    /// Payload bytes received from it (new pieces only) and sent to it.
    pub bytes_down: u64,
    pub bytes_up: u64,
    /// Its requests refused lately: many in a short time make it a flooder.
    pub refusals: RefusalWindow,
    /// Chunks whose signed manifest it has: sent by us or by it.
    pub manifests_known: BTreeSet<ChunkSeq>,
    /// The substreams we push to it (its substream count and our accepted mask).
    pub children: Option<(u8, u16)>,
    /// How it would do as our parent, substream by substream.
    pub as_parent: AsParent,
}

impl PeerState {
    /// What it is expected to deliver to us: measured, or else a share of what it said
    /// it uploads (it serves several neighbours).
    pub fn rate(&self) -> u64 {
        let advertised = self.upload.map_or(PRIOR_RATE, |u| u.0 / 2);
        self.rate.unwrap_or(advertised).max(1)
    }

    pub fn latency(&self) -> u64 {
        self.latency_ms.unwrap_or(PRIOR_LATENCY_MS)
    }

    /// How much it can forward, for ranking who gets fresh pieces first.
    pub fn forwards(&self) -> u64 {
        self.upload.map_or(u64::MAX, |u| u.0)
    }
}

/// Pieces `next..end` of a chunk, owed to a neighbour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeJob {
    pub req: RequestId,
    pub seq: ChunkSeq,
    /// The first piece asked for, the next to send, and the end.
    pub first: usize,
    pub next: usize,
    pub end: usize,
    /// When the request came (or the push was queued).
    pub arrived: Millis,
    /// When the requester plays it; served earliest deadline first, dropped once past.
    pub deadline: Millis,
    /// Arrival order: among equally urgent jobs the oldest goes first, so one requester
    /// gets its block fast rather than all getting theirs slowly.
    pub order: u64,
}

/// A block of pieces being fetched from one neighbour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Download {
    pub from: PeerId,
    pub req: RequestId,
    pub first: usize,
    pub end: usize,
    pub started: Millis,
    pub last_progress: Millis,
    /// When the first piece came, and its size.
    pub first_piece: Option<(Millis, usize)>,
}

impl Download {
    pub fn new(
        from: PeerId,
        req: RequestId,
        pieces: std::ops::Range<usize>,
        now: Millis,
    ) -> Download {
        Download {
            from,
            req,
            first: pieces.start,
            end: pieces.end,
            started: now,
            last_progress: now,
            first_piece: None,
        }
    }
}
