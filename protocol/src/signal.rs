//! Signalling messages between peers and the signal server (JSON over WebSocket).
//!
//! The server only introduces peers and relays WebRTC set-up; it never carries video.

use serde::{Deserialize, Serialize};

use crate::{
    ChannelKey, ChannelName, EdgeUrl, KeySignature, Nonce, PeerId, ProtocolError, SessionId,
};

/// The signalling protocol's version, sent in `join`. A server refuses a client older than
/// [`MIN_SIGNAL_VERSION`] with `upgrade_required` (the page says "reload to update"); a
/// client without the field is version 1, from before versions existed.
pub const SIGNAL_VERSION: u16 = 2;
/// The oldest client version a server of this build still serves.
pub const MIN_SIGNAL_VERSION: u16 = 2;

fn version_one() -> u16 {
    1
}

/// Largest signalling message either side accepts. An SDP offer with a data channel is
/// ~1-2 KiB; 16 KiB leaves room for many candidates without letting a client make the
/// server parse megabytes.
pub const MAX_SIGNAL_MESSAGE_BYTES: usize = 16 * 1024;

/// What a peer is in its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Broadcaster,
    Viewer,
}

/// WebRTC set-up carried opaquely from one peer to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are tolerated throughout: a newer peer or server may add some.
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalPayload {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
    },
    /// The peer will not link: it is at its link cap (or the offer crossed its own).
    Decline {},
}

/// A STUN or TURN server for WebRTC, as in `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Client -> server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Enter a channel. The server answers `Welcome`, then `Introduce`; a broadcaster
    /// names the channel's key and first gets a `Challenge` to answer with `Prove`.
    Join {
        channel: ChannelName,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<ChannelKey>,
        /// A broadcaster's fresh id for this broadcast, which its content's signatures
        /// cover; the server names it to viewers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
        /// The client's [`SIGNAL_VERSION`]; absent in clients from before versions.
        #[serde(default = "version_one")]
        version: u16,
    },
    /// A broadcaster's signature over `claim_message(channel, nonce)` with the channel key.
    Prove { signature: KeySignature },
    /// Relay WebRTC set-up to another peer of the same channel.
    Signal { to: PeerId, signal: SignalPayload },
    /// How many more peer links this peer accepts; the server introduces newcomers to
    /// peers with free slots first.
    Status { free_slots: u16 },
    /// Ask for more peers of the channel (answered with `Introduce`), e.g. after losing some.
    MorePeers {},
    /// A viewer's summary of what it experienced since its previous report on this
    /// connection (or since `Welcome`), sent every `report_every_ms` when the server asks
    /// for reports. The server adds it to its channel's totals, never per peer.
    Report(ViewerReport),
    /// Leave the channel; the connection may then be closed.
    Leave {},
}

/// What one viewer played and carried over one reporting interval (`Report`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerReport {
    /// Video payload received from other viewers in the interval.
    #[serde(default)]
    pub bytes_from_peers: u64,
    /// Video payload received from the broadcaster in the interval.
    #[serde(default)]
    pub bytes_from_source: u64,
    /// Video payload fetched from HTTP edges in the interval (absent from older viewers).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_from_http: u64,
    /// Video payload sent to other viewers in the interval.
    #[serde(default)]
    pub bytes_uploaded: u64,
    /// Times playback ran dry in the interval.
    #[serde(default)]
    pub stalls: u32,
    /// From start to the first frame: in the first report after it, and only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<u32>,
    /// Delay behind live now, once playing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u32>,
}

/// Machine-readable reason in an `Error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedMessage,
    NotJoined,
    AlreadyJoined,
    ChannelTaken,
    UnknownPeer,
    ChannelFull,
    RateLimited,
    /// A broadcaster joined without a channel key.
    KeyRequired,
    /// The challenge's answer does not verify (forged, replayed, or another key).
    BadSignature,
    /// `Prove` without a challenge pending, or anything else before the challenge is met.
    NotChallenged,
    /// The client speaks an older protocol than the server serves: reload to update.
    UpgradeRequired,
    /// A `Report` the server refused (too soon, implausible figures, not a viewer); it
    /// counted nothing of it.
    BadReport,
    /// The server cannot do this now (servers sharing channels whose Redis does not
    /// answer cannot record a new channel's owner): try again shortly.
    Unavailable,
    /// A code this build does not know (a newer server's): shown, never fatal by itself.
    #[serde(other)]
    Unknown,
}

