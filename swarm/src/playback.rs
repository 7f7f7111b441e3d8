//! The viewer's playout schedule: where to start, when each chunk is due, handing chunks to
//! the player strictly in order, and skipping what missed its deadline.
//!
//! The schedule follows a real player: chunk `s + 1` is due one chunk duration after `s`
//! started playing. A chunk that arrives late stalls playback until it arrives (the
//! schedule, and the delay behind live, shift by the stall); a chunk still missing while a
//! later one is ready is skipped once it is `skip_grace_ms` overdue.

use protocol::ChunkSeq;

use crate::{Millis, Output, Swarm};

/// The live edge's pace and position as seen from here, and the playout schedule.
#[derive(Debug)]
pub(crate) struct Clock {
    /// Chunk duration, learned from how fast fresh chunks are announced.
    chunk_ms: u64,
    /// The newest chunk heard of, when, and whether it was heard fresh (a `Have` as it
    /// appeared) rather than from a buffer map listing old chunks.
    edge: Option<(ChunkSeq, Millis, bool)>,
    /// The next chunk to play and when it is due, once playback has started.
    next_due: Option<(ChunkSeq, Millis)>,
}

impl Clock {
    pub fn new(chunk_ms_hint: u64) -> Clock {
        Clock {
            chunk_ms: chunk_ms_hint.max(1),
            edge: None,
            next_due: None,
        }
    }

    pub fn observe_edge(&mut self, now: Millis, seq: ChunkSeq, fresh: bool) {
        if let Some((edge, at, true)) = self.edge {
            if fresh && seq > edge {
                let sample = (now - at) / (seq.0 - edge.0);
                // Smoothed: one slow announcement path must not warp the schedule.
                self.chunk_ms = ((7 * self.chunk_ms + sample) / 8).clamp(10, 60_000);
            }
        }
        if self.edge.is_none_or(|(edge, _, _)| seq > edge) {
            self.edge = Some((seq, now, fresh));
        }
    }

    /// A neighbour's buffer map says its newest chunk `seq` was cut `age_ms` ago: as good
    /// as hearing of it fresh, `age_ms` earlier.
    pub fn observe_aged_edge(&mut self, now: Millis, seq: ChunkSeq, age_ms: u64) {
        if self.edge.is_none_or(|(edge, _, _)| seq > edge) {
            self.edge = Some((seq, Millis(now.0.saturating_sub(age_ms)), true));
        }
    }

    /// Playback has a schedule (its first chunk was planned).
    pub fn started(&self) -> bool {
        self.next_due.is_some()
    }

    /// When the newest chunk was first heard of.
    pub fn edge_heard(&self) -> Option<Millis> {
        self.edge.map(|(_, at, _)| at)
    }

    /// The next chunk to play and when it is due, once playback has started.
    pub fn next_due(&self) -> Option<(ChunkSeq, Millis)> {
        self.next_due
    }

    /// The newest chunk heard of, when, and whether it was heard fresh.
    pub fn edge(&self) -> Option<(ChunkSeq, Millis, bool)> {
        self.edge
    }

    pub fn chunk_ms(&self) -> u64 {
        self.chunk_ms
    }

    /// When `seq` was cut at the source, judged from when the edge was heard of.
    pub fn cut_at(&self, seq: ChunkSeq) -> Option<Millis> {
        let (edge, at, _) = self.edge?;
        let back = edge.0.saturating_sub(seq.0).saturating_mul(self.chunk_ms);
        let ahead = seq.0.saturating_sub(edge.0).saturating_mul(self.chunk_ms);
        Some(Millis(at.0.saturating_sub(back)) + ahead)
    }

    /// When `seq` is expected to play: as `due`, but playback waits (stalls) for a late
    /// chunk, so nothing is expected before now.
    pub fn expected(&self, seq: ChunkSeq, target_buffer_ms: u64, now: Millis) -> Option<Millis> {
        match self.next_due {
            Some((next, at)) => {
                let ahead = seq.0.saturating_sub(next.0).saturating_mul(self.chunk_ms);
                Some(at.max(now) + ahead)
            }
            None => Some((self.cut_at(seq)? + target_buffer_ms).max(now)),
        }
    }

