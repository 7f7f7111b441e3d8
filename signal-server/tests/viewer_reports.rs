//! Viewers' experience reports over real sockets: asked for in `welcome`, checked, summed
//! per channel into `/metrics`, and refused when they are not believable.
//!
//! Reports are paced by the clock (at most one per half interval), so these tests wait
//! out a one-second interval: the waiting is the behaviour under test.

mod common;

use std::time::Duration;

use protocol::{ClientMessage, ErrorCode, Role, ServerMessage, ViewerReport};

use common::*;

async fn start_reporting() -> String {
    let (addr, stop) = start_with(|c| {
        c.viewer_report_secs = 1;
        c.max_viewer_kbps = 8_000; // 1,000,000 bytes a second
    })
    .await;
    std::mem::forget(stop);
    addr
}

/// Joins as a viewer and returns the welcome's `report_every_ms`.
async fn join_viewer(ws: &mut Ws, channel: &str) -> Option<u32> {
    send(ws, viewer_join(channel)).await;
    let ServerMessage::Welcome {
        report_every_ms, ..
    } = recv(ws).await
    else {
        panic!("expected welcome")
    };
    recv(ws).await; // introduce
    report_every_ms
}

async fn expect_bad_report(ws: &mut Ws) -> String {
    loop {
        if let ServerMessage::Error { code, message } = recv(ws).await {
            assert_eq!(code, ErrorCode::BadReport, "{message}");
            return message;
        }
    }
}

fn honest() -> ViewerReport {
    ViewerReport {
        bytes_from_peers: 600_000,
        bytes_from_source: 150_000,
        bytes_from_http: 40_000,
        bytes_uploaded: 500_000,
        stalls: 1,
        startup_ms: Some(1_400),
        delay_ms: Some(1_900),
    }
}

#[tokio::test]
async fn honest_reports_are_summed_per_channel_and_forged_ones_refused() {
    let addr = start_reporting().await;
    let mut broadcaster = connect(&addr).await;
    join(&mut broadcaster, "match", Role::Broadcaster).await;
    let mut viewer = connect(&addr).await;
    assert_eq!(join_viewer(&mut viewer, "match").await, Some(1_000));
    let mut other = connect(&addr).await;
    assert_eq!(join_viewer(&mut other, "match").await, Some(1_000));

    // Too soon after the welcome.
    send(&mut viewer, ClientMessage::Report(honest())).await;
    assert!(expect_bad_report(&mut viewer)
        .await
        .contains("every 1000 ms"));
    // Broadcasters do not report viewers' experience.
    send(&mut broadcaster, ClientMessage::Report(honest())).await;
    assert!(expect_bad_report(&mut broadcaster)
        .await
        .contains("only viewers"));

    // Not a wait for the server: the report interval under test must pass, and it passes
    // only in real time (tokio's paused clock moves while loopback I/O is in flight, so
    // the test's own time-outs fire). A longer pause than the interval cannot flake.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    send(&mut viewer, ClientMessage::Report(honest())).await;
    // One viewer claiming the bytes of a thousand.
    let forged = ViewerReport {
        bytes_from_peers: 1_000_000_000,
        ..ViewerReport::default()
    };
    send(&mut other, ClientMessage::Report(forged)).await;
    assert!(expect_bad_report(&mut other).await.contains("exceed"));
    barrier(&mut viewer).await;

    let metrics = http_get(&addr, "/metrics").await;
    for line in [
        "streamtorrent_viewer_bytes_total{channel=\"match\",from=\"peers\"} 600000",
        "streamtorrent_viewer_bytes_total{channel=\"match\",from=\"broadcaster\"} 150000",
        "streamtorrent_viewer_bytes_total{channel=\"match\",from=\"http\"} 40000",
        "streamtorrent_viewer_uploaded_bytes_total{channel=\"match\"} 500000",
        "streamtorrent_viewer_stalls_total{channel=\"match\"} 1",
        "streamtorrent_viewer_startup_seconds_bucket{channel=\"match\",le=\"1.5\"} 1",
        "streamtorrent_viewer_startup_seconds_count{channel=\"match\"} 1",
        "streamtorrent_viewer_delay_seconds_bucket{channel=\"match\",le=\"1.5\"} 0",
        "streamtorrent_viewer_delay_seconds_bucket{channel=\"match\",le=\"2\"} 1",
        "streamtorrent_rejections_total{reason=\"bad_report\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_channel_that_ends_takes_its_figures_with_it() {
    let addr = start_reporting().await;
    let mut viewer = connect(&addr).await;
    join_viewer(&mut viewer, "brief").await;
    // The report interval must pass first (see above).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    send(&mut viewer, ClientMessage::Report(honest())).await;
    barrier(&mut viewer).await;
    let line = "streamtorrent_viewer_stalls_total{channel=\"brief\"} 1";
    assert!(http_get(&addr, "/metrics").await.lines().any(|l| l == line));
    send(&mut viewer, ClientMessage::Leave {}).await;
    // After leaving, the connection is no viewer: its report is refused.
    send(&mut viewer, ClientMessage::Report(ViewerReport::default())).await;
    assert!(expect_bad_report(&mut viewer).await.contains("join"));
    assert!(!http_get(&addr, "/metrics")
        .await
        .contains("channel=\"brief\""));
}

#[tokio::test]
async fn with_reports_off_the_welcome_asks_for_none_and_refuses_them() {
    let (addr, _stop) = start_with(|c| c.viewer_report_secs = 0).await;
    let mut viewer = connect(&addr).await;
    assert_eq!(join_viewer(&mut viewer, "quiet").await, None);
    send(&mut viewer, ClientMessage::Report(ViewerReport::default())).await;
    assert!(expect_bad_report(&mut viewer)
        .await
        .contains("no viewer reports"));
}

/// The operator's Grafana dashboard asks only for series this server exports.
#[tokio::test]
async fn the_dashboard_queries_only_metrics_the_server_exports() {
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/streamtorrent.json"
    ))
    .expect("deploy/grafana/streamtorrent.json exists");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let addr = start_reporting().await;
    let metrics = http_get(&addr, "/metrics").await;
    let mut names: Vec<&str> = dashboard
        .match_indices("streamtorrent_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 6, "the dashboard names {names:?}");
    for name in names {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "the dashboard asks for {name}, which /metrics does not export"
        );
    }
}
