//! Headless Chromium (Debian's) driven through chromedriver, for the browser tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

use crate::process::{free_port, Guard};

/// A chromedriver process; each [`Chromedriver::open`] starts its own Chromium.
pub struct Chromedriver {
    port: u16,
    _process: Guard,
}

impl Chromedriver {
    pub fn start() -> Chromedriver {
        Chromedriver::start_by(Command::new("chromedriver"))
    }

    /// A chromedriver, and so its Chromiums, running as `uid` (with `home` for HOME):
    /// a per-uid firewall rule can then block what the browser alone sends.
    pub fn start_as(uid: u32, home: &Path) -> Chromedriver {
        let mut command = Command::new("setpriv");
        let id = uid.to_string();
        command
            .args([
                "--reuid",
                &id,
                "--regid",
                &id,
                "--clear-groups",
                "chromedriver",
            ])
            .env("HOME", home);
        Chromedriver::start_by(command)
    }

    fn start_by(mut command: Command) -> Chromedriver {
        let port = free_port();
        let process = Guard(
            command
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver is installed (scripts/test installs chromium-driver)"),
        );
        Chromedriver {
            port,
            _process: process,
        }
    }

    /// A new Chromium with its own empty profile in `profile`: nothing (cache, storage,
    /// connections) is shared with any other.
    pub async fn open(&self, profile: &Path) -> Client {
        self.open_with(profile, &[]).await
    }

    /// As [`Chromedriver::open`], with more Chromium flags.
    pub async fn open_with(&self, profile: &Path, extra: &[&str]) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            "--window-size=1100,1250".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
            }
        });
        let capabilities = capabilities.as_object().expect("a JSON object").clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ClientBuilder::rustls()
                .expect("rustls client")
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await
            {
                Ok(client) => return client,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start Chromium through chromedriver: {e}"),
            }
        }
    }
}

/// Runs `source` in every document the client opens from now on, before the page's own
/// scripts (Chrome DevTools' `Page.addScriptToEvaluateOnNewDocument`, through
/// chromedriver): how a test stands in for an API this Chromium lacks.
pub async fn before_every_page(client: &Client, source: &str) -> Result<(), String> {
    let command = Cdp {
        cmd: "Page.addScriptToEvaluateOnNewDocument",
        params: json!({ "source": source }),
    };
    client
        .issue_cmd(command)
        .await
        .map(|_| ())
        .map_err(|e| format!("Page.addScriptToEvaluateOnNewDocument failed: {e}"))
}

/// A Chrome DevTools command sent through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/goog/cdp/execute"))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}
