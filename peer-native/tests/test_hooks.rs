//! Test-only behaviour stays out of what ships: a build without the `test-hooks` feature
//! has no polluter, replayer or tampering-edge mode.

#[test]
#[cfg(not(feature = "test-hooks"))]
fn a_build_without_test_hooks_refuses_the_hostile_flags() {
    for flag in ["--test-corrupt-pieces", "--test-replay-manifests"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_streamtorrent"))
            .args(["watch", "--channel", "news", flag])
            .output()
            .expect("the binary runs");
        assert!(!output.status.success(), "{flag} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("unexpected argument '{flag}'")),
            "{stderr}"
        );
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_streamtorrent"))
        .args(["edge", "--test-tamper"])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success(), "edge --test-tamper accepted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unexpected argument '--test-tamper'"),
        "{stderr}"
    );
}
