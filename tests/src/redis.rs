//! A real `redis-server` for the tests of servers sharing channels (`signal-server
//! --redis`): on a Unix socket in a fresh folder (no port to collide on), no persistence,
//! killed with the test.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Tells apart the Redis servers one test process starts.
static STARTED: AtomicU32 = AtomicU32::new(0);

pub struct Redis {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Redis {
    /// Starts one; panics with the reason when `redis-server` is missing (scripts/setup
    /// installs it): these tests never pass without it.
    pub fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "st-redis-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let mut redis = Redis {
            child: None,
            dir,
            socket,
        };
        redis.spawn();
        redis
    }

    /// Its URL for `--redis`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server runs (scripts/setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING") != Some("+PONG".into()) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One inline command's first reply line, or None when Redis does not answer.
    pub fn command(&self, command: &str) -> Option<String> {
        Some(self.reply(command)?.lines().next()?.to_owned())
    }

    /// One inline command's whole reply (up to 4 KiB), for failure messages.
    pub fn reply(&self, command: &str) -> Option<String> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut reply = [0u8; 4096];
        let n = stream.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }

    /// SIGKILL, then a fresh Redis on the same socket: everything it held is lost.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops answering (SIGSTOP) without closing its connections: unreachable.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
