//! Where an HTTP edge serves a channel's signed content, and the URLs of each part of it:
//! one layout shared by the edge (`streamtorrent edge`) and the viewers that fetch from it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ChannelName, ChunkSeq, ProtocolError, SessionId};

/// The path every edge URL starts with after its base: the layout's version, so a change
/// old viewers cannot read gets a new prefix.
pub const EDGE_PATH: &str = "/edge/v1";
/// The layout's version, as the path names it and the live index says it.
pub const EDGE_VERSION: u32 = 1;
/// Longest base URL taken.
pub const MAX_EDGE_URL_BYTES: usize = 256;
/// Most edges a server advertises.
pub const MAX_EDGES: usize = 8;

/// An edge's base URL: `http://` or `https://`, a host, maybe a port and a path prefix;
/// no query, fragment, spaces or control characters; no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EdgeUrl(String);

impl EdgeUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its scheme, host and port, as a Content-Security-Policy names it.
    pub fn origin(&self) -> &str {
        let after_scheme = self.0.find("://").map_or(0, |i| i + 3);
        match self.0[after_scheme..].find('/') {
            Some(slash) => &self.0[..after_scheme + slash],
            None => &self.0,
        }
    }

    /// The channel's live index (JSON).
    pub fn index(&self, channel: &ChannelName) -> String {
        format!("{}{EDGE_PATH}/{channel}", self.0)
    }

    /// The broadcast's signed init segment (the peer message `Init`).
    pub fn init(&self, channel: &ChannelName, session: SessionId) -> String {
        format!("{}{EDGE_PATH}/{channel}/{session}/init", self.0)
    }

    /// A chunk's signed manifest (the peer message `Manifest`).
    pub fn manifest(&self, channel: &ChannelName, session: SessionId, seq: ChunkSeq) -> String {
        format!(
            "{}{EDGE_PATH}/{channel}/{session}/{}/manifest",
            self.0, seq.0
        )
    }

    /// A chunk's bytes.
    pub fn chunk(&self, channel: &ChannelName, session: SessionId, seq: ChunkSeq) -> String {
        format!("{}{EDGE_PATH}/{channel}/{session}/{}", self.0, seq.0)
    }
}

/// An edge's live index of a channel (`EdgeUrl::index`, JSON): the broadcast it holds
/// and its window. Not signed: it only steers what a viewer asks for, and everything
/// fetched is checked against the channel key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeIndex {
    /// Of the layout: a viewer reads only the version it knows.
    pub version: u32,
    /// The broadcast, as `SessionId` displays it (JSON numbers lose 64-bit precision).
    pub session: String,
    pub oldest: u64,
    pub newest: u64,
    /// How long ago the edge completed its newest chunk: places the live edge in time.
    pub newest_age_ms: u64,
    /// Chunks held that start with a keyframe, oldest first: where playback may start.
    pub keyframes: Vec<u64>,
}

impl EdgeIndex {
    /// Parses an index; unknown fields are ignored, another version is refused.
    pub fn parse(body: &[u8]) -> Result<EdgeIndex, ProtocolError> {
        let index: EdgeIndex =
            serde_json::from_slice(body).map_err(|e| ProtocolError::Invalid {
                field: "edge_index",
                reason: format!("not an edge index: {e}"),
            })?;
        if index.version != EDGE_VERSION {
            return Err(ProtocolError::Invalid {
                field: "edge_index",
                reason: format!(
                    "edge layout version {} (this viewer reads {EDGE_VERSION})",
                    index.version
                ),
            });
        }
        Ok(index)
    }

    pub fn session(&self) -> Result<SessionId, ProtocolError> {
        self.session.parse()
    }
}

impl std::str::FromStr for EdgeUrl {
    type Err = ProtocolError;

    fn from_str(value: &str) -> Result<EdgeUrl, ProtocolError> {
        let invalid = |why: &str| ProtocolError::Invalid {
            field: "edge_url",
            reason: format!("{value:?} is not an edge URL: {why}"),
        };
        if value.len() > MAX_EDGE_URL_BYTES {
            return Err(invalid("too long"));
        }
        let rest = value
            .strip_prefix("http://")
            .or_else(|| value.strip_prefix("https://"))
            .ok_or_else(|| invalid("it must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid("no host"));
        }
        if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '\\'))
        {
            return Err(invalid("no spaces, query or fragment"));
        }
        Ok(EdgeUrl(value.trim_end_matches('/').to_owned()))
    }
}

impl TryFrom<String> for EdgeUrl {
    type Error = ProtocolError;

    fn try_from(value: String) -> Result<EdgeUrl, ProtocolError> {
        value.parse()
    }
}

impl From<EdgeUrl> for String {
    fn from(url: EdgeUrl) -> String {
        url.0
    }
}

impl fmt::Display for EdgeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_urls_are_parsed_strictly_and_name_each_part() {
        let edge: EdgeUrl = "https://cdn.example/live/".parse().unwrap();
        let channel: ChannelName = "news".parse().unwrap();
        let session = SessionId(0xab);
        assert_eq!(
            edge.index(&channel),
            "https://cdn.example/live/edge/v1/news"
        );
        assert_eq!(
            edge.chunk(&channel, session, ChunkSeq(7)),
            "https://cdn.example/live/edge/v1/news/s00000000000000ab/7"
        );
        assert_eq!(
            edge.manifest(&channel, session, ChunkSeq(7)),
            "https://cdn.example/live/edge/v1/news/s00000000000000ab/7/manifest"
        );
        assert!("http://127.0.0.1:8090".parse::<EdgeUrl>().is_ok());
        assert_eq!(edge.origin(), "https://cdn.example");
        let long = format!("http://{}", "a".repeat(MAX_EDGE_URL_BYTES));
        for bad in [
            "",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
            "http://x?y",
            "//x",
            &long,
        ] {
            assert!(bad.parse::<EdgeUrl>().is_err(), "{bad:?} accepted");
        }
        let json = serde_json::to_string(&edge).unwrap();
        assert_eq!(serde_json::from_str::<EdgeUrl>(&json).unwrap(), edge);
        assert!(serde_json::from_str::<EdgeUrl>("\"javascript:alert(1)\"").is_err());
    }

    #[test]
    fn an_edge_index_of_another_version_is_refused_and_unknown_fields_ignored() {
        let body = br#"{"version":1,"session":"s00000000000000ab","oldest":3,"newest":9,
            "newest_age_ms":120,"keyframes":[4,8],"later":"ignored"}"#;
        let index = EdgeIndex::parse(body).unwrap();
        assert_eq!(index.session().unwrap(), SessionId(0xab));
        assert_eq!(index.keyframes, vec![4, 8]);
        let newer = br#"{"version":2,"session":"s00000000000000ab","oldest":3,"newest":9,
            "newest_age_ms":120,"keyframes":[]}"#;
        let err = EdgeIndex::parse(newer).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
        assert!(EdgeIndex::parse(b"<html>").is_err());
    }
}
