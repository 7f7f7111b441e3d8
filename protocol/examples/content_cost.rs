//! Prints what signing and verifying content costs per chunk on this machine, per-chunk
//! signatures against a signed root per batch. `cargo run --release -p protocol --example
//! content_cost [CHUNK_BYTES] [ROUNDS]` (with `--features content-cost`).

use std::time::Instant;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let chunk_bytes = args.next().unwrap_or(250_000);
    let rounds = args.next().unwrap_or(200);
    let origin = Instant::now();
    let cost = protocol::content_cost::measure(
        || origin.elapsed().as_secs_f64() * 1000.0,
        chunk_bytes,
        rounds,
        10,
    );
    println!("{cost:#?}");
}
