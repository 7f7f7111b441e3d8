//! Channels and their peers: who is where, who may talk to whom. One plain struct, held
//! behind one lock by the server.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use protocol::{
    ChannelName, ChannelSummary, ErrorCode, PeerId, Role, ServerMessage, SessionId, SignalPayload,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::cluster::ServerId;
use crate::mailbox::Mailbox;
use crate::metrics::Rejection;
use crate::viewer_reports::Experience;
use client_limits::{IpLimits, IpRefusal};

/// Contacts remembered per peer; see `Member::contacts`.
const MAX_CONTACTS: usize = 64;

/// Why a join or relay was refused; becomes an `Error` message to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError {
    pub code: ErrorCode,
    pub message: String,
    pub rejection: Rejection,
}

impl JoinError {
    fn new(code: ErrorCode, rejection: Rejection, message: impl Into<String>) -> JoinError {
        JoinError {
            code,
            message: message.into(),
            rejection,
        }
    }
}

/// A peer someone was introduced to or with, and the server that holds its connection
/// (this one's own id for a peer here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    pub peer: PeerId,
    pub server: ServerId,
}

/// Peers of a channel on every server, as Redis last listed them (`cluster`): what a join
/// or a `more_peers` is introduced from when servers share channels.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// The channel's broadcaster, with whether it has free slots.
    pub broadcaster: Option<(Contact, bool)>,
    /// Other peers in random order, those with free slots first.
    pub peers: Vec<Contact>,
}

/// What a join did: the new peer's id, whom it was introduced to, and which of those are
/// on other servers (they must be told of it there, so they may answer its signals).
#[derive(Debug)]
pub struct Joined {
    pub peer: PeerId,
    pub introduced: Vec<PeerId>,
    pub remote: Vec<Contact>,
    /// The broadcaster session this join replaced here, if any.
    pub replaced: Option<Left>,
}

/// A peer that left: its channel, whether it was the broadcaster, and its contacts on
/// other servers (told there).
#[derive(Debug)]
pub struct Left {
    pub peer: PeerId,
    pub channel: ChannelName,
    pub broadcaster: bool,
    pub remote: Vec<Contact>,
}

/// Where a relayed signal goes: delivered here, or to a peer held by another server.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Delivered,
    /// For another server: its id, the channel, and the signal to pass on.
    Remote(ServerId, ChannelName, SignalPayload),
}

/// One channel's peers here, for the periodic presence refresh in Redis.
#[derive(Debug)]
pub struct ChannelPresence {
    pub channel: ChannelName,
    /// Each member with whether it has free slots.
    pub members: Vec<(PeerId, bool)>,
    pub broadcaster: Option<(PeerId, Option<SessionId>)>,
}

struct Member {
    channel: ChannelName,
    mailbox: Mailbox,
    /// Position in its channel's `members`, for O(1) removal.
    index: usize,
    /// Peers it was introduced to or with: its likely neighbours, told when it leaves.
    /// Capped, newest kept, so one long-lived peer cannot make leaving cost O(swarm).
    contacts: VecDeque<Contact>,
    /// More links it accepts, as it last reported; newcomers are introduced to peers with
    /// free slots first.
    free_slots: u16,
}

/// Free slots of a peer that has not reported any: assume it has room.
const UNKNOWN_FREE_SLOTS: u16 = u16::MAX;
/// Channels up to this size are scanned whole when sampling: exact preference for free
/// slots at a constant cost.
const SCAN_LIMIT: usize = 256;
/// Random draws per wanted peer when sampling a larger channel; bounds the work per join
/// while still finding peers with free slots when they are not rare.
const DRAWS_PER_PEER: usize = 16;

/// Up to `count` random members of `room` not in `exclude`, those with free slots first.
/// The work is O(count) however large the channel: a bounded number of random draws, or a
/// scan when the channel is small.
fn sample(
    room: &Channel,
    members: &HashMap<PeerId, Member>,
    exclude: &[PeerId],
    count: usize,
    rng: &mut StdRng,
) -> Vec<PeerId> {
    let mut candidates: Vec<PeerId> = Vec::new();
    let draws = count * DRAWS_PER_PEER;
    if room.members.len() <= SCAN_LIMIT.max(draws) {
        candidates.extend(
            room.members
                .iter()
                .copied()
                .filter(|p| !exclude.contains(p)),
        );
        candidates.shuffle(rng);
    } else {
        for _ in 0..draws * 2 {
            if candidates.len() >= draws {
                break;
            }
            let candidate = room.members[rng.gen_range(0..room.members.len())];
            if !exclude.contains(&candidate) && !candidates.contains(&candidate) {
                candidates.push(candidate);
            }
        }
    }
    // Stable: random order within each group.
    candidates.sort_by_key(|p| members.get(p).is_none_or(|m| m.free_slots == 0));
    candidates.truncate(count);
    candidates
}

