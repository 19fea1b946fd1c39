//! `pytest-cloud man DIR` (hidden): writes the man pages, roff generated from the clap
//! definitions in `src/cli.rs`: `pytest-cloud.1` for the top command and
//! `pytest-cloud-<subcommand>.1` for each visible subcommand.
//!
//! Input: none. Output: the paths written, one per line, on stdout. Exit codes: 0, 74 when
//! the directory cannot be made or a page cannot be written.
//! The checked-in copies in `share/man/man1/` are made by `scripts/gen-share` and compared by
//! `tests/generated.rs`.
//!
//! Example: `pytest-cloud man share/man/man1 && man -l share/man/man1/pytest-cloud-plan.1`

use crate::cli::{Cli, ManArgs};
use crate::cmd::emit;
use crate::error::{Error, Outcome, Result};
use clap::CommandFactory;
use std::io::Write;

pub fn run(args: &ManArgs, out: &mut dyn Write) -> Result<Outcome> {
    std::fs::create_dir_all(&args.dir).map_err(|e| Error::io(format!("creating {}", args.dir.display()), e))?;
    let mut written = String::new();
    for (name, roff) in pages()? {
        let path = args.dir.join(&name);
        std::fs::write(&path, roff).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    emit(out, &written)?;
    Ok(Outcome::Complete)
}

/// Every page as (file name, roff), the top command first, then the visible subcommands in
/// their declared order. No date is set, so the bytes depend only on the definitions and the
/// crate version.
pub fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut top = Cli::command().disable_help_subcommand(true);
    // build() gives each subcommand its display name (`pytest-cloud-plan`) and bin name
    // (`pytest-cloud plan`), which clap_mangen uses for the file name and the synopsis.
    top.build();
    let mut cmds = vec![top.clone()];
    cmds.extend(top.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut pages = Vec::new();
    for cmd in cmds {
        // Subcommands carry no version of their own: name the package's on every page.
        let man = clap_mangen::Man::new(cmd).source(format!("pytest-cloud {}", env!("CARGO_PKG_VERSION")));
        let mut roff = Vec::new();
        man.render(&mut roff).map_err(|e| Error::internal(format!("rendering a man page: {e}")))?;
        pages.push((man.get_filename(), roff));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_subcommand_named_like_git() {
        let names: Vec<String> = pages().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[0], "pytest-cloud.1");
        for sub in ["probe", "plan", "sync", "exec", "pytest", "completions"] {
            assert!(names.contains(&format!("pytest-cloud-{sub}.1")), "{names:?}");
        }
        assert!(!names.iter().any(|n| n == "pytest-cloud-man.1"), "the hidden man subcommand gets no page");
    }
}
