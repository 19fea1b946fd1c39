//! The seed invocation through the pytest plugin: `.venv/bin/pytest tests/ --cloud-nodes=...`
//! in a venv with `pip install ./share/pytest-cloud-plugin`, calling the real binary.

mod common;

use common::cluster::Cluster;
use common::example::Example;
use std::process::Command;

#[test]
fn plugin_runs_the_suite_on_the_nodes_like_a_local_run() {
    let c = Cluster::up(2);
    let ex = Example::new();
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("share/pytest-cloud-plugin");
    let pip = Command::new(ex.python())
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(&plugin)
        .output()
        .unwrap();
    assert!(pip.status.success(), "{}", String::from_utf8_lossy(&pip.stderr));

    let local = Command::new(ex.root().join(".venv/bin/pytest")).args(["tests/", "-q", "-p", "no:cloud"]).current_dir(ex.root()).output().unwrap();
    let nodes = c.aliases().join(" ");
    let out = Command::new(ex.root().join(".venv/bin/pytest"))
        .args(["tests/", "-v"])
        .arg(format!("--cloud-nodes={nodes}"))
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .arg("--cloud-mem-per-process=100")
        .env("PYTEST_CLOUD_BINARY", assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .env_remove("VIRTUAL_ENV")
        .current_dir(ex.root())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    let summary = |s: &str| s.lines().rev().find(|l| l.contains(" passed")).map(|l| l.split(" in ").next().unwrap().trim_matches('=').trim().to_string());
    assert_eq!(summary(&text), summary(&String::from_utf8_lossy(&local.stdout)), "{text}");
    // Every test ran on a node's worker: the workers' ids are the plan's.
    assert!(text.contains("[node1-0]") && text.contains("[node2-1]"), "workers named after the plan:\n{text}");
}
