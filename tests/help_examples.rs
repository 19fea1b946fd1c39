//! Every subcommand's `--help` ends with a real example, and every `pytest-cloud ...` command
//! in those examples (and in the top-level description) parses with the current command
//! line: a renamed or removed option fails here, not in a user's terminal.

use assert_cmd::Command;
use clap::{CommandFactory, Parser};
use pytest_cloud::cli::{Cli, Command as Sub};

/// The example command lines of a help text: its indented lines, `\`-continuations joined,
/// `# comments` dropped.
fn example_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines().filter(|l| l.starts_with("  ")) {
        let line = match line.find("  #") {
            Some(i) => &line[..i],
            None => line,
        };
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(std::mem::take(&mut pending));
    }
    out
}

/// The argv of each `pytest-cloud` invocation in a shell line: split at pipes and `&&`,
/// redirections and their targets removed.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let words = shell_words::split(line).unwrap_or_else(|e| panic!("example does not parse as shell words: {line}: {e}"));
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut skip_next = false;
    for w in words {
        if skip_next {
            skip_next = false;
            continue;
        }
        match w.as_str() {
            "|" | "&&" => out.push(std::mem::take(&mut cur)),
            "<" | ">" | "2>" | ">>" => skip_next = true,
            _ => cur.push(w),
        }
    }
    out.push(cur);
    out.into_iter().filter(|argv| argv.first().is_some_and(|a| a == "pytest-cloud")).collect()
}

fn check_parses(argv: &[String], source: &str) {
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("example in {source} does not parse: {argv:?}\n{e}"));
    if let Sub::Pytest(a) = &cli.command {
        // The launcher parses its --cloud-* options itself.
        pytest_cloud::cmd::pytest::split_args(&a.rest)
            .unwrap_or_else(|e| panic!("example in {source}: launcher options do not parse: {argv:?}: {e}"));
    }
}

#[test]
fn every_visible_subcommand_has_an_example_that_parses() {
    let top = Cli::command();
    let mut checked = 0;
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
        assert!(help.starts_with("Example"), "`pytest-cloud {name} --help` has no example (after_help in src/cli.rs)");
        let lines = example_lines(&help);
        assert!(!lines.is_empty(), "{name}: the example has no indented command line");
        let mut uses_itself = false;
        for line in &lines {
            for argv in invocations(line) {
                uses_itself |= argv.get(1).is_some_and(|s| s == name);
                check_parses(&argv, &format!("`{name} --help`"));
                checked += 1;
            }
        }
        assert!(uses_itself, "{name}: the example never runs `pytest-cloud {name}`");
    }
    assert!(checked >= 6, "only {checked} invocations checked");
}

#[test]
fn the_top_level_description_examples_parse() {
    let top = Cli::command();
    let about = top.get_long_about().expect("long_about").to_string();
    let argvs: Vec<Vec<String>> = example_lines(&about).iter().flat_map(|l| invocations(l)).collect();
    assert!(argvs.len() >= 5, "{argvs:?}");
    for argv in &argvs {
        check_parses(argv, "`pytest-cloud --help`");
    }
}

#[test]
fn help_output_shows_the_example() {
    // Through the binary: the launcher prints its own help, the others clap's.
    for sub in ["probe", "plan", "sync", "exec", "pytest", "completions"] {
        let out = Command::cargo_bin("pytest-cloud").unwrap().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help: {:?}", out.status);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Example") && text.contains(&format!("pytest-cloud {sub} ")), "{sub} --help shows no example:\n{text}");
    }
}

#[test]
fn a_broken_example_is_caught() {
    // The checker itself: an option that does not exist must fail to parse.
    let argvs = invocations("pytest-cloud probe --node a | pytest-cloud plan --no-such-option 3 > x.json");
    assert_eq!(argvs.len(), 2);
    assert!(Cli::try_parse_from(&argvs[1]).is_err());
    let launcher = invocations("pytest-cloud pytest --cloud-nodez 'a b' tests/");
    let Sub::Pytest(a) = Cli::try_parse_from(&launcher[0]).unwrap().command else { panic!() };
    assert!(pytest_cloud::cmd::pytest::split_args(&a.rest).is_err());
}
