//! The launcher end to end: the example project on a 4-node local cluster gives the same
//! outcomes and test ids as a local run, for the arguments a user would pass.

mod common;

use common::cluster::Cluster;
use common::example::Example;
use std::collections::BTreeSet;
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// (outcome, test id) for every test, from `-rA`'s short summary, plus the counts line.
fn outcomes(o: &Output) -> (BTreeSet<String>, String) {
    let out = String::from_utf8_lossy(&o.stdout);
    let mut set = BTreeSet::new();
    for line in out.lines() {
        for word in ["PASSED", "FAILED", "XFAIL", "XPASS", "ERROR", "SKIPPED"] {
            if let Some(rest) = line.strip_prefix(&format!("{word} ")) {
                // SKIPPED [1] path:line: reason  -> keep the location, not the count
                let id = rest.split(" - ").next().unwrap_or(rest).trim().to_string();
                set.insert(format!("{word} {id}"));
            }
        }
    }
    let counts = out
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && (l.contains("passed") || l.contains("failed") || l.contains("deselected") || l.contains("no tests ran")))
        .map(|l| l.trim_matches(|c| c == '=' || c == ' ').rsplit_once(" in ").map(|(a, _)| a.to_string()).unwrap_or_default())
        .unwrap_or_default()
        // xdist's controller never counts deselected tests (its workers deselect), in any
        // xdist run; the issue asks for equal pass/fail/skip/xfail counts.
        .split(", ")
        .filter(|part| !part.ends_with("deselected"))
        .collect::<Vec<_>>()
        .join(", ");
    (set, counts)
}

fn local(ex: &Example, args: &[&str]) -> Output {
    Command::new(ex.python()).args(["-m", "pytest", "-rA", "-p", "no:randomly"]).args(args).current_dir(ex.root()).output().unwrap()
}

fn cloud(ex: &Example, c: &Cluster, args: &[&str]) -> Output {
    let nodes = c.aliases().join(" ");
    Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .arg("pytest")
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .args(["--cloud-nodes", &nodes, "--cloud-mem-per-process", "100", "--cloud-rsync-bandwidth-limit", "0"])
        .args(["-rA", "-p", "no:randomly"])
        .args(args)
        .current_dir(ex.root())
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap()
}

#[test]
fn distributed_runs_match_local_runs() {
    let c = Cluster::up(4);
    let ex = Example::new();
    let before: Vec<usize> = c.aliases().iter().map(|a| c.connections(a)).collect();
    let cases: &[&[&str]] = &[
        &[],
        &["tests/unit"],
        &["tests/unit/test_square.py::test_area"],
        &["-k", "circle and not sum"],
        &["-m", "slow"],
        &["-m", "not slow", "--dist", "loadscope"],
        &["--dist", "loadfile"],
        &["--dist=loadgroup"],
        &["--dist", "worksteal", "-x"],
    ];
    for (i, args) in cases.iter().enumerate() {
        let l = local(&ex, args);
        let r = cloud(&ex, &c, args);
        assert_eq!(r.status.code(), l.status.code(), "exit code for {args:?}\n--- cloud:\n{}", text(&r));
        let (lset, lcounts) = outcomes(&l);
        let (rset, rcounts) = outcomes(&r);
        assert!(!lset.is_empty(), "local run of {args:?} reported no test:\n{}", text(&l));
        assert_eq!(rcounts, lcounts, "counts for {args:?}\n--- cloud:\n{}", text(&r));
        assert_eq!(rset, lset, "test ids for {args:?}\n--- cloud:\n{}", text(&r));
        if i == 0 {
            let out = text(&r);
            assert!(out.contains("node1: ") && out.contains("slots"), "header names the nodes:\n{out}");
            // One ssh connection per node for the whole run: probe, sync and every worker.
            for (a, b) in c.aliases().iter().zip(&before) {
                assert_eq!(c.connections(a), b + 1, "{a}: one authentication for the run");
            }
        }
    }
}

#[test]
fn junitxml_is_written_locally_and_lists_every_test() {
    let c = Cluster::up(2);
    let ex = Example::new();
    let xml = ex.root().join("report.xml");
    let r = cloud(&ex, &c, &["--junitxml", "report.xml"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    let report = std::fs::read_to_string(&xml).unwrap();
    let l = local(&ex, &["--collect-only", "-q"]);
    let collected = String::from_utf8_lossy(&l.stdout).lines().filter(|l| l.contains("::")).count();
    assert_eq!(report.matches("<testcase ").count(), collected, "{report}");
}
