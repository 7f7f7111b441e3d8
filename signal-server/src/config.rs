//! Every operator setting: a flag, an environment variable, and a default that suits a
//! small VPS.

use std::path::PathBuf;

use clap::Parser;
use protocol::MAX_SIGNAL_MESSAGE_BYTES;

use crate::viewer_reports::ReportPolicy;

/// StreamTorrent signal server: introduces the viewers of a live channel to each other,
/// relays their WebRTC set-up, and serves the watch page. It never carries video.
#[derive(Parser, Debug, Clone)]
#[command(name = "signal-server", version)]
pub struct ServerConfig {
    /// Address and port to listen on (HTTP and WebSocket on the same port).
    #[arg(long, env = "STREAMTORRENT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Folder with the built web app (the output of `trunk build`).
    #[arg(long, env = "STREAMTORRENT_WEB_DIR", default_value = "web/dist")]
    pub web_dir: PathBuf,
    /// Origins whose pages may open the WebSocket, comma-separated, e.g.
    /// `https://tv.example,https://blog.example` (embedding sites). Empty allows any.
    /// Clients that send no Origin header (native peers) are always allowed.
    #[arg(long, env = "STREAMTORRENT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Most live channels at once; joining a new channel beyond it is refused.
    #[arg(long, env = "STREAMTORRENT_MAX_CHANNELS", default_value_t = 1000)]
    pub max_channels: usize,
    /// Most peers in one channel.
    #[arg(
        long,
        env = "STREAMTORRENT_MAX_PEERS_PER_CHANNEL",
        default_value_t = 20_000
    )]
    pub max_peers_per_channel: usize,
    /// Most simultaneous WebSocket connections from one IP address.
    #[arg(
        long,
        env = "STREAMTORRENT_MAX_CONNECTIONS_PER_IP",
        default_value_t = 32
    )]
    pub max_connections_per_ip: usize,
    /// New connections one IP address may open per second, after a burst of
    /// `--max-connections-per-ip`. Each connection is introduced to peers afresh, so this
    /// bounds how fast one address meets a channel by reconnecting.
    #[arg(
        long,
        env = "STREAMTORRENT_OPENS_PER_SEC_PER_IP",
        default_value_t = 1.0,
        value_parser = parse_rate
    )]
    pub opens_per_sec_per_ip: f64,
    /// Take the client's IP from the `X-Forwarded-For` header a reverse proxy sets (its
    /// last address) instead of the TCP peer. Set this only behind a proxy you run:
    /// otherwise clients could claim any address and dodge the per-IP limit.
    #[arg(long, env = "STREAMTORRENT_TRUST_PROXY")]
    pub trust_proxy: bool,
    /// Largest signalling message in bytes; a bigger frame closes the connection with 1009.
    /// At most 16384, the protocol's own limit.
    #[arg(long, env = "STREAMTORRENT_MAX_MESSAGE_BYTES", default_value_t = MAX_SIGNAL_MESSAGE_BYTES, value_parser = parse_message_limit)]
    pub max_message_bytes: usize,
    /// Sustained messages per second one connection may send. A broadcaster answers every
    /// joining viewer, so this must cover a rush of joins.
    #[arg(long, env = "STREAMTORRENT_RATE_PER_SEC", default_value_t = 50.0, value_parser = parse_rate)]
    pub rate_per_sec: f64,
    /// Messages one connection may send in a burst above the sustained rate; this many
    /// refused messages in a row close the connection.
    #[arg(long, env = "STREAMTORRENT_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,
    /// How many peers of its channel a joining peer is introduced to.
    #[arg(long, env = "STREAMTORRENT_INTRODUCE", default_value_t = 8)]
    pub introduce: usize,
    /// STUN server URLs given to every peer, comma-separated, e.g.
    /// `stun:stun.l.google.com:19302`. Needed for peers behind NAT on the internet.
    #[arg(long, env = "STREAMTORRENT_STUN", value_delimiter = ',')]
    pub stun: Vec<String>,
    /// TURN server URLs, comma-separated, e.g. `turn:turn.example.org:3478`. Relays media
    /// for peers that cannot connect directly; needs --turn-secret.
    #[arg(long, env = "STREAMTORRENT_TURN", value_delimiter = ',')]
    pub turn: Vec<String>,
    /// Shared secret with the TURN server (coturn `static-auth-secret`): each peer gets
    /// time-limited credentials derived from it, never the secret itself.
    #[arg(long, env = "STREAMTORRENT_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// How long issued TURN credentials stay valid, in seconds.
    #[arg(long, env = "STREAMTORRENT_TURN_TTL_SECS", default_value_t = 3600)]
    pub turn_ttl_secs: u64,
    /// Seconds between WebSocket pings to each client.
    #[arg(long, env = "STREAMTORRENT_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ping_interval_secs: u64,
    /// A client silent (no message, no pong) this many seconds is dropped.
    #[arg(long, env = "STREAMTORRENT_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Keeps which key owns which channel in this JSON file, so ownership survives
    /// restarts. Without it, ownership lasts while the server runs.
    #[arg(long, env = "STREAMTORRENT_OWNERS_FILE")]
    pub owners_file: Option<PathBuf>,
    /// Seconds between viewers' experience reports (bytes from peers and broadcaster,
    /// stalls, start-up, delay), summed per channel in `/metrics`. 0 asks for none.
    #[arg(long, env = "STREAMTORRENT_VIEWER_REPORT_SECS", default_value_t = 10)]
    pub viewer_report_secs: u64,
    /// The most one viewer can receive (and, separately, upload) in kbit/s: a report
    /// claiming more is refused, so no client can inflate its channel's figures beyond
    /// one viewer's share.
    #[arg(long, env = "STREAMTORRENT_MAX_VIEWER_KBPS", default_value_t = 20_000)]
    pub max_viewer_kbps: u64,
    /// An HTTP edge serving the channels' signed content (`streamtorrent edge`, or a CDN
    /// in front of one), handed to every viewer: it fetches what peers cannot deliver in
    /// time, and everything while no peer link opens. Repeatable (or comma-separated), at
    /// most 8, tried in this order (later ones for failover); e.g.
    /// `https://edge.example.org`.
    #[arg(
        long = "edge-url",
        env = "STREAMTORRENT_EDGE_URLS",
        value_delimiter = ','
    )]
    pub edges: Vec<protocol::EdgeUrl>,
    /// Share channels with every other signal server using this Redis, e.g.
    /// `redis://127.0.0.1:6379` (or `redis+unix:///run/redis.sock`): a viewer on any of
    /// them meets peers on all. Channel ownership then lives in Redis (keep its
    /// persistence on), not in --owners-file. Without it, this server works alone.
    #[arg(long, env = "STREAMTORRENT_REDIS")]
    pub redis: Option<String>,
}