/// Server -> client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once after a successful join: the id others will know this peer by, and the
    /// STUN/TURN servers to use (TURN credentials are issued for this peer, time-limited).
    Welcome {
        peer_id: PeerId,
        channel: ChannelName,
        /// The channel's key, when a broadcaster has claimed it: what its content is
        /// signed with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_key: Option<ChannelKey>,
        /// The channel's broadcaster now, if any: only links from this peer are the
        /// source (a viewer claiming to be it is lying).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broadcaster: Option<PeerId>,
        /// The broadcast now on, if any: content of any other is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
        #[serde(default)]
        ice_servers: Vec<IceServer>,
        /// How often a viewer should send `Report`; absent: the server takes none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report_every_ms: Option<u32>,
        /// HTTP edges serving the channel's signed content (`streamtorrent edge`), for
        /// what peers cannot deliver in time; a viewer checks it all as peers' content.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        edges: Vec<EdgeUrl>,
    },
    /// To a joining broadcaster: sign `claim_message(channel, nonce)` with the channel key
    /// and answer with `Prove`; nothing else is accepted until then.
    Challenge {
        nonce: Nonce,
    },
    /// Peers of the channel this peer should connect to; the receiver sends the offers.
    Introduce {
        peers: Vec<PeerId>,
    },
    /// WebRTC set-up relayed from another peer.
    Signal {
        from: PeerId,
        signal: SignalPayload,
    },
    /// A peer of the channel left or dropped.
    PeerLeft {
        peer: PeerId,
    },
    /// To the viewers already in a channel whenever its broadcaster proves its key and
    /// joins: the key its content is signed with (viewers that joined before the channel
    /// was ever claimed learn it here) and the broadcaster's peer id. Later joiners get
    /// both in `Welcome`.
    Claimed {
        channel_key: ChannelKey,
        broadcaster: PeerId,
        /// The broadcast it starts (or resumes, after a reconnection: then unchanged).
        session: SessionId,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// A message type this build does not know (a newer server's): ignored.
    #[serde(other)]
    Unknown,
}

/// One live channel in `/api/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub name: ChannelName,
    pub viewers: usize,
    /// The key the channel belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<ChannelKey>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn parse_json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ProtocolError> {
    if text.len() > MAX_SIGNAL_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge {
            len: text.len(),
            max: MAX_SIGNAL_MESSAGE_BYTES,
        });
    }
    serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .expect("signalling types serialize infallibly: plain structs, string keys")
}

