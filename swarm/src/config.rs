use protocol::MAX_PIECE_BYTES;

/// What this peer is in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmRole {
    /// The broadcaster: produces chunks, serves them, never plays.
    Source,
    /// A viewer: fetches chunks, plays them in order, serves what it holds.
    Viewer,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub role: SwarmRole,
    /// Chunks kept behind the newest known one; bounds memory.
    pub window: u64,
    /// Requests outstanding to one peer at a time.
    pub max_requests_per_peer: usize,
    /// How far past the play position a viewer fetches ahead.
    pub lookahead: u64,
    /// A request not completed within this is cancelled and tried elsewhere.
    pub request_timeout_ms: u64,
    /// How long playback waits for a missing chunk while later ones are ready, before
    /// skipping it: late live data is worthless.
    pub skip_after_ms: u64,
    /// A joining viewer starts this many keyframe chunks behind the newest one, trading a
    /// little delay for a buffer that survives a slow first fetch.
    pub start_keyframes_behind: usize,
    pub piece_bytes: usize,
    /// Source: how many viewers hear of a fresh chunk at once (rotating), so most viewers
    /// fetch it from each other rather than all from the source.
    pub source_fanout: usize,
    /// Source: when the remaining viewers hear of a chunk, as a fallback for those the
    /// first copies do not reach through the mesh.
    pub source_announce_delay_ms: u64,
}

impl Config {
    pub fn new(role: SwarmRole) -> Config {
        Config {
            role,
            window: 30,
            max_requests_per_peer: 4,
            lookahead: 6,
            request_timeout_ms: 4_000,
            skip_after_ms: 5_000,
            start_keyframes_behind: 1,
            piece_bytes: MAX_PIECE_BYTES,
            source_fanout: 2,
            source_announce_delay_ms: 400,
        }
    }
}
