//! `pytest-cloud completions SHELL`: a completion script for bash, zsh or fish, generated from
//! the clap definitions in `src/cli.rs` so it can never drift from the real options.
//!
//! Input: none. Output: the script on stdout. Exit codes: 0, 64 unknown shell, 74 stdout error.
//! The checked-in copies in `share/completions/` are made by `scripts/gen-share` and compared
//! by `tests/generated.rs`.
//!
//! Example: `pytest-cloud completions bash > ~/.local/share/bash-completion/completions/pytest-cloud`

use crate::cli::{CompletionsArgs, Shell};
use crate::cmd::emit;
use crate::error::{Error, Outcome, Result};
use std::io::Write;

pub const BIN_NAME: &str = "pytest-cloud";

pub fn run(args: &CompletionsArgs, out: &mut dyn Write) -> Result<Outcome> {
    let script = script(args.shell)?;
    emit(out, &script)?;
    Ok(Outcome::Complete)
}

/// The completion script for `shell`. Rendered into memory first: clap_complete panics when
/// its writer fails, and a closed stdout must stay a quiet exit, not a panic.
pub fn script(shell: Shell) -> Result<String> {
    use clap_complete::Shell as S;
    let target = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
    };
    let mut cmd = without_hidden_subcommands(crate::cmd::man::documented_command());
    let mut buf = Vec::new();
    clap_complete::generate(target, &mut cmd, BIN_NAME, &mut buf);
    let text = String::from_utf8(buf).map_err(|e| Error::internal(format!("completion script is not UTF-8: {e}")))?;
    Ok(match shell {
        Shell::Bash => fix_bash_hyphenated_bin_name(&text),
        Shell::Fish => add_fish_positional_values(&text, &cmd),
        Shell::Zsh => text,
    })
}

/// clap_complete's fish script completes no positional argument, so `pytest-cloud completions
/// <TAB>` offered file names; add each visible subcommand's positional choices (bash and zsh
/// have them already). Uses the script's own subcommand test function; should a later
/// clap_complete rename it, nothing is added (and the fish test in tests/generated.rs fails).
fn add_fish_positional_values(script: &str, cmd: &clap::Command) -> String {
    let using = format!("__fish_{}_using_subcommand", BIN_NAME.replace('-', "_"));
    if !script.contains(&format!("function {using}")) {
        return script.to_string();
    }
    let mut out = script.to_string();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        for arg in sub.get_positionals().filter(|a| !a.is_hide_set()) {
            let values: Vec<String> = arg.get_possible_values().iter().filter(|v| !v.is_hide_set()).map(|v| v.get_name().to_string()).collect();
            if !values.is_empty() {
                out.push_str(&format!("complete -c {BIN_NAME} -n \"{using} {}\" -f -a \"{}\"\n", sub.get_name(), values.join(" ")));
            }
        }
    }
    out
}

/// clap_complete offers hidden subcommands (`man`) like any other, and clap cannot remove a
/// subcommand, so rebuild the top command from its visible parts: what completion reads
/// (name, about, version, top-level arguments, subcommands) and nothing else.
fn without_hidden_subcommands(top: clap::Command) -> clap::Command {
    let mut cmd = clap::Command::new(BIN_NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .args(top.get_arguments().cloned())
        .subcommand_required(top.is_subcommand_required_set());
    if let Some(a) = top.get_about() {
        cmd = cmd.about(a.clone());
    }
    cmd.subcommands(top.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// clap_complete (4.6.11, clap-rs/clap#6421) spells the bash state of a subcommand two ways
/// when the binary name has a hyphen: the dispatch loop sets `pytest__cloud__subcmd__plan`,
/// the case arms test `pytest__subcmd__cloud__subcmd__plan`, so no option of any subcommand
/// ever completes. Respell the arms the loop's way; once upstream is fixed the wrong
/// spelling no longer occurs and this is a no-op. `tests/generated.rs` runs real bash on it.
fn fix_bash_hyphenated_bin_name(script: &str) -> String {
    let wrong = BIN_NAME.replace('-', "__subcmd__");
    let right = BIN_NAME.replace('-', "__");
    script.replace(&wrong, &right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_completes_every_visible_subcommand_and_no_hidden_one() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell).unwrap();
            for sub in ["probe", "plan", "sync", "exec", "pytest", "completions"] {
                assert!(s.contains(sub), "{shell:?} script lacks {sub}");
            }
            assert!(s.contains("mem-per-process"), "{shell:?} script lacks plan's options");
            assert!(!s.contains("Write the man pages"), "{shell:?} script offers the hidden man subcommand");
        }
    }
}
