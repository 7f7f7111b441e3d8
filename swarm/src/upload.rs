//! Serving chunks: admitting requests within the upload budget, and sending pieces most
//! urgent first while the links have room.

use std::cmp::Reverse;

use protocol::{ChunkSeq, PeerId, PeerMessage, RequestId, PIECE_BYTES};

use crate::hostile::{DropCause, FLOOD_REFUSALS, FLOOD_WINDOW_MS};
use crate::peer::ServeJob;
use crate::{Millis, Swarm};

/// Drivers report a link's queued bytes (`NodeInput::LinkBuffered`) whenever its queue
/// drains to this or less, as a browser's `bufferedamountlow` does with this threshold.
/// It is below one piece, so every piece sent is followed by a report once it has left:
/// a link the swarm stopped filling at its high-water mark always hears it drained, with
/// no periodic report needed.
pub const LINK_DRAINED_BELOW: u64 = 4 * 1024;

/// Deadlines this close together count as equally urgent.
const DEADLINE_SLACK_MS: u64 = 500;

/// Push or not, spreading or not, then for urgent jobs the deadline bucket and for
/// spreading ones the newest chunk first, forwarding capacity, arrival order.
type Rank = (bool, bool, u64, Reverse<u64>, u64);

impl Swarm {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_request(
        &mut self,
        now: Millis,
        peer: PeerId,
        req: RequestId,
        seq: ChunkSeq,
        first: u16,
        count: u16,
        deadline_ms: u16,
    ) {
        let (first, count) = (usize::from(first), usize::from(count));
        let held = self.store.chunks.get(&seq);
        let pieces = held.map_or(0, |held| held.piece_count());
        let end = first.saturating_add(count).min(pieces);
        // Only what is here, or arriving: a block whose first piece is here and whose
        // download is under way (what `announce` advertised).
        let here = first < end
            && held.is_some_and(|h| {
                h.first_missing(first..end).is_none()
                    || (h.piece(first).is_some()
                        && self.downloads.contains_key(&(seq, self.block_of(first))))
            });
        let queue_full = self.peers[&peer].serving.len() >= self.config.max_serving_per_peer;
        if !self.serves() || !here || queue_full || self.backlog_full() {
            // An honest neighbour keeps `max_requests_per_peer` (4) outstanding, asks only
            // for what was announced to it, and after a refusal asks others for a while:
            // dozens of refusals a second are a flood.
            if self.peer_mut(peer).refusals.count(now) >= FLOOD_REFUSALS {
                let reason = format!(
                    "{FLOOD_REFUSALS} requests refused within {FLOOD_WINDOW_MS} ms: a flood"
                );
                self.drop_peer(peer, DropCause::Flooding, reason);
                return;
            }
            self.stats.requests_refused += 1;
            self.send(peer, PeerMessage::Absent { req, seq });
            return;
        }
        self.serve_order += 1;
        let job = ServeJob {
            req,
            seq,
            first,
            next: first,
            end,
            arrived: now,
            deadline: now + u64::from(deadline_ms),
            order: self.serve_order,
        };
        self.peer_mut(peer).serving.push_back(job);
    }

    /// Pushes pieces `pieces` of `seq` to `peer` unasked: announced as pushed (so it asks
    /// nobody else for them), then sent piece by piece as they are here, before requests.
    pub(crate) fn queue_push(
        &mut self,
        peer: PeerId,
        seq: ChunkSeq,
        pieces: std::ops::Range<usize>,
        deadline: Millis,
    ) {
        let Some(held) = self.store.chunks.get(&seq) else {
            return;
        };
        let have = held.have(seq, pieces.clone(), true);
        self.send(peer, have);
        self.serve_order += 1;
        let job = ServeJob {
            req: RequestId::PUSH,
            seq,
            first: pieces.start,
            next: pieces.start,
            end: pieces.end,
            arrived: self.now,
            deadline,
            order: self.serve_order,
        };
        self.peer_mut(peer).serving.push_back(job);
    }

    /// More queued upload than the budget moves in `serve_backlog_ms`: a new request
    /// would be served too late to help.
    fn backlog_full(&self) -> bool {
        let Some(limit) = self.config.upload_limit else {
            return false;
        };
        let queued: usize = self
            .peers
            .values()
            .flat_map(|p| p.serving.iter())
            .map(|job| (job.end - job.next) * PIECE_BYTES)
            .sum();
        queued as u64 > limit.bytes_in(self.config.serve_backlog_ms)
    }

