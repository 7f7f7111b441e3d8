//! The options of `new Player(video, options)`, parsed once at the boundary into types the
//! app can trust; every mistake is reported by name.

use protocol::ChannelName;
use swarm::BytesPerSec;

use crate::latency::LatencyPreset;

/// Delay behind live the player may be asked to aim for: below half a second a 1 s chunk
/// cannot arrive in time; above 30 s it would outlive the swarm's window.
pub const TARGET_LATENCY_MS: std::ops::RangeInclusive<u32> = 500..=30_000;
/// The default delay behind the broadcaster's cut: one 1 s chunk plus half a second of
/// margin for its trip through the swarm.
pub const DEFAULT_TARGET_LATENCY_MS: u32 = 1_500;

#[derive(Debug, Clone, PartialEq)]
pub struct PlayerOptions {
    pub channel: ChannelName,
    /// `ws(s)://host[:port]/ws` of the signal server.
    pub signal_url: String,
    /// The server's `http(s)://host[:port]`, for the embed snippet and links.
    pub origin: String,
    pub muted: bool,
    /// Start playing as soon as the first chunk is due; otherwise wait for `play()`.
    pub autoplay: bool,
    pub max_upload: Option<BytesPerSec>,
    /// The preset shown in the menu: the one asked for, or the nearest to an explicit
    /// `targetLatencyMs`.
    pub latency: LatencyPreset,
    pub target_latency_ms: u32,
    /// List the SHA-256 of the last chunks appended in `stats().appended`, so what played
    /// can be checked against the broadcaster's recording. Off by default: it copies and
    /// hashes every chunk (about 1 ms each in Chromium), which a viewer does not need.
    pub audit: bool,
    /// Privacy mode: peer links through TURN relays only, so no other viewer learns
    /// this one's address.
    pub relay_only: bool,
}

/// Options as they came from JavaScript, before checking.
#[derive(Debug, Clone, Default)]
pub struct RawOptions {
    pub channel: Option<String>,
    pub server: Option<String>,
    pub muted: Option<bool>,
    pub autoplay: Option<bool>,
    pub max_upload_kbps: Option<f64>,
    pub latency: Option<String>,
    pub target_latency_ms: Option<f64>,
    pub audit: Option<bool>,
    pub relay_only: Option<bool>,
}

impl PlayerOptions {
    /// `page_origin` is where the page came from: the server when none is given.
    pub fn parse(raw: RawOptions, page_origin: &str) -> Result<PlayerOptions, String> {
        let channel = raw
            .channel
            .ok_or("options.channel is required (the channel's name, e.g. \"demo\")")?
            .parse::<ChannelName>()
            .map_err(|e| format!("options.channel: {e}"))?;
        let origin = server_origin(raw.server.as_deref().unwrap_or(page_origin))?;
        let signal_url = format!(
            "{}/ws",
            origin
                .replacen("https://", "wss://", 1)
                .replacen("http://", "ws://", 1)
        );
        let max_upload = match raw.max_upload_kbps {
            None => None,
            Some(kbps) if (0.0..=10_000_000.0).contains(&kbps) => {
                Some(BytesPerSec((kbps * 1000.0 / 8.0) as u64))
            }
            Some(kbps) => {
                return Err(format!(
                    "options.maxUploadKbps must be a number from 0 to 10000000, got {kbps}"
                ))
            }
        };
        let preset = match raw.latency.as_deref() {
            None => None,
            Some(name) => Some(
                name.parse::<LatencyPreset>()
                    .map_err(|e| format!("options.{e}"))?,
            ),
        };
        let target_latency_ms = match raw.target_latency_ms {
            None => preset.unwrap_or_default().target_ms(),
            Some(ms) if ms.is_finite() && TARGET_LATENCY_MS.contains(&(ms as u32)) => ms as u32,
            Some(ms) => {
                return Err(format!(
                    "options.targetLatencyMs must be from {} to {}, got {ms}",
                    TARGET_LATENCY_MS.start(),
                    TARGET_LATENCY_MS.end()
                ))
            }
        };
        Ok(PlayerOptions {
            channel,
            signal_url,
            origin,
            muted: raw.muted.unwrap_or(true),
            autoplay: raw.autoplay.unwrap_or(true),
            max_upload,
            latency: preset.unwrap_or(LatencyPreset::nearest(target_latency_ms)),
            target_latency_ms,
            audit: raw.audit.unwrap_or(false),
            relay_only: raw.relay_only.unwrap_or(false),
        })
    }
}

