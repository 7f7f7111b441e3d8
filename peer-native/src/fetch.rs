//! The fetches from HTTP edges the core asks for (`NodeOutput::Fetch`): one GET each, on
//! a task of its own, reported back as `NodeInput::Fetched`. (The edge also asks the
//! signal server which channels are live with the same client.) What to fetch and whether
//! to believe it is the core's (`swarm::fallback`): this only moves bytes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::RETRY_AFTER;
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use swarm::{FetchHandle, FetchOutcome};
use tokio::sync::mpsc;

use crate::NativeError;

/// A fetch gives up after this: an edge holds a request for a chunk not cut yet for a
/// few seconds (4 by default), and a chunk takes well under a second to transfer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest body taken: a chunk's (a manifest, an init segment and an index are
/// smaller).
const MAX_BODY_BYTES: usize = protocol::MAX_CHUNK_BYTES as usize + 64 * 1024;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Carries out the core's fetches, reporting each on `done`.
#[derive(Clone)]
pub struct Fetcher {
    http: Http,
    done: mpsc::UnboundedSender<(FetchHandle, FetchOutcome)>,
}

/// One HTTP client, its connections kept alive across requests.
#[derive(Clone)]
pub struct Http {
    client: Client<Https, Empty<Bytes>>,
}

impl Fetcher {
    /// Outcomes go to `done`.
    pub fn new(
        done: mpsc::UnboundedSender<(FetchHandle, FetchOutcome)>,
    ) -> Result<Fetcher, NativeError> {
        Ok(Fetcher {
            http: Http::new()?,
            done,
        })
    }

    /// Starts fetching `url` (only bytes `range`, if given); the outcome arrives on
    /// `done` under `fetch`.
    pub fn spawn(&self, fetch: FetchHandle, url: String, range: Option<(u64, u64)>) {
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.http.get(&url, range).await;
            if let FetchOutcome::Failed(reason) = &outcome {
                tracing::debug!(%url, %reason, "fetch failed");
            }
            let _ = this.done.send((fetch, outcome));
        });
    }
}

impl Http {
    /// A client for `http://` and `https://` (the system's root certificates).
    pub fn new() -> Result<Http, NativeError> {
        // Named, not left to rustls: more than one provider is linked in (the WebRTC
        // stack brings its own), and rustls then refuses to guess.
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|source| NativeError::Io {
                what: "loading the system's root certificates for HTTPS edges".into(),
                source,
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Http { client })
    }

    /// GET `url` (only bytes `range`, if given), within `FETCH_TIMEOUT`.
    pub async fn get(&self, url: &str, range: Option<(u64, u64)>) -> FetchOutcome {
        match tokio::time::timeout(FETCH_TIMEOUT, self.get_now(url, range)).await {
            Ok(outcome) => outcome,
            Err(_) => FetchOutcome::Failed(format!("no answer in {FETCH_TIMEOUT:?}")),
        }
    }

    async fn get_now(&self, url: &str, range: Option<(u64, u64)>) -> FetchOutcome {
        let mut request = hyper::Request::get(url);
        if let Some((first, last)) = range {
            request = request.header(hyper::header::RANGE, format!("bytes={first}-{last}"));
        }
        let request = match request.body(Empty::new()) {
            Ok(request) => request,
            Err(e) => return FetchOutcome::Failed(format!("{url}: {e}")),
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) => return FetchOutcome::Failed(e.to_string()),
        };
        let status = response.status();
        if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
            let retry_after_ms = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|secs| secs.saturating_mul(1000));
            return FetchOutcome::Status {
                status: status.as_u16(),
                retry_after_ms,
            };
        }
        match Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(body) => FetchOutcome::Body(body.to_bytes()),
            Err(e) => FetchOutcome::Failed(format!("reading the body: {e}")),
        }
    }
}
