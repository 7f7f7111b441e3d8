//! A 500-viewer swarm with 10% polluters and 10% request flooders, on three seeds: honest
//! viewers keep playing on time and never play a corrupted byte. Release build only (500 viewers
//! checking every piece's SHA-256): `scripts/test` runs it with
//! `cargo test --release -p swarm-sim --test hostile_swarm -- --include-ignored`.

use swarm_sim::{run, RttRange, SimConfig};

/// Seeds of the attacked swarm. One seed is one draw of a chaotic system: a chunk whose
/// pushed copies landed mostly on polluters costs a third of the viewers that chunk, and
/// whether that happens moves with any change of timing (over seeds 1-5 and 7 the mean
/// was 0.993-0.994, single seeds 0.978-0.999, before and after exact timers). So the
/// bound is on the mean of three, with a floor for each.
const SEEDS: [u64; 3] = [7, 1, 3];
/// Mean honest continuity over the seeds.
const MEAN_AT_LEAST: f64 = 0.99;
/// Honest continuity of any one seed.
const EACH_AT_LEAST: f64 = 0.97;

#[test]
#[ignore = "500 viewers for 60 s, four times: run in release (scripts/test does)"]
fn honest_viewers_keep_playing_beside_polluters_and_flooders() {
    let mut config = SimConfig::new(500, 60);
    config.upload_ratio = 4.0;
    config.source_upload = 20.0;
    config.rtt = RttRange { min: 20, max: 60 };
    config.ramp_secs = 30;
    let attacked = |seed| {
        let mut config = config.clone();
        config.seed = seed;
        config.polluters = 0.1;
        config.flooders = 0.1;
        config
    };
    let mut honest_config = config.clone();
    honest_config.seed = SEEDS[0];
    // Two at a time: the machine has two cores, and each run holds about 3.7 GB.
    let runs = [
        attacked(SEEDS[0]),
        attacked(SEEDS[1]),
        attacked(SEEDS[2]),
        honest_config,
    ];
    let mut reports = Vec::new();
    for pair in runs.chunks(2) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = pair
                .iter()
                .map(|c| scope.spawn(|| run(c.clone()).expect("a valid scenario")))
                .collect();
            for handle in handles {
                reports.push(handle.join().expect("a simulation thread panicked"));
            }
        });
    }
    let honest = reports.pop().expect("four runs");
    let json = |r| serde_json::to_string(r).expect("a report is plain numbers");
    println!("honest swarm (seed {}): {}", SEEDS[0], json(&honest));
    for (seed, attacked) in SEEDS.iter().zip(&reports) {
        println!("attacked swarm, seed {seed}: {}", json(attacked));
        let context = format!("seed {seed}; replay with swarm-sim --peers 500 --seconds 60 --upload-ratio 4 --source-upload 20 --rtt-ms 20-60 --ramp-secs 30 --polluters 0.1 --flooders 0.1 --seed {seed}: {}", json(attacked));
        assert!(
            attacked.hostile_joined >= 50,
            "the scenario has attackers: {context}"
        );
        assert!(
            attacked.continuity >= EACH_AT_LEAST,
            "honest continuity: {context}"
        );
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
    }
    let mean = reports.iter().map(|r| r.continuity).sum::<f64>() / reports.len() as f64;
    assert!(
        mean >= MEAN_AT_LEAST,
        "mean honest continuity over seeds {SEEDS:?}: {mean:.4}"
    );
    // The same swarm without attackers, for comparison (and no honest peer mistaken).
    assert_eq!(honest.peers_banned, 0, "{}", json(&honest));
    assert!(honest.continuity >= MEAN_AT_LEAST, "{}", json(&honest));
}
