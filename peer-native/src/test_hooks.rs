//! Test-only misbehaviour, in builds with the `test-hooks` feature only: end-to-end tests
//! run a hostile `watch` beside honest ones to check the honest ones' defences. Nothing
//! here is compiled into what ships (`tests/test_hooks.rs`).

use std::collections::HashSet;

use protocol::{Frame, PeerMessage};
use swarm::{LinkId, NodeEvent};

/// Old manifests a replayer keeps: a few broadcasts' worth of seconds.
const MAX_RECORDED: usize = 256;

/// What a test asks this peer to do wrong.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestHooks {
    /// Flip a bit in every piece served: a polluter.
    pub corrupt_pieces: bool,
    /// Keep the signed manifests of the first broadcast seen and, once a new broadcast
    /// begins (its seqs start over at 0), send them on every new link right after the
    /// greeting, ahead of the broadcaster's own: a replay of yesterday's content.
    pub replay_manifests: bool,
}

/// The misbehaviour's state, fed by the driver.
#[derive(Debug, Default)]
pub(crate) struct Misbehaviour {
    hooks: TestHooks,
    recorded: Vec<Vec<u8>>,
    replaying: bool,
    greeted: HashSet<LinkId>,
}

impl Misbehaviour {
    pub fn new(hooks: TestHooks) -> Misbehaviour {
        Misbehaviour {
            hooks,
            ..Misbehaviour::default()
        }
    }

    /// Bytes received on a link.
    pub fn received(&mut self, bytes: &[u8]) {
        if !self.hooks.replay_manifests || self.replaying || self.recorded.len() >= MAX_RECORDED {
            return;
        }
        if matches!(PeerMessage::decode(bytes), Ok(PeerMessage::Manifest(_))) {
            self.recorded.push(bytes.to_vec());
        }
    }

    pub fn event(&mut self, event: &NodeEvent) {
        if self.hooks.replay_manifests && matches!(event, NodeEvent::NewBroadcast { .. }) {
            tracing::warn!(
                manifests = self.recorded.len(),
                "test hook: replaying the old broadcast's manifests on new links"
            );
            self.replaying = true;
        }
    }

    /// What goes on the wire for `frame` on `link`.
    pub fn outgoing(&mut self, link: LinkId, mut frame: Frame) -> Vec<Vec<u8>> {
        if self.hooks.corrupt_pieces && frame.peek_piece().is_some() {
            frame = frame.with_changed_data(|piece| {
                if let Some(last) = piece.last_mut() {
                    *last ^= 1;
                }
            });
        }
        let mut out = vec![frame.to_vec()];
        // The first frame on a link is its `Hello`; the replay follows it at once.
        if self.replaying && self.greeted.insert(link) {
            out.extend(self.recorded.iter().cloned());
        }
        out
    }

    pub fn closed(&mut self, link: LinkId) {
        self.greeted.remove(&link);
    }
}
