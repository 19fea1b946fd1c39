//! The seed invocation through the pytest plugin, from the wheel: `pip install` of the wheel
//! that scripts/build-wheel made ($PYTEST_CLOUD_WHEEL, set by scripts/test) into the example
//! project's fresh venv (made from /usr/bin/python3), then `.venv/bin/py.test tests/
//! --cloud-node=...` against real sshd nodes, compared with a local run.

use crate::common;

use common::cluster::Cluster;
use common::example::Example;
use common::require::require;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The wheel under test. Built once per scripts/test run (a release build takes minutes on
/// 2 cores), so a plain `cargo test` without it says SKIPPED, and fails under CI (`require`).
fn wheel() -> Option<PathBuf> {
    let given = std::env::var_os("PYTEST_CLOUD_WHEEL").filter(|w| !w.is_empty());
    if !require(
        given.is_some(),
        "$PYTEST_CLOUD_WHEEL (the wheel to test)",
        "run scripts/test, which builds it with scripts/build-wheel and sets it, or set it to a target/wheels/pytest_cloud-*.whl",
    ) {
        return None;
    }
    let w = PathBuf::from(given.unwrap());
    assert!(w.is_file(), "$PYTEST_CLOUD_WHEEL names {}, which is not a file", w.display());
    Some(w)
}

fn install(ex: &Example, wheel: &Path) {
    let pip = Command::new(ex.python()).args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]).arg(wheel).output().unwrap();
    assert!(pip.status.success(), "pip install {}: {}", wheel.display(), String::from_utf8_lossy(&pip.stderr));
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// pytest's final counts (`3 passed, 1 skipped, 1 xfailed`), without the duration.
fn summary(o: &Output) -> Option<String> {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    out.lines()
        .rev()
        .find(|l| l.contains(" in ") && (l.contains(" passed") || l.contains(" failed")))
        .and_then(|l| l.trim_matches(|c| c == '=' || c == ' ').rsplit_once(" in ").map(|(counts, _)| counts.to_string()))
}

/// The "done when", as written: a fresh venv from /usr/bin/python3 with the wheel
/// installed, then `env -i HOME=$HOME PATH=/usr/bin:/bin .venv/bin/py.test tests/
/// --cloud-node=node{1..4} --cloud-mem-per-process=1000`. No cargo and no target/ on PATH:
/// the binary can only come from the wheel. HOME is a home whose ~/.ssh/config includes the
/// cluster's config, which is how a user names their nodes.
#[test]
fn installed_wheel_runs_the_seed_command_on_four_nodes_like_a_local_run() {
    let Some(wheel) = wheel() else { return };
    let c = Cluster::up(4);
    let ex = Example::new();
    install(&ex, &wheel);
    let home = tempfile::Builder::new().prefix("pc-home-").tempdir().unwrap();
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/config"), format!("Include \"{}\"\n", c.ssh_config().display())).unwrap();
    let py_test = ex.root().join(".venv/bin/py.test");
    let run = |args: &[String]| {
        Command::new(&py_test).args(args).env_clear().env("HOME", home.path()).env("PATH", "/usr/bin:/bin").current_dir(ex.root()).output().unwrap()
    };

    let local = run(&["tests/".to_string()]);
    let mut args = vec!["tests/".to_string()];
    args.extend(c.aliases().iter().map(|n| format!("--cloud-node={n}")));
    args.push("--cloud-mem-per-process=1000".to_string());
    assert_eq!(c.aliases().len(), 4);
    let cloud = run(&args);
    let out = text(&cloud);

    assert_eq!(cloud.status.code(), local.status.code(), "same exit code as the local run\n{out}\n--- local:\n{}", text(&local));
    assert!(summary(&local).is_some(), "the local run printed counts:\n{}", text(&local));
    assert_eq!(summary(&cloud), summary(&local), "same counts as the local run\n{out}");
    // The binary came from the wheel, beside the venv's interpreter, at the plugin's version.
    let beside = ex.root().join(".venv/bin/pytest-cloud");
    assert!(
        out.contains(&format!("pytest-cloud: binary {} (beside the interpreter), version {}", beside.display(), env!("CARGO_PKG_VERSION"))),
        "the header names the wheel's binary:\n{out}"
    );
    // Every node took part: xdist started workers on all four (8 = 2 cpus each).
    for node in c.aliases() {
        assert!(out.contains(&format!("pytest-cloud: {node}: ")), "{node} in the header:\n{out}");
    }
    assert!(out.contains("8 workers ["), "the run used the planned workers:\n{out}");
}

