//! What a node and its driver say to each other: the inputs a driver reports, the
//! outputs it carries out, and the events it may log or show.

use protocol::{
    ChannelKey, ChunkSeq, EdgeUrl, ErrorCode, Frame, IceServer, PeerId, SessionId, SignalPayload,
};

use super::LinkId;
use crate::{Chunk, FetchId, FetchOutcome, Millis, Signed};

/// A signalling connection: the node asks for one with `Connect` and the driver reports
/// on it under the same id, so events from an abandoned attempt are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalId(pub u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeInput {
    /// The signalling WebSocket opened.
    SignalOpen(SignalId),
    /// A text frame from the signal server.
    SignalText(SignalId, String),
    /// The signalling WebSocket closed, or failed to open.
    SignalClosed(SignalId),
    /// The link's local description with the candidates gathered (after `OpenLink`, once
    /// ICE gathering completes, or at once after `FlushDescription`).
    LocalDescription(LinkId, String),
    /// The link's data channel opened.
    LinkOpen(LinkId),
    /// One data-channel message, as received (`Bytes::into`; a simulator passes the
    /// sender's frame itself).
    LinkData(LinkId, Frame),
    /// Bytes still queued on the link (`bufferedAmount`): drivers report it at least
    /// before each `handle_timeout`, and when it drains.
    LinkBuffered(LinkId, u64),
    /// The link closed or failed (reported once or many times: only the first counts).
    LinkClosed(LinkId),
    /// Source only: the stream's init segment and MSE type.
    InitProduced { mime: String, data: Vec<u8> },
    /// Source only: a freshly cut chunk.
    ChunkProduced(Chunk),
    /// What came of a `Fetch`.
    Fetched(FetchHandle, FetchOutcome),
}

/// A fetch from an HTTP edge: the swarm's id, and which swarm (one per broadcast) asked,
/// so the answer to an old broadcast's fetch cannot touch its successor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FetchHandle {
    pub generation: u32,
    pub id: FetchId,
}

/// How a link starts: we were introduced and offer, or the peer offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStart {
    Offer,
    Answer { sdp: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutput {
    /// Open a signalling WebSocket; report it under this id.
    Connect(SignalId),
    /// Close this signalling connection (it timed out opening, or the node is done).
    CloseSignal(SignalId),
    /// A text frame for the open signalling connection.
    SendSignal(String),
    /// Create a peer connection and its data channel; report its description with
    /// `LocalDescription` once gathered.
    OpenLink {
        link: LinkId,
        peer: PeerId,
        start: LinkStart,
        ice_servers: Vec<IceServer>,
        /// Gather and use relay candidates only (`iceTransportPolicy: "relay"`).
        relay_only: bool,
    },
    /// Apply the peer's answer or candidate to this link.
    RemoteSignal { link: LinkId, signal: SignalPayload },
    /// ICE gathering is taking too long: report the description as it is now.
    FlushDescription(LinkId),
    /// One data-channel message for this link (`frame.to_vec()` is its bytes).
    Send { link: LinkId, frame: Frame },
    /// Close this link; no further events for it are needed.
    CloseLink(LinkId),
    /// Viewer: the init segment; comes before any `Play`.
    Init { mime: String, data: Vec<u8> },
    /// Viewer: the next chunk to play (see [`crate::Output::Play`]).
    Play { chunk: Chunk, due: Millis },
    /// Viewer: this chunk missed its deadline.
    Skipped(ChunkSeq),
    /// Viewer: HTTP GET `url` from an edge (with `range`: `Range: bytes=FIRST-LAST`);
    /// report it with `Fetched` under `fetch`: the body of a `200` or `206`, or another
    /// status with its `Retry-After`.
    Fetch {
        fetch: FetchHandle,
        url: String,
        range: Option<(u64, u64)>,
    },
    /// Edge only (`NodeConfig::edge`): signed content of this broadcast, verified.
    Signed { session: SessionId, content: Signed },
    /// For the driver's log or page; nothing to carry out.
    Event(NodeEvent),
}

/// What happened, for logs, pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The server welcomed us into the channel under this id (`again`: after losing
    /// an earlier session).
    Joined {
        peer: PeerId,
        again: bool,
    },
    /// The channel's broadcaster restarted: a new broadcast, whose chunks start over.
    /// Every link of the old one was closed; the driver resets its player (a new init
    /// segment and chunks follow as usual).
    NewBroadcast {
        session: SessionId,
    },
    /// The signalling connection closed; the next attempt is in `retry_in_ms`.
    SignalLost {
        retry_in_ms: u64,
    },
    /// The server refused us for good: the node stops (the driver ends or shows it).
    Refused {
        code: ErrorCode,
        message: String,
    },
    /// The server reported a problem that does not end the session.
    ServerError {
        code: ErrorCode,
        message: String,
    },
    /// The server names another channel key than the one this swarm trusts.
    KeyChanged,
    /// Relay-only, but the server offers no TURN server: no link can open.
    NoRelay,
    /// An HTTP edge failed, or served content the channel key did not sign (none of it
    /// is used); it is not asked for a while.
    EdgeTrouble {
        edge: EdgeUrl,
        reason: String,
    },
    /// The channel's key is known: content is checked against it from now on.
    Trusting(ChannelKey),
    LinkUp {
        peer: PeerId,
    },
    LinkDown {
        peer: PeerId,
    },
    /// A link was closed or refused without blame (cap, version, time-out, glare).
    LinkRefused {
        peer: PeerId,
        reason: String,
    },
    /// A neighbour broke the protocol or was too slow; banned ones never link again.
    Dropped {
        peer: PeerId,
        reason: String,
    },
}
