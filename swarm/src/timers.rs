//! When the swarm next needs the clock: every deadline its state holds, so a driver wakes
//! it exactly then ([`Swarm::poll_timeout`], [`Swarm::handle_timeout`]) rather than on a
//! fixed tick that runs every timer up to a tick late.
//!
//! Two kinds of deadline. Upkeep (request time-outs, pulls turning overdue, serve jobs
//! past their deadline, the source's announcements, skips, a block turning urgent, a
//! busy neighbour's back-off ending) runs the full round of scheduling;
//! the upload budget refilling only moves uploads along. An upkeep deadline is named only
//! while it lies after the last upkeep round, so one whose round changes nothing (a skip
//! with nothing later to play) is not named again and cannot keep a driver spinning.

use crate::config::SwarmRole;
use crate::{Millis, Swarm};

impl Swarm {
    /// When the swarm next needs [`Swarm::handle_timeout`]; `None` while nothing is
    /// pending (new input will say when).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.upkeep_due().into_iter().chain(self.upload_due()).min()
    }

    /// Runs whatever is due at `now`: the full round when an upkeep deadline passed,
    /// otherwise only uploads.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.first_input.get_or_insert(now);
        self.now = self.now.max(now);
        if self.upkeep_due().is_some_and(|due| due <= now) {
            self.upkeep(now);
        }
        self.pump(now);
    }

    /// Request time-outs, serve jobs that can no longer help, and the round of scheduling.
    pub(crate) fn upkeep(&mut self, now: Millis) {
        self.upkept_at = Some(now);
        self.expire_requests(now);
        self.drop_unservable(now);
        self.maintain(now);
    }

    /// The earliest upkeep deadline after the last upkeep round.
    fn upkeep_due(&self) -> Option<Millis> {
        // Before any round, whatever lies at or before the first input was handled by
        // that input (a neighbour's back-off that never started reads as time zero).
        let floor = self.upkept_at.or(self.first_input);
        let after = |at: &Millis| floor.is_none_or(|done| *at > done);
        // `expire_requests` takes a download once it made no progress for longer than
        // the time-out; `drop_unservable` a job once its deadline is past.
        let timeout = self.config.request_timeout_ms;
        let requests = self
            .downloads
            .values()
            .map(|d| d.last_progress + (timeout + 1));
        let jobs = self
            .peers
            .values()
            .flat_map(|p| p.serving.iter())
            .map(|job| job.deadline + 1);
        // A pull turning overdue may move to another viewer (from a viewer, once urgent).
        let overdue = self
            .downloads
            .iter()
            .filter_map(|((seq, _), d)| self.overdue_at(*seq, d));
        let busy = self.peers.values().map(|p| p.busy_until);
        let parents = self.parents.next_review();
        // `Option::min`: `None` sorts first, so while playback has no deadline (its next
        // chunk is here) the urgency deadline is not named either. Naming both was tried
        // (docs/benchmarks.md, 2026-12-04): 300 viewers × 60 s played more (0.821 → 0.873)
        // but 1,000 × 300 s collapsed (0.797 → 0.486, four times the drops), so it stays.
        let role: Vec<Millis> = match self.config.role() {
            SwarmRole::Source => self.announcement_due().into_iter().collect(),
            SwarmRole::Viewer => self
                .playback_due()
                .min(self.urgency_due())
                .into_iter()
                .collect(),
        };
        requests
            .chain(jobs)
            .chain(overdue)
            .chain(busy)
            .chain(parents)
            .chain(role)
            .chain(self.edges_due())
            .filter(after)
            .min()
    }

    /// Source: when the oldest fresh chunk is announced to everyone.
    fn announcement_due(&self) -> Option<Millis> {
        let (_, cut_at) = self.unannounced.front()?;
        Some(*cut_at + self.config.source_announce_delay_ms)
    }

    /// Viewer: when the next chunk to play is skipped, playback jumps toward live, or a
    /// first chunk nowhere to be had is given up on; before the start, when the edge's
    /// timing counts as known without a fresh announcement.
    fn playback_due(&self) -> Option<Millis> {
        let target = self.config.target_buffer_ms;
        let chunk_ms = self.clock.chunk_ms();
        if let Some((seq, due)) = self.clock.next_due() {
            if self.store.is_complete(seq) {
                return None; // Handed over at once; nothing waits on the clock.
            }
            let cut = self.clock.cut_at(seq);
            let behind = cut.map(|cut| cut + (self.config.max_lag_ms + 1));
            let catch_up = cut.map(|cut| cut + (target + chunk_ms + 1));
            let skip = Some(due + self.config.skip_grace_ms);
            return [skip, behind, catch_up].into_iter().flatten().min();
        }
        let first = self.next_play?;
        let hopeless = self.config.skip_grace_ms + crate::playback::RESTART_AFTER_CHUNKS * chunk_ms;
        let restart = self.clock.due(first, target).map(|due| due + hopeless);
        let timing = self
            .clock
            .edge()
            .filter(|(_, _, fresh)| !fresh)
            .map(|(_, heard, _)| heard + 2 * chunk_ms);
        restart.into_iter().chain(timing).min()
    }

    /// Viewer: when the nearest chunk still to fetch turns urgent (it may then come from
    /// the source).
    fn urgency_due(&self) -> Option<Millis> {
        let window = self.fetch_window()?;
        let urgent_ms = self.config.urgent_ms;
        window
            .map(protocol::ChunkSeq)
            .filter(|seq| !self.store.is_complete(*seq))
            .filter_map(|seq| {
                let due = self
                    .clock
                    .expected(seq, self.config.target_buffer_ms, self.now)?;
                Some(Millis(due.0.saturating_sub(urgent_ms)))
            })
            .find(|at| *at > self.now)
    }

    /// When the upload budget allows the next piece, if one is ready for a link with room
    /// and waits only for the budget.
    fn upload_due(&self) -> Option<Millis> {
        let bucket = self.bucket.as_ref()?;
        if bucket.can_send() {
            return None; // `pump` sent everything it could; new input brings more.
        }
        self.any_job_ready().then(|| bucket.ready_at())
    }
}
