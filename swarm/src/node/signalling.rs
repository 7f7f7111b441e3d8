//! The node's signalling session: connecting with back-off, joining, the server's
//! messages, and which of its errors end the session and which are retried.

use protocol::{
    claim_message, ChannelKey, ClientMessage, ErrorCode, PeerId, Role, ServerMessage, SessionId,
    SignalPayload, SIGNAL_VERSION,
};

use super::links::{Link, LinkId, LinkState};
use super::{
    LinkStart, Node, NodeEvent, NodeOutput, Signal, SignalId, GATHER_TIMEOUT_MS, JOIN_TIMEOUT_MS,
    LINK_CONNECT_TIMEOUT_MS, MAX_MET_EARLY, SIGNAL_CONNECT_TIMEOUT_MS, STABLE_SESSION_MS,
};
use crate::{Config, Input, Millis, Swarm, SwarmRole};

/// What an `Error` from the server does to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorAction {
    /// Informational: a relay to a peer that left, a rate limit.
    Report,
    /// The join was refused: reconnect and join again after the back-off.
    Retry,
    /// Nothing will change by retrying (wrong key, outdated client): stop.
    Fatal,
}

impl Node {
    pub(super) fn connect(&mut self, now: Millis) {
        let id = SignalId(self.next_signal);
        self.next_signal = self.next_signal.wrapping_add(1);
        self.signal = Signal::Connecting {
            id,
            deadline: now + SIGNAL_CONNECT_TIMEOUT_MS,
        };
        self.outputs.push_back(NodeOutput::Connect(id));
    }

    pub(super) fn signal_timers(&mut self, now: Millis) {
        match self.signal {
            Signal::Connecting { id, deadline } if now >= deadline => {
                // Never blocks anything: links and uploads carry on meanwhile.
                self.outputs.push_back(NodeOutput::CloseSignal(id));
                self.lost_signal(now);
            }
            Signal::Waiting { retry_at } if now >= retry_at => self.connect(now),
            Signal::Open {
                id,
                welcomed: false,
            } if self.join_deadline.is_some_and(|at| now >= at) => {
                self.event(NodeEvent::ServerError {
                    code: ErrorCode::Unknown,
                    message: "the join was not answered in time; trying again".into(),
                });
                self.outputs.push_back(NodeOutput::CloseSignal(id));
                self.lost_signal(now);
            }
            _ => {}
        }
    }

    fn current(&self, id: SignalId) -> bool {
        match self.signal {
            Signal::Connecting { id: current, .. } | Signal::Open { id: current, .. } => {
                current == id
            }
            _ => false,
        }
    }

    pub(super) fn on_signal_open(&mut self, now: Millis, id: SignalId) {
        if !matches!(self.signal, Signal::Connecting { id: current, .. } if current == id) {
            return;
        }
        self.signal = Signal::Open {
            id,
            welcomed: false,
        };
        self.join_deadline = Some(now + JOIN_TIMEOUT_MS);
        let join = ClientMessage::Join {
            channel: self.config.channel.clone(),
            role: match self.config.signer {
                Some(_) => Role::Broadcaster,
                None => Role::Viewer,
            },
            key: self.config.signer.as_ref().map(|s| s.public()),
            session: self.config.signer.as_ref().and(self.session),
            version: SIGNAL_VERSION,
        };
        self.send_signal(&join);
    }

    pub(super) fn on_signal_closed(&mut self, now: Millis, id: SignalId) {
        if self.current(id) {
            self.lost_signal(now);
        }
    }

    /// The connection is gone or was given up: existing links keep the stream flowing,
    /// only new introductions wait for the next attempt.
    fn lost_signal(&mut self, now: Millis) {
        if self
            .welcomed_at
            .take()
            .is_some_and(|at| now - at >= STABLE_SESSION_MS)
        {
            self.backoff.reset();
        }
        self.join_deadline = None;
        let wait = self.backoff.next_delay_ms();
        self.signal = Signal::Waiting {
            retry_at: now + wait,
        };
        self.neighbours.forget();
        self.event(NodeEvent::SignalLost { retry_in_ms: wait });
    }

    pub(super) fn send_signal(&mut self, message: &ClientMessage) {
        if matches!(self.signal, Signal::Open { .. }) {
            self.outputs
                .push_back(NodeOutput::SendSignal(message.to_json()));
        }
    }

    pub(super) fn on_signal_text(&mut self, now: Millis, id: SignalId, text: &str) {
        if !matches!(self.signal, Signal::Open { id: current, .. } if current == id) {
            return;
        }
        match ServerMessage::from_json(text) {
            Ok(message) => self.on_server(now, message),
            Err(e) => self.event(NodeEvent::ServerError {
                code: ErrorCode::MalformedMessage,
                message: format!("ignoring a message from the signal server: {e}"),
            }),
        }
    }

