//! `pytest-cloud pytest`: not implemented yet.

use crate::cli::PytestArgs;
use crate::error::{Error, Outcome, Result};
use std::io::Write;

pub fn run(_args: &PytestArgs, _out: &mut dyn Write) -> Result<Outcome> {
    Err(Error::usage("`pytest-cloud pytest` is not implemented yet"))
}