#[derive(Default)]
struct Channel {
    broadcaster: Option<PeerId>,
    /// The broadcaster's broadcast, while it is here.
    session: Option<SessionId>,
    members: Vec<PeerId>,
    /// What its viewers reported; gone with the channel, so the totals stay bounded by
    /// the live channels.
    experience: Experience,
}

pub struct Limits {
    pub introduce: usize,
    pub max_channels: usize,
    pub max_peers_per_channel: usize,
    pub max_connections_per_ip: usize,
    pub opens_per_sec_per_ip: f64,
}

pub struct Rooms {
    limits: Limits,
    /// This server, named in every contact it holds itself.
    me: ServerId,
    /// Peer ids and introductions: from the OS's entropy in a server, seeded in the
    /// simulator, which runs this same code and must replay a run exactly.
    rng: StdRng,
    channels: HashMap<ChannelName, Channel>,
    members: HashMap<PeerId, Member>,
    ips: IpLimits,
}

impl Rooms {
    pub fn new(limits: Limits) -> Rooms {
        Rooms::with_rng(limits, StdRng::from_entropy())
    }

    /// Rooms whose ids and introductions follow `seed` (the simulator's).
    pub fn seeded(limits: Limits, seed: u64) -> Rooms {
        Rooms::with_rng(limits, StdRng::seed_from_u64(seed))
    }

    fn with_rng(limits: Limits, rng: StdRng) -> Rooms {
        Rooms {
            ips: IpLimits::new(limits.max_connections_per_ip, limits.opens_per_sec_per_ip),
            me: ServerId(0),
            limits,
            rng,
            channels: HashMap::new(),
            members: HashMap::new(),
        }
    }

    /// Names this server in the contacts it records (a server sharing channels).
    pub fn set_server(&mut self, me: ServerId) {
        self.me = me;
    }

    pub fn server(&self) -> ServerId {
        self.me
    }

    /// Counts a new connection from `ip`, or says why it is refused.
    pub fn open_connection(&mut self, ip: IpAddr, now: Instant) -> Result<(), IpRefusal> {
        self.ips.open(ip, now)
    }

    pub fn close_connection(&mut self, ip: IpAddr) {
        self.ips.close(ip);
    }

    /// Adds a peer to a channel. Returns its id and the peers it should connect to: the
    /// broadcaster, if any, plus a random handful of viewers. The work does not grow with
    /// the size of the channel.
    pub fn join(
        &mut self,
        channel: ChannelName,
        role: Role,
        mailbox: Mailbox,
        session: Option<SessionId>,
    ) -> Result<(PeerId, Vec<PeerId>), JoinError> {
        let joined = self.join_from(channel, role, mailbox, session, None)?;
        Ok((joined.peer, joined.introduced))
    }

    /// [`Rooms::join`], introducing from `candidates` (peers on every server, as Redis
    /// lists them) when given, else from the peers here.
    pub fn join_from(
        &mut self,
        channel: ChannelName,
        role: Role,
        mailbox: Mailbox,
        session: Option<SessionId>,
        candidates: Option<&Candidates>,
    ) -> Result<Joined, JoinError> {
        if !self.channels.contains_key(&channel) && self.channels.len() >= self.limits.max_channels
        {
            return Err(JoinError::new(
                ErrorCode::ChannelFull,
                Rejection::TooManyChannels,
                format!(
                    "the server is at its limit of {} channels",
                    self.limits.max_channels
                ),
            ));
        }
        let replaced = if role == Role::Broadcaster {
            self.replace_broadcaster(&channel)
        } else {
            None
        };
        let room = self.channels.entry(channel.clone()).or_default();
        if room.members.len() >= self.limits.max_peers_per_channel {
            return Err(JoinError::new(
                ErrorCode::ChannelFull,
                Rejection::ChannelFull,
                format!(
                    "channel {channel} is at its limit of {} peers",
                    self.limits.max_peers_per_channel
                ),
            ));
        }
        let peer = self.fresh_peer_id();
        let introduced = match candidates {
            None => self.introduce_local(&channel),
            Some(candidates) => self.introduce_from(&channel, candidates, role, &[]),
        };
        let room = self.channels.entry(channel.clone()).or_default();
        if role == Role::Broadcaster {
            room.broadcaster = Some(peer);
            room.session = session;
        }
        let index = room.members.len();
        room.members.push(peer);
        let member = Member {
            channel,
            mailbox,
            index,
            contacts: VecDeque::new(),
            free_slots: UNKNOWN_FREE_SLOTS,
        };
        self.members.insert(peer, member);
        let remote = self.link_contacts(peer, &introduced);
        Ok(Joined {
            peer,
            introduced: introduced.iter().map(|c| c.peer).collect(),
            remote,
            replaced,
        })
    }