    fn on_server(&mut self, now: Millis, message: ServerMessage) {
        match message {
            ServerMessage::Challenge { nonce } => match &self.config.signer {
                Some(signer) => {
                    let signature = signer.sign(&claim_message(&self.config.channel, &nonce));
                    self.send_signal(&ClientMessage::Prove { signature });
                }
                None => self.event(NodeEvent::ServerError {
                    code: ErrorCode::NotChallenged,
                    message: "the server asked a viewer for a channel key".into(),
                }),
            },
            ServerMessage::Welcome {
                peer_id,
                ice_servers,
                channel_key,
                broadcaster,
                session,
                report_every_ms,
                edges,
                ..
            } => {
                // An edge is not a person watching: its playback says nothing of anyone's.
                let every = report_every_ms
                    .filter(|_| self.config.role() == SwarmRole::Viewer && !self.config.edge);
                let totals = self.experience_totals();
                self.experience.welcomed(now, every, totals);
                if let Signal::Open { id, .. } = self.signal {
                    self.signal = Signal::Open { id, welcomed: true };
                }
                let again = std::mem::replace(&mut self.ever_welcomed, true);
                self.join_deadline = None;
                self.welcomed_at = Some(now);
                self.neighbours.joined(now);
                self.peer_id = Some(peer_id);
                let relays = ice_servers
                    .iter()
                    .flat_map(|server| &server.urls)
                    .any(|url| url.starts_with("turn:") || url.starts_with("turns:"));
                if self.config.relay_only && !relays {
                    self.event(NodeEvent::NoRelay);
                }
                self.ice_servers = ice_servers;
                self.event(NodeEvent::Joined {
                    peer: peer_id,
                    again,
                });
                match (channel_key, session) {
                    (Some(key), Some(session)) => self.trust(now, key, session),
                    // Nobody ever broadcast here, or nobody does now: offline until a
                    // broadcaster claims it (`claimed`).
                    _ => self.source_absent = true,
                }
                if broadcaster.is_none() {
                    self.source_absent = true;
                }
                self.feed(now, Input::Broadcaster(broadcaster));
                // An edge fetching from edges could end up waiting on itself.
                self.edges = if self.config.edge { Vec::new() } else { edges };
                self.feed(now, Input::Edges(self.edges.clone()));
            }
            ServerMessage::Claimed {
                channel_key,
                broadcaster,
                session,
            } => {
                self.trust(now, channel_key, session);
                self.feed(now, Input::Broadcaster(Some(broadcaster)));
            }
            ServerMessage::Introduce { peers } => self.on_introduce(now, peers),
            ServerMessage::Signal { from, signal } => self.on_remote_signal(now, from, signal),
            // Its process may be gone without closing its connections (they would time
            // out only after seconds of requests to it): the server's word is taken.
            ServerMessage::PeerLeft { peer } => {
                if let Some(link) = self.links.of_peer(peer) {
                    self.close_link(now, link);
                }
            }
            ServerMessage::Error { code, message } => self.on_error(now, code, message),
            ServerMessage::Unknown => {}
        }
    }

    fn on_error(&mut self, now: Millis, code: ErrorCode, message: String) {
        let welcomed = self.joined();
        let action = match code {
            ErrorCode::UpgradeRequired => ErrorAction::Fatal,
            // Another session proving the channel's key replaced this one: the owner
            // started another broadcaster. The newest wins; this one stops rather than
            // take the channel back and forth.
            ErrorCode::ChannelTaken if welcomed && self.config.signer.is_some() => {
                ErrorAction::Fatal
            }
            ErrorCode::UnknownPeer | ErrorCode::RateLimited | ErrorCode::Unknown => {
                ErrorAction::Report
            }
            ErrorCode::NotJoined | ErrorCode::Unavailable => ErrorAction::Retry,
            _ if welcomed => ErrorAction::Report,
            // A refusal after we were once in: the server restarted, or still holds our
            // stale session. It will pass; try again.
            _ if self.ever_welcomed => ErrorAction::Retry,
            ErrorCode::ChannelFull => ErrorAction::Retry,
            _ => ErrorAction::Fatal,
        };
        match action {
            ErrorAction::Report => self.event(NodeEvent::ServerError { code, message }),
            ErrorAction::Retry => {
                self.event(NodeEvent::ServerError { code, message });
                if let Signal::Open { id, .. } = self.signal {
                    self.outputs.push_back(NodeOutput::CloseSignal(id));
                }
                self.lost_signal(now);
            }
            ErrorAction::Fatal => {
                self.stop();
                self.event(NodeEvent::Refused { code, message });
            }
        }
    }

