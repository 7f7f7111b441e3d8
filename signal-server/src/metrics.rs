//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::viewer_reports::Experience;

/// Why the server refused something; each is counted and labelled in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    TooLarge,
    Malformed,
    RateLimited,
    UnknownPeer,
    Origin,
    PerIpLimit,
    SlowReader,
    Idle,
    ChannelFull,
    TooManyChannels,
    ChannelTaken,
    KeyRequired,
    BadSignature,
    ChallengeTimeout,
    /// A client older than the server serves (`upgrade_required`).
    Outdated,
    /// A viewer report the server does not believe (too soon, too large, not a viewer).
    BadReport,
    /// A claim that could not be recorded: Redis does not answer.
    Unavailable,
}

impl Rejection {
    const ALL: [Rejection; 17] = [
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::RateLimited,
        Rejection::UnknownPeer,
        Rejection::Origin,
        Rejection::PerIpLimit,
        Rejection::SlowReader,
        Rejection::Idle,
        Rejection::ChannelFull,
        Rejection::TooManyChannels,
        Rejection::ChannelTaken,
        Rejection::KeyRequired,
        Rejection::BadSignature,
        Rejection::ChallengeTimeout,
        Rejection::Outdated,
        Rejection::BadReport,
        Rejection::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::RateLimited => "rate_limited",
            Rejection::UnknownPeer => "unknown_peer",
            Rejection::Origin => "origin",
            Rejection::PerIpLimit => "per_ip_limit",
            Rejection::SlowReader => "slow_reader",
            Rejection::Idle => "idle",
            Rejection::ChannelFull => "channel_full",
            Rejection::TooManyChannels => "too_many_channels",
            Rejection::ChannelTaken => "channel_taken",
            Rejection::KeyRequired => "key_required",
            Rejection::BadSignature => "bad_signature",
            Rejection::ChallengeTimeout => "challenge_timeout",
            Rejection::Outdated => "outdated",
            Rejection::BadReport => "bad_report",
            Rejection::Unavailable => "unavailable",
        }
    }
}

/// Lock-free counters; the per-channel gauges come from the rooms at render time.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub relayed: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
}

impl Metrics {
    pub fn reject(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejections(&self, why: Rejection) -> u64 {
        self.rejections[why as usize].load(Ordering::Relaxed)
    }

    /// `channels` is (name, peers) for every channel, `experience` what its viewers
    /// reported.
    pub fn render(
        &self,
        channels: &[(String, usize)],
        experience: &[(String, Experience)],
    ) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        };
        gauge(
            &mut out,
            "streamtorrent_connections",
            "Open WebSocket connections.",
        );
        let _ = writeln!(
            out,
            "streamtorrent_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        gauge(
            &mut out,
            "streamtorrent_channels",
            "Channels with at least one peer.",
        );
        let _ = writeln!(out, "streamtorrent_channels {}", channels.len());
        gauge(
            &mut out,
            "streamtorrent_channel_peers",
            "Peers in each channel, broadcaster included.",
        );
        for (name, peers) in channels {
            // Channel names are [a-z0-9_-], so they need no escaping in a label.
            let _ = writeln!(
                out,
                "streamtorrent_channel_peers{{channel=\"{name}\"}} {peers}"
            );
        }
        let _ = writeln!(out, "# HELP streamtorrent_relayed_total Signalling messages relayed between peers.\n# TYPE streamtorrent_relayed_total counter");
        let _ = writeln!(
            out,
            "streamtorrent_relayed_total {}",
            self.relayed.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP streamtorrent_rejections_total Refused connections and messages, by reason.\n# TYPE streamtorrent_rejections_total counter");
        for why in Rejection::ALL {
            let _ = writeln!(
                out,
                "streamtorrent_rejections_total{{reason=\"{}\"}} {}",
                why.label(),
                self.rejections(why)
            );
        }
        crate::viewer_reports::render(&mut out, experience);
        out
    }
}
