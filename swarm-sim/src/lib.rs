//! `swarm-sim`: runs thousands of StreamTorrent peer cores ([`swarm::Node`], the very
//! type the browser and native drivers run, with its `Swarm` inside) against the signal
//! server's own rooms, on virtual time over a modelled network; every peer message goes
//! through the real encoder and decoder. Seeded and reproducible; it measures what
//! viewers would see.

mod checks;
mod config;
mod driver;
mod hostile;
mod membership;
mod metrics;
mod network;
pub mod plot;
mod queue;
pub mod real;
mod recovery;
mod report;
mod server;
mod sim;

pub use config::{RttRange, SimConfig, UPLOAD_CLASSES};
pub use metrics::{Report, TimelinePoint};
pub use network::FastRetransmit;
pub use report::table;
pub use sim::{budget, Sim, CONTROL_ONLY_UPLINK};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{option}: {reason}")]
    Option {
        option: &'static str,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Checks the scenario and runs it.
pub fn run(config: SimConfig) -> Result<Report, SimError> {
    config.validate()?;
    Ok(Sim::new(config).run())
}
