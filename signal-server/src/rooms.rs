//! Channels and their peers: who is where, who may talk to whom. One plain struct, held
//! behind one lock by the server.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use protocol::{
    ChannelName, ChannelSummary, ErrorCode, PeerId, Role, ServerMessage, SessionId, SignalPayload,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

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

/// How to reach a peer's connection.
#[derive(Clone)]
pub struct Mailbox {
    /// Bounded: a peer that does not read its messages is dropped, not buffered for.
    /// Messages are queued as JSON text: 16 bytes a slot instead of 64 for the enum, which
    /// matters with tens of thousands of idle connections.
    pub tx: mpsc::Sender<Box<str>>,
    /// Tells the connection task to close: its queue overflowed.
    pub kick: Arc<Notify>,
}

struct Member {
    channel: ChannelName,
    mailbox: Mailbox,
    /// Position in its channel's `members`, for O(1) removal.
    index: usize,
    /// Peers it was introduced to or with: its likely neighbours, told when it leaves.
    /// Capped, newest kept, so one long-lived peer cannot make leaving cost O(swarm).
    contacts: VecDeque<PeerId>,
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

impl Mailbox {
    /// Queues a reply for this peer; a full queue drops it (the peer is not reading).
    pub fn post(&self, message: &ServerMessage) {
        let _ = self.tx.try_send(message.to_json().into_boxed_str());
    }
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
            limits,
            rng,
            channels: HashMap::new(),
            members: HashMap::new(),
        }
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
        if role == Role::Broadcaster {
            self.replace_broadcaster(&channel);
        }
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
        let room = self.channels.entry(channel.clone()).or_default();
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
        self.link_contacts(peer, &introduced);
        Ok((peer, introduced))
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
    fn replace_broadcaster(&mut self, channel: &ChannelName) {
        let Some(old) = self.channels.get(channel).and_then(|room| room.broadcaster) else {
            return;
        };
        if let Some(member) = self.members.get(&old) {
            member.mailbox.post(&ServerMessage::Error {
                code: ErrorCode::ChannelTaken,
                message: format!("replaced by a newer session proving the key of {channel}"),
            });
        }
        tracing::info!(peer = %old, %channel, "broadcaster session replaced by its owner");
        self.leave(old);
    }

