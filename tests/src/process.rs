//! Child processes of a test: the project's binaries, ffmpeg, chromedriver.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child killed when dropped, so a failing test leaves nothing running.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// A binary of this workspace, built by `cargo build` (scripts/test builds first).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// The built web app (`web/dist`), which the browser tests serve.
pub fn web_dist() -> PathBuf {
    let web_dir = workspace_root().join("web").join("dist");
    assert!(
        web_dir.join("index.html").exists(),
        "{} missing: run scripts/build (scripts/test does)",
        web_dir.display()
    );
    web_dir
}

/// A fresh folder for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target")
        .join("e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("can create a scratch folder under target/");
    dir
}

/// Starts signal-server on 127.0.0.1:0 serving `web_dir`; returns it and its address.
pub fn signal_server(web_dir: &std::path::Path) -> (Guard, String) {
    signal_server_on("127.0.0.1:0", web_dir)
}

/// Starts signal-server on `listen`; returns it and the address it bound.
pub fn signal_server_on(listen: &str, web_dir: &std::path::Path) -> (Guard, String) {
    signal_server_with(listen, web_dir, &[])
}

/// Starts signal-server on `listen` with `extra` flags; returns it and the address it
/// bound.
pub fn signal_server_with(
    listen: &str,
    web_dir: &std::path::Path,
    extra: &[&str],
) -> (Guard, String) {
    let mut guard = Guard(
        Command::new(binary("signal-server"))
            .args(["--listen", listen, "--web-dir"])
            .arg(web_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("signal-server starts"),
    );
    let addr = listening_address(&mut guard, "listening on http://");
    (guard, addr)
}

/// The address a server just started says it listens on: its first line of output,
/// `prefix` then `HOST:PORT`.
fn listening_address(server: &mut Guard, prefix: &str) -> String {
    let stdout = server.0.stdout.take().expect("stdout was piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints where it listens");
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}, wanted {prefix}…"))
        .to_owned()
}

/// How the test broadcaster encodes and uploads.
#[derive(Debug, Clone, Copy, Default)]
pub struct BroadcastOptions {
    /// Video bitrate for x264 (`-b:v`, with a matching `-maxrate`); its default otherwise.
    pub video_kbps: Option<u32>,
    /// `streamtorrent broadcast --max-upload-kbps`.
    pub max_upload_kbps: Option<u32>,
}

/// ffmpeg's live test source (moving pattern with a clock, and a tone) piped into
/// `streamtorrent broadcast`.
pub fn broadcaster(
    addr: &str,
    channel: &str,
    record_dir: &std::path::Path,
    log: &std::path::Path,
) -> (Guard, Guard) {
    broadcaster_with(addr, channel, record_dir, log, BroadcastOptions::default())
}

/// The live source (encoder and broadcaster) runs at a higher CPU priority (`nice -10`):
/// in the tests it shares two cores with up to four Chromiums, which raise their own GPU
/// processes to -8, where in real life it has a machine of its own. Starved, ffmpeg cut
/// chunks up to 2.7 s late and every viewer stalled whatever the swarm did. (Without the
/// right to raise priority, `nice` warns and runs the command as it is.)
fn source_priority(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("nice");
    command.args(["-n", "-10"]).arg(program);
    command
}

/// ffmpeg encoding its live test source (a moving 426×240 pattern at 30 fps with a clock,
/// and a tone) as H.264 with a keyframe a second, for `seconds` (forever: `None`); the
/// caller adds the rate, the audio codec and the output.
fn test_source(seconds: Option<u32>) -> Command {
    let mut ffmpeg = source_priority("ffmpeg");
    ffmpeg.args(["-loglevel", "error", "-re", "-f", "lavfi", "-i"]);
    ffmpeg.args([
        "testsrc2=size=426x240:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
    ]);
    if let Some(seconds) = seconds {
        ffmpeg.args(["-t", &seconds.to_string()]);
    }
    ffmpeg.args([
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
    ]);
    ffmpeg
}

