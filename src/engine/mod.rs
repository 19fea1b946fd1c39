//! The engines: probe, plan, sync, exec and the launcher's session. They take plain option
//! structs and documents (`crate::schema`), never clap types, so the launcher calls them
//! in-process exactly as the subcommands (`crate::cmd`) do. Beneath them are the tools they
//! drive: `ssh`, `rsync`, `parallel`, `proc`, `venv`, `project`.

pub mod exec;
pub mod lease;
pub mod plan;
pub mod probe;
pub mod session;
pub mod sync;

use crate::error::{Error, Result};

/// Progress and summaries go to stderr, never stdout.
pub fn say(quiet: bool, line: impl AsRef<str>) {
    if !quiet {
        eprintln!("{}", line.as_ref());
    }
}

/// A pool with a thread per node (up to 128): the work waits on the network, not the CPU.
pub(crate) fn node_pool(nodes: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(nodes.clamp(1, 128))
        .build()
        .map_err(|e| Error::internal(format!("thread pool: {e}")))
}
