//! The peer core on its own, on virtual time: the signalling session, the link table,
//! caps, glare, versions, bans, back-off and time-outs, as every driver runs them.

use std::sync::Arc;

use bytes::Bytes;
use protocol::{
    ChannelSigner, ClientMessage, ErrorCode, IceServer, PeerId, PeerMessage, ServerMessage,
    SessionId, SignalPayload, ViewerReport, PEER_VERSION, SIGNAL_VERSION,
};
use swarm::{
    FetchHandle, FetchOutcome, LinkId, LinkStart, Millis, Node, NodeConfig, NodeEvent, NodeInput,
    NodeOutput, Playback, SignalId, GATHER_TIMEOUT_MS, HELLO_TIMEOUT_MS, LINK_CONNECT_TIMEOUT_MS,
    MAX_VIEWER_LINKS, SIGNAL_CONNECT_TIMEOUT_MS,
};

const ME: PeerId = PeerId(1_000);
const SESSION: SessionId = SessionId(9);

fn signer() -> ChannelSigner {
    ChannelSigner::from_seed(&[7; 32])
}

/// A node and everything it asked for so far.
struct Harness {
    node: Node,
    now: Millis,
    signal: Option<SignalId>,
    out: Vec<NodeOutput>,
}

impl Harness {
    fn new(signer: Option<ChannelSigner>) -> Harness {
        Harness::configured(signer, |_| {})
    }

    /// A node whose config `edit` changed first.
    fn configured(signer: Option<ChannelSigner>, edit: impl Fn(&mut NodeConfig)) -> Harness {
        let mut config = NodeConfig {
            channel: "news".parse().unwrap(),
            signer: signer.map(|s| Arc::new(s) as _),
            upload_limit: None,
            target_buffer_ms: None,
            substreams: None,
            seed: 42,
            relay_only: false,
            edge: false,
            checks: swarm::Checks::default(),
        };
        edit(&mut config);
        let mut h = Harness {
            node: Node::new(Millis(0), config),
            now: Millis(0),
            signal: None,
            out: Vec::new(),
        };
        h.drain();
        h
    }

    /// A viewer connected and welcomed into a claimed channel.
    fn welcomed_viewer() -> Harness {
        Harness::welcomed_viewer_reporting(None)
    }

    /// A viewer welcomed by a server that asks for experience reports this often.
    fn welcomed_viewer_reporting(report_every_ms: Option<u32>) -> Harness {
        Harness::welcomed_viewer_configured(report_every_ms, |_| {})
    }

    fn welcomed_viewer_configured(
        report_every_ms: Option<u32>,
        edit: impl Fn(&mut NodeConfig),
    ) -> Harness {
        let mut h = Harness::configured(None, edit);
        h.open_signal();
        h.server(ServerMessage::Welcome {
            peer_id: ME,
            channel: "news".parse().unwrap(),
            channel_key: Some(signer().public()),
            broadcaster: Some(PeerId(1)),
            session: Some(SESSION),
            ice_servers: vec![IceServer {
                urls: vec!["stun:example".into()],
                username: None,
                credential: None,
            }],
            report_every_ms,
            edges: vec![],
        });
        h.out.clear();
        h
    }

    /// A broadcaster the server welcomed (its own session named later, by `claimed`).
    fn welcomed_broadcaster() -> Harness {
        Harness::welcomed_broadcaster_reporting(None)
    }

