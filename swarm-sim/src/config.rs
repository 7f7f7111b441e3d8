//! The simulated scenario: what the command line sets, checked before anything runs.

use std::str::FromStr;

use protocol::PiecesChannel;

use crate::network::FastRetransmit;
use crate::SimError;

/// The playout delays `--target-buffer-ms` accepts: a viewer more than 8 s behind skips
/// toward live (`swarm::Config::max_lag_ms`), so a delay near that would skip forever.
const MIN_TARGET_BUFFER_MS: u64 = 100;
const MAX_TARGET_BUFFER_MS: u64 = 7_000;

/// A scenario. Every field has a command-line option in `swarm-sim`.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub peers: usize,
    pub seconds: u64,
    pub bitrate_kbps: u64,
    pub chunk_ms: u64,
    /// Mean viewer upload capacity ÷ bitrate, spread over [`UPLOAD_CLASSES`].
    pub upload_ratio: f64,
    /// Broadcaster upload capacity ÷ bitrate.
    pub source_upload: f64,
    /// Share of viewers replaced per minute.
    pub churn: f64,
    /// Packet loss probability.
    pub loss: f64,
    /// What a lost packet at a message's tail costs, in ms (`network::Loss`).
    pub tail_loss_recovery_ms: u64,
    /// Which later packets report a lost one for fast retransmit (`network::Loss`).
    pub fast_retransmit: FastRetransmit,
    pub rtt: RttRange,
    pub seed: u64,
    /// Initial viewers join spread evenly over this many seconds.
    pub ramp_secs: u64,
    /// Time a link's set-up takes beyond what is modelled (3 round trips and 50 ms of
    /// gathering): DTLS, SCTP, the stack's own timers. 0 by default; on the 2-core VM the
    /// native stack took 410-450 ms in all from joining to its first open data channel,
    /// about 370 ms more (`scripts/bench-native-swarm` passes that).
    pub link_setup_ms: u64,
    /// The uplink's router queue, in milliseconds at its capacity (`None`: unbounded, a
    /// FIFO that never drops). Packets of a piece that find it full are dropped, and the
    /// piece arrives only after `drop_recovery_ms`, the transport's recovery (a tail drop
    /// waits for SCTP's retransmission time-out: at least 1 s in the `webrtc` crate, RFC
    /// 4960's RTO.min); the retransmission takes its share of the uplink again.
    pub uplink_queue_ms: Option<u64>,
    pub drop_recovery_ms: u64,
    /// How links carry pieces (`network.rs`): on an unordered channel of their own, as
    /// the drivers do by default, or shared with the ordered control channel.
    pub pieces_channel: PiecesChannel,
    /// Substreams every peer pushes along (`swarm::Config::substreams`); `None` keeps
    /// the peers' default.
    pub substreams: Option<usize>,
    /// Viewers' playout delay behind each chunk's cut (`swarm::Config::target_buffer_ms`,
    /// what the player's latency presets set: low 1,000, normal 1,500, high 4,000 ms);
    /// `None` keeps the peers' default.
    pub target_buffer_ms: Option<u64>,
    /// Share of viewers that serve corrupted pieces (a bit flipped in each).
    pub polluters: f64,
    /// Share of viewers that flood their neighbours with requests.
    pub flooders: f64,
    /// Viewers' uplinks in the classes' exact shares, with a mean of exactly
    /// `upload_ratio` (see [`SimConfig::exact_uplinks`]), instead of drawn at random: what
    /// a small real swarm set up to match uses (`scripts/bench-native-swarm`).
    pub exact_classes: bool,
}

