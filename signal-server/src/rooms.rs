//! Channels and their peers: who is where, who may talk to whom.

use std::collections::HashMap;

use protocol::{
    ChannelName, ChannelSummary, ErrorCode, PeerId, Role, ServerMessage, SignalPayload,
};
use rand::seq::SliceRandom;
use tokio::sync::mpsc;

/// Why a join or relay was refused; becomes an `Error` message to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError {
    pub code: ErrorCode,
    pub message: String,
}

impl JoinError {
    fn new(code: ErrorCode, message: impl Into<String>) -> JoinError {
        JoinError {
            code,
            message: message.into(),
        }
    }
}

struct Member {
    channel: ChannelName,
    role: Role,
    /// Bounded: a peer that does not read its messages is dropped, not buffered for.
    tx: mpsc::Sender<ServerMessage>,
}

#[derive(Default)]
struct Channel {
    broadcaster: Option<PeerId>,
    members: Vec<PeerId>,
}

pub struct Rooms {
    introduce: usize,
    next_peer: u64,
    channels: HashMap<ChannelName, Channel>,
    members: HashMap<PeerId, Member>,
}

impl Rooms {
    pub fn new(introduce: usize) -> Rooms {
        Rooms {
            introduce,
            next_peer: 1,
            channels: HashMap::new(),
            members: HashMap::new(),
        }
    }

    /// Adds a peer to a channel. Returns its id and the peers it should connect to: the
    /// broadcaster, if any, plus a random handful of viewers.
    pub fn join(
        &mut self,
        channel: ChannelName,
        role: Role,
        tx: mpsc::Sender<ServerMessage>,
    ) -> Result<(PeerId, Vec<PeerId>), JoinError> {
        let room = self.channels.entry(channel.clone()).or_default();
        if role == Role::Broadcaster && room.broadcaster.is_some() {
            return Err(JoinError::new(
                ErrorCode::ChannelTaken,
                format!("channel {channel} already has a broadcaster"),
            ));
        }
        let peer = PeerId(self.next_peer);
        self.next_peer += 1;
        let mut viewers: Vec<PeerId> = room
            .members
            .iter()
            .copied()
            .filter(|p| Some(*p) != room.broadcaster)
            .collect();
        viewers.shuffle(&mut rand::thread_rng());
        let mut introduced: Vec<PeerId> = room.broadcaster.into_iter().collect();
        introduced.extend(
            viewers
                .into_iter()
                .take(self.introduce.saturating_sub(introduced.len())),
        );
        if role == Role::Broadcaster {
            room.broadcaster = Some(peer);
        }
        room.members.push(peer);
        self.members.insert(peer, Member { channel, role, tx });
        Ok((peer, introduced))
    }

    /// Forwards WebRTC set-up to another peer of the sender's channel.
    pub fn relay(
        &mut self,
        from: PeerId,
        to: PeerId,
        signal: SignalPayload,
    ) -> Result<(), JoinError> {
        let sender_channel = &self
            .members
            .get(&from)
            .ok_or_else(|| JoinError::new(ErrorCode::NotJoined, "join a channel first"))?
            .channel;
        let target = self
            .members
            .get(&to)
            .filter(|m| &m.channel == sender_channel)
            .ok_or_else(|| {
                JoinError::new(
                    ErrorCode::UnknownPeer,
                    format!("no peer {to} in channel {sender_channel}"),
                )
            })?;
        if target
            .tx
            .try_send(ServerMessage::Signal { from, signal })
            .is_err()
        {
            // The target is not reading; its own connection task notices and drops it.
            tracing::warn!(%to, "relay target's queue is full");
        }
        Ok(())
    }

    /// Removes a peer and tells the rest of its channel.
    pub fn leave(&mut self, peer: PeerId) {
        let Some(member) = self.members.remove(&peer) else {
            return;
        };
        let Some(room) = self.channels.get_mut(&member.channel) else {
            return;
        };
        room.members.retain(|p| *p != peer);
        if room.broadcaster == Some(peer) {
            room.broadcaster = None;
        }
        for other in &room.members {
            if let Some(m) = self.members.get(other) {
                let _ = m.tx.try_send(ServerMessage::PeerLeft { peer });
            }
        }
        if room.members.is_empty() {
            self.channels.remove(&member.channel);
        }
    }

    pub fn role(&self, peer: PeerId) -> Option<Role> {
        self.members.get(&peer).map(|m| m.role)
    }

    /// Channels that have a broadcaster, by name.
    pub fn live_channels(&self) -> Vec<ChannelSummary> {
        let mut live: Vec<ChannelSummary> = self
            .channels
            .iter()
            .filter(|(_, room)| room.broadcaster.is_some())
            .map(|(name, room)| ChannelSummary {
                name: name.clone(),
                viewers: room.members.len() - 1,
            })
            .collect();
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live
    }
}
