//! `pytest-cloud sync`: not implemented yet.

use crate::cli::SyncArgs;
use crate::error::{Error, Outcome, Result};
use std::io::Write;

pub fn run(_args: &SyncArgs, _out: &mut dyn Write) -> Result<Outcome> {
    Err(Error::usage("`pytest-cloud sync` is not implemented yet"))
}
