//! `pytest-cloud options` (hidden): the launcher's `--cloud-*` table (`src/options.rs`) as JSON,
//! or as the pytest plugin's generated module, which `scripts/gen-share` writes and
//! `tests/generated.rs` checks.
//!
//! Example: `pytest-cloud options --plugin-module > share/pytest-cloud-plugin/src/pytest_cloud/options.py`

use crate::cli::OptionsArgs;
use crate::cmd::emit;
use crate::error::{Outcome, Result};
use std::io::Write;

pub fn run(args: &OptionsArgs, out: &mut dyn Write) -> Result<Outcome> {
    let text = if args.plugin_module { crate::options::plugin_module() } else { crate::options::to_json() };
    emit(out, &text)?;
    Ok(Outcome::Complete)
}
