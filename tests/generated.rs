//! The checked-in completion scripts and man pages are what the current command line
//! generates: regenerate them into a tempdir through the real binary and compare byte for
//! byte. When this fails, run `scripts/gen-share` and commit the result.

#[path = "common/require.rs"]
mod require;

use assert_cmd::Command;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stale(what: &Path, why: &str) -> String {
    format!("{} {why}: run scripts/gen-share and commit the result", what.display())
}

#[test]
fn completion_scripts_are_current() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::cargo_bin("pytest-cloud").unwrap().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "completions {shell}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.stdout.is_empty(), "completions {shell} printed nothing");
        let file = Path::new("share/completions").join(format!("pytest-cloud.{shell}"));
        let checked_in = std::fs::read(repo().join(&file)).unwrap_or_else(|_| panic!("{}", stale(&file, "is missing")));
        assert!(checked_in == out.stdout, "{}", stale(&file, "is stale"));
    }
}

#[test]
fn man_pages_are_current_and_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("pytest-cloud").unwrap().arg("man").arg(tmp.path()).output().unwrap();
    assert!(out.status.success(), "man: {}", String::from_utf8_lossy(&out.stderr));
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("pytest-cloud") && n.ends_with(".1"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let man1 = Path::new("share/man/man1");
    let generated = names(tmp.path());
    // stdout lists exactly the pages written, so scripts can rely on it.
    let listed: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| Path::new(l).file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, generated);
    assert!(generated.contains("pytest-cloud.1") && generated.contains("pytest-cloud-plan.1"), "{generated:?}");
    let checked_in = names(&repo().join(man1));
    for extra in checked_in.difference(&generated) {
        panic!("{}", stale(&man1.join(extra), "belongs to no current subcommand"));
    }
    for name in &generated {
        let file = man1.join(name);
        let want = std::fs::read(tmp.path().join(name)).unwrap();
        let have = std::fs::read(repo().join(&file)).unwrap_or_else(|_| panic!("{}", stale(&file, "is missing")));
        assert!(have == want, "{}", stale(&file, "is stale"));
    }
}

#[test]
fn completions_refuse_an_unknown_shell_with_a_usage_error() {
    let out = Command::cargo_bin("pytest-cloud").unwrap().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bash") && err.contains("zsh") && err.contains("fish"), "{err}");
}

#[test]
fn man_reports_an_unwritable_directory_as_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let out = Command::cargo_bin("pytest-cloud").unwrap().arg("man").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-a-dir"));
}

/// What real bash offers after `words` (the last one being completed), using the installed
/// script's registered function exactly as readline would call it.
fn bash_complete(words: &[&str]) -> Vec<String> {
    const DRIVER: &str = r#"
        source "$0" || exit 90
        f=$(complete -p pytest-cloud | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
        [ -n "$f" ] || exit 91
        COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
        COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        prev=""; [ $# -ge 2 ] && prev=${@: -2:1}
        "$f" pytest-cloud "${@: -1}" "$prev"
        printf '%s\n' "${COMPREPLY[@]}""#;
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", DRIVER])
        .arg(repo().join("share/completions/pytest-cloud.bash"))
        .args(words)
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "bash driver failed ({:?}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    assert_eq!(bash_complete(&["pytest-cloud", "pl"]), ["plan"]);
    // Past the subcommand: broken upstream for hyphenated names (clap-rs/clap#6421), fixed in
    // src/cmd/completions.rs.
    assert_eq!(bash_complete(&["pytest-cloud", "plan", "--mem"]), ["--mem-per-process"]);
    let shells = bash_complete(&["pytest-cloud", "completions", ""]);
    for s in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|x| x == s), "{shells:?}");
    }
    assert!(!bash_complete(&["pytest-cloud", ""]).iter().any(|x| x == "man"), "hidden subcommand offered");
}

/// zsh and fish are not on every machine (scripts/test installs them); where one is missing
/// its check fails under CI and says SKIPPED elsewhere (`require`).
fn have(shell: &str) -> bool {
    require::require(
        require::runs(shell, &["-c", "exit 0"]),
        &format!("{shell} (not on PATH or does not start)"),
        &format!("apt-get install {shell}, or scripts/install-deps {shell}; scripts/test installs it"),
    )
}

#[test]
fn zsh_script_parses() {
    if have("zsh") {
        let out = std::process::Command::new("zsh").arg("-n").arg(repo().join("share/completions/pytest-cloud.zsh")).output().unwrap();
        assert!(out.status.success(), "zsh -n: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn fish_completes_subcommands_and_their_options() {
    if have("fish") {
        let script = repo().join("share/completions/pytest-cloud.fish");
        let out = std::process::Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(r#"source $argv[1]; and complete -C "pytest-cloud plan --mem"; and complete -C "pytest-cloud pl"; and complete -C "pytest-cloud completions ""#)
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "fish: {}", String::from_utf8_lossy(&out.stderr));
        let words: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('\t').next().unwrap().to_string()).collect();
        assert_eq!(words, ["--mem-per-process", "plan", "bash", "fish", "zsh"]);
    }
}

#[test]
fn the_plugins_option_table_is_current() {
    let out = Command::cargo_bin("pytest-cloud").unwrap().args(["options", "--plugin-module"]).output().unwrap();
    assert!(out.status.success(), "options: {}", String::from_utf8_lossy(&out.stderr));
    let file = Path::new("share/pytest-cloud-plugin/src/pytest_cloud/options.py");
    let checked_in = std::fs::read(repo().join(file)).unwrap_or_else(|_| panic!("{}", stale(file, "is missing")));
    assert!(checked_in == out.stdout, "{}", stale(file, "is stale"));
    // The JSON form is the same table.
    let json = Command::cargo_bin("pytest-cloud").unwrap().args(["options", "--json"]).output().unwrap();
    let table: serde_json::Value = serde_json::from_slice(&json.stdout).expect("options --json prints JSON");
    let names: Vec<&str> = table.as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"--cloud-node") && names.contains(&"--cloud-rsync-cipher"), "{names:?}");
}