pub fn broadcaster_with(
    addr: &str,
    channel: &str,
    record_dir: &std::path::Path,
    log: &std::path::Path,
    options: BroadcastOptions,
) -> (Guard, Guard) {
    let mut ffmpeg = test_source(None);
    if let Some(kbps) = options.video_kbps {
        let rate = format!("{kbps}k");
        ffmpeg.args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate]);
    }
    ffmpeg.args(["-c:a", "aac", "-b:a", "64k"]);
    let mut ffmpeg = ffmpeg
        .args([
            "-f",
            "mp4",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "pipe:1",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg is installed (scripts/test installs it)");
    let stdout = ffmpeg.stdout.take().expect("stdout was piped");
    let ffmpeg = Guard(ffmpeg);
    let key = channel_key(&record_dir.with_extension("key"));
    let mut broadcast = source_priority(binary("streamtorrent"));
    broadcast.args([
        "broadcast",
        "--server",
        &format!("ws://{addr}/ws"),
        "--channel",
        channel,
    ]);
    broadcast.arg("--key").arg(key);
    if let Some(kbps) = options.max_upload_kbps {
        broadcast.args(["--max-upload-kbps", &kbps.to_string()]);
    }
    let broadcaster = broadcast
        .arg("--record-dir")
        .arg(record_dir)
        .stdin(stdout)
        .stderr(std::fs::File::create(log).expect("can create the log file"))
        .spawn()
        .expect("streamtorrent starts");
    (ffmpeg, Guard(broadcaster))
}

/// Puts `channel` on the air: the test broadcaster recording into `dir/broadcaster`,
/// logging to `dir/broadcaster.log`; returns once the server lists the channel.
pub fn go_live(
    addr: &str,
    channel: &str,
    dir: &std::path::Path,
    options: BroadcastOptions,
) -> (Guard, Guard) {
    let guards = broadcaster_with(
        addr,
        channel,
        &dir.join("broadcaster"),
        &dir.join("broadcaster.log"),
        options,
    );
    wait_for_channel(addr, channel, Duration::from_secs(20));
    guards
}

/// A channel key file at `path`, made with `streamtorrent keygen` unless it exists.
pub fn channel_key(path: &std::path::Path) -> PathBuf {
    if !path.exists() {
        let status = Command::new(binary("streamtorrent"))
            .arg("keygen")
            .arg("--out")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("streamtorrent runs");
        assert!(
            status.success(),
            "streamtorrent keygen --out {} failed",
            path.display()
        );
    }
    path.to_path_buf()
}

/// Waits until `/api/channels` lists `channel`.
pub fn wait_for_channel(addr: &str, channel: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_get(addr, "/api/channels").contains(&format!("\"{channel}\"")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("channel {channel} never went live within {timeout:?}");
}

pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// `streamtorrent edge` on 127.0.0.1:0 for the signal server at `addr`, with `extra`
/// flags, logging to `log`; returns it and the address it serves HTTP on.
pub fn edge(addr: &str, extra: &[&str], log: &std::path::Path) -> (Guard, String) {
    edge_on(addr, "127.0.0.1:0", extra, log)
}

/// `edge`, listening on `listen`.
pub fn edge_on(addr: &str, listen: &str, extra: &[&str], log: &std::path::Path) -> (Guard, String) {
    let mut guard = Guard(
        Command::new(binary("streamtorrent"))
            .args(["edge", "--server", &format!("ws://{addr}/ws")])
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("can create the log file"))
            .spawn()
            .expect("streamtorrent starts"),
    );
    let listening = listening_address(&mut guard, "edge listening on http://");
    (guard, listening)
}

/// A port nobody listens on right now, for tools that cannot bind port 0 themselves.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("can bind 127.0.0.1:0")
        .port()
}

/// `streamtorrent watch` for `chunks` chunks, recording into `dir/name`, writing the
/// stream to `dir/name.mp4` and its log to `dir/name.log`.
pub fn watcher(
    addr: &str,
    channel: &str,
    dir: &std::path::Path,
    name: &str,
    chunks: u64,
    extra: &[&str],
) -> (String, Child) {
    watcher_by(
        Command::new(binary("streamtorrent")),
        addr,
        channel,
        dir,
        name,
        chunks,
        extra,
    )
}

/// The uid `watcher_as_nobody` runs as (`nobody`): a per-uid firewall rule can block its
/// UDP, and so its WebRTC, alone.
pub const NOBODY: u32 = 65534;