    /// A peer's report of how many more links it accepts.
    pub fn set_free_slots(&mut self, peer: PeerId, free_slots: u16) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.free_slots = free_slots;
        }
    }

    /// More peers for `peer`: ones it was not yet introduced to or with, preferring those
    /// with free slots, then (too few of those) ones it met before. Empty when it has not
    /// joined.
    pub fn more_peers(&mut self, peer: PeerId) -> Vec<PeerId> {
        let Some(member) = self.members.get(&peer) else {
            return Vec::new();
        };
        let Some(room) = self.channels.get(&member.channel) else {
            return Vec::new();
        };
        // As at a join: a broadcaster without free slots is not handed out.
        let full = |b: &PeerId| self.members.get(b).is_some_and(|m| m.free_slots == 0);
        let full_broadcaster = room.broadcaster.filter(full);
        let mut exclude: Vec<PeerId> = member.contacts.iter().copied().collect();
        exclude.push(peer);
        exclude.extend(full_broadcaster);
        let mut found = sample(
            room,
            &self.members,
            &exclude,
            self.limits.introduce,
            &mut self.rng,
        );
        // Too few it has not met: those it met again, with free slots first (the others
        // would decline, as in `sample`), then the longest ago. A link between two of
        // them may have failed, and in a small channel nobody new comes, so without this
        // they would stay apart for good; the asker skips those it is still linked with.
        let wanted = self.limits.introduce.saturating_sub(found.len());
        let mut again: Vec<PeerId> = member
            .contacts
            .iter()
            .copied()
            .filter(|c| self.members.contains_key(c) && Some(*c) != full_broadcaster)
            .collect();
        again.sort_by_key(|p| self.members.get(p).is_none_or(|m| m.free_slots == 0));
        found.extend(again.into_iter().take(wanted));
        self.link_contacts(peer, &found);
        found
    }

    /// Records that `peer` and each of `others` know of each other.
    fn link_contacts(&mut self, peer: PeerId, others: &[PeerId]) {
        for other in others {
            for (a, b) in [(*other, peer), (peer, *other)] {
                if let Some(m) = self.members.get_mut(&a) {
                    // Met again: it moves to the back, once.
                    m.contacts.retain(|c| *c != b);
                    if m.contacts.len() == MAX_CONTACTS {
                        m.contacts.pop_front();
                    }
                    m.contacts.push_back(b);
                }
            }
        }
    }

    /// Forwards WebRTC set-up to a peer the sender was introduced to (or with).
    pub fn relay(
        &mut self,
        from: PeerId,
        to: PeerId,
        signal: SignalPayload,
    ) -> Result<(), JoinError> {
        let sender = self.members.get(&from).ok_or_else(|| {
            JoinError::new(
                ErrorCode::NotJoined,
                Rejection::Malformed,
                "join a channel first",
            )
        })?;
        // Only peers introduced to each other may signal: nobody can reach (and learn the
        // address of) a peer by guessing or collecting ids. Either side's list counts,
        // as each keeps only its newest contacts.
        let target = self
            .members
            .get(&to)
            .filter(|m| m.channel == sender.channel)
            .filter(|m| sender.contacts.contains(&to) || m.contacts.contains(&from))
            .ok_or_else(|| {
                JoinError::new(
                    ErrorCode::UnknownPeer,
                    Rejection::UnknownPeer,
                    format!(
                        "no peer {to} introduced to you in channel {}",
                        sender.channel
                    ),
                )
            })?;
        deliver(&target.mailbox, ServerMessage::Signal { from, signal });
        Ok(())
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
                deliver(&m.mailbox, message.clone());
            }
        }
    }

    /// Removes a peer and tells the rest of its channel.
    pub fn leave(&mut self, peer: PeerId) {
        let Some(member) = self.members.remove(&peer) else {
            return;
        };
        let Some(room) = self.channels.get_mut(&member.channel) else {
            return;
        };
        room.members.swap_remove(member.index);
        if let Some(moved) = room.members.get(member.index) {
            if let Some(m) = self.members.get_mut(moved) {
                m.index = member.index;
            }
        }
        if room.broadcaster == Some(peer) {
            room.broadcaster = None;
            room.session = None;
        }
        // Only its contacts can hold a link to it; telling the whole channel would make
        // each leave cost O(channel size).
        for other in &member.contacts {
            if let Some(m) = self.members.get(other) {
                deliver(&m.mailbox, ServerMessage::PeerLeft { peer });
            }
        }
        if room.members.is_empty() {
            self.channels.remove(&member.channel);
        }
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

/// Queues a message for a peer, or has its connection closed when its queue is full: the
/// server never buffers without limit for a client that does not read.
fn deliver(mailbox: &Mailbox, message: ServerMessage) {
    if let Err(mpsc::error::TrySendError::Full(_)) =
        mailbox.tx.try_send(message.to_json().into_boxed_str())
    {
        mailbox.kick.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn mailbox() -> (Mailbox, mpsc::Receiver<Box<str>>) {
        let (tx, rx) = mpsc::channel(64);
        let kick = Arc::new(Notify::new());
        (Mailbox { tx, kick }, rx)
    }

    fn received(rx: &mut mpsc::Receiver<Box<str>>) -> Vec<ServerMessage> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|text| ServerMessage::from_json(&text).expect("the server writes valid JSON"))
            .collect()
    }

    fn news() -> ChannelName {
        "news".parse().unwrap()
    }

    fn offer() -> SignalPayload {
        SignalPayload::Offer { sdp: "o".into() }
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
        let mut contacts: Vec<PeerId> = rooms.members[&a].contacts.iter().copied().collect();
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