    /// Whom a peer joining `channel` here meets: the broadcaster while it has room, then
    /// a sample of the viewers.
    fn introduce_local(&mut self, channel: &ChannelName) -> Vec<Contact> {
        let Some(room) = self.channels.get(channel) else {
            return Vec::new();
        };
        // The broadcaster takes a bounded number of links; past them, viewers feed each
        // other and the broadcaster is not asked to answer every join.
        let broadcaster_has_room =
            |b: &PeerId| self.members.get(b).is_some_and(|m| m.free_slots > 0);
        let mut introduced: Vec<PeerId> = room
            .broadcaster
            .iter()
            .copied()
            .filter(broadcaster_has_room)
            .collect();
        let wanted = self.limits.introduce.saturating_sub(introduced.len());
        // Never sampled as a viewer: it is either introduced above or full.
        let exclude: Vec<PeerId> = room.broadcaster.into_iter().collect();
        introduced.extend(sample(room, &self.members, &exclude, wanted, &mut self.rng));
        introduced.into_iter().map(|peer| self.here(peer)).collect()
    }

    /// Whom to introduce from peers listed on every server: the broadcaster while it has
    /// room (not to a broadcaster: it is the session being replaced), then the others in
    /// their order, skipping `exclude` and peers of this server that are gone already.
    fn introduce_from(
        &self,
        channel: &ChannelName,
        candidates: &Candidates,
        role: Role,
        exclude: &[PeerId],
    ) -> Vec<Contact> {
        // A broadcaster here is known better here than Redis lists it (just joined, or
        // its slots just changed).
        let here = self
            .channels
            .get(channel)
            .and_then(|room| room.broadcaster)
            .map(|b| {
                let open = self.members.get(&b).is_some_and(|m| m.free_slots > 0);
                (self.here(b), open)
            });
        let listed = here.or(candidates.broadcaster);
        let broadcaster = listed.map(|(b, _)| b.peer);
        let mut introduced: Vec<Contact> = listed
            .filter(|(_, open)| *open && role == Role::Viewer)
            .map(|(b, _)| b)
            .filter(|b| !exclude.contains(&b.peer) && self.present(b))
            .into_iter()
            .collect();
        for candidate in &candidates.peers {
            if introduced.len() >= self.limits.introduce {
                break;
            }
            if Some(candidate.peer) != broadcaster
                && !exclude.contains(&candidate.peer)
                && !introduced.iter().any(|c| c.peer == candidate.peer)
                && self.present(candidate)
            {
                introduced.push(*candidate);
            }
        }
        introduced
    }

    /// A contact for a peer of this server.
    fn here(&self, peer: PeerId) -> Contact {
        Contact {
            peer,
            server: self.me,
        }
    }

    /// Whether a listed peer may still be there: another server's always may; one of
    /// this server's must still be a member.
    fn present(&self, contact: &Contact) -> bool {
        contact.server != self.me || self.members.contains_key(&contact.peer)
    }

    /// An unguessable id never used before: 64 random bits, so ids cannot be enumerated
    /// and do not repeat after a restart, when live links, bans and `is_source` on the
    /// peers still name the old ones.
    fn fresh_peer_id(&mut self) -> PeerId {
        loop {
            let id = PeerId(self.rng.gen::<u64>());
            if id.0 != 0 && !self.members.contains_key(&id) {
                return id;
            }
        }
    }

    /// A broadcaster joins a channel that still has one: only a peer that proved the
    /// channel's key gets here, so it is the owner coming back while the server holds its
    /// stale session (its connection dropped, the idle time-out has not fired yet). The
    /// old session leaves; it could otherwise lock the owner out for a minute.
    fn replace_broadcaster(&mut self, channel: &ChannelName) -> Option<Left> {
        let old = self
            .channels
            .get(channel)
            .and_then(|room| room.broadcaster)?;
        if let Some(member) = self.members.get(&old) {
            member.mailbox.post(&ServerMessage::Error {
                code: ErrorCode::ChannelTaken,
                message: format!("replaced by a newer session proving the key of {channel}"),
            });
        }
        tracing::info!(peer = %old, %channel, "broadcaster session replaced by its owner");
        self.leave_routed(old)
    }

