//! A 500-viewer swarm with 10% polluters and 10% request flooders: honest viewers keep
//! playing on time and never play a corrupted byte. Release build only (500 viewers
//! checking every piece's SHA-256): `scripts/test` runs it with
//! `cargo test --release -p swarm-sim --test hostile_swarm -- --include-ignored`.

use swarm_sim::{run, RttRange, SimConfig};

#[test]
#[ignore = "500 viewers for 60 s: run in release (scripts/test does)"]
fn honest_viewers_keep_playing_beside_polluters_and_flooders() {
    let mut config = SimConfig::new(500, 60);
    config.upload_ratio = 4.0;
    config.source_upload = 20.0;
    config.rtt = RttRange { min: 20, max: 60 };
    config.ramp_secs = 30;
    config.seed = 7;
    let honest = run(config.clone()).expect("a valid scenario");
    config.polluters = 0.1;
    config.flooders = 0.1;
    let attacked = run(config.clone()).expect("a valid scenario");
    let json = |r| serde_json::to_string(r).expect("a report is plain numbers");
    println!("honest swarm:   {}", json(&honest));
    println!("attacked swarm: {}", json(&attacked));
    let seed = config.seed;
    let context = format!("seed {seed}; replay with swarm-sim --peers 500 --seconds 60 --upload-ratio 4 --source-upload 20 --rtt-ms 20-60 --ramp-secs 30 --polluters 0.1 --flooders 0.1 --seed {seed}: {}", json(&attacked));
    assert!(
        attacked.hostile_joined >= 50,
        "the scenario has attackers: {context}"
    );
    assert!(attacked.continuity >= 0.99, "honest continuity: {context}");
    assert_eq!(
        attacked.bad_bytes_played, 0,
        "corrupted bytes played: {context}"
    );
    assert_eq!(attacked.corrupt_chunks, 0, "{context}");
    assert!(
        attacked.drops_polluted > 0 && attacked.bytes_rejected > 0,
        "polluters caught: {context}"
    );
    assert!(attacked.drops_flooding > 0, "flooders caught: {context}");
    assert!(
        attacked.never_started == 0,
        "every honest viewer started: {context}"
    );
    // The same swarm without attackers, for comparison (and no honest peer mistaken).
    assert_eq!(honest.peers_banned, 0, "{}", json(&honest));
}
