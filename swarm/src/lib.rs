//! The swarm core: a sans-IO state machine that decides which chunks to ask for, from whom,
//! and what to send back. Drivers (browser, native, simulator) feed it with
//! [`Swarm::handle_input`] and act on [`Swarm::poll_output`]; it never reads a clock or
//! touches a socket, so it runs identically on virtual time.

mod checks;
mod chunk_store;
mod config;
mod content;
mod download;
mod early;
mod fallback;
mod histogram;
mod hostile;
mod messages;
mod neighbours;
mod node;
mod parents;
mod peer;
mod piece_set;
mod playback;
mod rate;
mod schedule;
mod source;
mod substreams;
mod swarm;
mod time;
mod timers;
mod upload;
mod wire;

pub use checks::{Checks, ContentChecks};
pub use chunk_store::{Chunk, ChunkData};
pub use config::{Config, SwarmRole, Trust};
pub use content::Signed;
pub use early::{EARLY_PIECES_MAX, EARLY_PIECES_PER_PEER};
pub use fallback::{FetchId, FetchOutcome};
pub use histogram::MsHistogram;
pub use hostile::{DropCause, Drops};
pub use neighbours::{NeighbourReport, MAX_VIEWER_LINKS, SOURCE_MAX_LINKS, TARGET_LINKS};
pub use node::{
    FetchHandle, LinkId, LinkStart, Node, NodeConfig, NodeEvent, NodeInput, NodeOutput, Playback,
    SignalId, GATHER_TIMEOUT_MS, HELLO_TIMEOUT_MS, JOIN_TIMEOUT_MS, LINK_CONNECT_TIMEOUT_MS,
    RECONNECT_FIRST_MS, RECONNECT_MAX_MS, SIGNAL_CONNECT_TIMEOUT_MS,
};
pub use rate::{BytesPerSec, UPLOAD_HEADROOM_PERCENT};
pub use swarm::{Input, Neighbour, Output, Stats, Swarm};
pub use time::Millis;
pub use upload::LINK_DRAINED_BELOW;
pub use wire::{
    packets, Acknowledgements, ACK_DEBT_LIMIT_MS, CONTROL_PACKET_FRAMING, PACKET_PAYLOAD,
    SACK_BYTES,
};