    /// Send pieces while the budget and the links allow: the oldest chunk first (it is due
    /// soonest everywhere), then the oldest request.
    pub(crate) fn pump(&mut self, now: Millis) {
        if let Some(bucket) = &mut self.bucket {
            bucket.refill(now);
        }
        while self.bucket.as_ref().is_none_or(|b| b.can_send()) {
            let Some((peer, index)) = self.most_urgent_job() else {
                break;
            };
            self.send_piece(peer, index);
        }
    }

    pub(crate) fn most_urgent_job(&self) -> Option<(PeerId, usize)> {
        let mut best: Option<(Rank, PeerId, usize)> = None;
        for (id, state) in &self.peers {
            if state.buffered >= self.config.link_high_water {
                continue;
            }
            for (index, job) in state.serving.iter().enumerate() {
                // The source's pushes come first and take turns piece by piece, so every
                // pushed viewer starts relaying at once. Requests due soon go by deadline
                // (coarsely). The rest are spreading the stream: the newest chunk first,
                // as it is the rarest, and a fresh chunk held back behind older ones
                // reaches the swarm only once it is urgent everywhere (Bonald et al.'s
                // "latest useful chunk"; measured in docs/benchmarks.md). Then to whoever
                // forwards most (fresh pieces reach the fast uploaders first and fan out
                // from there), then in order of arrival.
                let push = job.req == RequestId::PUSH;
                let order = if push { job.next as u64 } else { job.order };
                let spreading = job.deadline > self.now + self.config.urgent_ms;
                let when = if spreading {
                    u64::MAX - job.seq.0
                } else {
                    job.deadline.0 / DEADLINE_SLACK_MS
                };
                let rank = (!push, spreading, when, Reverse(state.forwards()), order);
                // The rank first: it is cheap, and most jobs lose on it.
                if best.is_none_or(|(r, _, _)| rank < r) && self.job_ready(job) {
                    best = Some((rank, *id, index));
                }
            }
        }
        best.map(|(_, peer, index)| (peer, index))
    }

    /// Whether some link with room has a job whose next piece is here: what
    /// [`Swarm::most_urgent_job`] would find something among, without ranking them.
    pub(crate) fn any_job_ready(&self) -> bool {
        self.peers
            .values()
            .filter(|state| state.buffered < self.config.link_high_water)
            .any(|state| state.serving.iter().any(|job| self.job_ready(job)))
    }

    fn job_ready(&self, job: &ServeJob) -> bool {
        self.store
            .chunks
            .get(&job.seq)
            .is_some_and(|h| h.piece(job.next).is_some())
    }

    fn send_piece(&mut self, peer: PeerId, index: usize) {
        let job = self.peers[&peer].serving[index];
        let seq = job.seq;
        if job.next == job.first && job.req != RequestId::PUSH {
            self.stats.serve_wait_ms.record(self.now - job.arrived);
        }
        let held = &self.store.chunks[&job.seq];
        let data = held
            .piece(job.next)
            .expect("most_urgent_job checked the piece is held")
            .clone();
        let message = PeerMessage::Piece {
            req: job.req,
            seq: job.seq,
            offset: (job.next * PIECE_BYTES) as u32,
            total: held.total as u32,
            data,
        };
        let wire = message.encoded_len();
        let len = wire - protocol::PIECE_HEADER_BYTES;
        let state = self.peer_mut(peer);
        state.buffered += wire as u64;
        state.bytes_up += len as u64;
        let job = &mut state.serving[index];
        job.next += 1;
        if job.next >= job.end {
            state.serving.remove(index);
        }
        if let Some(bucket) = &mut self.bucket {
            bucket.take(wire);
        }
        self.stats.bytes_uploaded += len as u64;
        // The first piece of a chunk to a neighbour follows its signed manifest.
        self.send_manifest(peer, seq);
        self.send(peer, message);
    }

    /// Jobs whose chunk left the window, or whose requester has played past them, can
    /// never help: say so, so the requester moves on, and spend the upload elsewhere.
    pub(crate) fn drop_unservable(&mut self, now: Millis) {
        let mut gone = Vec::new();
        for (id, state) in &mut self.peers {
            state.serving.retain(|job| {
                let keep = self.store.chunks.contains_key(&job.seq) && job.deadline >= now;
                if !keep && job.req != RequestId::PUSH {
                    gone.push((*id, job.req, job.seq));
                }
                keep
            });
        }
        for (peer, req, seq) in gone {
            self.send(peer, PeerMessage::Absent { req, seq });
        }
    }
}
