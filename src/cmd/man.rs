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

/// The command line as users see it: the clap definitions, plus the launcher's `--cloud-*`
/// options, which `pytest` parses by hand (they mix with pytest's own arguments) from the
/// one table `options::cloud_options()`, so clap alone would document and complete none of them.
/// For man pages and completions only; parsing never sees these.
pub fn documented_command() -> clap::Command {
    Cli::command().mut_subcommand("pytest", |mut sub| {
        for o in crate::options::cloud_options() {
            let long = o.name.trim_start_matches("--");
            let mut arg = clap::Arg::new(long).long(long).help(o.help_line());
            arg = if o.takes_value() {
                arg.value_name("VALUE").num_args(1).action(clap::ArgAction::Append)
            } else {
                arg.num_args(0).action(clap::ArgAction::SetTrue)
            };
            sub = sub.arg(arg);
        }
        // The pass-through arguments are hidden from clap's parser help (the launcher prints
        // its own); in the docs they are the point.
        let rest = sub.get_positionals().next().map(|a| a.get_id().clone());
        match rest {
            Some(id) => sub.mut_arg(id, |a| {
                a.hide(false).value_name("PYTEST ARGS").help("every other argument goes to pytest unchanged (paths, -k, -m, -x, --dist, ...)")
            }),
            None => sub,
        }
    })
}

/// Every page as (file name, roff), the top command first, then the visible subcommands in
/// their declared order. No date is set, so the bytes depend only on the definitions and the
/// crate version.
pub fn pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut top = documented_command().disable_help_subcommand(true);
    // build() gives each subcommand its display name (`pytest-cloud-plan`) and bin name
    // (`pytest-cloud plan`), which clap_mangen uses for the file name and the synopsis.
    top.build();
    let mut cmds = vec![top.clone()];
    cmds.extend(top.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut pages = Vec::new();
    for cmd in cmds {
        // Subcommands carry no version of their own: name the package's on every page.
        let man = clap_mangen::Man::new(cmd.clone()).source(format!("pytest-cloud {}", env!("CARGO_PKG_VERSION")));
        let mut raw = Vec::new();
        man.render(&mut raw).map_err(|e| Error::internal(format!("rendering a man page: {e}")))?;
        let mut page = String::from_utf8(raw).map_err(|e| Error::internal(format!("man page is not UTF-8: {e}")))?;
        // clap_mangen fills every help line like prose, so an example pipe comes out
        // re-wrapped and justified, unusable to copy. Re-render the two sections that hold
        // examples with indented lines kept as written.
        if let Some(text) = cmd.get_long_about().or_else(|| cmd.get_about()) {
            page = replace_section(&page, "DESCRIPTION", "DESCRIPTION", &help_to_roff(&text.to_string()));
        }
        if let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
            let text = text.to_string();
            // The section title says it; drop the help text's own "Example(s):" line.
            let body = match text.split_once('\n') {
                Some((first, rest)) if first.trim_end().ends_with(':') && first.starts_with("Example") => rest.to_string(),
                _ => text,
            };
            page = replace_section(&page, "EXTRA", "EXAMPLES", &help_to_roff(&body));
        }
        pages.push((man.get_filename(), page.into_bytes()));
    }
    Ok(pages)
}

/// Replaces the body of section `.SH title` (up to the next `.SH`) and renames it.
fn replace_section(page: &str, title: &str, new_title: &str, body: &str) -> String {
    let head = format!(".SH {title}\n");
    let Some(start) = page.find(&head) else { return page.to_string() };
    let body_start = start + head.len();
    let end = page[body_start..].find("\n.SH ").map(|i| body_start + i + 1).unwrap_or(page.len());
    format!("{}.SH {new_title}\n{body}{}", &page[..start], &page[end..])
}

/// Help text to roff: runs of unindented lines are prose (filled), runs of indented lines
/// (examples) are kept line for line, indented; a blank line starts a new paragraph.
fn help_to_roff(text: &str) -> String {
    let mut out = String::new();
    let mut literal = false;
    let mut fresh = true;
    for line in text.lines() {
        if line.trim().is_empty() {
            if literal {
                out.push_str(".fi\n.RE\n");
                literal = false;
            }
            fresh = true;
            continue;
        }
        let indented = line.starts_with(' ');
        if indented && !literal {
            out.push_str(".RS 4\n.nf\n");
            literal = true;
        } else if !indented && literal {
            out.push_str(".fi\n.RE\n");
            literal = false;
            fresh = true;
        }
        if fresh && !literal {
            out.push_str(".PP\n");
        }
        fresh = false;
        let kept = if literal { line.strip_prefix("  ").unwrap_or(line) } else { line.trim() };
        out.push_str(&roff_escape(kept));
        out.push('\n');
    }
    if literal {
        out.push_str(".fi\n.RE\n");
    }
    out
}

/// One line of text as roff: backslashes, hyphens (so they print as ASCII and search) and
/// apostrophes escaped the way clap_mangen does, a leading `.` or `'` kept from being a request.
fn roff_escape(line: &str) -> String {
    let s = line.replace('\\', "\\e").replace('-', "\\-").replace('\'', "\\*(Aq");
    if s.starts_with('.') { format!("\\&{s}") } else { s }
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

    #[test]
    fn examples_keep_their_lines_and_text_is_escaped() {
        let roff = help_to_roff("Run it:\n  a --b 'c' \\\n    | d\n\nSecond.\n.dot");
        let want = [".PP", "Run it:", ".RS 4", ".nf", r"a \-\-b \*(Aqc\*(Aq \e", "  | d", ".fi", ".RE", ".PP", "Second.", r"\&.dot", ""];
        assert_eq!(roff, want.join("\n"));
        let page = ".TH x\n.SH DESCRIPTION\nold\n.SH EXTRA\nold\n.SH VERSION\nv\n";
        let page = replace_section(page, "EXTRA", "EXAMPLES", "new\n");
        assert_eq!(page, ".TH x\n.SH DESCRIPTION\nold\n.SH EXAMPLES\nnew\n.SH VERSION\nv\n");
    }

    #[test]
    fn the_launcher_page_lists_every_cloud_option() {
        let pages = pages().unwrap();
        let (_, roff) = pages.iter().find(|(n, _)| n == "pytest-cloud-pytest.1").unwrap();
        let roff = String::from_utf8_lossy(roff).replace("\\-", "-");
        for o in crate::options::cloud_options() {
            assert!(roff.contains(o.name), "{} missing from pytest-cloud-pytest.1", o.name);
        }
    }
}
