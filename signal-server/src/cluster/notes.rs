//! What servers sharing channels tell each other through Redis pub/sub, and how peers and
//! keys are named there.

use std::fmt;
use std::str::FromStr;

use protocol::{ChannelName, PeerId, ServerMessage, SignalPayload};
use serde::{Deserialize, Serialize};

use crate::rooms::Contact;

/// Version of the notes between servers; a server reads notes of any version and skips
/// kinds it does not know, so servers of two releases can share channels during an
/// upgrade.
pub const NOTES_VERSION: u32 = 1;

/// One signal server among those sharing channels: random at each start, so a restarted
/// server is a new one and nobody mistakes its peers for the old one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u64);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ServerId {
    type Err = String;

    fn from_str(text: &str) -> Result<ServerId, String> {
        if text.len() != 16 {
            return Err(format!("{text:?} is not a server id (16 hex digits)"));
        }
        u64::from_str_radix(text, 16)
            .map(ServerId)
            .map_err(|e| format!("{text:?} is not a server id: {e}"))
    }
}

impl Serialize for ServerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ServerId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A note and the version its writer speaks.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    /// The server that wrote it.
    pub server: ServerId,
    #[serde(flatten)]
    pub note: Note,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Note {
    /// `peer`, here, was introduced to or with `other` on the writer's server: it may
    /// signal `other` now, and hears when `other` leaves.
    Contact { peer: PeerId, other: PeerId },
    /// A signal from the writer's peer `from` to `to`, here, in `channel`.
    Signal {
        from: PeerId,
        to: PeerId,
        channel: ChannelName,
        signal: SignalPayload,
    },
    /// A signal `to` sent found no `peer` on the writer's server.
    Unknown { to: PeerId, peer: PeerId },
    /// The writer's `peer` left; `to` are its contacts here.
    Left { peer: PeerId, to: Vec<PeerId> },
    /// To every server: tell `channel`'s peers but `except` (a broadcaster's `claimed`).
    Channel {
        channel: ChannelName,
        except: PeerId,
        message: Box<ServerMessage>,
    },
    /// The channel's owner went live on the writer's server: `peer`, its earlier session
    /// here, is replaced.
    Replace { peer: PeerId },
}

impl Envelope {
    /// The JSON one note is published as.
    pub fn encode(from: ServerId, note: Note) -> String {
        let envelope = Envelope {
            v: NOTES_VERSION,
            server: from,
            note,
        };
        serde_json::to_string(&envelope).expect("notes always serialise: plain data")
    }

    /// A published note; an unknown kind (a newer server's) or a broken one is an error
    /// for the log, never a panic.
    pub fn decode(text: &str) -> Result<Envelope, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Redis keys, all under `st:`.
pub mod keys {
    use protocol::ChannelName;

    use super::ServerId;

    /// Sorted set: server ids, each scored by the Unix ms until which it counts as alive.
    pub const SERVERS: &str = "st:servers";
    /// Set: names of channels with a broadcaster (checked against their `bc` key).
    pub const LIVE: &str = "st:live";
    /// Pub/sub channel every server reads.
    pub const ALL: &str = "st:all";

    pub fn inbox(server: ServerId) -> String {
        format!("st:inbox:{server}")
    }

    /// Sorted set: the channel's peers as `PEER@SERVER`, scored by expiry in Unix ms.
    pub fn peers(channel: &ChannelName) -> String {
        format!("st:ch:{channel}:peers")
    }

    /// Sorted set: those of them with free slots.
    pub fn open(channel: &ChannelName) -> String {
        format!("st:ch:{channel}:open")
    }

    /// Hash: the broadcaster (`peer`, `server`, `session`, `open`), expiring.
    pub fn broadcaster(channel: &ChannelName) -> String {
        format!("st:ch:{channel}:bc")
    }

    /// String: the hex key that owns the channel. Durable: set once, never expires.
    pub fn owner(channel: &ChannelName) -> String {
        format!("st:owner:{channel}")
    }
}

/// A peer as listed in a channel's sorted sets: `PEER@SERVER`, both in hex.
pub fn member(contact: Contact) -> String {
    format!("{:016x}@{}", contact.peer.0, contact.server)
}

/// The reverse of [`member`]; None for anything else (an older or foreign entry).
pub fn parse_member(text: &str) -> Option<Contact> {
    let (peer, server) = text.split_once('@')?;
    if peer.len() != 16 {
        return None;
    }
    Some(Contact {
        peer: PeerId(u64::from_str_radix(peer, 16).ok()?),
        server: server.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_notes_round_trip_and_unknown_kinds_are_errors_not_panics() {
        let contact = Contact {
            peer: PeerId(0xfeed),
            server: ServerId(u64::MAX),
        };
        assert_eq!(parse_member(&member(contact)), Some(contact));
        for bad in [
            "",
            "12@34",
            "000000000000feed",
            "000000000000feed@x",
            "zz@ffffffffffffffff",
        ] {
            assert_eq!(parse_member(bad), None, "{bad}");
        }
        let notes = [
            Note::Left {
                peer: PeerId(1),
                to: vec![PeerId(2), PeerId(3)],
            },
            Note::Signal {
                from: PeerId(4),
                to: PeerId(5),
                channel: "news".parse().unwrap(),
                signal: SignalPayload::Offer { sdp: "o".into() },
            },
        ];
        for note in notes {
            let text = Envelope::encode(ServerId(9), note.clone());
            let back = Envelope::decode(&text).unwrap();
            assert_eq!(
                (back.v, back.server, back.note),
                (NOTES_VERSION, ServerId(9), note)
            );
        }
        // A newer server's note: a kind this one does not know, extra fields.
        let newer = r#"{"v":2,"server":"0000000000000009","t":"gossip","x":1}"#;
        assert!(Envelope::decode(newer).is_err());
        let extra =
            r#"{"v":2,"server":"0000000000000009","t":"unknown","to":1,"peer":2,"why":"x"}"#;
        assert!(matches!(
            Envelope::decode(extra).unwrap().note,
            Note::Unknown { .. }
        ));
    }
}
