use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// A peer's identity for the lifetime of one signalling connection, assigned by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// One broadcast of a channel: fresh and random each time a broadcaster starts, so
/// content signed for an earlier broadcast (whose chunk numbers also started at 0) is
/// never taken for this one's. Named to viewers by the signal server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{:016x}", self.0)
    }
}

impl std::str::FromStr for SessionId {
    type Err = ProtocolError;

    /// The form `Display` writes: `s` and 16 hex digits (as in an edge's URLs).
    fn from_str(value: &str) -> Result<SessionId, ProtocolError> {
        let invalid = || ProtocolError::Invalid {
            field: "session",
            reason: format!("{value:?} is not a broadcast session (s and 16 hex digits)"),
        };
        let hex = value.strip_prefix('s').ok_or_else(invalid)?;
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        u64::from_str_radix(hex, 16)
            .map(SessionId)
            .map_err(|_| invalid())
    }
}

/// Position of a media chunk in a channel's stream; chunk 0 is the first the broadcaster cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkSeq(pub u64);

impl ChunkSeq {
    pub fn next(self) -> ChunkSeq {
        ChunkSeq(self.0 + 1)
    }
}

impl fmt::Display for ChunkSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Matches a piece or an `Absent` reply to the request that asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u32);

impl RequestId {
    /// Marks pieces the source pushes without a request; requesters never use it.
    pub const PUSH: RequestId = RequestId(u32::MAX);
}

/// A channel name as it appears in URLs: short, lowercase, URL-safe. Parsed once at the
/// boundary so the rest of the code never sees an invalid name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelName(String);

impl ChannelName {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ChannelName {
    type Error = ProtocolError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let valid = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(ChannelName(value))
        } else {
            Err(ProtocolError::InvalidChannelName(value))
        }
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelName::try_from(s.to_owned())
    }
}

impl From<ChannelName> for String {
    fn from(value: ChannelName) -> Self {
        value.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_parsed_strictly() {
        assert!("news".parse::<ChannelName>().is_ok());
        assert!("a-b_9".parse::<ChannelName>().is_ok());
        for bad in ["", "News", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(bad.parse::<ChannelName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sessions_parse_back_from_what_they_display() {
        let session = SessionId(0x00ab_cdef_0123_4567);
        assert_eq!(session.to_string().parse::<SessionId>().unwrap(), session);
        for bad in [
            "",
            "s",
            "00abcdef01234567",
            "s00abcdef0123456",
            "s00abcdef012345678",
            "s+0abcdef01234567",
            "S00abcdef01234567",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad:?} accepted");
        }
    }
}
