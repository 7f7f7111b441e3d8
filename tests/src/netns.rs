//! WebRTC needs a non-loopback interface: Chromium gathers no candidates on `lo` alone and
//! the `webrtc` crate skips loopback. Each end-to-end test re-runs itself inside a private
//! network namespace with a veth pair, so nothing leaves the machine and the test does not
//! depend on the host's interfaces.

use std::process::Command;

const INSIDE: &str = "STREAMTORRENT_IN_NETNS";
const SETUP: &str = "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 10.99.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up && ip route add default dev v0 && exec \"$@\"";

/// Returns true when the caller is inside the namespace and should run the test body.
/// Otherwise runs `test_name` of this test binary inside a fresh namespace, asserts that it
/// passed, and returns false.
pub fn enter(test_name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("a running test knows its executable");
    let status = Command::new("unshare")
        .args(["--net", "sh", "-c", SETUP, "sh"])
        .arg(exe)
        .args([
            test_name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, "1")
        .status()
        .expect("`unshare` runs (util-linux; needs root or user namespaces)");
    assert!(
        status.success(),
        "{test_name} failed inside its network namespace ({status})"
    );
    false
}
