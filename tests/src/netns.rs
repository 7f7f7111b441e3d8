//! WebRTC needs a non-loopback interface: Chromium gathers no candidates on `lo` alone and
//! the `webrtc` crate skips loopback. Each end-to-end test re-runs itself inside a private
//! network namespace with a veth pair, so nothing leaves the machine and the test does not
//! depend on the host's interfaces.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const INSIDE: &str = "STREAMTORRENT_IN_NETNS";
const SETUP: &str = "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 10.99.0.1/24 dev v0 && ip link set v0 up && ip link set v1 up && ip route add default dev v0 && exec \"$@\"";

/// Returns true when the caller is inside the namespace and should run the test body.
/// Otherwise runs `test_name` of this test binary inside a fresh namespace, asserts that
/// exactly that one test ran and passed (a misspelt or renamed name would otherwise run
/// nothing and "pass"), and returns false.
pub fn enter(test_name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("a running test knows its executable");
    let mut child = Command::new("unshare")
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
        .stdout(Stdio::piped())
        .spawn()
        .expect("`unshare` runs (util-linux; needs root or user namespaces)");
    let stdout = child.stdout.take().expect("stdout was piped");
    let mut summary = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        if line.starts_with("test result:") {
            summary = Some(line);
        }
    }
    let status = child.wait().expect("the inner test run ends");
    assert!(
        status.success(),
        "{test_name} failed inside its network namespace ({status})"
    );
    let summary = summary.unwrap_or_default();
    assert!(
        ran_exactly_one(&summary),
        "the inner run of {test_name} did not run exactly that test: {summary:?}"
    );
    false
}

/// Whether a libtest summary line says one test ran, and passed.
fn ran_exactly_one(summary: &str) -> bool {
    summary.starts_with("test result: ok. 1 passed; 0 failed;")
}

/// Drops every UDP packet `uid` sends, so its WebRTC cannot work (call it inside the
/// test's own namespace: the rule goes with the namespace). Needs nftables.
pub fn block_udp_of(uid: u32) {
    let rules = format!(
        "add table inet edge_test\n\
         add chain inet edge_test out {{ type filter hook output priority 0; }}\n\
         add rule inet edge_test out meta skuid {uid} meta l4proto udp drop\n"
    );
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft runs (scripts/setup installs nftables)");
    std::io::Write::write_all(
        nft.stdin.as_mut().expect("stdin was piped"),
        rules.as_bytes(),
    )
    .expect("the rules are written");
    assert!(
        nft.wait().expect("nft ends").success(),
        "nft refused the rules"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_run_of_exactly_one_passing_test_counts() {
        assert!(ran_exactly_one(
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out; finished in 3.2s"
        ));
        for other in [
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 10 filtered out",
            "test result: ok. 2 passed; 0 failed; 0 ignored",
            "test result: FAILED. 0 passed; 1 failed; 0 ignored",
            "",
        ] {
            assert!(!ran_exactly_one(other), "{other:?}");
        }
    }
}
