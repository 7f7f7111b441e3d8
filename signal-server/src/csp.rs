//! The Content-Security-Policy sent with every page: scripts and styles only from this
//! server, plus the page's own inline `<script>` and `<style>` blocks by their SHA-256
//! (Trunk's loader in `index.html`, the examples' code), so no injected markup can run.
//! `wasm-unsafe-eval` lets the page compile its WebAssembly and nothing else. The player
//! may connect to this server and to the HTTP edges it names (`--edge-url`) only.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Pages larger than this are sent without a policy rather than buffered (ours are a few
/// KiB).
const MAX_PAGE_BYTES: usize = 1 << 20;

/// The origins pages may fetch from besides their own: the edges'.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectTo(pub std::sync::Arc<Vec<String>>);

/// Adds the policy to HTML responses that lack one.
pub(crate) async fn content_security_policy(
    State(connect): State<ConnectTo>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !is_html
        || response
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_PAGE_BYTES).await else {
        tracing::warn!("page over {MAX_PAGE_BYTES} bytes: sent empty, without a policy");
        return Response::from_parts(parts, Body::empty());
    };
    let html = String::from_utf8_lossy(&bytes);
    if let Ok(value) = HeaderValue::from_str(&policy(&html, &connect.0)) {
        parts.headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The policy for one page, which may also connect to the `connect` origins.
pub fn policy(html: &str, connect: &[String]) -> String {
    let hashes = |tag: &str| -> String {
        inline_blocks(html, tag)
            .map(|block| {
                let digest = Sha256::digest(block.as_bytes());
                format!(
                    " 'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            })
            .collect()
    };
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{scripts}; \
         style-src 'self'{styles}; img-src 'self' data:; media-src 'self' blob:; \
         connect-src 'self'{connect}; object-src 'none'; base-uri 'none'; form-action 'none'",
        scripts = hashes("script"),
        styles = hashes("style"),
        connect = connect
            .iter()
            .map(|origin| format!(" {origin}"))
            .collect::<String>(),
    )
}

/// The contents of each inline `<tag …>…</tag>` (one without `src`), exactly as hashed
/// by the browser.
fn inline_blocks<'a>(html: &'a str, tag: &str) -> impl Iterator<Item = &'a str> + 'a {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut rest = html;
    std::iter::from_fn(move || loop {
        let start = rest.find(&open)?;
        let after_name = &rest[start + open.len()..];
        // `<scripts>` or `<styled>` are other tags.
        if !after_name.starts_with(['>', ' ', '\n', '\t', '\r']) {
            rest = after_name;
            continue;
        }
        let tag_end = after_name.find('>')?;
        let attributes = &after_name[..tag_end];
        let body = &after_name[tag_end + 1..];
        let end = body.find(&close)?;
        rest = &body[end + close.len()..];
        if !attributes.contains("src=") {
            return Some(&body[..end]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_blocks_are_hashed_and_external_ones_not() {
        let html = "<head><script type=\"module\">boot()</script><script src=\"/a.js\"></script>\
                    <style>p{}</style><link rel=stylesheet href=x.css></head>";
        let scripts: Vec<&str> = inline_blocks(html, "script").collect();
        assert_eq!(scripts, ["boot()"]);
        let styles: Vec<&str> = inline_blocks(html, "style").collect();
        assert_eq!(styles, ["p{}"]);
        let csp = policy(html, &[]);
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval' 'sha256-"),
            "{csp}"
        );
        assert_eq!(csp.matches("'sha256-").count(), 2, "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("object-src 'none'"), "{csp}");
    }

    #[test]
    fn a_page_without_inline_code_allows_none() {
        let csp = policy("<p>hello</p><scripted>", &[]);
        assert!(!csp.contains("sha256"), "{csp}");
    }

    #[test]
    fn the_hash_is_the_browsers() {
        // `echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64`
        let csp = policy("<script>alert(1)</script>", &[]);
        assert!(
            csp.contains("'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"),
            "{csp}"
        );
    }

    #[test]
    fn pages_may_connect_to_the_edges_only() {
        let edges = [
            "https://edge.example".to_owned(),
            "http://10.0.0.2:8090".to_owned(),
        ];
        let csp = policy("<p>hi</p>", &edges);
        assert!(
            csp.contains("connect-src 'self' https://edge.example http://10.0.0.2:8090;"),
            "{csp}"
        );
    }
}
