use std::sync::Arc;

use protocol::{Broadcast, ChannelKey, ContentSigner};

use crate::checks::Checks;
use crate::BytesPerSec;

/// What this peer is in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmRole {
    /// The broadcaster: produces chunks, serves them, never plays.
    Source,
    /// A viewer: fetches chunks, plays them in order, serves what it holds.
    Viewer,
}

/// How a peer stands to the channel's key: the source signs what it produces, a viewer
/// accepts only what that key signed.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A trait object: the browser never signs, so its build carries no signing code.
    Signs(Arc<dyn ContentSigner>),
    Verifies(ChannelKey),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The channel key's part: also what makes this peer the source or a viewer.
    pub trust: Trust,
    /// The broadcast this swarm carries: what every signature covers, so content of
    /// another channel or an earlier broadcast is refused.
    pub broadcast: Broadcast,
    /// Chunks kept behind the newest known one; bounds memory.
    pub window: u64,
    /// Block requests outstanding to one peer at a time.
    pub max_requests_per_peer: usize,
    /// Requests queued from one peer before further ones are refused; bounds what a
    /// neighbour can make us hold.
    pub max_serving_per_peer: usize,
    /// Pieces per block: the unit asked of one neighbour. Small blocks spread a chunk over
    /// several neighbours; large ones cost fewer requests.
    pub block_pieces: usize,
    /// How far past the play position a viewer fetches ahead.
    pub lookahead: u64,
    /// A request that delivers nothing for this long is cancelled and resumed elsewhere.
    pub request_timeout_ms: u64,
    /// Consecutive time-outs after which a neighbour is dropped as dead or too slow.
    pub max_strikes: u8,
    /// A viewer plays each chunk this long after it was cut at the source (as estimated
    /// from when its announcement arrived): the buffer that absorbs the mesh's delays.
    pub target_buffer_ms: u64,
    /// How late past its due time a missing chunk is still waited for before it is skipped:
    /// late live data is worthless.
    pub skip_grace_ms: u64,
    /// A viewer whose next chunk was cut longer ago than this skips ahead toward live.
    pub max_lag_ms: u64,
    /// The chunk duration assumed until the live edge's pace has been observed.
    pub chunk_ms_hint: u64,
    /// A chunk due within this is urgent: fetched from whoever delivers soonest, the source
    /// included; later chunks go rarest first, from viewers only.
    pub urgent_ms: u64,
    /// Upload budget for serving chunks; `None` is unlimited, zero serves nothing (and
    /// then announces nothing, so nobody asks).
    pub upload_limit: Option<BytesPerSec>,
    /// Requests beyond this much queued upload (at the budget's rate) are refused with
    /// `Absent` at once, so the requester asks someone else instead of waiting.
    pub serve_backlog_ms: u64,
    /// Pieces stop going to a link whose driver reports this many bytes still queued, so
    /// an urgent piece never waits behind seconds of data (back-pressure).
    pub link_high_water: u64,
    /// The upload budget saves up at most this much of its rate while idle, then sends
    /// it at once. Uplinks queue little (a home router's or a shaper's 100-200 ms at a
    /// rate not much above the budget), and what a burst overruns them by is dropped,
    /// which SCTP recovers only after a second on an ordered channel: so pieces go out
    /// paced, one at a time (a send may still take the budget into debt by one message).
    pub upload_burst_ms: u64,
    /// Source: how many viewers get each block of a fresh chunk pushed (rotating, a
    /// different viewer for every block), so most viewers fetch it from each other.
    pub source_fanout: usize,
    /// Breaks ties between equally good neighbours differently on every peer, so they do
    /// not all pick the same one. Drivers pass something random; tests, a fixed value.
    pub seed: u64,
    /// Source: when the remaining viewers hear of a chunk, as a fallback for those the
    /// first copies do not reach through the mesh.
    pub source_announce_delay_ms: u64,
    /// Substreams a chunk's blocks are striped over for pushing (`substreams.rs`): a
    /// viewer subscribes to a parent per substream, which forwards its blocks unasked.
    /// 0: no pushing between viewers, everything is pulled (the source still pushes).
    pub substreams: usize,
    /// Hand over the verified init segment and each chunk as soon as it is complete,
    /// with their signatures (`Output::Signed`): an HTTP edge serves them.
    pub exports_signed: bool,
    /// A viewer with no neighbour this long (or not started this long after joining)
    /// fetches everything from the HTTP edges the server names, if any.
    pub edge_after_ms: u64,
    /// A chunk peers have not delivered this long before it is due is fetched from an
    /// edge: an HTTP round trip and the chunk's transfer, with room to spare.
    pub edge_lead_ms: u64,
    /// How pieces and manifests are checked: computed, unless the driver shares what it
    /// already computed (the simulator; `checks.rs`).
    pub checks: Checks,
}

impl Config {
    /// The broadcaster's swarm: signs every chunk and the init segment with `signer`.
    pub fn source(signer: impl ContentSigner + 'static) -> Config {
        Config::with_trust(Trust::Signs(Arc::new(signer)))
    }

    /// The broadcaster's swarm, with a signer shared with its driver.
    pub fn source_arc(signer: Arc<dyn ContentSigner>) -> Config {
        Config::with_trust(Trust::Signs(signer))
    }

    /// A viewer's swarm: stores, forwards and plays only what `key` signed.
    pub fn viewer(key: ChannelKey) -> Config {
        Config::with_trust(Trust::Verifies(key))
    }

    pub fn role(&self) -> SwarmRole {
        match self.trust {
            Trust::Signs(_) => SwarmRole::Source,
            Trust::Verifies(_) => SwarmRole::Viewer,
        }
    }

    fn with_trust(trust: Trust) -> Config {
        Config {
            trust,
            broadcast: Broadcast::default(),
            window: 30,
            max_requests_per_peer: 4,
            max_serving_per_peer: 16,
            block_pieces: 2,
            lookahead: 6,
            request_timeout_ms: 2_500,
            max_strikes: 3,
            target_buffer_ms: 1_500,
            skip_grace_ms: 500,
            chunk_ms_hint: 1_000,
            max_lag_ms: 8_000,
            urgent_ms: 1_000,
            upload_limit: None,
            serve_backlog_ms: 400,
            link_high_water: 64 * 1024,
            upload_burst_ms: 20,
            source_fanout: 2,
            source_announce_delay_ms: 400,
            seed: 0,
            substreams: 0,
            exports_signed: false,
            edge_after_ms: 3_000,
            edge_lead_ms: 700,
            checks: Checks::default(),
        }
    }
}