/// `watcher`, run as `NOBODY` (so `dir` must be writable by it).
pub fn watcher_as_nobody(
    addr: &str,
    channel: &str,
    dir: &std::path::Path,
    name: &str,
    chunks: u64,
    extra: &[&str],
) -> (String, Child) {
    let mut command = Command::new("setpriv");
    let id = NOBODY.to_string();
    command
        .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .arg(binary("streamtorrent"));
    watcher_by(command, addr, channel, dir, name, chunks, extra)
}

fn watcher_by(
    mut command: Command,
    addr: &str,
    channel: &str,
    dir: &std::path::Path,
    name: &str,
    chunks: u64,
    extra: &[&str],
) -> (String, Child) {
    let child = command
        .args(["watch", "--server", &format!("ws://{addr}/ws")])
        .args(["--channel", channel, "--chunks", &chunks.to_string()])
        .args(["--timeout-secs", "60", "--record-dir"])
        .arg(dir.join(name))
        .arg("--output")
        .arg(dir.join(format!("{name}.mp4")))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .expect("streamtorrent watch starts");
    (name.to_owned(), child)
}

/// A viewer that flips a bit in every piece it serves (`watch --test-corrupt-pieces`),
/// joined to `channel` for the whole test: killed when the guard drops. Logs to
/// `dir/polluter.log`.
pub fn polluter(addr: &str, channel: &str, dir: &std::path::Path) -> Guard {
    let (_, child) = watcher(
        addr,
        channel,
        dir,
        "polluter",
        1000,
        &["--test-corrupt-pieces"],
    );
    Guard(child)
}

/// `streamtorrent ingest` on 127.0.0.1:0 for the signal server at `addr`, with `args`
/// naming its channels (`--channel … --key … --stream-key …`, or `--config …`), logging to
/// `log`; returns it and its RTMP URL, `rtmp://127.0.0.1:PORT/live`.
pub fn ingest(addr: &str, args: &[&std::ffi::OsStr], log: &std::path::Path) -> (Guard, String) {
    let (guard, lines) = ingest_printing(addr, args, log, 1);
    let url = lines[0]
        .strip_prefix("ingest listening on ")
        .unwrap_or_else(|| {
            panic!("unexpected first line {:?}", lines[0]);
        });
    (guard, url.to_owned())
}

/// `ingest` with WHIP and the studio page on 127.0.0.1:0 too; returns it and the address
/// of its HTTP server (`/whip`, `/live`).
pub fn ingest_with_whip(
    addr: &str,
    args: &[&std::ffi::OsStr],
    log: &std::path::Path,
) -> (Guard, String) {
    let mut args = args.to_vec();
    args.extend([
        std::ffi::OsStr::new("--whip-listen"),
        std::ffi::OsStr::new("127.0.0.1:0"),
    ]);
    let (guard, lines) = ingest_printing(addr, &args, log, 2);
    let whip = lines[1]
        .strip_prefix("ingest WHIP on http://")
        .and_then(|rest| rest.strip_suffix("/whip"))
        .unwrap_or_else(|| panic!("unexpected second line {:?}", lines[1]));
    (guard, whip.to_owned())
}

fn ingest_printing(
    addr: &str,
    args: &[&std::ffi::OsStr],
    log: &std::path::Path,
    lines: usize,
) -> (Guard, Vec<String>) {
    let mut command = source_priority(binary("streamtorrent"));
    let mut guard = Guard(
        command
            .args(["ingest", "--server", &format!("ws://{addr}/ws")])
            .args(["--rtmp-listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("can create the log file"))
            .spawn()
            .expect("streamtorrent starts"),
    );
    let stdout = guard.0.stdout.take().expect("stdout was piped");
    let mut reader = BufReader::new(stdout);
    let printed = (0..lines)
        .map(|_| {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .expect("the ingest prints where it listens");
            line.trim().to_owned()
        })
        .collect();
    (guard, printed)
}

/// ffmpeg publishing its live test source (426×240 H.264 at 30 fps with a keyframe a
/// second, as OBS is told to, and AAC) over RTMP to `url` for `seconds` (forever: `None`),
/// its errors into `log`.
pub fn rtmp_publisher(url: &str, seconds: Option<u32>, log: &std::path::Path) -> Child {
    test_source(seconds)
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("can create the log file"))
        .spawn()
        .expect("ffmpeg is installed (scripts/test installs it)")
}
