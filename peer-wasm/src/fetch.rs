//! The fetches from HTTP edges the core asks for (`NodeOutput::Fetch`): the browser's
//! `fetch()`, the body read whole, reported as `Event::Fetched`. What to fetch and
//! whether to believe it is the core's (`swarm::fallback`): this only moves bytes.

use bytes::Bytes;
use gloo_timers::callback::Timeout;
use swarm::{FetchHandle, FetchOutcome};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::event::{emit, Event, Events};

/// A fetch is aborted after this: an edge holds a request for a chunk not cut yet for a
/// few seconds (4 by default), and a chunk takes well under a second to transfer.
const FETCH_TIMEOUT_MS: u32 = 15_000;
/// A body larger than a chunk can be is not read to its end.
const MAX_BODY_BYTES: usize = protocol::MAX_CHUNK_BYTES as usize + 65_536;

/// Starts fetching `url` (only bytes `range`, if given); its outcome arrives as
/// `Event::Fetched` under `fetch`.
pub fn start(fetch: FetchHandle, url: String, range: Option<(u64, u64)>, events: &Events) {
    let events = events.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let outcome = get(&url, range).await.unwrap_or_else(FetchOutcome::Failed);
        emit(&events, Event::Fetched(fetch, outcome));
    });
}

async fn get(url: &str, range: Option<(u64, u64)>) -> Result<FetchOutcome, String> {
    let window = web_sys::window().ok_or("no window")?;
    let abort = web_sys::AbortController::new().map_err(describe)?;
    let init = web_sys::RequestInit::new();
    init.set_signal(Some(&abort.signal()));
    if let Some((first, last)) = range {
        // A single range is a CORS-safelisted header: no preflight.
        let headers = web_sys::Headers::new().map_err(describe)?;
        headers
            .set("Range", &format!("bytes={first}-{last}"))
            .map_err(describe)?;
        init.set_headers(&headers);
    }
    // Dropped (and so cancelled) once the answer is in.
    let _deadline = Timeout::new(FETCH_TIMEOUT_MS, move || abort.abort());
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str_and_init(url, &init))
        .await
        .map_err(describe)?
        .dyn_into()
        .map_err(describe)?;
    let headers = response.headers();
    let status = response.status();
    if status != 200 && status != 206 {
        // Readable across origins because the edge exposes it.
        let retry_after_ms = headers
            .get("retry-after")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| secs.saturating_mul(1000));
        return Ok(FetchOutcome::Status {
            status,
            retry_after_ms,
        });
    }
    let announced = headers
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<usize>().ok());
    if announced.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(format!("{url}: a body larger than any chunk"));
    }
    let body = read_bounded(&response)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(FetchOutcome::Body(Bytes::from(body)))
}

/// The body, read piece by piece and given up past `MAX_BODY_BYTES`: a body without a
/// length (or a wrong one) cannot make the tab hold more than that.
async fn read_bounded(response: &web_sys::Response) -> Result<Vec<u8>, String> {
    let Some(stream) = response.body() else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream
        .get_reader()
        .dyn_into()
        .map_err(|_| "the body cannot be read".to_owned())?;
    let mut body = Vec::new();
    loop {
        let step = JsFuture::from(reader.read()).await.map_err(describe)?;
        let done = js_sys::Reflect::get(&step, &"done".into()).map_err(describe)?;
        if done.as_bool().unwrap_or(true) {
            return Ok(body);
        }
        let value = js_sys::Reflect::get(&step, &"value".into()).map_err(describe)?;
        let piece = js_sys::Uint8Array::new(&value);
        if body.len() + piece.length() as usize > MAX_BODY_BYTES {
            let _ = reader.cancel();
            return Err("a body larger than any chunk".into());
        }
        body.extend(piece.to_vec());
    }
}

fn describe(error: wasm_bindgen::JsValue) -> String {
    error
        .as_string()
        .or_else(|| {
            error
                .dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
        })
        .unwrap_or_else(|| format!("{error:?}"))
}
