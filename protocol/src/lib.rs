//! Wire types shared by every StreamTorrent crate.
//!
//! Everything here is pure data and parsing: no I/O, no clock. Input from the network is
//! parsed into these types at the boundary, and parsing never panics.

mod content;
#[cfg(feature = "content-cost")]
pub mod content_cost;
mod edge_url;
mod error;
mod frame;
mod identity;
mod ids;
mod peer_message;
mod signal;

pub use content::{
    hash_piece, init_message, Broadcast, ChunkManifest, PieceHash, MAX_MANIFEST_PIECES,
};
pub use edge_url::{EdgeIndex, EdgeUrl, EDGE_PATH, EDGE_VERSION, MAX_EDGES, MAX_EDGE_URL_BYTES};
pub use error::ProtocolError;
pub use frame::{Frame, PiecesChannel, CONTROL_CHANNEL, PIECES_CHANNEL};
pub use identity::{
    claim_message, ChannelKey, ChannelSigner, ContentSigner, KeySignature, Nonce, NONCE_BYTES,
};
pub use ids::{ChannelName, ChunkSeq, PeerId, RequestId, SessionId};
pub use peer_message::{
    BufferMapEntry, PeerMessage, EDGE_AGE_UNKNOWN, MAX_BUFFER_MAP_ENTRIES, MAX_CHUNK_BYTES,
    MAX_PEER_MESSAGE_BYTES, MAX_PIECE_BYTES, MAX_SUBSTREAMS, MIN_PEER_VERSION, PEER_VERSION,
    PIECE_BYTES, PIECE_HEADER_BYTES,
};
pub use signal::{
    ChannelSummary, ClientMessage, ErrorCode, IceServer, Role, ServerMessage, SignalPayload,
    ViewerReport, MAX_SIGNAL_MESSAGE_BYTES, MIN_SIGNAL_VERSION, SIGNAL_VERSION,
};
