//! `swarm-sim`: runs thousands of StreamTorrent [`swarm::Swarm`]s — the very type the
//! browser and native peers run — on virtual time over a modelled network, seeded and
//! reproducible, and measures what viewers would see.

mod config;
mod hostile;
mod membership;
mod metrics;
mod network;
pub mod plot;
mod queue;
mod report;
mod sim;

pub use config::{RttRange, SimConfig, UPLOAD_CLASSES};
pub use metrics::{Report, TimelinePoint};
pub use report::table;
pub use sim::Sim;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{option}: {reason}")]
    Option {
        option: &'static str,
        reason: String,
    },
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
