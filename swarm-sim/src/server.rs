//! The signal server's part, played with the server's own code: `signal_server::Rooms`
//! (joins, introductions, who may signal whom, leaves) on a seeded RNG, and the real JSON
//! codec both ways. What it leaves out is the socket and the broadcaster's key challenge
//! (the simulated broadcaster is trusted): the simulator reads each peer's mailbox and
//! delivers what the server posted after that peer's one-way delay.

use std::collections::HashMap;

use protocol::{ChannelKey, ChannelName, ClientMessage, PeerId, Role, ServerMessage};
use signal_server::{Limits, Mailbox, Rooms};
use swarm::{NodeInput, TARGET_LINKS};

use crate::sim::{Event, Sim};

pub(crate) struct Server {
    rooms: Rooms,
    channel: ChannelName,
    key: ChannelKey,
    /// Which simulated node each peer id is.
    nodes: HashMap<PeerId, usize>,
}

impl Server {
    pub(crate) fn new(channel: ChannelName, key: ChannelKey, seed: u64) -> Server {
        let limits = Limits {
            // The server's default (`--introduce`): a viewer's target of links.
            introduce: TARGET_LINKS,
            max_channels: 1,
            max_peers_per_channel: usize::MAX,
            max_connections_per_ip: usize::MAX,
            opens_per_sec_per_ip: f64::INFINITY,
        };
        Server {
            rooms: Rooms::seeded(limits, seed),
            channel,
            key,
            nodes: HashMap::new(),
        }
    }

    pub(crate) fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// A node is gone from the simulation (its connection may linger at the server).
    pub(crate) fn forget(&mut self, peer: PeerId) {
        self.nodes.remove(&peer);
    }
}

/// Whom a server action may have posted to.
enum Posted {
    Sender,
    SenderAnd(PeerId),
    Everyone,
}

impl Sim {
    /// A signalling frame from node `from` reaches the server.
    pub(crate) fn at_server(&mut self, from: usize, text: &str) {
        let Some(node) = self.nodes[from].as_ref() else {
            return; // Sent just before it left.
        };
        let mailbox: Mailbox = node.mailbox.clone();
        let peer = node.peer_id;
        let message = match ClientMessage::from_json(text) {
            Ok(message) => message,
            Err(e) => panic!("a node sent the server invalid JSON ({e}): {text}"),
        };
        let server = &mut self.server;
        let posted = match (message, peer) {
            (ClientMessage::Join { role, session, .. }, None) => {
                let Ok((id, introduced)) =
                    server
                        .rooms
                        .join(server.channel.clone(), role, mailbox.clone(), session)
                else {
                    return;
                };
                server.nodes.insert(id, from);
                self.nodes[from].as_mut().expect("checked above").peer_id = Some(id);
                let (broadcaster, broadcast) = server.rooms.broadcast(&server.channel);
                mailbox.post(&ServerMessage::Welcome {
                    peer_id: id,
                    channel: server.channel.clone(),
                    channel_key: Some(server.key),
                    broadcaster,
                    session: broadcast,
                    ice_servers: Vec::new(),
                    report_every_ms: None,
                    edges: vec![],
                });
                mailbox.post(&ServerMessage::Introduce { peers: introduced });
                if role == Role::Broadcaster {
                    let claimed = ServerMessage::Claimed {
                        channel_key: server.key,
                        broadcaster: id,
                        session: session.expect("the simulated broadcaster names its session"),
                    };
                    server.rooms.tell_channel(&server.channel, id, &claimed);
                    Posted::Everyone
                } else {
                    Posted::Sender
                }
            }
            (_, None) => return,
            (ClientMessage::Status { free_slots }, Some(id)) => {
                server.rooms.set_free_slots(id, free_slots);
                return;
            }
            (ClientMessage::MorePeers {}, Some(id)) => {
                let peers = server.rooms.more_peers(id);
                mailbox.post(&ServerMessage::Introduce { peers });
                Posted::Sender
            }
            (ClientMessage::Signal { to, signal }, Some(id)) => {
                if let Err(e) = server.rooms.relay(id, to, signal) {
                    mailbox.post(&ServerMessage::Error {
                        code: e.code,
                        message: e.message,
                    });
                }
                Posted::SenderAnd(to)
            }
            (ClientMessage::Leave {}, Some(id)) => {
                server.rooms.leave(id);
                Posted::Everyone
            }
            // The simulated server asks for no viewer reports, as the real one does not yet.
            (
                ClientMessage::Join { .. } | ClientMessage::Prove { .. } | ClientMessage::Report(_),
                Some(_),
            ) => return,
        };
        match posted {
            Posted::Sender => self.deliver_posted(from),
            Posted::SenderAnd(to) => {
                self.deliver_posted(from);
                if let Some(&target) = self.server.nodes.get(&to) {
                    self.deliver_posted(target);
                }
            }
            Posted::Everyone => self.deliver_everything_posted(),
        }
    }

    /// The server notices a peer is gone and tells its contacts.
    pub(crate) fn server_leave(&mut self, peer: PeerId) {
        self.server.rooms.leave(peer);
        self.deliver_everything_posted();
    }

    fn deliver_everything_posted(&mut self) {
        for index in 0..self.nodes.len() {
            self.deliver_posted(index);
        }
    }

    /// What the server posted for `index`, on its way there.
    fn deliver_posted(&mut self, index: usize) {
        let Some(node) = self.nodes[index].as_mut() else {
            return;
        };
        let Some(id) = node.signal else { return };
        let at = self.now + node.server_delay_us;
        let mut frames = Vec::new();
        while let Some(text) = node.inbox.try_next_message() {
            frames.push(String::from(text));
        }
        for text in frames {
            let input = NodeInput::SignalText(id, text);
            self.schedule(at, Event::Input { node: index, input });
        }
    }
}