/// The explicit choice ($PYTEST_CLOUD_BINARY, here this checkout's debug build) beats the
/// wheel's binary, and with `-v` every test is seen on a planned node's worker.
#[test]
fn plugin_runs_the_suite_on_the_nodes_like_a_local_run() {
    let Some(wheel) = wheel() else { return };
    let c = Cluster::shared();
    let ex = Example::new();
    install(&ex, &wheel);

    let local = Command::new(ex.root().join(".venv/bin/pytest")).args(["tests/", "-q", "-p", "no:cloud"]).current_dir(ex.root()).output().unwrap();
    let nodes = c.aliases().join(" ");
    let dev = assert_cmd::cargo::cargo_bin("pytest-cloud");
    let out = Command::new(ex.root().join(".venv/bin/pytest"))
        .args(["tests/", "-v"])
        .arg(format!("--cloud-nodes={nodes}"))
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .arg("--cloud-mem-per-process=100")
        .env("PYTEST_CLOUD_BINARY", &dev)
        .env_remove("VIRTUAL_ENV")
        .current_dir(ex.root())
        .output()
        .unwrap();
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(summary(&out), summary(&local), "{text}");
    assert!(text.contains(&format!("pytest-cloud: binary {} ($PYTEST_CLOUD_BINARY)", dev.display())), "{text}");
    // Every test ran on a node's worker: the workers' ids are the plan's.
    assert!(text.contains("[node1-0]") && text.contains("[node2-1]"), "workers named after the plan:\n{text}");
}

/// Issue 9 through the plugin: a venv made from an interpreter the nodes lack at that path
/// (root's pyenv, or the system's through a root-only directory) runs on the nodes' own.
#[test]
fn plugin_runs_a_project_whose_venv_the_nodes_run_on_another_interpreter() {
    use common::venvs::{self, RebaseProject};
    let Some(wheel) = wheel() else { return };
    let base = venvs::hidden_base_311();
    let template = venvs::template("rebase", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let pip = Command::new(p.python()).args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]).arg(&wheel).output().unwrap();
    assert!(pip.status.success(), "pip install {}: {}", wheel.display(), String::from_utf8_lossy(&pip.stderr));
    let c = Cluster::up(2);
    let local = Command::new(p.root().join(".venv/bin/py.test")).args(["tests/", "-q", "-p", "no:cloud"]).current_dir(p.root()).output().unwrap();
    let out = Command::new(p.root().join(".venv/bin/py.test"))
        .args(["tests/", "-v"])
        .arg(format!("--cloud-nodes={}", c.aliases().join(" ")))
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .arg("--cloud-mem-per-process=100")
        .env("PYTEST_CLOUD_BINARY", assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .env_remove("VIRTUAL_ENV")
        .current_dir(p.root())
        .output()
        .unwrap();
    let text = text(&out);
    assert_eq!(local.status.code(), Some(1), "{}", String::from_utf8_lossy(&local.stdout));
    assert_eq!(out.status.code(), local.status.code(), "{text}");
    assert_eq!(summary(&out), summary(&local), "{text}");
    assert_eq!(summary(&out).as_deref(), Some("1 failed, 4 passed"), "{text}");
    assert!(text.contains("PASSED tests/test_node.py::test_the_c_extension_is_loaded") && text.contains("[node1-"), "ran on the nodes:\n{text}");
    assert!(text.contains(&format!("(venv made from {}", base.version)), "the header names the venv's own base:\n{text}");
}

/// Issue 17: with `--cloud-node` in the addopts (here `$PYTEST_ADDOPTS`), the runs that only
/// show something answer from the local tree and open no ssh session on the node (counted in
/// its sshd log: one "Starting session" line per session, over a shared connection too).
#[test]
fn plugin_help_markers_and_fixtures_touch_no_node() {
    let Some(wheel) = wheel() else { return };
    let c = Cluster::up(1);
    let ex = Example::new();
    install(&ex, &wheel);
    let log = c.dir().join("node1/sshd.log");
    let sessions = || std::fs::read_to_string(&log).unwrap().matches("Starting session").count();
    let addopts = format!("--cloud-node=node1 --cloud-ssh-config={}", c.ssh_config().display());
    let before = sessions();
    for (arg, shown) in [("--help", "--cloud-node=NODE"), ("--markers", "@pytest.mark.geometry"), ("--fixtures", "tmp_path")] {
        let out = Command::new(ex.root().join(".venv/bin/pytest"))
            .arg(arg)
            .env("PYTEST_ADDOPTS", &addopts)
            .env_remove("VIRTUAL_ENV")
            .current_dir(ex.root())
            .output()
            .unwrap();
        let text = text(&out);
        assert_eq!(out.status.code(), Some(0), "{arg}: {text}");
        assert!(text.contains(shown), "{arg} shows {shown}: {text}");
        assert_eq!(sessions(), before, "{arg} opened an ssh session on node1: {text}");
    }
    // The check can fail: a run that does use the node shows in the same log.
    let out = Command::new(ex.root().join(".venv/bin/pytest"))
        .args(["tests/", "-q", "-k", "circle"])
        .env("PYTEST_ADDOPTS", &addopts)
        .env_remove("VIRTUAL_ENV")
        .current_dir(ex.root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(sessions() > before, "a real run opens sessions on node1: {}", text(&out));
}
