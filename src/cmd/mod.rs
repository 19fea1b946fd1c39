//! One module per subcommand, each the same shape: `run(args, out) -> Result<Outcome>`: read
//! the arguments (clap types, `crate::cli`) and the input document, call the engine
//! (`crate::engine`), write the output document. Nothing below this layer sees clap, and no
//! subcommand calls another one's module: the launcher (`pytest`) calls the engines.

pub mod completions;
pub mod exec;
pub mod man;
pub mod options;
pub mod plan;
pub mod probe;
pub mod pytest;
pub mod release;
pub mod sync;

pub use crate::engine::say;

use crate::error::{Error, Result};
use std::io::Write;

/// Writes a whole document to stdout; a closed pipe is reported as such for main to swallow.
pub fn emit(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(|e| Error::io("writing stdout", e))
}

/// Command-line ssh options override those carried in a document.
pub fn apply_ssh_args(settings: &mut crate::ssh::SshSettings, a: &crate::cli::SshArgs) {
    settings.override_with(a.ssh_config.as_deref(), a.connect_timeout, a.control_persist);
}