    /// A peer's report of how many more links it accepts. Returns its channel and
    /// whether it has room, when that changed (for servers sharing channels).
    pub fn set_free_slots(&mut self, peer: PeerId, free_slots: u16) -> Option<(ChannelName, bool)> {
        let m = self.members.get_mut(&peer)?;
        let had_room = m.free_slots > 0;
        m.free_slots = free_slots;
        (had_room != (free_slots > 0)).then(|| (m.channel.clone(), free_slots > 0))
    }

    /// More peers for `peer`: ones it was not yet introduced to or with, preferring those
    /// with free slots, then (too few of those) ones it met before. Empty when it has not
    /// joined.
    pub fn more_peers(&mut self, peer: PeerId) -> Vec<PeerId> {
        self.more_peers_from(peer, None).introduced
    }

    /// [`Rooms::more_peers`], from `candidates` (every server's peers) when given.
    pub fn more_peers_from(&mut self, peer: PeerId, candidates: Option<&Candidates>) -> Joined {
        let mut joined = Joined {
            peer,
            introduced: Vec::new(),
            remote: Vec::new(),
            replaced: None,
        };
        let Some(member) = self.members.get(&peer) else {
            return joined;
        };
        let Some(room) = self.channels.get(&member.channel) else {
            return joined;
        };
        let mut exclude: Vec<PeerId> = member.contacts.iter().map(|c| c.peer).collect();
        exclude.push(peer);
        let (mut found, full_broadcaster) = match candidates {
            None => {
                // As at a join: a broadcaster without free slots is not handed out.
                let full = |b: &PeerId| self.members.get(b).is_some_and(|m| m.free_slots == 0);
                let full_broadcaster = room.broadcaster.filter(full);
                exclude.extend(full_broadcaster);
                let found = sample(
                    room,
                    &self.members,
                    &exclude,
                    self.limits.introduce,
                    &mut self.rng,
                );
                let found: Vec<Contact> = found.into_iter().map(|p| self.here(p)).collect();
                (found, full_broadcaster)
            }
            Some(candidates) => {
                let full_broadcaster = candidates
                    .broadcaster
                    .filter(|(_, open)| !open)
                    .map(|(b, _)| b.peer);
                let channel = member.channel.clone();
                let found = self.introduce_from(&channel, candidates, Role::Viewer, &exclude);
                (found, full_broadcaster)
            }
        };
        let member = &self.members[&peer];
        // Too few it has not met: those it met again, with free slots first (the others
        // would decline, as in `sample`), then the longest ago. A link between two of
        // them may have failed, and in a small channel nobody new comes, so without this
        // they would stay apart for good; the asker skips those it is still linked with.
        // (Another server's peers count as having room: their slots are not known here.)
        let wanted = self.limits.introduce.saturating_sub(found.len());
        let mut again: Vec<Contact> = member
            .contacts
            .iter()
            .copied()
            .filter(|c| {
                (c.server != self.me || self.members.contains_key(&c.peer))
                    && Some(c.peer) != full_broadcaster
            })
            .collect();
        again.sort_by_key(|c| self.members.get(&c.peer).is_some_and(|m| m.free_slots == 0));
        found.extend(again.into_iter().take(wanted));
        joined.remote = self.link_contacts(peer, &found);
        joined.introduced = found.iter().map(|c| c.peer).collect();
        joined
    }

    /// Records that `peer` and each of `others` know of each other; returns those of
    /// `others` on other servers, which must record it there.
    fn link_contacts(&mut self, peer: PeerId, others: &[Contact]) -> Vec<Contact> {
        let me = self.here(peer);
        let mut remote = Vec::new();
        for other in others {
            self.add_contact(peer, *other);
            if other.server == self.me {
                self.add_contact(other.peer, me);
            } else {
                remote.push(*other);
            }
        }
        remote
    }

    /// `contact` becomes `peer`'s newest contact.
    fn add_contact(&mut self, peer: PeerId, contact: Contact) {
        if let Some(m) = self.members.get_mut(&peer) {
            // Met again: it moves to the back, once.
            m.contacts.retain(|c| c.peer != contact.peer);
            if m.contacts.len() == MAX_CONTACTS {
                m.contacts.pop_front();
            }
            m.contacts.push_back(contact);
        }
    }