/// `http(s)://host[:port]` from a server address: an origin, a page URL on it, or a
/// `ws(s)://` URL.
fn server_origin(server: &str) -> Result<String, String> {
    let server = server.trim();
    let (scheme, rest) = server.split_once("://").ok_or_else(|| {
        format!("options.server must be a URL like https://host:8080, got {server:?}")
    })?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        other => {
            return Err(format!(
                "options.server must use http or https, got {other}:// in {server:?}"
            ))
        }
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("options.server has no host: {server:?}"));
    }
    Ok(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(channel: &str) -> RawOptions {
        RawOptions {
            channel: Some(channel.into()),
            ..RawOptions::default()
        }
    }

    #[test]
    fn defaults_come_from_the_page() {
        let options = PlayerOptions::parse(raw("demo"), "https://tv.example:8443").unwrap();
        assert_eq!(options.signal_url, "wss://tv.example:8443/ws");
        assert_eq!(options.origin, "https://tv.example:8443");
        assert!(options.muted);
        assert_eq!(options.max_upload, None);
        assert_eq!(options.target_latency_ms, DEFAULT_TARGET_LATENCY_MS);
    }

    #[test]
    fn server_may_be_an_origin_a_page_or_a_websocket_url() {
        for server in [
            "http://10.0.0.5:8080",
            "http://10.0.0.5:8080/",
            "http://10.0.0.5:8080/watch/demo",
            "ws://10.0.0.5:8080/ws",
        ] {
            let options = PlayerOptions::parse(
                RawOptions {
                    server: Some(server.into()),
                    max_upload_kbps: Some(800.0),
                    target_latency_ms: Some(2500.0),
                    muted: Some(false),
                    ..raw("news")
                },
                "https://elsewhere.example",
            )
            .unwrap();
            assert_eq!(options.signal_url, "ws://10.0.0.5:8080/ws", "{server}");
            assert_eq!(options.max_upload, Some(BytesPerSec(100_000)));
            assert_eq!(options.target_latency_ms, 2500);
            assert!(!options.muted);
        }
    }

    #[test]
    fn mistakes_are_named() {
        let page = "http://h";
        let error = |raw| PlayerOptions::parse(raw, page).unwrap_err();
        assert!(error(RawOptions::default()).contains("options.channel is required"));
        assert!(error(raw("no spaces")).starts_with("options.channel"));
        let bad_server = RawOptions {
            server: Some("ftp://h".into()),
            ..raw("demo")
        };
        assert!(error(bad_server).contains("http or https"));
        let no_host = RawOptions {
            server: Some("http://".into()),
            ..raw("demo")
        };
        assert!(error(no_host).contains("no host"));
        let upload = RawOptions {
            max_upload_kbps: Some(-1.0),
            ..raw("demo")
        };
        assert!(error(upload).contains("maxUploadKbps"));
        let latency = RawOptions {
            target_latency_ms: Some(100.0),
            ..raw("demo")
        };
        assert!(error(latency).contains("targetLatencyMs must be from 500 to 30000"));
        let preset = RawOptions {
            latency: Some("fast".into()),
            ..raw("demo")
        };
        assert!(error(preset).starts_with("options.latency must be"));
    }

    #[test]
    fn a_preset_sets_the_delay_unless_one_is_given() {
        let page = "http://h";
        let high = PlayerOptions::parse(
            RawOptions {
                latency: Some("high".into()),
                ..raw("demo")
            },
            page,
        )
        .unwrap();
        assert_eq!(high.latency, LatencyPreset::High);
        assert_eq!(high.target_latency_ms, LatencyPreset::High.target_ms());
        assert!(high.autoplay);
        let explicit = PlayerOptions::parse(
            RawOptions {
                latency: Some("low".into()),
                target_latency_ms: Some(2_000.0),
                ..raw("demo")
            },
            page,
        )
        .unwrap();
        assert_eq!(explicit.target_latency_ms, 2_000);
        assert_eq!(explicit.latency, LatencyPreset::Low);
        let nearest = PlayerOptions::parse(
            RawOptions {
                target_latency_ms: Some(5_000.0),
                ..raw("demo")
            },
            page,
        )
        .unwrap();
        assert_eq!(nearest.latency, LatencyPreset::High);
    }
}