impl ClientMessage {
    pub fn from_json(text: &str) -> Result<Self, ProtocolError> {
        parse_json(text)
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl ServerMessage {
    pub fn from_json(text: &str) -> Result<Self, ProtocolError> {
        parse_json(text)
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelName {
        "news".parse().unwrap()
    }

    fn key() -> ChannelKey {
        // The public key of the all-ones Ed25519 seed (any valid point will do).
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
            .parse()
            .unwrap()
    }

    #[test]
    fn client_messages_round_trip() {
        let messages = [
            ClientMessage::Join {
                channel: channel(),
                role: Role::Viewer,
                key: None,
                session: None,
                version: SIGNAL_VERSION,
            },
            ClientMessage::Join {
                channel: channel(),
                role: Role::Broadcaster,
                key: Some(key()),
                session: Some(SessionId(9)),
                version: SIGNAL_VERSION,
            },
            ClientMessage::Prove {
                signature: KeySignature::from_bytes(&[3; 64]),
            },
            ClientMessage::Signal {
                to: PeerId(7),
                signal: SignalPayload::Offer {
                    sdp: "v=0\r\n".into(),
                },
            },
            ClientMessage::Signal {
                to: PeerId(7),
                signal: SignalPayload::Candidate {
                    candidate: "candidate:1 1 udp 1 10.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_m_line_index: Some(0),
                },
            },
            ClientMessage::Status { free_slots: 3 },
            ClientMessage::MorePeers {},
            ClientMessage::Leave {},
            ClientMessage::Report(ViewerReport {
                bytes_from_peers: 1_000_000,
                bytes_from_source: 20_000,
                bytes_from_http: 30_000,
                bytes_uploaded: 900_000,
                stalls: 1,
                startup_ms: Some(1_800),
                delay_ms: Some(2_400),
            }),
            ClientMessage::Report(ViewerReport::default()),
        ];
        for message in messages {
            let json = message.to_json();
            assert_eq!(ClientMessage::from_json(&json), Ok(message), "{json}");
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let messages = [
            ServerMessage::Welcome {
                peer_id: PeerId(1),
                channel: channel(),
                channel_key: None,
                broadcaster: None,
                session: None,
                ice_servers: vec![],
                report_every_ms: None,
                edges: vec![],
            },
            ServerMessage::Challenge {
                nonce: Nonce([9; 32]),
            },
            ServerMessage::Welcome {
                peer_id: PeerId(1),
                channel: channel(),
                channel_key: Some(key()),
                broadcaster: Some(PeerId(7)),
                session: Some(SessionId(u64::MAX)),
                ice_servers: vec![
                    IceServer {
                        urls: vec!["stun:stun.example:3478".into()],
                        username: None,
                        credential: None,
                    },
                    IceServer {
                        urls: vec!["turn:turn.example:3478?transport=udp".into()],
                        username: Some("1:p1".into()),
                        credential: Some("c".into()),
                    },
                ],
                report_every_ms: Some(10_000),
                edges: vec!["https://edge.example".parse().expect("a valid edge URL")],
            },
            ServerMessage::Introduce {
                peers: vec![PeerId(2), PeerId(3)],
            },
            ServerMessage::Signal {
                from: PeerId(2),
                signal: SignalPayload::Answer { sdp: "v=0".into() },
            },
            ServerMessage::PeerLeft { peer: PeerId(2) },
            ServerMessage::Claimed {
                channel_key: key(),
                broadcaster: PeerId(7),
                session: SessionId(3),
            },
            ServerMessage::Error {
                code: ErrorCode::UnknownPeer,
                message: "no".into(),
            },
        ];
        for message in messages {
            let json = message.to_json();
            assert_eq!(ServerMessage::from_json(&json), Ok(message), "{json}");
        }
    }

    #[test]
    fn wire_format_is_stable() {
        let json = r#"{"type":"join","channel":"demo","role":"viewer"}"#;
        assert_eq!(
            ClientMessage::from_json(json),
            Ok(ClientMessage::Join {
                channel: "demo".parse().unwrap(),
                role: Role::Viewer,
                key: None,
                session: None,
                version: 1,
            }),
            "a join without a version is from before versions: version 1"
        );
    }

    #[test]
    fn a_report_reads_with_fields_missing_or_added() {
        let json = r#"{"type":"report","bytes_from_peers":5,"future":[1]}"#;
        assert_eq!(
            ClientMessage::from_json(json),
            Ok(ClientMessage::Report(ViewerReport {
                bytes_from_peers: 5,
                ..ViewerReport::default()
            }))
        );
        assert!(ClientMessage::from_json(r#"{"type":"report","stalls":-1}"#).is_err());
    }

    #[test]
    fn unknown_fields_and_server_additions_are_tolerated() {
        let newer_join =
            r#"{"type":"join","channel":"demo","role":"viewer","version":9,"extra":{"a":1}}"#;
        assert!(matches!(
            ClientMessage::from_json(newer_join),
            Ok(ClientMessage::Join { version: 9, .. })
        ));
        let newer_welcome = r#"{"type":"welcome","peer_id":5,"channel":"demo","shiny":true}"#;
        assert!(matches!(
            ServerMessage::from_json(newer_welcome),
            Ok(ServerMessage::Welcome { .. })
        ));
        assert_eq!(
            ServerMessage::from_json(r#"{"type":"hologram","x":1}"#),
            Ok(ServerMessage::Unknown)
        );
        assert_eq!(
            ServerMessage::from_json(r#"{"type":"error","code":"quantum","message":"m"}"#),
            Ok(ServerMessage::Error {
                code: ErrorCode::Unknown,
                message: "m".into()
            })
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bad = [
            "",
            "{",
            "null",
            "[]",
            r#"{"type":"join"}"#,
            r#"{"type":"join","channel":"Bad Name","role":"viewer"}"#,
            r#"{"type":"join","channel":"demo","role":"king"}"#,
            r#"{"type":"teleport"}"#,
            r#"{"type":"signal","to":-1,"signal":{"kind":"offer","sdp":""}}"#,
        ];
        for text in bad {
            assert!(
                matches!(ClientMessage::from_json(text), Err(ProtocolError::Json(_))),
                "{text:?}"
            );
        }
        let valid = r#"{"type":"join","channel":"demo","role":"viewer"}"#;
        for cut in 0..valid.len() {
            assert!(
                ClientMessage::from_json(&valid[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
    }

    #[test]
    fn oversized_messages_are_refused_before_parsing() {
        let huge = format!(
            r#"{{"type":"signal","to":1,"signal":{{"kind":"offer","sdp":"{}"}}}}"#,
            "x".repeat(MAX_SIGNAL_MESSAGE_BYTES)
        );
        assert!(matches!(
            ClientMessage::from_json(&huge),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
