//! Latency presets: how far behind live the player sits. More delay is more buffer, and so
//! more time for the swarm to fetch each chunk from other viewers before it is due.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::media::MediaLimits;

/// `latency` on the pages (`?latency=low`), in the JS API and in the player's menu.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyPreset {
    /// Closest to live, least margin against a late chunk.
    Low,
    /// What the player did before presets existed.
    #[default]
    Normal,
    /// Several seconds of buffer: the swarm has the most headroom, stalls are rarest.
    High,
}

impl LatencyPreset {
    pub const ALL: [LatencyPreset; 3] = [
        LatencyPreset::Low,
        LatencyPreset::Normal,
        LatencyPreset::High,
    ];

    /// The swarm's playout delay behind each chunk's cut.
    pub fn target_ms(self) -> u32 {
        match self {
            LatencyPreset::Low => 1_000,
            LatencyPreset::Normal => 1_500,
            LatencyPreset::High => 4_000,
        }
    }

    /// The preset whose delay is nearest `ms` (an explicit `targetLatencyMs`).
    pub fn nearest(ms: u32) -> LatencyPreset {
        LatencyPreset::ALL
            .into_iter()
            .min_by_key(|p| p.target_ms().abs_diff(ms))
            .expect("ALL is not empty")
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LatencyPreset::Low => "low",
            LatencyPreset::Normal => "normal",
            LatencyPreset::High => "high",
        }
    }

    /// The menu's words for it.
    pub fn label(self) -> &'static str {
        match self {
            LatencyPreset::Low => "Low latency",
            LatencyPreset::Normal => "Normal latency",
            LatencyPreset::High => "High latency (smoothest)",
        }
    }
}

impl fmt::Display for LatencyPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LatencyPreset {
    type Err = String;

    fn from_str(s: &str) -> Result<LatencyPreset, String> {
        LatencyPreset::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("latency must be \"low\", \"normal\" or \"high\", got {s:?}"))
    }
}

/// How the media player holds a given delay: the backstop jump (when playback drifted
/// far behind the newest media) lands at the delay's own distance, and fires only well
/// past it, so a larger buffer is never mistaken for drift.
pub fn media_limits(target_ms: u32) -> MediaLimits {
    let target_s = f64::from(target_ms) / 1000.0;
    let base = MediaLimits::default();
    MediaLimits {
        target_behind_s: base.target_behind_s.max(target_s),
        catch_up_after_s: base.catch_up_after_s.max(target_s + 4.0),
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_from_their_names_and_order_by_delay() {
        for preset in LatencyPreset::ALL {
            assert_eq!(preset.as_str().parse::<LatencyPreset>(), Ok(preset));
        }
        assert!("fast"
            .parse::<LatencyPreset>()
            .unwrap_err()
            .contains("\"fast\""));
        let delays: Vec<u32> = LatencyPreset::ALL.iter().map(|p| p.target_ms()).collect();
        assert!(delays.windows(2).all(|w| w[0] < w[1]), "{delays:?}");
        // The default is the delay the player had before presets.
        assert_eq!(
            LatencyPreset::default().target_ms(),
            crate::options::DEFAULT_TARGET_LATENCY_MS
        );
    }

    #[test]
    fn an_explicit_delay_shows_as_the_nearest_preset() {
        assert_eq!(LatencyPreset::nearest(500), LatencyPreset::Low);
        assert_eq!(LatencyPreset::nearest(1_600), LatencyPreset::Normal);
        assert_eq!(LatencyPreset::nearest(30_000), LatencyPreset::High);
    }

    #[test]
    fn a_longer_delay_moves_the_catch_up_backstop_with_it() {
        assert_eq!(media_limits(1_500), MediaLimits::default());
        let high = media_limits(4_000);
        assert_eq!(high.target_behind_s, 4.0);
        assert_eq!(high.catch_up_after_s, 8.0);
        assert_eq!(high.keep_behind_s, MediaLimits::default().keep_behind_s);
    }
}
