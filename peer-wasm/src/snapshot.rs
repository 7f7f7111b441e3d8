//! What `player.stats()` returns and the `state` a viewer sees: a copy the app refreshes
//! every tick, so readers (the JS API, the page) never touch the app's state.
//!
//! The field names are the public stats contract (docs/embed.md): add fields, never rename.

use std::collections::HashMap;

use protocol::PeerId;
use serde::Serialize;
use swarm::{Neighbour, Stats};

use crate::latency::LatencyPreset;

/// What the viewer is looking at, in plain terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayerState {
    /// Reaching the signal server, or peers, before any video.
    #[default]
    Connecting,
    /// Waiting for video: before the first frame, or the buffer ran dry.
    Buffering,
    Playing,
    /// The viewer paused (the swarm keeps fetching, so Go live is instant).
    Paused,
    /// No broadcaster: the channel is not live, or the broadcast ended.
    Offline,
    /// This browser lacks WebRTC or Media Source Extensions.
    Unsupported,
    /// This browser cannot decode the channel's codecs.
    CodecUnsupported,
    /// Stopped by `destroy()` or a fatal error.
    Stopped,
}

impl PlayerState {
    /// The sentence the page shows for this state.
    pub fn describe(self) -> &'static str {
        match self {
            PlayerState::Connecting => "Connecting…",
            PlayerState::Buffering => "Buffering…",
            PlayerState::Playing => "Playing",
            PlayerState::Paused => "Paused",
            PlayerState::Offline => "Channel offline: waiting for the broadcaster…",
            PlayerState::Unsupported => {
                "This browser lacks WebRTC or Media Source Extensions, which StreamTorrent needs."
            }
            PlayerState::CodecUnsupported => {
                "This browser cannot play this channel's video format."
            }
            PlayerState::Stopped => "Stopped",
        }
    }
}

/// What decides the state, gathered by the app each tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Situation {
    /// Video has played at least once.
    pub started: bool,
    /// The viewer paused the video.
    pub paused: bool,
    /// Seconds of media buffered ahead of the play position.
    pub buffer_s: f64,
    /// A data channel to the broadcaster is open.
    pub source_linked: bool,
    /// The signal server said there is no broadcaster (or it left).
    pub source_absent: bool,
    /// No new chunk heard of for several chunk durations.
    pub starving: bool,
    pub peers: usize,
}

/// The state a viewer sees. Offline only when nothing is coming: the broadcaster is gone
/// (or never came) and no new chunk arrives through peers either.
pub fn state_of(s: &Situation) -> PlayerState {
    let nothing_coming = s.source_absent && !s.source_linked && (s.starving || !s.started);
    if nothing_coming && s.buffer_s < 0.1 {
        return PlayerState::Offline;
    }
    if s.paused {
        PlayerState::Paused
    } else if s.started {
        if s.buffer_s < 0.1 {
            PlayerState::Buffering
        } else {
            PlayerState::Playing
        }
    } else if s.peers == 0 {
        PlayerState::Connecting
    } else {
        PlayerState::Buffering
    }
}

/// One neighbour's rates over the last measuring interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeighbourRate {
    pub peer: String,
    pub source: bool,
    pub down_kbps: f64,
    pub up_kbps: f64,
}

/// `player.stats()`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub state: PlayerState,
    pub peers: usize,
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    /// Fetched from the channel's HTTP edges (when peers could not deliver in time, or
    /// there are none), checked like everything else.
    pub bytes_from_http: u64,
    /// Playing without neighbours, from an HTTP edge: the page says "via server".
    pub via_server: bool,
    pub bytes_uploaded: u64,
    /// Pieces received twice (a request raced a push, or a late piece); not counted above.
    pub bytes_duplicate: u64,
    /// Requests this peer refused for lack of upload budget or of the piece.
    pub requests_refused: u64,
    /// Neighbours dropped for misbehaving or not delivering…
    pub peers_dropped: u64,
    /// …by cause.
    pub drops: DropCounts,
    /// Payload that failed its check against the channel key's signed manifest: thrown
    /// away before it was stored, forwarded or played.
    pub bytes_rejected: u64,
    pub chunks_played: u64,
    pub chunks_missed: u64,
    /// Times the video element ran out of media after playback started.
    pub stalls: u64,
    pub buffer_ms: u64,
    /// Delay behind the broadcaster's cut of the media now on screen; `null` before play.
    pub lag_ms: Option<u64>,
    /// From creating the player to the first frame; `null` before it.
    pub startup_ms: Option<u64>,
    pub download_kbps: f64,
    pub upload_kbps: f64,
    /// Share of received payload that came from other viewers, 0..1.
    pub peer_share: f64,
    pub signal_connected: bool,
    /// The viewer paused playback (`state` is then `paused`).
    pub paused: bool,
    pub muted: bool,
    /// The video element's volume, 0..1.
    pub volume: f64,
    /// The latency preset in use: `low`, `normal` or `high`.
    pub latency: LatencyPreset,
    /// The delay behind each chunk's cut the player aims for (the preset's, or
    /// `targetLatencyMs`).
    pub target_latency_ms: u64,
    pub neighbours: Vec<NeighbourRate>,
    /// The last chunks handed to the video element, with the SHA-256 of their bytes, so
    /// what played can be checked against the broadcaster's recording.
    pub appended: Vec<AppendedChunk>,
}

