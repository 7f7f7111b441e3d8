//! A real coturn TURN server for the tests, with the REST shared secret the signal server
//! derives each peer's credentials from (`signal-server --turn-secret`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::{free_port, Guard};

/// The address every test namespace has besides loopback (`netns.rs`).
pub const NAMESPACE_IP: &str = "10.99.0.1";

/// A running coturn and where it writes its log.
pub struct Coturn {
    pub url: String,
    pub secret: String,
    pub log: PathBuf,
    _process: Guard,
}

impl Coturn {
    /// Starts coturn on the namespace's address (UDP, no TLS), logging to `dir/coturn.log`;
    /// returns once it listens.
    pub fn start(dir: &Path) -> Coturn {
        let port = free_port();
        let secret = format!("test-secret-{port}");
        let log = dir.join("coturn.log");
        let mut child = Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--simple-log",
                "--verbose",
            ])
            .args(["--listening-ip", NAMESPACE_IP, "--relay-ip", NAMESPACE_IP])
            .args(["--listening-port", &port.to_string()])
            .args(["--use-auth-secret", "--static-auth-secret", &secret])
            .args(["--realm", "streamtorrent.test", "--log-file", "stdout"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver runs (coturn; scripts/setup installs it)");
        let stdout = child.stdout.take().expect("stdout was piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).expect("can write the coturn log");
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
                if line.contains("UDP listener opened on") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("coturn listens within 10 s");
        Coturn {
            url: format!("turn:{NAMESPACE_IP}:{port}"),
            secret,
            log,
            _process: Guard(child),
        }
    }

    /// What coturn logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