    /// Forwards WebRTC set-up to a peer the sender was introduced to (or with).
    pub fn relay(
        &mut self,
        from: PeerId,
        to: PeerId,
        signal: SignalPayload,
    ) -> Result<(), JoinError> {
        self.relay_routed(from, to, signal).map(|_| ())
    }

    /// [`Rooms::relay`]; a contact held by another server is not delivered but named, for
    /// the caller to pass on to that server.
    pub fn relay_routed(
        &mut self,
        from: PeerId,
        to: PeerId,
        signal: SignalPayload,
    ) -> Result<Route, JoinError> {
        let sender = self.members.get(&from).ok_or_else(|| {
            JoinError::new(
                ErrorCode::NotJoined,
                Rejection::Malformed,
                "join a channel first",
            )
        })?;
        let unknown = || {
            JoinError::new(
                ErrorCode::UnknownPeer,
                Rejection::UnknownPeer,
                format!(
                    "no peer {to} introduced to you in channel {}",
                    sender.channel
                ),
            )
        };
        if let Some(target) = self.members.get(&to) {
            // Only peers introduced to each other may signal: nobody can reach (and learn
            // the address of) a peer by guessing or collecting ids. Either side's list
            // counts, as each keeps only its newest contacts.
            let introduced = sender.contacts.iter().any(|c| c.peer == to)
                || target.contacts.iter().any(|c| c.peer == from);
            if target.channel != sender.channel || !introduced {
                return Err(unknown());
            }
            target
                .mailbox
                .deliver(&ServerMessage::Signal { from, signal });
            return Ok(Route::Delivered);
        }
        match sender.contacts.iter().find(|c| c.peer == to) {
            Some(contact) if contact.server != self.me => Ok(Route::Remote(
                contact.server,
                sender.channel.clone(),
                signal,
            )),
            _ => Err(unknown()),
        }
    }

    /// A signal another server relays from one of its peers to `to`, a contact of it
    /// here. False when `to` is not here (any more) in `channel`.
    ///
    /// The sender becomes (or stays) `to`'s contact, so `to` may answer: the other server
    /// relays only between contacts, and the note that made them contacts here can have
    /// been lost (a batch of writes in flight when Redis restarted).
    pub fn deliver_remote_signal(
        &mut self,
        from: Contact,
        to: PeerId,
        channel: &ChannelName,
        signal: SignalPayload,
    ) -> bool {
        let Some(target) = self.members.get(&to).filter(|m| m.channel == *channel) else {
            return false;
        };
        target.mailbox.deliver(&ServerMessage::Signal {
            from: from.peer,
            signal,
        });
        if !target.contacts.contains(&from) {
            self.add_contact(to, from);
        }
        true
    }

    /// Another server introduced `contact` to or with `peer`, one of this server's.
    pub fn add_remote_contact(&mut self, peer: PeerId, contact: Contact) {
        self.add_contact(peer, contact);
    }

    /// Tells a peer here that one of its contacts on another server is gone (`PeerLeft`
    /// or, for a signal that found nobody, `UnknownPeer`).
    pub fn remote_gone(&mut self, to: PeerId, gone: PeerId, message: &ServerMessage) {
        if let Some(m) = self.members.get_mut(&to) {
            m.contacts.retain(|c| c.peer != gone);
            m.mailbox.deliver(message);
        }
    }

    /// A server stopped refreshing its presence: its peers' contacts here forget them,
    /// without a `PeerLeft`. A signal server dying seldom means its peers did: they
    /// reconnect to another server (under new ids) while their WebRTC links to peers here
    /// carry on, and a `PeerLeft` would make every contact here tear down a working link
    /// at once, a whole server's audience of them when the swarm is busiest. A link whose
    /// far end really died times out by itself; a signal to one of them is answered
    /// `UnknownPeer` at once. O(peers here × contacts): once per lost server.
    pub fn server_gone(&mut self, server: ServerId) {
        for member in self.members.values_mut() {
            member.contacts.retain(|c| c.server != server);
        }
    }