impl SimConfig {
    pub fn new(peers: usize, seconds: u64) -> SimConfig {
        SimConfig {
            peers,
            seconds,
            bitrate_kbps: 2000,
            chunk_ms: 1000,
            upload_ratio: 1.5,
            source_upload: 4.0,
            churn: 0.0,
            loss: 0.0,
            tail_loss_recovery_ms: 1000,
            fast_retransmit: FastRetransmit::Association,
            rtt: RttRange { min: 20, max: 200 },
            seed: 1,
            ramp_secs: 10,
            link_setup_ms: 0,
            uplink_queue_ms: None,
            drop_recovery_ms: 1000,
            pieces_channel: PiecesChannel::Unordered,
            substreams: None,
            target_buffer_ms: None,
            polluters: 0.0,
            flooders: 0.0,
            exact_classes: false,
        }
    }

    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |option: &'static str, reason: String| Err(SimError::Option { option, reason });
        if self.peers == 0 {
            return bad("--peers", "at least one viewer".into());
        }
        if self.seconds == 0 {
            return bad("--seconds", "at least 1".into());
        }
        if !(100..=10_000).contains(&self.chunk_ms) {
            return bad(
                "--chunk-ms",
                format!("{} not in 100..=10000", self.chunk_ms),
            );
        }
        // A chunk's size must fit the protocol's cap on what a piece may claim.
        let chunk_bytes = self.bitrate_kbps * 1000 / 8 * self.chunk_ms / 1000;
        if self.bitrate_kbps == 0 || chunk_bytes > u64::from(protocol::MAX_CHUNK_BYTES) {
            return bad(
                "--bitrate-kbps",
                format!("{} gives {chunk_bytes}-byte chunks", self.bitrate_kbps),
            );
        }
        for (option, value) in [
            ("--upload-ratio", self.upload_ratio),
            ("--source-upload", self.source_upload),
            ("--churn", self.churn),
        ] {
            if !(value.is_finite() && (0.0..=1000.0).contains(&value)) {
                return bad(option, format!("{value} not in 0..=1000"));
            }
        }
        if self.source_upload <= 0.0 {
            return bad("--source-upload", "the source must upload something".into());
        }
        if self
            .substreams
            .is_some_and(|k| k > usize::from(protocol::MAX_SUBSTREAMS))
        {
            return bad(
                "--substreams",
                format!("at most {}", protocol::MAX_SUBSTREAMS),
            );
        }
        if let Some(ms) = self.target_buffer_ms {
            if !(MIN_TARGET_BUFFER_MS..=MAX_TARGET_BUFFER_MS).contains(&ms) {
                return bad(
                    "--target-buffer-ms",
                    format!(
                        "{ms} not in {MIN_TARGET_BUFFER_MS}..={MAX_TARGET_BUFFER_MS} (viewers \
                         skip toward live past 8,000 ms behind)"
                    ),
                );
            }
        }
        if !(0.0..0.5).contains(&self.loss) {
            return bad("--loss", format!("{} not in 0..0.5", self.loss));
        }
        for (option, share) in [
            ("--polluters", self.polluters),
            ("--flooders", self.flooders),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return bad(option, format!("{share} is not a share in 0..=1"));
            }
        }
        if self.polluters + self.flooders > 1.0 {
            return bad(
                "--flooders",
                "polluters and flooders add up to more than all viewers".into(),
            );
        }
        Ok(())
    }

    pub fn chunk_bytes(&self) -> usize {
        (self.bitrate_kbps * 1000 / 8 * self.chunk_ms / 1000) as usize
    }

    /// Bytes per second of the stream.
    pub fn bitrate_bytes(&self) -> f64 {
        self.bitrate_kbps as f64 * 1000.0 / 8.0
    }

    /// Uplink capacity (bytes/s) of each of the first `peers` viewers, in joining order,
    /// for `exact_classes`: each class gets its share of the viewers rounded by largest
    /// remainder, spread evenly over the joining order (so a ramp is not all zero-upload
    /// viewers first), and the unit is scaled so the mean is exactly `upload_ratio`.
    /// Later joiners (churn) take the same list round again.
    pub fn exact_uplinks(&self) -> Vec<f64> {
        let n = self.peers;
        let quotas: Vec<f64> = UPLOAD_CLASSES
            .iter()
            .map(|(share, _)| share * n as f64)
            .collect();
        let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
        let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
        by_remainder.sort_by(|&a, &b| {
            (quotas[b] - quotas[b].floor()).total_cmp(&(quotas[a] - quotas[a].floor()))
        });
        let short = n - counts.iter().sum::<usize>();
        for &class in by_remainder.iter().take(short) {
            counts[class] += 1;
        }
        // Class c's j-th viewer sits at (j + ½) / count along the order.
        let mut slots: Vec<(f64, usize)> = Vec::with_capacity(n);
        for (class, &count) in counts.iter().enumerate() {
            slots.extend((0..count).map(|j| ((j as f64 + 0.5) / count as f64, class)));
        }
        slots.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let weights: Vec<f64> = slots
            .iter()
            .map(|&(_, class)| UPLOAD_CLASSES[class].1)
            .collect();
        let total: f64 = weights.iter().sum();
        let unit = if total > 0.0 {
            self.upload_ratio * self.bitrate_bytes() * n as f64 / total
        } else {
            0.0
        };
        weights.iter().map(|w| w * unit).collect()
    }
}

