//! Handing chunks to the player strictly in order, and skipping what missed its deadline.

use crate::{Millis, Output, Swarm};

impl Swarm {
    pub(crate) fn deliver(&mut self, now: Millis) {
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
}