/// A rate per second: finite and above zero. Zero would refuse everything for good, and a
/// bucket that never refills would never be swept from memory either.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a rate per second: {e}"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(format!("{text} is not a rate above 0 per second"))
    }
}

fn parse_message_limit(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|e| format!("{text:?} is not a byte count: {e}"))?;
    if (256..=MAX_SIGNAL_MESSAGE_BYTES).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "{bytes} is outside 256..={MAX_SIGNAL_MESSAGE_BYTES}"
        ))
    }
}

impl ServerConfig {
    /// Settings that contradict each other, as an operator-facing message.
    pub fn validate(&self) -> Result<(), String> {
        if !self.turn.is_empty() && self.turn_secret.is_none() {
            return Err("--turn needs --turn-secret (TURN credentials are derived from it)".into());
        }
        if self.edges.len() > protocol::MAX_EDGES {
            return Err(format!(
                "{} --edge-url given; viewers take at most {}",
                self.edges.len(),
                protocol::MAX_EDGES
            ));
        }
        if self.redis.is_some() && self.owners_file.is_some() {
            return Err("--owners-file and --redis: with --redis, channel ownership lives in Redis (shared by every server); drop --owners-file".into());
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return Err("--idle-timeout-secs must exceed --ping-interval-secs, or idle clients are dropped before they can answer a ping".into());
        }
        Ok(())
    }

    /// What viewers are asked to report, and what is believed of them.
    pub fn report_policy(&self) -> ReportPolicy {
        ReportPolicy::new(self.viewer_report_secs, self.max_viewer_kbps)
    }

    /// Defaults, serving `web_dir`; for tests and embedding.
    pub fn with_web_dir(web_dir: impl Into<PathBuf>) -> ServerConfig {
        let mut config = ServerConfig::parse_from(["signal-server"]);
        config.web_dir = web_dir.into();
        config
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ServerConfig;

    #[test]
    fn rates_must_be_finite_and_above_zero() {
        for flag in ["--opens-per-sec-per-ip", "--rate-per-sec"] {
            for bad in ["0", "-1", "NaN", "inf", "fast"] {
                let parsed = ServerConfig::try_parse_from(["signal-server", flag, bad]);
                assert!(parsed.is_err(), "{flag} {bad} accepted");
            }
            assert!(ServerConfig::try_parse_from(["signal-server", flag, "0.5"]).is_ok());
        }
    }

    #[test]
    fn edge_urls_are_checked_and_at_most_eight() {
        let parsed = ServerConfig::try_parse_from(["signal-server", "--edge-url", "ftp://x"]);
        assert!(parsed.is_err(), "a non-HTTP edge accepted");
        let nine = (0..9)
            .map(|i| format!("http://e{i}.example"))
            .collect::<Vec<_>>();
        let config = ServerConfig::try_parse_from(
            ["signal-server", "--edge-url"]
                .into_iter()
                .chain([nine.join(",").as_str()]),
        )
        .expect("nine valid URLs parse");
        assert_eq!(config.edges.len(), 9);
        assert!(config.validate().is_err(), "nine edges accepted");
    }
}