    /// Another server took the channel's broadcast from `peer`, its stale session here:
    /// it is told why and removed.
    pub fn replaced_elsewhere(&mut self, peer: PeerId) -> Option<Left> {
        let member = self.members.get(&peer)?;
        let room = self.channels.get(&member.channel)?;
        if room.broadcaster != Some(peer) {
            return None;
        }
        member.mailbox.post(&ServerMessage::Error {
            code: ErrorCode::ChannelTaken,
            message: format!(
                "replaced by a newer session proving the key of {}",
                member.channel
            ),
        });
        tracing::info!(%peer, "broadcaster session replaced by its owner on another server");
        self.leave_routed(peer)
    }

    /// Each channel's members here, for the presence refresh.
    pub fn presence(&self) -> Vec<ChannelPresence> {
        self.channels
            .iter()
            .map(|(name, room)| ChannelPresence {
                channel: name.clone(),
                members: room
                    .members
                    .iter()
                    .map(|p| (*p, self.members.get(p).is_some_and(|m| m.free_slots > 0)))
                    .collect(),
                broadcaster: room.broadcaster.map(|b| (b, room.session)),
            })
            .collect()
    }

    /// A member's channel and whether it has free slots.
    pub fn member(&self, peer: PeerId) -> Option<(ChannelName, bool)> {
        self.members
            .get(&peer)
            .map(|m| (m.channel.clone(), m.free_slots > 0))
    }

    /// The channel's broadcaster and its broadcast, if it has one now.
    pub fn broadcast(&self, channel: &ChannelName) -> (Option<PeerId>, Option<SessionId>) {
        self.channels
            .get(channel)
            .map_or((None, None), |room| (room.broadcaster, room.session))
    }

    /// Posts `message` to every member of `channel` but `except`. O(channel size): for
    /// rare events only (a broadcaster's arrival).
    pub fn tell_channel(&self, channel: &ChannelName, except: PeerId, message: &ServerMessage) {
        let Some(room) = self.channels.get(channel) else {
            return;
        };
        for member in room.members.iter().filter(|m| **m != except) {
            if let Some(m) = self.members.get(member) {
                m.mailbox.deliver(message);
            }
        }
    }

    /// Removes a peer and tells the rest of its channel.
    pub fn leave(&mut self, peer: PeerId) {
        self.leave_routed(peer);
    }