    /// Playback fell out of the window: the next chunk to play is `seq`, at the time the
    /// old one was due.
    pub fn jump_to(&mut self, seq: ChunkSeq) {
        if let Some((_, at)) = self.next_due {
            self.next_due = Some((seq, at));
        }
    }

    /// The playout delay changed from `old_ms` to `new_ms`: every chunk not yet played is
    /// due that much later (or sooner).
    pub fn shift_schedule(&mut self, old_ms: u64, new_ms: u64) {
        if let Some((seq, at)) = self.next_due {
            let at = if new_ms >= old_ms {
                at + (new_ms - old_ms)
            } else {
                Millis(at.0.saturating_sub(old_ms - new_ms))
            };
            self.next_due = Some((seq, at));
        }
    }

    /// When `seq` plays on the schedule (or would, if playback started now).
    pub fn due(&self, seq: ChunkSeq, target_buffer_ms: u64) -> Option<Millis> {
        match self.next_due {
            Some((next, at)) => {
                let ahead = seq.0.saturating_sub(next.0).saturating_mul(self.chunk_ms);
                Some(at + ahead)
            }
            None => Some(self.cut_at(seq)? + target_buffer_ms),
        }
    }
}

impl Swarm {
    /// A viewer chose another playout delay (a latency preset): the chunks not yet played
    /// are fetched for, and handed over at, the new delay.
    pub fn set_target_buffer(&mut self, ms: u64) {
        let old = std::mem::replace(&mut self.config.target_buffer_ms, ms);
        self.clock.shift_schedule(old, ms);
    }

    /// A joining viewer starts at the newest chunk that begins with a keyframe.
    pub(crate) fn choose_start(&mut self) {
        if self.next_play.is_some() || self.init.is_none() {
            return;
        }
        let held = self
            .store
            .chunks
            .iter()
            .filter(|(_, h)| h.keyframe)
            .map(|(seq, _)| *seq);
        let announced = self.peers.values().flat_map(|p| {
            p.has
                .iter()
                .filter(|(_, a)| a.keyframe)
                .map(|(seq, _)| *seq)
        });
        // Without neighbours, an edge's listing says where playback may start.
        self.next_play = held.chain(announced).chain(self.edge_start()).max();
    }

    pub(crate) fn deliver(&mut self, now: Millis) {
        if !self.init_delivered {
            let Some(init) = &self.init else {
                return;
            };
            let (mime, data) = (init.mime.clone(), init.data.clone());
            self.outputs.push_back(Output::Init { mime, data });
            self.init_delivered = true;
        }
        let Some(mut first) = self.next_play else {
            return;
        };
        if self.clock.next_due.is_none() {
            // Start on whichever keyframe chunk came in whole first: under load the one
            // chosen at joining may be overtaken by a newer one.
            let newest_whole = self
                .store
                .chunks
                .range(first..)
                .rev()
                .find(|(_, held)| held.keyframe && held.is_complete())
                .map(|(seq, _)| *seq);
            // Only when the chosen one is not here: every start plays `target_buffer_ms`
            // after its chunk's cut, so the older chunk starts sooner at the same delay.
            let overtaken =
                newest_whole.filter(|whole| *whole > first && !self.store.is_complete(first));
            if let Some(whole) = overtaken {
                self.abandon_downloads_before(whole);
                self.next_play = Some(whole);
                first = whole;
            }
            let due = self.clock.due(first, self.config.target_buffer_ms);
            let hopeless = self.config.skip_grace_ms + RESTART_AFTER_CHUNKS * self.clock.chunk_ms;
            // Still arriving, however slowly: starting late beats never starting.
            let arriving = self
                .downloads
                .range((first, 0)..(first.next(), 0))
                .next()
                .is_some();
            if !arriving && due.is_some_and(|due| now >= due + hopeless) {
                // The first chunk is nowhere to be had: start again, nearer live.
                self.restart_from_newer(first);
                return;
            }
            if !self.plan_playout(now, first) {
                return;
            }
        }
        while let Some((seq, due)) = self.clock.next_due {
            if self.too_far_behind(seq, now) {
                // Catch up with live: a viewer far behind also holds chunks its
                // neighbours no longer want, and wants chunks they have dropped.
                self.skip(seq, due.max(now));
                continue;
            }
            if let Some(chunk) = self.store.complete(seq) {
                // Late: playback stalled until now, and the schedule moves with it.
                let starts = due.max(now);
                if now > due {
                    self.stats.stalls += 1;
                }
                self.outputs.push_back(Output::Play { chunk, due: starts });
                self.stats.chunks_played += 1;
                self.advance(seq, starts + self.clock.chunk_ms);
                continue;
            }
            let later_ready = self
                .store
                .chunks
                .range(seq.next()..)
                .any(|(_, held)| held.is_complete());
            if !later_ready || now < due + self.config.skip_grace_ms {
                break;
            }
            // Late live data is worthless: the player jumps the gap, the next chunk
            // takes this one's place in the schedule.
            self.skip(seq, due.max(now));
        }
    }