    fn welcomed_broadcaster_reporting(report_every_ms: Option<u32>) -> Harness {
        let mut h = Harness::new(Some(signer()));
        h.open_signal();
        h.server(ServerMessage::Welcome {
            peer_id: ME,
            channel: "news".parse().unwrap(),
            channel_key: Some(signer().public()),
            broadcaster: Some(ME),
            session: None,
            ice_servers: vec![],
            report_every_ms,
            edges: vec![],
        });
        h.out.clear();
        h
    }

    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            if let NodeOutput::Connect(id) = output {
                self.signal = Some(id);
            }
            self.out.push(output);
        }
    }

    fn input(&mut self, input: NodeInput) {
        self.node.handle_input(self.now, input);
        self.drain();
    }

    fn open_signal(&mut self) {
        let id = self.signal.expect("the node asked to connect");
        self.input(NodeInput::SignalOpen(id));
    }

    fn server(&mut self, message: ServerMessage) {
        let id = self.signal.expect("connected");
        self.input(NodeInput::SignalText(id, message.to_json()));
    }

    fn advance_to(&mut self, at: Millis) {
        while let Some(due) = self.node.poll_timeout().filter(|due| *due <= at) {
            self.now = due.max(self.now);
            self.node.handle_timeout(self.now);
            self.drain();
        }
        self.now = at;
    }

    fn sent(&self) -> Vec<ClientMessage> {
        self.out
            .iter()
            .filter_map(|o| match o {
                NodeOutput::SendSignal(text) => Some(ClientMessage::from_json(text).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn opened(&self) -> Vec<(LinkId, PeerId, LinkStart)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                NodeOutput::OpenLink {
                    link, peer, start, ..
                } => Some((*link, *peer, start.clone())),
                _ => None,
            })
            .collect()
    }

    fn closed(&self) -> Vec<LinkId> {
        self.out
            .iter()
            .filter_map(|o| match o {
                NodeOutput::CloseLink(link) => Some(*link),
                _ => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<NodeEvent> {
        self.out
            .iter()
            .filter_map(|o| match o {
                NodeOutput::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// A link to `peer`, set up by its offer, not open yet.
    fn offered_by(&mut self, peer: PeerId) -> LinkId {
        self.server(ServerMessage::Signal {
            from: peer,
            signal: SignalPayload::Offer { sdp: "o".into() },
        });
        self.opened().last().expect("the offer was taken").0
    }

    /// An open link to `peer`, set up by its offer, with its `Hello` received.
    fn open_link_from(&mut self, peer: PeerId) -> LinkId {
        let link = self.offered_by(peer);
        self.input(NodeInput::LinkOpen(link));
        self.hello(link, SESSION);
        link
    }

    fn hello(&mut self, link: LinkId, session: SessionId) {
        self.hello_heard(link, session, true);
    }

    fn hello_heard(&mut self, link: LinkId, session: SessionId, heard: bool) {
        let hello = PeerMessage::Hello {
            version: PEER_VERSION,
            session,
            heard,
        };
        self.input(NodeInput::LinkData(link, hello.frame()));
    }

    fn absents_sent(&self, link: LinkId) -> usize {
        self.out
            .iter()
            .filter(|o| match o {
                NodeOutput::Send { link: l, frame } if *l == link => matches!(
                    PeerMessage::decode_frame(frame),
                    Ok(PeerMessage::Absent { .. })
                ),
                _ => false,
            })
            .count()
    }

    /// The `Hello`s sent on `link`, as their `heard` flags.
    fn hellos_sent(&self, link: LinkId) -> Vec<bool> {
        self.out
            .iter()
            .filter_map(|o| match o {
                NodeOutput::Send { link: l, frame } if *l == link => {
                    match PeerMessage::decode_frame(frame) {
                        Ok(PeerMessage::Hello { heard, .. }) => Some(heard),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn joins_with_its_version_and_offers_to_whom_it_is_introduced() {
    let mut h = Harness::new(None);
    assert!(matches!(h.out[..], [NodeOutput::Connect(_)]));
    h.open_signal();
    assert!(matches!(
        h.sent()[..],
        [ClientMessage::Join {
            version: SIGNAL_VERSION,
            key: None,
            ..
        }]
    ));
    h.out.clear();
    h.server(ServerMessage::Introduce {
        peers: vec![PeerId(5)],
    });
    assert!(
        h.opened().is_empty(),
        "nobody is linked before the channel's key is known"
    );
    let mut h = Harness::welcomed_viewer();
    h.server(ServerMessage::Introduce {
        peers: vec![PeerId(5), PeerId(6), ME],
    });
    let opened = h.opened();
    assert_eq!(opened.len(), 2, "never to itself: {opened:?}");
    assert!(opened
        .iter()
        .all(|(_, _, start)| *start == LinkStart::Offer));
    // The offer goes once, with the description gathered.
    let link = opened[0].0;
    h.out.clear();
    h.input(NodeInput::LocalDescription(link, "sdp".into()));
    h.input(NodeInput::LocalDescription(link, "sdp again".into()));
    assert_eq!(
        h.sent(),
        vec![ClientMessage::Signal {
            to: PeerId(5),
            signal: SignalPayload::Offer { sdp: "sdp".into() }
        }]
    );
}

#[test]
fn link_caps_are_enforced_for_introductions_and_offers() {
    let mut h = Harness::welcomed_viewer();
    let peers: Vec<PeerId> = (10..40).map(PeerId).collect();
    h.server(ServerMessage::Introduce { peers });
    assert_eq!(h.opened().len(), MAX_VIEWER_LINKS);
    assert_eq!(h.node.link_count(), MAX_VIEWER_LINKS);
    h.out.clear();
    h.server(ServerMessage::Signal {
        from: PeerId(99),
        signal: SignalPayload::Offer { sdp: "o".into() },
    });
    assert!(h.opened().is_empty(), "an over-cap offer opens nothing");
    assert_eq!(
        h.sent(),
        vec![ClientMessage::Signal {
            to: PeerId(99),
            signal: SignalPayload::Decline {}
        }]
    );
}

#[test]
fn a_stale_close_after_a_link_replacement_leaves_the_new_link_alone() {
    let mut h = Harness::welcomed_viewer();
    let old = h.open_link_from(PeerId(5));
    h.out.clear();
    // The peer lost the link on its side and offers again: the offer replaces it.
    h.server(ServerMessage::Signal {
        from: PeerId(5),
        signal: SignalPayload::Offer { sdp: "o2".into() },
    });
    assert_eq!(h.closed(), vec![old]);
    let (new, _, _) = h.opened()[0];
    assert_ne!(old, new);
    h.input(NodeInput::LinkOpen(new));
    h.hello(new, SESSION);
    h.out.clear();
    // The old link's task reports its end, twice, after the new one opened.
    h.input(NodeInput::LinkClosed(old));
    h.input(NodeInput::LinkClosed(old));
    assert_eq!(h.node.link_count(), 1);
    assert_eq!(
        h.node.open_links().collect::<Vec<_>>(),
        vec![(new, PeerId(5))]
    );
    assert!(h.events().is_empty(), "{:?}", h.events());
    assert_eq!(h.node.swarm().unwrap().peer_count(), 1);
}

#[test]
fn glare_is_settled_by_peer_id() {
    let mut h = Harness::welcomed_viewer();
    // We offered to both; both offer back at the same time.
    h.server(ServerMessage::Introduce {
        peers: vec![PeerId(2_000), PeerId(3)],
    });
    let ours: Vec<LinkId> = h.opened().iter().map(|(l, _, _)| *l).collect();
    h.out.clear();
    for from in [PeerId(2_000), PeerId(3)] {
        h.server(ServerMessage::Signal {
            from,
            signal: SignalPayload::Offer { sdp: "o".into() },
        });
    }
    // Against a higher id ours stands; against a lower one we answer theirs.
    assert_eq!(h.closed(), vec![ours[1]]);
    let answered = h.opened();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].1, PeerId(3));
    assert!(matches!(answered[0].2, LinkStart::Answer { .. }));
}

#[test]
fn an_older_peer_is_closed_without_a_ban_and_unknown_messages_are_ignored() {
    let mut h = Harness::welcomed_viewer();
    let link = h.open_link_from(PeerId(5));
    h.out.clear();
    h.input(NodeInput::LinkData(
        link,
        Bytes::from_static(&[0xee, 1, 2]).into(),
    ));
    assert!(h.closed().is_empty(), "an unknown tag is a newer peer's");
    assert_eq!(h.node.unknown_messages(), 1);

    // A peer whose first message is not a Hello predates versions, or its Hello was
    // lost: nothing it sends is taken, ours is said again (not once per message), and
    // without its Hello the link is closed, without a ban.
    let old = h.offered_by(PeerId(6));
    h.input(NodeInput::LinkOpen(old));
    let opened_at = h.now;
    h.out.clear();
    let map = PeerMessage::Cancel {
        req: protocol::RequestId(1),
    };
    h.input(NodeInput::LinkData(old, map.frame()));
    assert!(h.hellos_sent(old).is_empty(), "ours went just now");
    h.advance_to(opened_at + 600);
    h.input(NodeInput::LinkData(old, map.frame()));
    h.input(NodeInput::LinkData(old, map.frame()));
    assert!(h.closed().is_empty(), "it may still say Hello");
    assert_eq!(h.hellos_sent(old), vec![false], "said again, once");
    h.advance_to(opened_at + (HELLO_TIMEOUT_MS - 1));
    assert!(h.closed().is_empty());
    let said = h.hellos_sent(old).len();
    assert_eq!(said, 9, "every half second, not once per message");
    h.advance_to(opened_at + HELLO_TIMEOUT_MS);
    assert_eq!(h.closed(), vec![old]);
    assert!(matches!(
        h.events()[..],
        [NodeEvent::LinkDown { .. }, NodeEvent::LinkRefused { .. }]
    ));
    assert!(!h.node.swarm().unwrap().is_banned(PeerId(6)));
    h.out.clear();
    h.server(ServerMessage::Introduce {
        peers: vec![PeerId(6)],
    });
    assert_eq!(h.opened().len(), 1, "it may link again once updated");
}

/// Version 5 sends pieces on an unordered channel, where one may overtake its manifest:
/// a version-4 peer would take that for a violation, so the two do not link.
#[test]
fn a_version_4_peer_is_closed_without_a_ban() {
    let mut h = Harness::welcomed_viewer();
    let link = h.offered_by(PeerId(7));
    h.input(NodeInput::LinkOpen(link));
    h.out.clear();
    let hello = PeerMessage::Hello {
        version: 4,
        session: SESSION,
        heard: true,
    };
    h.input(NodeInput::LinkData(link, hello.frame()));
    assert_eq!(h.closed(), vec![link]);
    let refused = h.events().into_iter().find_map(|e| match e {
        NodeEvent::LinkRefused { reason, .. } => Some(reason),
        _ => None,
    });
    let reason = refused.expect("refused, with a reason");
    assert!(reason.contains("version 4 is too old"), "{reason}");
    assert!(!h.node.swarm().unwrap().is_banned(PeerId(7)));
}

/// Seen in Chromium: the first messages sent on a channel that had just opened never
/// arrived (the browser logged "Send failed INVALID_STATE"), so the peer's first message
/// here was not a `Hello`. It used to be taken for an out-of-date peer and closed, and two
/// viewers that needed each other stayed apart. Now each side says whether it heard the
/// other's `Hello`, and a lost one is said again.
#[test]
fn a_lost_hello_is_said_again_and_the_link_lives() {
    let mut h = Harness::welcomed_viewer();
    let link = h.offered_by(PeerId(5));
    h.input(NodeInput::LinkOpen(link));
    assert_eq!(h.hellos_sent(link), vec![false], "ours, on opening");

    assert_eq!(
        h.node.swarm().unwrap().peer_count(),
        0,
        "the swarm meets it once its Hello came"
    );

    // Its Hello was lost; a request arrives first and is not taken (no `Absent` for
    // it). Half a second after ours, without its own, ours is said again.
    let opened_at = h.now;
    h.out.clear();
    let request = PeerMessage::Request {
        req: protocol::RequestId(1),
        seq: protocol::ChunkSeq(3),
        first: 0,
        count: 1,
        deadline_ms: 1_000,
    };
    h.input(NodeInput::LinkData(link, request.frame()));
    assert_eq!(h.absents_sent(link), 0);
    h.advance_to(opened_at + 500);
    assert_eq!(h.hellos_sent(link), vec![false]);

    // Our repeat makes it say its own (it had heard ours: no answer needed); from then on
    // its messages count, and the link stays up past the Hello time-out.
    h.out.clear();
    h.hello_heard(link, SESSION, true);
    assert!(h.hellos_sent(link).is_empty());
    assert_eq!(h.node.swarm().unwrap().peer_count(), 1);
    h.input(NodeInput::LinkData(link, request.frame()));
    assert_eq!(h.absents_sent(link), 1, "taken now");
    h.advance_to(h.now + HELLO_TIMEOUT_MS + 1_000);
    assert!(h.closed().is_empty());

    // The other way: ours was lost, so the peer's Hello says it has not heard it; a
    // Hello that has heard ours goes back, at most once per half second however often
    // it asks.
    let mut h = Harness::welcomed_viewer();
    let link = h.offered_by(PeerId(6));
    h.input(NodeInput::LinkOpen(link));
    h.out.clear();
    h.hello_heard(link, SESSION, false);
    assert_eq!(h.hellos_sent(link), vec![true], "answered at once");
    h.out.clear();
    h.advance_to(h.now + 500);
    h.hello_heard(link, SESSION, false);
    assert_eq!(h.hellos_sent(link), vec![true], "asked again: said again");
    h.hello_heard(link, SESSION, false);
    assert_eq!(
        h.hellos_sent(link),
        vec![true],
        "but not more than twice a second"
    );
    h.advance_to(h.now + 500);
    h.hello_heard(link, SESSION, false);
    assert_eq!(h.hellos_sent(link), vec![true, true]);
}

/// The two ends of a link learn that its channel opened at different times, and each
/// says `Hello` at once: a message before the driver's word is the proof, not noise.
#[test]
fn a_message_before_the_drivers_open_opens_the_link() {
    let mut h = Harness::welcomed_viewer();
    let link = h.offered_by(PeerId(5));
    h.out.clear();
    h.hello_heard(link, SESSION, false);
    assert_eq!(
        h.hellos_sent(link),
        vec![false, true],
        "ours, then heard theirs"
    );
    assert_eq!(h.node.swarm().unwrap().peer_count(), 1);
    h.input(NodeInput::LinkOpen(link));
    assert_eq!(
        h.hellos_sent(link),
        vec![false, true],
        "the late open changes nothing"
    );
}

#[test]
fn a_malformed_message_bans_the_sender_for_good() {
    let mut h = Harness::welcomed_viewer();
    let link = h.open_link_from(PeerId(5));
    h.out.clear();
    h.input(NodeInput::LinkData(
        link,
        Bytes::from_static(&[0x06, 1]).into(),
    ));
    assert_eq!(h.closed(), vec![link]);
    assert!(h.node.swarm().unwrap().is_banned(PeerId(5)));
    h.out.clear();
    h.server(ServerMessage::Introduce {
        peers: vec![PeerId(5)],
    });
    h.server(ServerMessage::Signal {
        from: PeerId(5),
        signal: SignalPayload::Offer { sdp: "o".into() },
    });
    assert!(h.opened().is_empty());
}

#[test]
fn final_refusals_stop_the_node_and_later_ones_are_retried() {
    let mut h = Harness::new(Some(signer()));
    h.open_signal();
    h.server(ServerMessage::Error {
        code: ErrorCode::BadSignature,
        message: "no".into(),
    });
    assert!(h.node.stopped());
    assert!(h.events().iter().any(|e| matches!(
        e,
        NodeEvent::Refused {
            code: ErrorCode::BadSignature,
            ..
        }
    )));

    // A broadcaster that was in once is refused on rejoining (its stale session is still
    // held): it retries rather than exits.
    let mut h = Harness::welcomed_broadcaster();
    let first = h.signal.unwrap();
    h.input(NodeInput::SignalClosed(first));
    h.advance_to(Millis(1_000));
    assert_ne!(h.signal, Some(first), "reconnecting");
    h.open_signal();
    h.out.clear();
    h.server(ServerMessage::Error {
        code: ErrorCode::ChannelTaken,
        message: "taken".into(),
    });
    assert!(!h.node.stopped());
    assert!(h.node.reconnect_in(h.now).is_some());

    // An outdated client is told to update, whenever it hears so.
    let mut h = Harness::welcomed_viewer();
    h.server(ServerMessage::Error {
        code: ErrorCode::UpgradeRequired,
        message: "reload".into(),
    });
    assert!(h.node.stopped());
}

#[test]
fn the_signal_server_is_retried_with_back_off_and_a_connect_time_out() {
    let mut h = Harness::new(None);
    let first = h.signal.unwrap();
    // It never opens: given up after the time-out, without blocking anything.
    h.advance_to(Millis(SIGNAL_CONNECT_TIMEOUT_MS));
    assert!(h.out.contains(&NodeOutput::CloseSignal(first)));
    let wait = h.node.reconnect_in(h.now).expect("waiting to retry");
    assert!((375..=625).contains(&wait), "{wait}");
    h.advance_to(h.now + wait);
    let second = h.signal.unwrap();
    assert_ne!(first, second);
    // A late report from the abandoned attempt changes nothing.
    h.input(NodeInput::SignalOpen(first));
    assert!(h.sent().is_empty());
    h.input(NodeInput::SignalClosed(second));
    let wait = h.node.reconnect_in(h.now).unwrap();
    assert!((750..=1_250).contains(&wait), "doubled: {wait}");
}

#[test]
fn links_that_take_too_long_are_flushed_then_closed() {
    let mut h = Harness::welcomed_viewer();
    h.server(ServerMessage::Introduce {
        peers: vec![PeerId(5)],
    });
    let (link, _, _) = h.opened()[0];
    h.advance_to(Millis(GATHER_TIMEOUT_MS));
    assert!(h.out.contains(&NodeOutput::FlushDescription(link)));
    h.input(NodeInput::LocalDescription(link, "partial".into()));
    let offers = h
        .sent()
        .into_iter()
        .filter(|m| matches!(m, ClientMessage::Signal { .. }));
    assert_eq!(offers.count(), 1, "{:?}", h.sent());
    h.advance_to(Millis(LINK_CONNECT_TIMEOUT_MS));
    assert_eq!(h.closed(), vec![link]);
    assert_eq!(h.node.link_count(), 0);
}

#[test]
fn a_peer_of_another_broadcast_is_closed_without_a_ban() {
    let mut h = Harness::welcomed_viewer();
    h.server(ServerMessage::Signal {
        from: PeerId(5),
        signal: SignalPayload::Offer { sdp: "o".into() },
    });
    let (link, _, _) = h.opened()[0];
    h.input(NodeInput::LinkOpen(link));
    h.out.clear();
    h.hello(link, SessionId(8));
    assert_eq!(h.closed(), vec![link]);
    assert!(h.events().iter().any(
        |e| matches!(e, NodeEvent::LinkRefused { reason, .. } if reason.contains("another broadcast"))
    ));
    assert!(!h.node.swarm().unwrap().is_banned(PeerId(5)));
}

#[test]
fn a_new_broadcast_starts_the_swarm_afresh_and_asks_for_its_peers() {
    let mut h = Harness::welcomed_viewer();
    let old = h.open_link_from(PeerId(5));
    h.out.clear();
    // The same broadcaster reconnecting names the same broadcast: nothing changes.
    h.server(ServerMessage::Claimed {
        channel_key: signer().public(),
        broadcaster: PeerId(1),
        session: SESSION,
    });
    assert!(h.closed().is_empty());
    // It restarted: a new broadcast, chunk numbers from 0 again.
    h.server(ServerMessage::Claimed {
        channel_key: signer().public(),
        broadcaster: PeerId(77),
        session: SessionId(10),
    });
    assert_eq!(h.closed(), vec![old], "links of the old broadcast go");
    let again: Vec<PeerId> = h.opened().iter().map(|(_, p, _)| *p).collect();
    assert_eq!(
        again,
        vec![PeerId(5)],
        "the old neighbour, following too, is offered to again: the server will not \
         introduce it twice"
    );
    assert!(h.events().contains(&NodeEvent::NewBroadcast {
        session: SessionId(10)
    }));
    assert_eq!(h.node.session(), Some(SessionId(10)));
    assert_eq!(h.node.swarm().unwrap().peer_count(), 0);
    assert!(
        h.sent().contains(&ClientMessage::MorePeers {}),
        "asks for peers at once: {:?}",
        h.sent()
    );
    h.out.clear();
    // A stale close of the old link changes nothing.
    h.input(NodeInput::LinkClosed(old));
    assert_eq!(h.node.link_count(), 1);
    assert_eq!(h.node.open_links().count(), 0);
}

#[test]
fn peers_introduced_before_the_channel_key_are_offered_to_once_it_comes() {
    let mut h = Harness::new(None);
    h.open_signal();
    h.server(ServerMessage::Welcome {
        peer_id: ME,
        channel: "news".parse().unwrap(),
        channel_key: None,
        broadcaster: None,
        session: None,
        ice_servers: vec![],
        report_every_ms: None,
        edges: vec![],
    });
    h.server(ServerMessage::Introduce {
        peers: vec![PeerId(5), PeerId(6)],
    });
    assert!(h.opened().is_empty());
    h.server(ServerMessage::Claimed {
        channel_key: signer().public(),
        broadcaster: PeerId(1),
        session: SESSION,
    });
    let offered: Vec<PeerId> = h.opened().iter().map(|(_, p, _)| *p).collect();
    assert_eq!(offered, vec![PeerId(5), PeerId(6)]);
}

#[test]
fn a_peer_that_left_the_server_loses_its_links() {
    let mut h = Harness::welcomed_viewer();
    let open = h.open_link_from(PeerId(5));
    h.out.clear();
    // Its process may have exited without closing its connections.
    h.server(ServerMessage::PeerLeft { peer: PeerId(5) });
    assert_eq!(h.closed(), vec![open]);
    assert_eq!(h.node.swarm().unwrap().peer_count(), 0);
}

#[test]
fn an_unanswered_join_is_given_up_and_a_short_session_keeps_backing_off() {
    let mut h = Harness::new(None);
    h.open_signal();
    let first = h.signal.unwrap();
    h.out.clear();
    h.advance_to(Millis(swarm::JOIN_TIMEOUT_MS));
    assert!(
        h.out.contains(&NodeOutput::CloseSignal(first)),
        "{:?}",
        h.out
    );
    assert!(h.node.reconnect_in(h.now).is_some());
    // A server that welcomes and drops at once is not hammered every 500 ms.
    let mut h = Harness::welcomed_viewer();
    let id = h.signal.unwrap();
    h.input(NodeInput::SignalClosed(id));
    let first_wait = h.node.reconnect_in(h.now).unwrap();
    h.advance_to(h.now + first_wait);
    h.open_signal();
    h.server(ServerMessage::Welcome {
        peer_id: ME,
        channel: "news".parse().unwrap(),
        channel_key: Some(signer().public()),
        broadcaster: Some(PeerId(1)),
        session: Some(SESSION),
        ice_servers: vec![],
        report_every_ms: None,
        edges: vec![],
    });
    let id = h.signal.unwrap();
    h.input(NodeInput::SignalClosed(id));
    let second_wait = h.node.reconnect_in(h.now).unwrap();
    assert!(
        second_wait >= 750,
        "backed off further: {second_wait} after {first_wait}"
    );
}

#[test]
fn a_broadcaster_replaced_by_a_newer_session_of_its_owner_stops() {
    let mut h = Harness::welcomed_broadcaster();
    h.server(ServerMessage::Error {
        code: ErrorCode::ChannelTaken,
        message: "replaced by a newer session".into(),
    });
    assert!(h.node.stopped(), "it does not take the channel back");
}

#[test]
fn a_broadcaster_names_a_fresh_broadcast_in_its_join() {
    let sessions: Vec<Option<SessionId>> = [1, 2]
        .iter()
        .map(|_| {
            let mut h = Harness::new(Some(signer()));
            h.open_signal();
            match &h.sent()[..] {
                [ClientMessage::Join { session, key, .. }] => {
                    assert_eq!(*key, Some(signer().public()));
                    *session
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert!(sessions[0].is_some());
    // Same seed in this harness, same session: drivers seed from a random source.
    assert_eq!(sessions[0], sessions[1]);
}

fn reports(h: &Harness) -> Vec<ViewerReport> {
    h.sent()
        .into_iter()
        .filter_map(|m| match m {
            ClientMessage::Report(report) => Some(report),
            _ => None,
        })
        .collect()
}

#[test]
fn a_viewer_reports_its_experience_as_often_as_the_server_asks() {
    let mut h = Harness::welcomed_viewer_reporting(Some(10_000));
    h.advance_to(Millis(9_999));
    assert!(reports(&h).is_empty(), "not before the interval");
    h.node.set_playback(Playback {
        stalls: 2,
        startup_ms: Some(800),
        delay_ms: Some(1_500),
    });
    h.advance_to(Millis(10_000));
    let first = ViewerReport {
        stalls: 2,
        startup_ms: Some(800),
        delay_ms: Some(1_500),
        ..ViewerReport::default()
    };
    assert_eq!(reports(&h), vec![first]);
    h.node.set_playback(Playback {
        stalls: 3,
        startup_ms: Some(800),
        delay_ms: Some(1_700),
    });
    h.advance_to(Millis(20_000));
    let second = ViewerReport {
        stalls: 1,
        delay_ms: Some(1_700),
        ..ViewerReport::default()
    };
    assert_eq!(
        reports(&h)[1..],
        [second],
        "the change since, start-up once"
    );
}

#[test]
fn nobody_reports_to_a_server_that_asks_for_none_and_broadcasters_never_do() {
    let mut viewer = Harness::welcomed_viewer();
    viewer.advance_to(Millis(120_000));
    assert!(reports(&viewer).is_empty());
    let mut broadcaster = Harness::welcomed_broadcaster_reporting(Some(1_000));
    broadcaster.advance_to(Millis(10_000));
    assert!(reports(&broadcaster).is_empty());
    // An edge is no person watching.
    let mut edge = Harness::welcomed_viewer_configured(Some(1_000), |c| c.edge = true);
    edge.advance_to(Millis(10_000));
    assert!(reports(&edge).is_empty());
}

#[test]
fn a_relay_only_viewer_asks_for_relay_links_and_says_when_no_relay_is_offered() {
    let welcome = |turn: bool| ServerMessage::Welcome {
        peer_id: ME,
        channel: "news".parse().unwrap(),
        channel_key: Some(signer().public()),
        broadcaster: Some(PeerId(1)),
        session: Some(SESSION),
        ice_servers: vec![IceServer {
            urls: vec![if turn {
                "turn:relay.example:3478"
            } else {
                "stun:example"
            }
            .into()],
            username: None,
            credential: None,
        }],
        report_every_ms: None,
        edges: vec![],
    };
    let mut without = Harness::configured(None, |c| c.relay_only = true);
    without.open_signal();
    without.server(welcome(false));
    assert!(without.events().contains(&NodeEvent::NoRelay));

    let mut with = Harness::configured(None, |c| c.relay_only = true);
    with.open_signal();
    with.server(welcome(true));
    with.server(ServerMessage::Introduce {
        peers: vec![PeerId(1)],
    });
    assert!(!with.events().contains(&NodeEvent::NoRelay));
    let relay_only = with.out.iter().any(
        |o| matches!(o, NodeOutput::OpenLink { peer, relay_only: true, .. } if *peer == PeerId(1)),
    );
    assert!(
        relay_only,
        "the link to the broadcaster is relay-only: {:?}",
        with.out
    );
}

/// The answer to a fetch the previous broadcast's swarm made never reaches the next
/// broadcast's swarm, whose fetch ids count from zero again (`FetchHandle`).
#[test]
fn an_answer_to_an_earlier_broadcasts_fetch_is_dropped() {
    let mut h = Harness::new(None);
    h.open_signal();
    h.server(ServerMessage::Welcome {
        peer_id: ME,
        channel: "news".parse().unwrap(),
        channel_key: Some(signer().public()),
        broadcaster: Some(PeerId(1)),
        session: Some(SESSION),
        ice_servers: vec![],
        report_every_ms: None,
        edges: vec!["http://edge.test".parse().unwrap()],
    });
    let fetches = |h: &Harness| -> Vec<FetchHandle> {
        h.out
            .iter()
            .filter_map(|o| match o {
                NodeOutput::Fetch { fetch, .. } => Some(*fetch),
                _ => None,
            })
            .collect()
    };
    let trouble = |h: &Harness| {
        h.out
            .iter()
            .any(|o| matches!(o, NodeOutput::Event(NodeEvent::EdgeTrouble { .. })))
    };
    // Alone for 3 s: the edge's index is read.
    h.advance_to(Millis(3_500));
    let old = *fetches(&h).first().expect("a fetch after 3 s alone");
    h.out.clear();
    h.server(ServerMessage::Claimed {
        channel_key: signer().public(),
        broadcaster: PeerId(1),
        session: SessionId(SESSION.0 + 1),
    });
    h.advance_to(Millis(7_500));
    let new = *fetches(&h).first().expect("the new swarm fetches too");
    assert_eq!(new.id, old.id, "fetch ids count from zero in a new swarm");
    assert_ne!(new.generation, old.generation);
    h.out.clear();
    h.input(NodeInput::Fetched(old, FetchOutcome::Failed("late".into())));
    assert!(
        !trouble(&h),
        "an earlier broadcast's answer reached the new swarm"
    );
    h.input(NodeInput::Fetched(new, FetchOutcome::Failed("now".into())));
    assert!(trouble(&h), "the new swarm's own answer counts");
}