    /// [`Rooms::leave`]; returns what other servers must hear of it.
    pub fn leave_routed(&mut self, peer: PeerId) -> Option<Left> {
        let member = self.members.remove(&peer)?;
        let room = self.channels.get_mut(&member.channel)?;
        room.members.swap_remove(member.index);
        if let Some(moved) = room.members.get(member.index) {
            if let Some(m) = self.members.get_mut(moved) {
                m.index = member.index;
            }
        }
        let broadcaster = room.broadcaster == Some(peer);
        if broadcaster {
            room.broadcaster = None;
            room.session = None;
        }
        let empty = room.members.is_empty();
        // Only its contacts can hold a link to it; telling the whole channel would make
        // each leave cost O(channel size).
        let mut remote = Vec::new();
        for other in &member.contacts {
            if other.server != self.me {
                remote.push(*other);
            } else if let Some(m) = self.members.get(&other.peer) {
                m.mailbox.deliver(&ServerMessage::PeerLeft { peer });
            }
        }
        if empty {
            self.channels.remove(&member.channel);
        }
        Some(Left {
            peer,
            channel: member.channel,
            broadcaster,
            remote,
        })
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
                key: None,
            })
            .collect();
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live
    }

    /// Adds an admitted viewer report to its channel's totals.
    pub fn record_report(&mut self, peer: PeerId, report: &protocol::ViewerReport) {
        let Some(member) = self.members.get(&peer) else {
            return;
        };
        if let Some(room) = self.channels.get_mut(&member.channel) {
            room.experience.add(report);
        }
    }

    /// Every channel with its viewers' reported experience, for metrics.
    pub fn channel_experience(&self) -> Vec<(String, Experience)> {
        let mut all: Vec<(String, Experience)> = self
            .channels
            .iter()
            .map(|(n, r)| (n.to_string(), r.experience.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Every channel with its number of peers, for metrics.
    pub fn channel_sizes(&self) -> Vec<(String, usize)> {
        let mut sizes: Vec<(String, usize)> = self
            .channels
            .iter()
            .map(|(n, r)| (n.to_string(), r.members.len()))
            .collect();
        sizes.sort();
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::{Outbox, Outgoing};

    fn rooms() -> Rooms {
        let limits = Limits {
            introduce: 2,
            max_channels: 4,
            max_peers_per_channel: 100,
            max_connections_per_ip: 4,
            opens_per_sec_per_ip: 1.0,
        };
        Rooms::seeded(limits, 7)
    }

    /// A mailbox and the receiving end of its queue (no runtime needed to read it).
    fn mailbox() -> (Mailbox, Outbox) {
        Mailbox::new(64)
    }

    fn received(outbox: &mut Outbox) -> Vec<ServerMessage> {
        std::iter::from_fn(|| outbox.try_next())
            .map(|next| match next {
                Outgoing::Message(text) => {
                    ServerMessage::from_json(&text).expect("the server writes valid JSON")
                }
                other => panic!("only messages are posted in these tests, got {other:?}"),
            })
            .collect()
    }

    fn news() -> ChannelName {
        "news".parse().unwrap()
    }

    fn offer() -> SignalPayload {
        SignalPayload::Offer { sdp: "o".into() }
    }

    #[test]
    fn a_peer_may_answer_a_remote_signal_even_if_the_note_that_made_them_contacts_was_lost() {
        let mut rooms = rooms();
        let (here, mut outbox) = mailbox();
        let (peer, _) = rooms.join(news(), Role::Viewer, here, None).unwrap();
        let elsewhere = Contact {
            peer: PeerId(77),
            server: ServerId(9),
        };
        // Never told of `elsewhere` (its contact note lost), `peer` may not reach it...
        assert!(rooms.relay_routed(peer, elsewhere.peer, offer()).is_err());
        // ... until a signal from it comes through its server, which relays only between
        // contacts.
        assert!(rooms.deliver_remote_signal(elsewhere, peer, &news(), offer()));
        assert_eq!(
            received(&mut outbox).last(),
            Some(&ServerMessage::Signal {
                from: elsewhere.peer,
                signal: offer()
            })
        );
        assert!(matches!(
            rooms.relay_routed(peer, elsewhere.peer, offer()),
            Ok(Route::Remote(server, _, _)) if server == elsewhere.server
        ));
    }

    #[test]
    fn newcomers_meet_the_broadcaster_while_it_has_room_then_viewers_only() {
        let mut rooms = rooms();
        let (b, _) = rooms
            .join(news(), Role::Broadcaster, mailbox().0, Some(SessionId(1)))
            .unwrap();
        let (v1, intro) = rooms.join(news(), Role::Viewer, mailbox().0, None).unwrap();
        assert_eq!(intro, vec![b]);
        rooms.set_free_slots(b, 0);
        let (_, intro) = rooms.join(news(), Role::Viewer, mailbox().0, None).unwrap();
        assert_eq!(intro, vec![v1], "a full broadcaster is not introduced");
        assert_eq!(rooms.broadcast(&news()), (Some(b), Some(SessionId(1))));
    }

    #[test]
    fn relays_go_only_between_contacts_of_one_channel() {
        let mut rooms = rooms();
        let (a, _) = rooms.join(news(), Role::Viewer, mailbox().0, None).unwrap();
        let (b_box, mut b_rx) = mailbox();
        let (b, intro) = rooms.join(news(), Role::Viewer, b_box, None).unwrap();
        assert_eq!(intro, vec![a]);
        let sports: ChannelName = "sports".parse().unwrap();
        let (elsewhere, _) = rooms.join(sports, Role::Viewer, mailbox().0, None).unwrap();
        rooms.relay(a, b, offer()).expect("introduced: relayed");
        assert!(
            matches!(&received(&mut b_rx)[..], [ServerMessage::Signal { from, .. }] if *from == a)
        );
        for (from, to) in [(a, elsewhere), (a, PeerId(12345)), (elsewhere, b)] {
            let refused = rooms.relay(from, to, offer()).unwrap_err();
            assert_eq!(refused.code, ErrorCode::UnknownPeer);
        }
        // Not introduced, though in the same channel: a third viewer meets only two.
        let mut strangers = 0;
        for _ in 0..6 {
            let (c, intro) = rooms.join(news(), Role::Viewer, mailbox().0, None).unwrap();
            for other in [a, b] {
                let relayed = rooms.relay(c, other, offer());
                assert_eq!(relayed.is_ok(), intro.contains(&other), "{c} to {other}");
                strangers += usize::from(relayed.is_err());
            }
        }
        assert!(strangers > 0, "some pairs were never introduced");
        assert!(received(&mut b_rx)
            .iter()
            .all(|m| matches!(m, ServerMessage::Signal { .. })));
    }

    /// Two viewers whose link failed must be able to meet again: in a small channel
    /// nobody new comes to fill the gap.
    #[test]
    fn asking_for_more_meets_new_peers_first_then_earlier_ones_again() {
        let mut rooms = rooms();
        let join = |rooms: &mut Rooms| rooms.join(news(), Role::Viewer, mailbox().0, None).unwrap();
        let (a, _) = join(&mut rooms);
        let (b, intro) = join(&mut rooms);
        assert_eq!(intro, vec![a]);
        assert_eq!(rooms.more_peers(a), vec![b], "only b is here: met again");
        let (c, _) = join(&mut rooms);
        // c met a and b at its join; a asks: nobody new, so both again.
        let more = rooms.more_peers(a);
        assert!(
            more.len() == 2 && more.contains(&b) && more.contains(&c),
            "{more:?}"
        );
        // Someone new comes first; a peer that left is never handed out.
        let (e, _) = join(&mut rooms);
        rooms.leave(c);
        let (d, intro) = join(&mut rooms);
        let stranger = [a, b, e]
            .into_iter()
            .find(|p| !intro.contains(p))
            .expect("d met two of three");
        let more = rooms.more_peers(stranger);
        assert_eq!(more.len(), 2, "{more:?}");
        assert_eq!(more[0], d, "{more:?}");
        assert!(!more.contains(&c), "{more:?}");
        // Contacts are kept once each, however often met again.
        for _ in 0..5 {
            rooms.more_peers(a);
        }
        let mut contacts: Vec<PeerId> = rooms.members[&a].contacts.iter().map(|c| c.peer).collect();
        let before = contacts.len();
        contacts.sort();
        contacts.dedup();
        assert_eq!(contacts.len(), before, "{contacts:?}");
    }

    #[test]
    fn a_leaving_peer_is_announced_to_its_contacts_only() {
        let mut rooms = rooms();
        rooms.limits.introduce = 1;
        let (a_box, mut a_rx) = mailbox();
        let (a, _) = rooms.join(news(), Role::Viewer, a_box, None).unwrap();
        let (b, intro) = rooms.join(news(), Role::Viewer, mailbox().0, None).unwrap();
        assert_eq!(intro, vec![a]);
        // b is full: c meets a only, so c never hears of b.
        rooms.set_free_slots(b, 0);
        let (c_box, mut c_rx) = mailbox();
        let (_, intro) = rooms.join(news(), Role::Viewer, c_box, None).unwrap();
        assert_eq!(intro, vec![a]);
        rooms.leave(b);
        assert_eq!(
            received(&mut a_rx),
            vec![ServerMessage::PeerLeft { peer: b }]
        );
        assert_eq!(received(&mut c_rx), vec![]);
        assert_eq!(rooms.channel_sizes(), vec![("news".to_owned(), 2)]);
    }

    #[test]
    fn the_owner_coming_back_replaces_its_stale_session() {
        let mut rooms = rooms();
        let (old_box, mut old_rx) = mailbox();
        let (old, _) = rooms
            .join(news(), Role::Broadcaster, old_box, Some(SessionId(1)))
            .unwrap();
        let (v_box, mut v_rx) = mailbox();
        rooms.join(news(), Role::Viewer, v_box, None).unwrap();
        let (new, intro) = rooms
            .join(news(), Role::Broadcaster, mailbox().0, Some(SessionId(2)))
            .unwrap();
        assert_ne!(old, new);
        assert_eq!(rooms.broadcast(&news()), (Some(new), Some(SessionId(2))));
        assert!(!intro.contains(&old));
        assert!(matches!(
            &received(&mut old_rx)[..],
            [ServerMessage::Error {
                code: ErrorCode::ChannelTaken,
                ..
            }]
        ));
        assert_eq!(
            received(&mut v_rx),
            vec![ServerMessage::PeerLeft { peer: old }]
        );
    }

    #[test]
    fn ids_are_random_unique_and_follow_the_seed() {
        let ids = |seed| {
            let mut rooms = Rooms::seeded(
                Limits {
                    introduce: 2,
                    max_channels: 4,
                    max_peers_per_channel: 1000,
                    max_connections_per_ip: 4,
                    opens_per_sec_per_ip: 1.0,
                },
                seed,
            );
            (0..500)
                .map(|_| {
                    rooms
                        .join(news(), Role::Viewer, mailbox().0, None)
                        .unwrap()
                        .0
                })
                .collect::<Vec<_>>()
        };
        let first = ids(1);
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), first.len());
        assert_eq!(first, ids(1), "the simulator replays a run");
        assert_ne!(first, ids(2));
    }
}