    /// Playing `seq` now would be more than `max_lag_ms` behind its cut at the source,
    /// and a newer chunk is here to jump to (skipping toward nothing would only throw
    /// away what is still arriving).
    fn too_far_behind(&self, seq: ChunkSeq, now: Millis) -> bool {
        let Some(cut) = self.clock.cut_at(seq) else {
            return false;
        };
        let behind = now - cut;
        let newer_here = self
            .store
            .chunks
            .range(seq.next()..)
            .any(|(_, held)| held.is_complete());
        if newer_here && behind > self.config.max_lag_ms {
            return true;
        }
        // Behind the target with several whole chunks waiting: the mesh delivers faster
        // than this viewer's delay needs, so drop a chunk to move nearer live.
        let ahead = (1..=CATCH_UP_WITH_CHUNKS).all(|k| self.store.is_complete(ChunkSeq(seq.0 + k)));
        ahead && behind > self.config.target_buffer_ms + self.clock.chunk_ms
    }

    fn skip(&mut self, seq: ChunkSeq, next_due: Millis) {
        self.outputs.push_back(Output::Skipped(seq));
        self.stats.chunks_missed += 1;
        self.abandon_downloads_before(seq.next());
        self.advance(seq, next_due);
    }

    fn advance(&mut self, played: ChunkSeq, next_due: Millis) {
        self.next_play = Some(played.next());
        self.clock.next_due = Some((played.next(), next_due));
    }

    fn restart_from_newer(&mut self, stale: ChunkSeq) {
        self.abandon_downloads_before(stale.next());
        self.next_play = None;
        self.choose_start();
        if self.next_play.is_some_and(|next| next <= stale) {
            // Nothing newer announced yet; wait for the next chunk.
            self.next_play = Some(stale.next());
        }
    }

    /// Fix when the first chunk plays: `target_buffer_ms` after it was cut, once the first
    /// chunk is here and the edge's timing is known (a fresh announcement, or failing one,
    /// two chunk durations of waiting).
    fn plan_playout(&mut self, now: Millis, first: ChunkSeq) -> bool {
        if !self.store.is_complete(first) {
            return false;
        }
        let Some((_, heard, fresh)) = self.clock.edge else {
            return false;
        };
        if !fresh && now - heard < 2 * self.clock.chunk_ms {
            return false;
        }
        let planned = self
            .clock
            .due(first, self.config.target_buffer_ms)
            .unwrap_or(now);
        let at = planned.max(now);
        self.clock.next_due = Some((first, at));
        self.stats.startup_ms = Some(at - self.first_input.unwrap_or(now));
        true
    }
}

/// Whole chunks that must be waiting before a viewer behind its target delay skips one.
const CATCH_UP_WITH_CHUNKS: u64 = 3;

/// A first chunk still missing this many chunk durations past its due time (and the
/// grace) is given up on.
pub(crate) const RESTART_AFTER_CHUNKS: u64 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_delay_moves_the_schedule_by_the_difference() {
        let mut clock = Clock::new(1_000);
        clock.shift_schedule(1_500, 4_000);
        assert_eq!(clock.next_due(), None, "nothing planned, nothing moves");
        clock.next_due = Some((ChunkSeq(7), Millis(10_000)));
        clock.shift_schedule(1_500, 4_000);
        assert_eq!(clock.next_due(), Some((ChunkSeq(7), Millis(12_500))));
        clock.shift_schedule(4_000, 1_000);
        assert_eq!(clock.next_due(), Some((ChunkSeq(7), Millis(9_500))));
        assert_eq!(clock.due(ChunkSeq(9), 1_000), Some(Millis(11_500)));
    }
}
