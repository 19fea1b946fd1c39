//! One module per subcommand, each the same shape: `run(args, out) -> Result<Outcome>`.

pub mod completions;
pub mod man;
// The engines moved to `crate::engine`; these names stand in until the adapters are split out.
pub use crate::engine::session as pytest;
pub use crate::engine::{exec, plan, probe, sync};

use crate::error::{Error, Result};
use std::io::Write;

/// Writes a whole document to stdout; a closed pipe is reported as such for main to swallow.
pub fn emit(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(|e| Error::io("writing stdout", e))
}

/// Progress and summaries go to stderr, never stdout.
pub fn say(quiet: bool, line: impl AsRef<str>) {
    if !quiet {
        eprintln!("{}", line.as_ref());
    }
}
