//! `pytest-cloud exec`: not implemented yet.

use crate::cli::ExecArgs;
use crate::error::{Error, Outcome, Result};
use std::io::Write;

pub fn run(_args: &ExecArgs, _out: &mut dyn Write) -> Result<Outcome> {
    Err(Error::usage("`pytest-cloud exec` is not implemented yet"))
}