/// Viewer upload classes: (share of viewers, relative capacity). Home uplinks are
/// lopsided: some viewers cannot or will not upload at all (mobile, strict NAT, a
/// budget of zero), most upload a little, a few on fibre upload a lot. The relative
/// capacities are scaled so that the mean is `upload_ratio × bitrate`.
pub const UPLOAD_CLASSES: [(f64, f64); 4] = [(0.15, 0.0), (0.35, 1.0), (0.35, 2.0), (0.15, 4.0)];

/// Round-trip times between peers, drawn uniformly per link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttRange {
    pub min: u64,
    pub max: u64,
}

impl FromStr for RttRange {
    type Err = String;

    fn from_str(text: &str) -> Result<RttRange, String> {
        let (min, max) = text
            .split_once('-')
            .ok_or_else(|| format!("`{text}` is not MIN-MAX, e.g. 20-200"))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{s}` is not a whole number of milliseconds"))
        };
        let (min, max) = (parse(min)?, parse(max)?);
        if min > max || max > 10_000 {
            return Err(format!("{min}-{max}: need MIN <= MAX <= 10000"));
        }
        Ok(RttRange { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_ranges_parse_with_clear_errors() {
        assert_eq!("20-200".parse(), Ok(RttRange { min: 20, max: 200 }));
        assert!("200".parse::<RttRange>().unwrap_err().contains("MIN-MAX"));
        assert!("9-x".parse::<RttRange>().unwrap_err().contains("`x`"));
        assert!("300-200".parse::<RttRange>().is_err());
    }

    #[test]
    fn a_playout_delay_the_viewers_would_skip_past_is_refused() {
        let mut config = SimConfig::new(10, 10);
        config.target_buffer_ms = Some(4_000);
        assert!(config.validate().is_ok());
        for ms in [0, 7_001, 60_000] {
            config.target_buffer_ms = Some(ms);
            let err = config.validate().expect_err("out of range").to_string();
            assert!(err.contains("--target-buffer-ms"), "{err}");
        }
    }

    #[test]
    fn exact_uplinks_keep_the_shares_and_the_mean() {
        let mut config = SimConfig::new(24, 60);
        config.bitrate_kbps = 1000;
        config.upload_ratio = 1.5;
        let uplinks = config.exact_uplinks();
        assert_eq!(uplinks.len(), 24);
        let mean = uplinks.iter().sum::<f64>() / 24.0;
        assert!((mean - 1.5 * 125_000.0).abs() < 1e-6, "mean {mean}");
        // 15% of 24 is 3.6: four viewers upload nothing, four upload the most.
        let zero = uplinks.iter().filter(|&&u| u == 0.0).count();
        let top = uplinks.iter().cloned().fold(0.0, f64::max);
        assert_eq!(zero, 4);
        assert_eq!(uplinks.iter().filter(|&&u| u == top).count(), 4);
        // Spread over the order: the first eight joiners are not all of one class.
        let first: std::collections::BTreeSet<u64> =
            uplinks[..8].iter().map(|u| *u as u64).collect();
        assert!(first.len() >= 3, "first eight: {:?}", &uplinks[..8]);
    }

    #[test]
    fn upload_classes_are_shares_of_one() {
        let total: f64 = UPLOAD_CLASSES.iter().map(|(share, _)| share).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn nonsense_options_are_refused() {
        let mut config = SimConfig::new(10, 10);
        config.validate().unwrap();
        config.loss = 0.7;
        assert!(matches!(
            config.validate(),
            Err(SimError::Option {
                option: "--loss",
                ..
            })
        ));
    }
}