/// How many appended chunks `stats().appended` lists.
pub const APPENDED_LISTED: usize = 10;

/// A chunk handed to the video element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppendedChunk {
    pub seq: u64,
    pub bytes: usize,
    /// Hex SHA-256 of the bytes appended.
    pub sha256: String,
}

impl AppendedChunk {
    pub fn of(seq: protocol::ChunkSeq, data: &[u8]) -> AppendedChunk {
        let digest = protocol::hash_piece(data);
        AppendedChunk {
            seq: seq.0,
            bytes: data.len(),
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Neighbours dropped, by cause (the swarm's `Drops`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DropCounts {
    pub malformed: u64,
    pub violation: u64,
    pub lying: u64,
    pub flooding: u64,
    pub polluted: u64,
    pub unresponsive: u64,
}

impl From<swarm::Drops> for DropCounts {
    fn from(d: swarm::Drops) -> DropCounts {
        DropCounts {
            malformed: d.malformed,
            violation: d.violation,
            lying: d.lying,
            flooding: d.flooding,
            polluted: d.polluted,
            unresponsive: d.unresponsive,
        }
    }
}

impl Snapshot {
    /// Fills in the swarm's counters.
    pub fn set_counters(&mut self, stats: &Stats, peers: usize) {
        self.peers = peers;
        self.bytes_from_peers = stats.bytes_from_peers;
        self.bytes_from_source = stats.bytes_from_source;
        self.bytes_from_http = stats.bytes_from_http;
        self.via_server = peers == 0 && stats.bytes_from_http > 0;
        self.bytes_uploaded = stats.bytes_uploaded;
        self.bytes_duplicate = stats.bytes_duplicate;
        self.requests_refused = stats.requests_refused;
        self.peers_dropped = stats.peers_dropped;
        self.drops = stats.drops.into();
        self.bytes_rejected = stats.bytes_rejected;
        self.chunks_played = stats.chunks_played;
        self.chunks_missed = stats.chunks_missed;
        let received = stats.bytes_from_peers + stats.bytes_from_source + stats.bytes_from_http;
        self.peer_share = if received == 0 {
            0.0
        } else {
            stats.bytes_from_peers as f64 / received as f64
        };
    }
}

/// Turns byte counters into rates: per neighbour, and for the whole peer, between two
/// samples at least `interval_ms` apart (shorter intervals make jumpy figures).
#[derive(Debug)]
pub struct RateMeter {
    interval_ms: f64,
    last: Option<Sample>,
    /// The most recent rates, reported until the next interval completes.
    pub rates: Rates,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    pub from_peers_kbps: f64,
    pub from_source_kbps: f64,
    pub upload_kbps: f64,
    pub neighbours: Vec<NeighbourRate>,
}

#[derive(Debug)]
struct Sample {
    at: f64,
    from_peers: u64,
    from_source: u64,
    uploaded: u64,
    /// Bytes down, bytes up, is the broadcaster.
    per_peer: HashMap<PeerId, (u64, u64, bool)>,
}

impl RateMeter {
    pub fn new(interval_ms: f64) -> RateMeter {
        RateMeter {
            interval_ms,
            last: None,
            rates: Rates::default(),
        }
    }

    /// Takes a sample at `now` (ms); returns true when new rates were computed.
    pub fn sample(
        &mut self,
        now: f64,
        stats: &Stats,
        neighbours: impl Iterator<Item = Neighbour>,
    ) -> bool {
        let sample = Sample {
            at: now,
            from_peers: stats.bytes_from_peers,
            from_source: stats.bytes_from_source,
            uploaded: stats.bytes_uploaded,
            per_peer: neighbours
                .map(|n| (n.peer, (n.bytes_down, n.bytes_up, n.is_source)))
                .collect(),
        };
        let Some(last) = &self.last else {
            self.last = Some(sample);
            return false;
        };
        let elapsed = now - last.at;
        if elapsed < self.interval_ms {
            return false;
        }
        let kbps = |now: u64, then: u64| now.saturating_sub(then) as f64 * 8.0 / elapsed;
        let mut neighbours: Vec<NeighbourRate> = sample
            .per_peer
            .iter()
            .map(|(peer, (down, up, source))| {
                let (down0, up0, _) = last.per_peer.get(peer).copied().unwrap_or_default();
                NeighbourRate {
                    peer: peer.to_string(),
                    source: *source,
                    down_kbps: kbps(*down, down0),
                    up_kbps: kbps(*up, up0),
                }
            })
            .collect();
        neighbours.sort_by(|a, b| a.peer.cmp(&b.peer));
        self.rates = Rates {
            from_peers_kbps: kbps(sample.from_peers, last.from_peers),
            from_source_kbps: kbps(sample.from_source, last.from_source),
            upload_kbps: kbps(sample.uploaded, last.uploaded),
            neighbours,
        };
        self.last = Some(sample);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(from_peers: u64, from_source: u64, uploaded: u64) -> Stats {
        Stats {
            bytes_from_peers: from_peers,
            bytes_from_source: from_source,
            bytes_uploaded: uploaded,
            ..Stats::default()
        }
    }

    #[test]
    fn rates_are_bits_per_millisecond_over_the_interval() {
        let mut meter = RateMeter::new(1000.0);
        let peer = PeerId(7);
        let n = |down, up| Neighbour {
            peer,
            is_source: false,
            bytes_down: down,
            bytes_up: up,
        };
        assert!(!meter.sample(0.0, &stats(0, 0, 0), [n(0, 0)].into_iter()));
        // Half an interval: not yet.
        assert!(!meter.sample(500.0, &stats(1, 1, 1), [n(1, 1)].into_iter()));
        // 125,000 bytes in 1 s = 1,000 kbit/s.
        assert!(meter.sample(
            1000.0,
            &stats(125_000, 25_000, 50_000),
            [n(125_000, 50_000)].into_iter()
        ));
        assert_eq!(meter.rates.from_peers_kbps, 1000.0);
        assert_eq!(meter.rates.from_source_kbps, 200.0);
        assert_eq!(meter.rates.upload_kbps, 400.0);
        assert_eq!(meter.rates.neighbours[0].down_kbps, 1000.0);
        assert_eq!(meter.rates.neighbours[0].up_kbps, 400.0);
    }

    #[test]
    fn offline_only_when_nothing_is_coming() {
        let base = Situation {
            peers: 1,
            ..Situation::default()
        };
        assert_eq!(
            state_of(&Situation { peers: 0, ..base }),
            PlayerState::Connecting
        );
        assert_eq!(state_of(&base), PlayerState::Buffering);
        let absent = Situation {
            source_absent: true,
            ..base
        };
        assert_eq!(state_of(&absent), PlayerState::Offline);
        // Playing from peers while the server knows no broadcaster (e.g. it restarted):
        // still playing.
        let playing = Situation {
            started: true,
            buffer_s: 2.0,
            ..absent
        };
        assert_eq!(state_of(&playing), PlayerState::Playing);
        // The broadcast ended: buffer drained and nothing new arrives.
        let ended = Situation {
            buffer_s: 0.0,
            starving: true,
            ..playing
        };
        assert_eq!(state_of(&ended), PlayerState::Offline);
        // A dry buffer while chunks still come is buffering, not offline.
        assert_eq!(
            state_of(&Situation {
                starving: false,
                ..ended
            }),
            PlayerState::Buffering
        );
        // Paused by the viewer, whatever the buffer; offline still wins.
        assert_eq!(
            state_of(&Situation {
                paused: true,
                ..playing
            }),
            PlayerState::Paused
        );
        assert_eq!(
            state_of(&Situation {
                paused: true,
                ..ended
            }),
            PlayerState::Offline
        );
    }

    #[test]
    fn stats_contract_field_names() {
        let json = serde_json::to_value(Snapshot::default()).unwrap();
        for field in [
            "peers",
            "bytes_from_peers",
            "bytes_from_source",
            "bytes_from_http",
            "via_server",
            "bytes_uploaded",
            "chunks_played",
            "chunks_missed",
            "stalls",
            "buffer_ms",
            "lag_ms",
            "startup_ms",
            "bytes_rejected",
            "paused",
            "muted",
            "volume",
            "latency",
            "target_latency_ms",
        ] {
            assert!(json.get(field).is_some(), "stats() lacks {field}: {json}");
        }
        assert_eq!(json["state"], "connecting");
        assert_eq!(json["drops"]["polluted"], 0);
    }
}
