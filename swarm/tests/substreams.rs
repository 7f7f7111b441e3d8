//! Push along substreams, one peer at a time: a parent admits children only while its
//! upload budget carries their substreams.

mod common;

use protocol::{PeerId, PeerMessage};
use swarm::{BytesPerSec, Input, Millis, Output, Swarm};

const SOURCE: PeerId = PeerId(0);
const A: PeerId = PeerId(1);
const B: PeerId = PeerId(2);

/// A viewer that holds the signed manifest of one 40,000-byte chunk: it knows the
/// stream's rate (40 kB a second at the assumed 1 s chunks).
fn viewer_knowing_the_stream(upload: Option<BytesPerSec>) -> Swarm {
    let mut config = common::viewer_config();
    config.substreams = 4;
    config.upload_limit = upload;
    let mut viewer = Swarm::new(config);
    viewer.handle_input(Millis(0), Input::Broadcaster(Some(SOURCE)));
    viewer.handle_input(Millis(0), Input::PeerConnected(SOURCE));
    let manifest = PeerMessage::Manifest(common::manifest(0, 40_000));
    viewer.handle_input(Millis(0), Input::Message(SOURCE, manifest));
    for child in [A, B] {
        viewer.handle_input(Millis(0), Input::PeerConnected(child));
    }
    std::iter::from_fn(|| viewer.poll_output()).for_each(drop);
    viewer
}

/// What `viewer` answers `child` asking for every one of 4 substreams.
fn accepted(viewer: &mut Swarm, child: PeerId) -> u16 {
    let subscribe = PeerMessage::Subscribe {
        count: 4,
        mask: 0b1111,
    };
    viewer.handle_input(Millis(10), Input::Message(child, subscribe));
    let answers: Vec<u16> = std::iter::from_fn(|| viewer.poll_output())
        .filter_map(|o| match o {
            Output::Send(to, PeerMessage::Subscribed { count: 4, mask }) if to == child => {
                Some(mask)
            }
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "one answer per subscription");
    answers[0]
}

#[test]
fn a_parent_takes_only_the_substreams_its_upload_budget_carries() {
    // 40 kB/s of budget, two thirds of it for pushes: half the stream, two substreams.
    let mut viewer = viewer_knowing_the_stream(Some(BytesPerSec(40_000)));
    assert_eq!(accepted(&mut viewer, A).count_ones(), 2);
    assert_eq!(accepted(&mut viewer, B), 0, "the budget is spoken for");
    // Asking again keeps what was granted; nothing more fits.
    assert_eq!(accepted(&mut viewer, A).count_ones(), 2);
}

#[test]
fn a_viewer_that_uploads_nothing_is_never_a_parent() {
    let mut viewer = viewer_knowing_the_stream(Some(BytesPerSec(0)));
    assert_eq!(accepted(&mut viewer, A), 0);
}

#[test]
fn an_unlimited_parent_takes_a_few_streams_worth_of_children() {
    let mut viewer = viewer_knowing_the_stream(None);
    assert_eq!(accepted(&mut viewer, A), 0b1111);
    assert_eq!(accepted(&mut viewer, B), 0b1111);
}
