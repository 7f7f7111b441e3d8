//! The node's links to other peers: set-up, versions, messages in and out of the swarm,
//! closing, and their time-outs.

use protocol::{
    ClientMessage, Frame, PeerId, PeerMessage, ProtocolError, SignalPayload, MIN_PEER_VERSION,
    PEER_VERSION,
};

use super::links::LinkState;
use super::{FetchHandle, LinkId, Node, NodeEvent, NodeOutput, HELLO_REPEAT_MS, HELLO_TIMEOUT_MS};
use crate::{Input, Millis, Output};

impl Node {
    pub(super) fn on_local_description(&mut self, id: LinkId, sdp: String) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let LinkState::Connecting {
            describe_by: Some(_),
            connect_by,
        } = link.state
        else {
            return; // Open, or sent already: it goes once, candidates included.
        };
        link.state = LinkState::Connecting {
            describe_by: None,
            connect_by,
        };
        let signal = if link.offered {
            SignalPayload::Offer { sdp }
        } else {
            SignalPayload::Answer { sdp }
        };
        let to = link.peer;
        self.send_signal(&ClientMessage::Signal { to, signal });
    }

    pub(super) fn on_link_open(&mut self, now: Millis, id: LinkId) {
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        if link.is_open() {
            return;
        }
        link.state = LinkState::Open {
            hello: false,
            hello_by: now + HELLO_TIMEOUT_MS,
            said_at: now,
        };
        let peer = link.peer;
        self.send_hello(id, false);
        self.event(NodeEvent::LinkUp { peer });
        // The swarm meets the peer once its `Hello` came: what it sends first (buffer
        // map, init) would otherwise go unread if either `Hello` was lost.
    }

    pub(super) fn on_link_data(&mut self, now: Millis, id: LinkId, frame: &Frame) {
        // A message proves the channel open, though the driver's word may come after it
        // (the two ends learn it at different times, and the peer's `Hello` goes at
        // once): dropped, it would leave the link waiting for a repeat. Once open, this
        // does nothing.
        self.on_link_open(now, id);
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        let LinkState::Open { hello, .. } = link.state else {
            return;
        };
        let peer = link.peer;
        let message = match PeerMessage::decode_frame(frame) {
            Ok(message) => message,
            // A newer peer's addition: tolerated, so versions can grow.
            Err(ProtocolError::UnknownTag(_)) => {
                self.unknown_messages += 1;
                return;
            }
            Err(e) => {
                // The swarm drops and bans it; its Disconnect closes the link.
                let reason = e.to_string();
                self.feed(now, Input::Malformed { peer, reason });
                return;
            }
        };
        match (hello, message) {
            (false, PeerMessage::Hello { version, .. }) if version < MIN_PEER_VERSION => {
                let reason = format!("peer protocol version {version} is too old");
                self.refuse(now, id, reason);
            }
            // A peer still on an earlier broadcast (or already on a newer one): it
            // carries other content, honestly. Not banned: it follows soon.
            (false, PeerMessage::Hello { session, .. }) if Some(session) != self.session => {
                let reason = format!("the peer carries another broadcast ({session})");
                self.refuse(now, id, reason);
            }
            (false, PeerMessage::Hello { heard, .. }) => {
                if let Some(LinkState::Open { hello, .. }) =
                    self.links.get_mut(id).map(|l| &mut l.state)
                {
                    *hello = true;
                }
                if !heard {
                    self.send_hello(id, true);
                }
                self.feed(now, Input::PeerConnected(peer));
            }
            // Its `Hello` was lost (a browser can drop what is sent the moment a channel
            // opens), or it predates versions. Until it comes nothing is taken; ours is
            // said again (here, and every `HELLO_REPEAT_MS` from `link_timers`) so that
            // the peer answers with its own; `hello_by` ends the wait.
            (false, _) => self.repeat_hello(now, id, false),
            // The peer says it has not heard ours: lost, so said again.
            (true, PeerMessage::Hello { heard: false, .. }) => self.repeat_hello(now, id, true),
            (true, PeerMessage::Hello { .. }) => {}
            (true, message) => self.feed(now, Input::Message(peer, message)),
        }
    }

    pub(super) fn on_link_closed(&mut self, now: Millis, id: LinkId) {
        if let Some(link) = self.links.remove(id) {
            if link.is_open() {
                self.link_down(now, link.peer);
            }
        }
    }

    /// Closes a link on our side (peer left, replaced, dropped).
    pub(super) fn close_link(&mut self, now: Millis, id: LinkId) {
        if let Some(link) = self.links.remove(id) {
            self.outputs.push_back(NodeOutput::CloseLink(id));
            if link.is_open() {
                self.link_down(now, link.peer);
            }
        }
    }

    /// Closes a link without blame: no ban, the peer may be introduced again.
    fn refuse(&mut self, now: Millis, id: LinkId, reason: String) {
        if let Some(link) = self.links.get(id) {
            let peer = link.peer;
            self.close_link(now, id);
            self.event(NodeEvent::LinkRefused { peer, reason });
        }
    }

    fn link_down(&mut self, now: Millis, peer: PeerId) {
        let was_source = self
            .swarm
            .as_ref()
            .is_some_and(|s| s.neighbours().any(|n| n.peer == peer && n.is_source));
        if was_source {
            self.source_absent = true;
        }
        self.event(NodeEvent::LinkDown { peer });
        self.feed(now, Input::PeerDisconnected(peer));
    }

    pub(super) fn link_timers(&mut self, now: Millis) {
        let mut flush = Vec::new();
        let mut expired = Vec::new();
        let mut silent = Vec::new();
        let mut unheard = Vec::new();
        for (id, link) in self.links.iter() {
            match link.state {
                LinkState::Connecting {
                    describe_by,
                    connect_by,
                } => {
                    if now >= connect_by {
                        expired.push(id);
                    } else if describe_by.is_some_and(|at| now >= at) {
                        flush.push(id);
                    }
                }
                LinkState::Open {
                    hello: false,
                    hello_by,
                    said_at,
                } => {
                    if now >= hello_by {
                        silent.push(id);
                    } else if now >= said_at + HELLO_REPEAT_MS {
                        unheard.push(id);
                    }
                }
                LinkState::Open { .. } => {}
            }
        }
        for id in flush {
            if let Some(link) = self.links.get_mut(id) {
                if let LinkState::Connecting { connect_by, .. } = link.state {
                    // Asked once; the description it brings is sent as it is.
                    link.state = LinkState::Connecting {
                        describe_by: Some(connect_by),
                        connect_by,
                    };
                }
            }
            self.outputs.push_back(NodeOutput::FlushDescription(id));
        }
        for id in expired {
            self.refuse(now, id, "the link did not open in time".into());
        }
        for id in unheard {
            self.repeat_hello(now, id, false);
        }
        for id in silent {
            let reason = format!(
                "no Hello within {} s (an out-of-date peer)",
                HELLO_TIMEOUT_MS / 1000
            );
            self.refuse(now, id, reason);
        }
    }

    fn send_hello(&mut self, id: LinkId, heard: bool) {
        let hello = PeerMessage::Hello {
            version: PEER_VERSION,
            session: self
                .session
                .expect("links open only once the swarm, and so the session, exists"),
            heard,
        };
        self.outputs.push_back(NodeOutput::Send {
            link: id,
            frame: hello.frame(),
        });
    }

    /// Says our `Hello` again, at most once per `HELLO_REPEAT_MS` on a link: a peer that
    /// keeps sending before its own `Hello` gets a few bytes back, not one per message.
    fn repeat_hello(&mut self, now: Millis, id: LinkId, heard: bool) {
        let Some(LinkState::Open { said_at, .. }) = self.links.get_mut(id).map(|l| &mut l.state)
        else {
            return;
        };
        if now - *said_at < HELLO_REPEAT_MS {
            return;
        }
        *said_at = now;
        self.send_hello(id, heard);
    }

    /// The peer of an open link, if `id` still names one.
    pub(super) fn open_peer(&self, id: LinkId) -> Option<PeerId> {
        self.links
            .get(id)
            .filter(|link| link.is_open())
            .map(|link| link.peer)
    }

    /// Feeds the swarm (once it exists) and carries its outputs over to the node's.
    pub(super) fn feed(&mut self, now: Millis, input: Input) {
        let Some(swarm) = &mut self.swarm else {
            return;
        };
        swarm.handle_input(now, input);
        self.carry_swarm_outputs();
    }

    /// Moves the swarm's outputs over to the node's.
    pub(super) fn carry_swarm_outputs(&mut self) {
        while let Some(output) = self.swarm.as_mut().and_then(|s| s.poll_output()) {
            match output {
                Output::Send(peer, message) => {
                    let link = self.links.of_peer(peer);
                    if let Some(link) = link.filter(|id| self.open_peer(*id).is_some()) {
                        let frame = message.frame();
                        self.outputs.push_back(NodeOutput::Send { link, frame });
                    }
                }
                Output::Init { mime, data } => {
                    self.outputs.push_back(NodeOutput::Init { mime, data })
                }
                Output::Play { chunk, due } => {
                    self.outputs.push_back(NodeOutput::Play { chunk, due })
                }
                Output::Skipped(seq) => self.outputs.push_back(NodeOutput::Skipped(seq)),
                Output::Fetch { id, url, range } => {
                    let generation = self.swarm_generation;
                    let fetch = FetchHandle { generation, id };
                    self.outputs
                        .push_back(NodeOutput::Fetch { fetch, url, range });
                }
                Output::EdgeTrouble { edge, reason } => {
                    self.event(NodeEvent::EdgeTrouble { edge, reason })
                }
                Output::Signed(content) => {
                    let swarm = self.swarm.as_ref().expect("only a swarm gives outputs");
                    let session = swarm.config.broadcast.session;
                    self.outputs
                        .push_back(NodeOutput::Signed { session, content });
                }
                Output::Disconnect { peer, reason } => {
                    if let Some(id) = self.links.of_peer(peer) {
                        // The swarm already forgot it: no PeerDisconnected back.
                        self.links.remove(id);
                        self.outputs.push_back(NodeOutput::CloseLink(id));
                    }
                    self.event(NodeEvent::Dropped { peer, reason });
                }
            }
        }
    }

    pub(super) fn event(&mut self, event: NodeEvent) {
        self.outputs.push_back(NodeOutput::Event(event));
    }
}
