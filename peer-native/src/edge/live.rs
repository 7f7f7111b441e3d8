//! Which channels are on the air, as the signal server's `/api/channels` lists them: an
//! edge that follows channels on request follows only those, so requests for made-up
//! names cannot take its `--max-channels` slots.

use std::collections::HashSet;
use std::time::Duration;

use protocol::{ChannelName, ChannelSummary};
use swarm::FetchOutcome;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::fetch::Http;
use crate::NativeError;

/// The list is read again at most this often, however many requests ask.
const FRESH_FOR: Duration = Duration::from_secs(2);

pub struct LiveChannels {
    url: String,
    http: Http,
    /// When the list was read, and the names on it.
    list: Mutex<Option<(Instant, HashSet<ChannelName>)>>,
}

impl LiveChannels {
    /// For the signal server at `server` (its WebSocket URL, `ws://HOST/ws` or `wss://`).
    pub fn new(server: &str) -> Result<LiveChannels, NativeError> {
        let http_base = if let Some(rest) = server.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = server.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            return Err(NativeError::Signal {
                url: server.to_owned(),
                reason: "not a ws:// or wss:// URL".into(),
            });
        };
        let base = http_base.strip_suffix("/ws").unwrap_or(&http_base);
        Ok(LiveChannels {
            url: format!("{base}/api/channels"),
            http: Http::new()?,
            list: Mutex::new(None),
        })
    }

    /// Whether `channel` is on the air; `Err` when the server cannot say.
    pub async fn is_live(&self, channel: &ChannelName) -> Result<bool, String> {
        // One reading at a time: requests arriving meanwhile wait for it.
        let mut list = self.list.lock().await;
        if list
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= FRESH_FOR)
        {
            let names = self.read().await?;
            *list = Some((Instant::now(), names));
        }
        Ok(list
            .as_ref()
            .is_some_and(|(_, names)| names.contains(channel)))
    }

    async fn read(&self) -> Result<HashSet<ChannelName>, String> {
        match self.http.get(&self.url, None).await {
            FetchOutcome::Body(body) => serde_json::from_slice::<Vec<ChannelSummary>>(&body)
                .map(|live| live.into_iter().map(|c| c.name).collect())
                .map_err(|e| format!("{}: {e}", self.url)),
            FetchOutcome::Status { status, .. } => Err(format!("{}: {status}", self.url)),
            FetchOutcome::Failed(reason) => Err(format!("{}: {reason}", self.url)),
        }
    }
}
