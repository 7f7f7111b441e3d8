//! Test-only behaviour stays out of what ships: a build without the `test-hooks` feature
//! has no polluter mode.

#[test]
#[cfg(not(feature = "test-hooks"))]
fn a_build_without_test_hooks_refuses_the_polluter_flag() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_streamtorrent"))
        .args(["watch", "--channel", "news", "--test-corrupt-pieces"])
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unexpected argument '--test-corrupt-pieces'"),
        "{stderr}"
    );
}