    /// The channel's key and broadcast are known: a viewer's swarm starts, accepting only
    /// what that key signed for that broadcast. A new broadcast (the broadcaster
    /// restarted) starts it afresh: chunk numbers start over, and nothing of the old
    /// one is of use.
    fn trust(&mut self, now: Millis, key: ChannelKey, session: SessionId) {
        if self.swarm.as_ref().is_some_and(|swarm| !swarm.trusts(&key)) {
            self.event(NodeEvent::KeyChanged);
            return;
        }
        if self.config.signer.is_some() || self.session == Some(session) {
            return;
        }
        // The server introduces peers once: those met before, and the neighbours of the
        // old broadcast (who follow it too), are offered to again.
        let mut again = std::mem::take(&mut self.met_early);
        let config = Node::swarm_config(&self.config, session, Config::viewer(key));
        let mut swarm = Swarm::new(config);
        if let Some(old) = self.swarm.take() {
            swarm.inherit_bans(&old);
            let links: Vec<(LinkId, PeerId)> =
                self.links.iter().map(|(id, l)| (id, l.peer)).collect();
            for (id, peer) in links {
                // The old swarm goes as a whole: no per-link goodbyes to it.
                self.links.remove(id);
                self.outputs.push_back(NodeOutput::CloseLink(id));
                again.push(peer);
            }
            self.neighbours.forget();
            self.event(NodeEvent::NewBroadcast { session });
        } else {
            self.event(NodeEvent::Trusting(key));
        }
        swarm.handle_input(now, Input::Edges(self.edges.clone()));
        self.swarm = Some(swarm);
        self.swarm_generation = self.swarm_generation.wrapping_add(1);
        self.session = Some(session);
        self.source_absent = false;
        if !again.is_empty() {
            self.on_introduce(now, again);
        }
    }

    fn on_introduce(&mut self, now: Millis, peers: Vec<PeerId>) {
        // Without the key nothing could be checked, so nobody is linked yet; the server
        // will not introduce them again, so they are offered to once the swarm exists.
        let Some(swarm) = &self.swarm else {
            self.met_early.extend(peers);
            let excess = self.met_early.len().saturating_sub(MAX_MET_EARLY);
            self.met_early.drain(..excess);
            return;
        };
        if peers.is_empty() && self.links.len() == 0 {
            // An empty introduction to a newcomer: nobody, broadcaster included, is here.
            self.source_absent = true;
        }
        let fresh: Vec<PeerId> = peers
            .into_iter()
            .filter(|p| Some(*p) != self.peer_id && !swarm.is_banned(*p))
            .collect();
        for peer in fresh {
            if self.links.of_peer(peer).is_some() {
                continue; // Introduced again (e.g. after asking for more peers).
            }
            if self.links.len() >= self.max_links() {
                self.event(NodeEvent::LinkRefused {
                    peer,
                    reason: format!("at the cap of {} links", self.max_links()),
                });
                continue;
            }
            self.open_link(now, peer, LinkStart::Offer);
        }
    }

    fn on_remote_signal(&mut self, now: Millis, from: PeerId, signal: SignalPayload) {
        let Some(swarm) = &self.swarm else { return };
        if swarm.is_banned(from) {
            return;
        }
        let existing = self.links.of_peer(from);
        match signal {
            SignalPayload::Offer { sdp } => {
                if let Some(old) = existing {
                    let link = self.links.get(old).expect("of_peer names a live link");
                    // Glare: both offered at once. The lower id keeps its offer; the other
                    // side answers it.
                    let ours_wins =
                        link.offered && !link.is_open() && self.peer_id.is_some_and(|me| me < from);
                    if ours_wins {
                        return;
                    }
                    // A fresh offer replaces a link that did not survive on their side.
                    self.close_link(now, old);
                } else if self.links.len() >= self.max_links() {
                    self.send_signal(&ClientMessage::Signal {
                        to: from,
                        signal: SignalPayload::Decline {},
                    });
                    self.event(NodeEvent::LinkRefused {
                        peer: from,
                        reason: format!("offer declined at the cap of {} links", self.max_links()),
                    });
                    return;
                }
                self.open_link(now, from, LinkStart::Answer { sdp });
            }
            SignalPayload::Answer { sdp } => {
                let Some(id) = existing else { return };
                let Some(link) = self.links.get_mut(id) else {
                    return;
                };
                if link.offered && !link.answered {
                    link.answered = true;
                    let signal = SignalPayload::Answer { sdp };
                    self.outputs
                        .push_back(NodeOutput::RemoteSignal { link: id, signal });
                }
            }
            signal @ SignalPayload::Candidate { .. } => {
                if let Some(link) = existing {
                    self.outputs
                        .push_back(NodeOutput::RemoteSignal { link, signal });
                }
            }
            SignalPayload::Decline {} => {
                let Some(id) = existing else { return };
                let declined = self
                    .links
                    .get(id)
                    .is_some_and(|l| l.offered && !l.is_open());
                if declined {
                    self.links.remove(id);
                    self.outputs.push_back(NodeOutput::CloseLink(id));
                    self.event(NodeEvent::LinkRefused {
                        peer: from,
                        reason: "the peer declined (at its cap)".into(),
                    });
                }
            }
        }
    }

    fn open_link(&mut self, now: Millis, peer: PeerId, start: LinkStart) {
        let link = Link {
            peer,
            offered: start == LinkStart::Offer,
            answered: start != LinkStart::Offer,
            state: LinkState::Connecting {
                describe_by: Some(now + GATHER_TIMEOUT_MS),
                connect_by: now + LINK_CONNECT_TIMEOUT_MS,
            },
        };
        let id = self.links.insert(link);
        self.outputs.push_back(NodeOutput::OpenLink {
            link: id,
            peer,
            start,
            ice_servers: self.ice_servers.clone(),
            relay_only: self.config.relay_only,
        });
    }
}
