//! The launcher end to end: the example project on a 4-node local cluster gives the same
//! outcomes and test ids as a local run, for the arguments a user would pass.

use crate::common;

use common::cluster::Cluster;
use common::example::Example;
use common::require::{self, is_root, require};
use common::venvs::{self, RebaseProject};
use std::collections::BTreeSet;
use std::process::{Command, Output};

pub(crate) fn text(o: &Output) -> String {
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

pub(crate) fn local(ex: &Example, args: &[&str]) -> Output {
    Command::new(ex.python()).args(["-m", "pytest", "-rA", "-p", "no:randomly"]).args(args).current_dir(ex.root()).output().unwrap()
}

/// The launcher on every node of C with ARGS, in the example's root.
fn cloud_command(ex: &Example, c: &Cluster, args: &[&str]) -> Command {
    let nodes = c.aliases().join(" ");
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    cmd.arg("pytest")
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .args(["--cloud-nodes", &nodes, "--cloud-mem-per-process", "100", "--cloud-rsync-bandwidth-limit", "0"])
        .args(["-rA", "-p", "no:randomly"])
        .args(args)
        .current_dir(ex.root())
        .env_remove("VIRTUAL_ENV");
    cmd
}

fn cloud(ex: &Example, c: &Cluster, args: &[&str]) -> Output {
    cloud_command(ex, c, args).output().unwrap()
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
    let c = Cluster::shared();
    let ex = Example::new();
    let xml = ex.root().join("report.xml");
    let r = cloud(&ex, &c, &["--junitxml", "report.xml", "--cloud-timings"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    // --cloud-timings: one JSON line with every phase.
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    let line = stderr.lines().find_map(|l| l.strip_prefix("pytest-cloud: timings ")).unwrap_or_else(|| panic!("no timings line:\n{stderr}"));
    let phases: serde_json::Value = serde_json::from_str(line).unwrap();
    for phase in ["probe", "plan", "sync", "controller_start", "worker_start", "tests", "teardown", "total"] {
        assert!(phases[phase].is_u64(), "{phase} missing in {line}");
    }
    let report = std::fs::read_to_string(&xml).unwrap();
    let l = local(&ex, &["--collect-only", "-q"]);
    let collected = String::from_utf8_lossy(&l.stdout).lines().filter(|l| l.contains("::")).count();
    assert_eq!(report.matches("<testcase ").count(), collected, "{report}");
}

/// Adds a file of slow tests that each leave a marker in /tmp when they start, so a test can
/// act while workers are busy on the nodes.
fn add_slow_tests(ex: &Example, tag: &str, count: usize, seconds: f64) {
    let body = format!(
        "import os, time, pytest\n\n\
         @pytest.mark.parametrize('i', range({count}))\n\
         def test_long(i):\n    \
             open('/tmp/{tag}-' + os.environ.get('PYTEST_XDIST_WORKER', 'master') + '-' + str(i), 'w').close()\n    \
             time.sleep({seconds})\n"
    );
    std::fs::write(ex.root().join("tests/test_long.py"), body).unwrap();
}

fn markers(tag: &str, worker_prefix: &str) -> usize {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{tag}-{worker_prefix}")))
        .count()
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    // A bound on waiting for something that must happen, not a performance threshold.
    for _ in 0..1200 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

pub(crate) fn spawn_cloud(ex: &Example, c: &Cluster, args: &[&str]) -> std::process::Child {
    let nodes = c.aliases().join(" ");
    Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .arg("pytest")
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .args(["--cloud-nodes", &nodes, "--cloud-rsync-bandwidth-limit", "0"])
        .args(args)
        .current_dir(ex.root())
        .env_remove("VIRTUAL_ENV")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn node_user(c: &Cluster, alias: &str) -> String {
    String::from_utf8_lossy(&c.ssh(alias, "id -un").stdout).trim().to_string()
}

fn processes_of(user: &str) -> String {
    let out = Command::new("ps").args(["-u", user, "-o", "pid=,args="]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test ids of one outcome in a `-rA` run.
fn ids_with(set: &BTreeSet<String>, outcome: &str) -> BTreeSet<String> {
    set.iter().filter_map(|s| s.strip_prefix(&format!("{outcome} "))).map(str::to_string).collect()
}

/// What the nodes' users still run of the run (python, pytest, rsync, a shell of a session):
/// must come to nothing. The shared ssh connection itself (`sshd: user@notty`, no process
/// under it) stays on a live node by design (ControlPersist, for the next run). Waits,
/// because a node whose connection just closed needs a moment (execnet's worker side exits
/// on its stdin's EOF within about 15 s, xdist-notes section 6).
fn wait_nothing_left(users: &[(String, String)]) {
    for (alias, user) in users {
        wait_for(&format!("nothing of the run left on {alias} ({user})"), || {
            let left = processes_of(user);
            let ours: Vec<&str> = left.lines().filter(|l| ["python", "pytest", "rsync", "sh -c"].iter().any(|w| l.contains(w))).collect();
            ours.is_empty()
        });
    }
}

/// A node lost mid-run, however it goes: every test passes elsewhere, exit 0, the node is
/// named in the "nodes lost" section with the tests moved from it, and once the node is
/// back (`revive`) nothing of the run is left there.
fn node_lost_mid_run(fault: &str, revive: Option<&str>) {
    let c = Cluster::up(2);
    let ex = Example::new();
    let tag = format!("pc-{fault}-{}", std::process::id());
    add_slow_tests(&ex, &tag, 16, 0.5);
    let users: Vec<(String, String)> = c.aliases().iter().map(|a| (a.clone(), node_user(&c, a))).collect();
    let child = spawn_cloud(&ex, &c, &["tests/test_long.py", "-rA", "--cloud-node-timeout=4"]);
    wait_for("a test running on node2", || markers(&tag, "node2-") > 0);
    c.script(&[fault, "node2"]);
    let out = child.wait_with_output().unwrap();
    if let Some(cmd) = revive {
        c.script(&[cmd, "node2"]);
    }
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "every test passed elsewhere:\n{all}");
    let (set, counts) = outcomes(&out);
    assert_eq!(ids_with(&set, "PASSED").len(), 16, "each test passed, once:\n{all}");
    assert_eq!(set.len(), 16, "no test has a second, failed report:\n{all}");
    assert_eq!(counts, "16 passed", "{all}");
    assert!(!all.contains("crashed while running"), "no false failure:\n{all}");
    let section = all.split("pytest-cloud: nodes lost").nth(1).unwrap_or_else(|| panic!("no nodes lost section:\n{all}"));
    assert!(section.contains("node2: lost at ") && section.contains("workers node2-0, node2-1 down"), "{all}");
    assert!(section.contains("moved: tests/test_long.py::test_long[") && section.contains("passed on node1"), "the moved tests and where they passed:\n{all}");
    assert!(!section.contains("node1: lost"), "{all}");
    // The run trees' keeper gives a node whose shared connection is gone the short deadline
    // (it answered its last renewal, but was lost since), and says so; a killed node cannot
    // answer at all, so its line is always there.
    let release: Vec<&str> = all.lines().filter(|l| l.contains("pytest-cloud: release: node2:")).collect();
    if fault == "kill" {
        assert!(!release.is_empty(), "the killed node's run tree cannot be removed, and that is said:\n{all}");
    }
    for l in &release {
        assert!(l.contains("its shared ssh connection was gone") && l.contains("so it was given 3 s"), "not the full deadline: {l}\n{all}");
    }
    assert!(!all.lines().any(|l| l.contains("pytest-cloud: release: node1:")), "{all}");
    wait_nothing_left(&users);
}

#[test]
fn a_node_killed_mid_run_costs_no_test() {
    // Changed contract (issue 10): the tests running on a lost node used to be reported
    // failed ("crashed ... on node node2", exit 1); now they run again on a live node.
    node_lost_mid_run("kill", None);
}

#[test]
fn a_node_frozen_mid_run_costs_no_test_and_leaves_nothing_once_thawed() {
    node_lost_mid_run("freeze", Some("thaw"));
}

#[test]
fn a_node_off_the_network_mid_run_costs_no_test_and_leaves_nothing_once_back() {
    // `iptables -S OUTPUT` lists rules: it needs root and a kernel that takes netfilter rules,
    // which is what unplug needs (`-V` would pass without either).
    if !require(
        is_root() && require::runs("iptables", &["-S", "OUTPUT"]),
        "root with a working iptables (`iptables -S OUTPUT` failed)",
        "run as root; scripts/install-deps installs iptables (apt-get install iptables)",
    ) {
        return;
    }
    node_lost_mid_run("unplug", Some("plug"));
}

#[test]
fn a_worker_that_crashes_on_a_live_node_fails_its_test_naming_the_node() {
    let c = Cluster::up(2);
    let ex = Example::new();
    let tag = format!("pc-crash-{}", std::process::id());
    add_slow_tests(&ex, &tag, 8, 0.2);
    std::fs::write(ex.root().join("tests/test_crash.py"), "import os\n\ndef test_exits_hard():\n    os._exit(3)\n").unwrap();
    let out = cloud(&ex, &c, &["tests/test_long.py", "tests/test_crash.py"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let (set, _) = outcomes(&out);
    assert_eq!(ids_with(&set, "FAILED"), BTreeSet::from(["tests/test_crash.py::test_exits_hard".to_string()]), "{all}");
    assert_eq!(ids_with(&set, "PASSED").len(), 8, "{all}");
    assert!(all.contains("crashed while running 'tests/test_crash.py::test_exits_hard' on node node"), "the failure names the node:\n{all}");
    assert!(all.contains("pytest-cloud: workers crashed") && !all.contains("pytest-cloud: nodes lost"), "a crash, not a lost node:\n{all}");
}

#[test]
fn every_node_lost_stops_the_run_with_exit_69() {
    let c = Cluster::up(2);
    let ex = Example::new();
    let tag = format!("pc-all-{}", std::process::id());
    add_slow_tests(&ex, &tag, 16, 1.0);
    let child = spawn_cloud(&ex, &c, &["tests/test_long.py", "-rA"]);
    wait_for("tests running on both nodes", || markers(&tag, "node1-") > 0 && markers(&tag, "node2-") > 0);
    c.kill("node1");
    c.kill("node2");
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(69), "pytest-cloud's 'no usable node':\n{all}");
    assert!(all.contains("pytest-cloud: every node is lost: node1, node2") || all.contains("pytest-cloud: every node is lost: node2, node1"), "{all}");
    assert!(all.contains("not run: tests/test_long.py::test_long["), "the tests that were running are named:\n{all}");
    assert!(!all.contains("crashed while running"), "{all}");
}

#[test]
fn ctrl_c_stops_the_run_and_leaves_nothing_on_the_nodes() {
    let c = Cluster::up(2);
    let ex = Example::new();
    let tag = format!("pc-int-{}", std::process::id());
    add_slow_tests(&ex, &tag, 16, 3.0);
    let child = spawn_cloud(&ex, &c, &["tests/test_long.py"]);
    wait_for("workers busy on both nodes", || markers(&tag, "node1-") > 0 && markers(&tag, "node2-") > 0);
    // The launcher became pytest (exec), so this is the SIGINT a terminal's Ctrl-C sends it.
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "pytest's 'interrupted' code:\n{}", text(&out));
    for alias in c.aliases() {
        let user = node_user(&c, &alias);
        wait_for(&format!("no pytest left on {alias}"), || !processes_of(&user).contains("python"));
    }
}

#[test]
fn last_failed_uses_the_controllers_cache() {
    let c = Cluster::shared();
    let ex = Example::new();
    std::fs::write(ex.root().join("tests/test_fails.py"), "def test_bad():\n    assert 1 == 2\n\ndef test_good():\n    pass\n").unwrap();
    let first = cloud(&ex, &c, &[]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let l = local(&ex, &["--lf"]);
    let r = cloud(&ex, &c, &["--lf"]);
    let (lset, lcounts) = outcomes(&l);
    let (rset, rcounts) = outcomes(&r);
    assert_eq!(lcounts, "1 failed", "{}", text(&l));
    assert_eq!((rset, rcounts), (lset, lcounts), "{}", text(&r));
}

#[test]
fn exit_75_when_every_nodes_directory_is_locked_by_another_run() {
    let c = Cluster::shared();
    // Sync stops at the lock, before pytest is needed: a bare venv is enough.
    let project = tempfile::Builder::new().prefix("pc-locked-").tempdir().unwrap();
    std::fs::write(project.path().join("pytest.ini"), "[pytest]\n").unwrap();
    let venv = Command::new("/usr/bin/python3").args(["-m", "venv", "--without-pip", ".venv"]).current_dir(project.path()).output().unwrap();
    assert!(venv.status.success(), "{}", text(&venv));
    let home = String::from_utf8_lossy(&c.ssh("node1", "echo $HOME").stdout).trim().to_string();
    let dir = format!("{home}/pc_locked");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    // A live holder: this test process.
    let holder = format!("pytest-cloud host={host} pid={} user=other started_unix=1 source=/elsewhere", std::process::id());
    let lock = c.ssh("node1", &format!("mkdir {dir}.pytest-cloud-lock && echo '{holder}' > {dir}.pytest-cloud-lock/holder"));
    assert!(lock.status.success(), "{}", text(&lock));
    let out = Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .arg("pytest")
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .args(["--cloud-node", "node1", "--cloud-chdir", "pc_locked", "-q"])
        .current_dir(project.path())
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node1: dropped at sync (locked:"), "names the node and the cause: {stderr}");
    assert!(stderr.contains(&format!("pid={}", std::process::id())), "names the holder: {stderr}");
    assert!(!c.ssh("node1", &format!("test -e {dir}")).status.success(), "nothing synced while locked");
}

/// Makes every test note, in `/tmp/<tag>-<worker>`, that it starts (the conftest is synced with
/// the tree, so each run gets its own tag).
fn note_starts(ex: &Example, original_conftest: &str, tag: &str) {
    let snippet = format!(
        "\n\n@pytest.fixture(autouse=True)\n\
         def _note_start(request):\n    \
             with open('/tmp/{tag}-' + os.environ.get('PYTEST_XDIST_WORKER', 'master'), 'a') as f:\n        \
                 f.write(request.node.nodeid + '\\n')\n"
    );
    std::fs::write(ex.root().join("tests/conftest.py"), format!("{original_conftest}{snippet}")).unwrap();
}

/// The tests each worker started under `tag`, in order (the notes are removed).
fn starts(tag: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/tmp").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(worker) = name.strip_prefix(&format!("{tag}-")) {
            let text = std::fs::read_to_string(e.path()).unwrap();
            out.insert(worker.to_string(), text.lines().map(str::to_string).collect::<Vec<_>>());
            let _ = std::fs::remove_file(e.path());
        }
    }
    out
}

#[test]
fn the_second_run_of_a_skewed_suite_starts_the_slow_tests_first() {
    let c = Cluster::up(2);
    let ex = Example::new();
    // Short tests, then, last in collection order, slow ones (tests/unit sorts after tests/slow,
    // so the file name puts them last).
    std::fs::write(
        ex.root().join("tests/test_zz_skew.py"),
        "import time, pytest\n\n\
         @pytest.mark.parametrize('i', range(60))\ndef test_short(i):\n    pass\n\n\
         @pytest.mark.parametrize('i', range(4))\ndef test_slow_tail(i):\n    time.sleep(1.0)\n",
    )
    .unwrap();
    let conftest = std::fs::read_to_string(ex.root().join("tests/conftest.py")).unwrap();
    let tag = format!("pc-sched-{}", std::process::id());
    let is_slow = |id: &str| id.contains("test_slow_tail");

    note_starts(&ex, &conftest, &format!("{tag}-1"));
    let first = cloud(&ex, &c, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(text(&first).contains("scheduler LoadScheduling of pytest-xdist (--dist load: no recorded durations yet)"), "{}", text(&first));
    let first_starts = starts(&format!("{tag}-1"));
    assert!(first_starts.values().all(|tests| !is_slow(&tests[0])), "collection order puts them last: {first_starts:?}");

    note_starts(&ex, &conftest, &format!("{tag}-2"));
    let second = cloud(&ex, &c, &[]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert!(text(&second).contains("scheduler DurationScheduling, longest first (no --dist given;"), "{}", text(&second));
    let second_starts = starts(&format!("{tag}-2"));
    let workers = second_starts.len();
    assert!(workers >= 2, "{second_starts:?}");
    // Each worker's first test is a slow one, as far as there are slow ones to go round; and
    // no worker starts a short test while a slow one waits for a worker.
    let slow_first = second_starts.values().filter(|tests| is_slow(&tests[0])).count();
    assert_eq!(slow_first, workers.min(4), "{second_starts:?}");
    for tests in second_starts.values() {
        let last_slow = tests.iter().rposition(|t| is_slow(t));
        let first_short = tests.iter().position(|t| !is_slow(t));
        if let (Some(s), Some(f)) = (last_slow, first_short) {
            assert!(s < f, "a worker ran a short test before a slow one: {tests:?}");
        }
    }

    // Same ids and outcomes as a local run.
    let l = local(&ex, &[]);
    let _ = starts(&format!("{tag}-2"));
    assert_eq!(outcomes(&second), outcomes(&l), "{}", text(&second));
    // --dist load, when given, stays xdist's.
    let given = cloud(&ex, &c, &["--dist", "load"]);
    assert!(text(&given).contains("scheduler LoadScheduling of pytest-xdist (--dist load as given)"), "{}", text(&given));
    let _ = starts(&format!("{tag}-2"));
}

// ---- Issue 9: a venv made from an interpreter the nodes do not have at that path. ----

fn cloud_in(root: &std::path::Path, c: &Cluster, args: &[&str]) -> Output {
    let nodes = c.aliases().join(" ");
    Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .arg("pytest")
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .args(["--cloud-nodes", &nodes, "--cloud-mem-per-process", "100", "--cloud-rsync-bandwidth-limit", "0", "--cloud-max-processes", "2"])
        .args(["-rA", "-p", "no:randomly"])
        .args(args)
        .current_dir(root)
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap()
}

fn system_python_version() -> String {
    let out = Command::new("/usr/bin/python3").args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_venv_from_an_interpreter_the_nodes_lack_runs_on_theirs_with_the_local_outcomes() {
    let base = venvs::hidden_base_311();
    let template = venvs::template("rebase", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let c = Cluster::up(2);
    for a in c.aliases() {
        let seen = c.ssh(&a, &format!("test -e {}", shell_words::quote(base.python.to_str().unwrap())));
        assert!(!seen.status.success(), "{a} can reach {}: this test needs an interpreter the node users cannot", base.python.display());
    }
    let l = Command::new(p.python()).args(["-m", "pytest", "-rA", "-p", "no:randomly", "-v"]).current_dir(p.root()).output().unwrap();
    let r = cloud_in(p.root(), &c, &["-v"]);
    let out = text(&r);
    assert_eq!(l.status.code(), Some(1), "the local run has its one failing test:\n{}", text(&l));
    assert_eq!(r.status.code(), l.status.code(), "{out}");
    let (lset, lcounts) = outcomes(&l);
    let (rset, rcounts) = outcomes(&r);
    assert_eq!(lcounts, "1 failed, 4 passed", "{}", text(&l));
    assert_eq!((rset, rcounts), (lset, lcounts), "{out}");
    assert!(out.contains("[node1-0]") || out.contains("[node1-1]"), "tests ran on node1's workers:\n{out}");
    assert!(out.contains("[node2-0]") || out.contains("[node2-1]"), "tests ran on node2's workers:\n{out}");
    // The header says which interpreter runs the tests on each node, and that it is not the venv's.
    let sys = system_python_version();
    let made = if sys == base.version { format!("(venv made from {} {})", base.version, base.python.display()) } else { format!("(venv made from {})", base.version) };
    for a in ["node1", "node2"] {
        let line = format!("pytest-cloud: {a}: 2 slots, CPython {sys} /usr/bin/python3.");
        let found = out.lines().find(|l| l.starts_with(&line)).unwrap_or_else(|| panic!("no {line:?} in:\n{out}"));
        assert!(found.contains(&made), "{found}");
    }
}

#[test]
fn a_312_venv_and_nodes_with_311_only_every_node_dropped_with_the_reason_and_nothing_written() {
    let found = venvs::python_312();
    if !require(found.is_some(), venvs::PYTHON_312_MISSING, venvs::PYTHON_312_HOW) {
        return;
    }
    let base = found.unwrap();
    let template = venvs::template("rebase312", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let c = Cluster::up(2);
    // `--cloud-env sync`: the venv must travel (auto would build an env there: envbuild.rs).
    let r = cloud_in(p.root(), &c, &["--cloud-chdir", "pc_rebase312", "--cloud-env", "sync"]);
    let out = text(&r);
    assert_eq!(r.status.code(), Some(69), "{out}");
    let need = format!("the virtualenv needs CPython 3.12, cp312, {} linux-gnu", std::env::consts::ARCH);
    let sys = system_python_version();
    for a in ["node1", "node2"] {
        let line = out.lines().find(|l| l.starts_with(&format!("pytest-cloud: {a}: dropped at sync (python_mismatch: "))).unwrap_or_else(|| panic!("{a} not dropped:\n{out}"));
        assert!(line.contains(&need), "names what the venv needs: {line}");
        assert!(line.contains(&format!("/usr/bin/python3 (CPython {sys}): another minor version")), "names each candidate and why: {line}");
        assert!(line.contains("--env build (--cloud-env build)"), "says how the node could build its own: {line}");
        let left = c.ssh(a, "ls -d pc_rebase312* 2>/dev/null; true");
        assert_eq!(String::from_utf8_lossy(&left.stdout), "", "{a}: nothing written");
    }
}

/// Issue 17: a node with more workers than one ssh connection carries (sshd's MaxSessions 10:
/// 14 slots, so two connection groups) costs one authentication per group, and no gateway
/// races another to create its group's master ("ControlSocket ... already exists"). The node's
/// sshd sets OMP_NUM_THREADS=14 for its sessions, which `nproc` (the probe's CPU count) honours:
/// the machine has fewer cores.
#[test]
fn a_node_with_two_connection_groups_opens_each_master_once() {
    let c = Cluster::up(1);
    let cfg = c.dir().join("node1/sshd_config");
    let mut conf = std::fs::read_to_string(&cfg).unwrap();
    conf.push_str("SetEnv OMP_NUM_THREADS=14\n");
    std::fs::write(&cfg, conf).unwrap();
    c.stop("node1");
    c.start("node1");
    let ex = Example::new();
    let before = c.connections("node1");
    let r = cloud(&ex, &c, &[]);
    let out = text(&r);
    assert_eq!(r.status.code(), Some(0), "{out}");
    assert!(out.contains("node1: 14 slots"), "14 workers on the node: {out}");
    assert!(!out.contains("already exists"), "a group's master was raced for: {out}");
    assert_eq!(c.connections("node1"), before + 2, "one authentication per connection group (probe and sync share group 0's): {out}");
}

// ---- Issue 18: the early controller (pytest starts while the nodes are synced). ----

/// The launcher with the early controller on (the default) or off (`PYTEST_CLOUD_EARLY_CONTROLLER=0`).
fn cloud_early(ex: &Example, c: &Cluster, early: bool, args: &[&str]) -> Output {
    cloud_command(ex, c, args).env("PYTEST_CLOUD_EARLY_CONTROLLER", if early { "1" } else { "0" }).output().unwrap()
}

/// Pids of local processes whose command line names `needle` (none may be left of a run).
fn local_processes(needle: &str) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid=,args="]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(needle) && !l.contains("ps -eo")).map(str::to_string).collect()
}

#[test]
fn the_early_controller_gives_the_ids_outcomes_and_exit_codes_of_a_launcher_that_syncs_first() {
    let c = Cluster::shared();
    let ex = Example::new();
    std::fs::write(ex.root().join("tests/test_fails.py"), "def test_bad():\n    assert 1 == 2\n\ndef test_good():\n    pass\n").unwrap();
    // Passing (exit 0), failing (1), no tests (5), and a pytest usage error (4).
    for (args, want) in [(&["tests/unit"][..], 0), (&[][..], 1), (&["-k", "no_such_test_anywhere"][..], 5), (&["--no-such-pytest-option"][..], 4)] {
        let l = local(&ex, args);
        let before = cloud_early(&ex, &c, false, args);
        let early = cloud_early(&ex, &c, true, args);
        assert_eq!(l.status.code(), Some(want), "local {args:?}:\n{}", text(&l));
        assert_eq!(before.status.code(), Some(want), "syncing first, {args:?}:\n{}", text(&before));
        assert_eq!(early.status.code(), Some(want), "early controller, {args:?}:\n{}", text(&early));
        if want == 4 {
            continue;
        }
        if want != 5 {
            // (With nothing selected, xdist's controller says "no tests ran" where a local run
            // counts the deselected tests.)
            assert_eq!(outcomes(&early), outcomes(&l), "early controller vs local, {args:?}:\n{}", text(&early));
        }
        assert_eq!(outcomes(&early), outcomes(&before), "early controller vs syncing first, {args:?}:\n{}", text(&early));
        let err = String::from_utf8_lossy(&early.stderr);
        assert!(err.contains("node1: ") && err.contains("slots"), "the header, before pytest's report:\n{err}");
    }
}

/// The nodes' directories locked by another (live) run: sync waits for the lock, and pytest
/// has started meanwhile (its conftest was imported). Ctrl-C then, as a terminal sends it
/// (the whole process group) or to the launcher alone: exit 130, no pytest report, nothing of
/// the run left here.
#[test]
fn ctrl_c_while_the_nodes_are_synced_exits_130_without_a_report_and_leaves_nothing_running() {
    use std::os::unix::process::CommandExt;
    let c = Cluster::shared();
    let ex = Example::new();
    let tag = format!("pc-early-{}", std::process::id());
    let conftest = std::fs::read_to_string(ex.root().join("conftest.py")).unwrap_or_default();
    std::fs::write(ex.root().join("conftest.py"), format!("open('/tmp/{tag}-imported', 'w').close()\n{conftest}")).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let holder = format!("pytest-cloud host={host} pid={} user=other started_unix=1 source=/elsewhere", std::process::id());
    let chdir = format!("pc_early_{}", std::process::id());
    for alias in c.aliases() {
        let lock = c.ssh(&alias, &format!("mkdir -p {chdir}.pytest-cloud-lock && echo '{holder}' > {chdir}.pytest-cloud-lock/holder"));
        assert!(lock.status.success(), "{}", text(&lock));
    }
    for group in [true, false] {
        let _ = std::fs::remove_file(format!("/tmp/{tag}-imported"));
        let nodes = c.aliases().join(" ");
        let child = Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
            .arg("pytest")
            .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
            .args(["--cloud-nodes", &nodes, "--cloud-chdir", &chdir])
            .current_dir(ex.root())
            .env_remove("VIRTUAL_ENV")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        wait_for("the early pytest imported the conftest while sync waits for the lock", || {
            std::path::Path::new(&format!("/tmp/{tag}-imported")).exists()
        });
        let target = if group { format!("-{pid}") } else { pid.clone() };
        assert!(Command::new("kill").args(["-INT", "--", &target]).status().unwrap().success());
        let out = child.wait_with_output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(130), "group={group}: interrupted before pytest started:\n{all}");
        assert!(out.stdout.is_empty(), "group={group}: no pytest output:\n{all}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"), "{all}");
        // Neither the early pytest (named by its venv) nor the launcher's own child (by the chdir).
        wait_for("nothing of the run left locally", || local_processes(&ex.root().display().to_string()).is_empty() && local_processes(&chdir).is_empty());
    }
    let _ = std::fs::remove_file(format!("/tmp/{tag}-imported"));
    for alias in c.aliases() {
        let _ = c.ssh(&alias, &format!("rm -rf {chdir}.pytest-cloud-lock"));
    }
}

/// Every node dropped at sync (its directory is not ours): our error and exit 69, not a word
/// from the pytest that had started, and no python of the run left here.
#[test]
fn every_node_dropped_at_sync_exits_69_with_our_error_and_no_pytest_output() {
    let c = Cluster::shared();
    let ex = Example::new();
    let chdir = format!("pc_unsafe_{}", std::process::id());
    for alias in c.aliases() {
        let made = c.ssh(&alias, &format!("mkdir -p {chdir} && echo mine > {chdir}/precious.txt"));
        assert!(made.status.success(), "{}", text(&made));
    }
    let out = cloud_early(&ex, &c, true, &["--cloud-chdir", &chdir]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(69), "{all}");
    assert!(out.stdout.is_empty(), "no pytest output:\n{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node1: dropped at sync (unsafe_target:") && stderr.contains("pytest-cloud: error: none of the given nodes"), "{stderr}");
    wait_for("no python of the run left locally", || local_processes(&ex.root().display().to_string()).is_empty() && local_processes(&chdir).is_empty());
    for alias in c.aliases() {
        assert_eq!(String::from_utf8_lossy(&c.ssh(&alias, &format!("cat {chdir}/precious.txt")).stdout), "mine\n", "{alias}: untouched");
        let _ = c.ssh(&alias, &format!("rm -rf {chdir}"));
    }
}

/// The launcher's child keeps the run trees while pytest lives and removes them when it ends,
/// learning of its end from the hand-over connection the glue holds open (EOF) and the pid.
/// An EOF while pytest still lives (the glue's end closed early) must not end the trees: the
/// tests that run after it still find their tree, and it is gone once the output closes. A
/// pytest that exits the moment it has its workers leaves nothing either.
#[test]
fn the_run_trees_live_as_long_as_pytest_whatever_closes_the_hand_over_first() {
    let c = Cluster::shared();
    let ex = Example::new();
    let tag = format!("pc-link-{}", std::process::id());
    let conftest = std::fs::read_to_string(ex.root().join("conftest.py")).unwrap_or_default();
    let hook = format!(
        "import os\n\n\
         def pytest_configure(config):\n    \
             if hasattr(config, 'workerinput'):\n        \
                 return\n    \
             import pytest_cloud_glue\n    \
             if os.environ.get('PC_TEST_CLOSE_LINK'):\n        \
                 for link in pytest_cloud_glue._HANDOVER_LINK:\n            \
                     link.close()\n    \
             if os.environ.get('PC_TEST_EXIT_AT_ONCE'):\n        \
                 os._exit(3)\n\n"
    );
    std::fs::write(ex.root().join("conftest.py"), format!("{hook}{conftest}")).unwrap();
    // Each test notes its run tree, waits past the keeper's EOF and checks the tree is still there.
    std::fs::write(
        ex.root().join("tests/test_tree.py"),
        format!(
            "import os, time, pytest\n\n\
             @pytest.mark.parametrize('i', range(4))\n\
             def test_tree_outlives_the_link(i):\n    \
                 open('/tmp/{tag}-' + str(i), 'w').write(os.getcwd())\n    \
                 time.sleep(1.5)\n    \
                 assert os.path.isfile(os.path.join(os.getcwd(), 'tests', 'test_tree.py'))\n"
        ),
    )
    .unwrap();
    let chdir = format!("pc_link_{}", std::process::id());
    let args = ["tests/test_tree.py", "--cloud-chdir", chdir.as_str()];
    let out = cloud_command(&ex, &c, &args).env("PC_TEST_CLOSE_LINK", "1").output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "the trees outlived the closed link:\n{all}");
    let trees: BTreeSet<String> = (0..4).map(|i| std::fs::read_to_string(format!("/tmp/{tag}-{i}")).unwrap()).collect();
    for t in &trees {
        assert!(t.contains(".pytest-cloud-runs/"), "a run tree: {t}");
        assert!(!std::path::Path::new(t).exists(), "{t} is gone once the output closed:\n{all}");
    }
    for i in 0..4 {
        let _ = std::fs::remove_file(format!("/tmp/{tag}-{i}"));
    }
    let out = cloud_command(&ex, &c, &args).env("PC_TEST_EXIT_AT_ONCE", "1").output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "pytest's own exit:\n{all}");
    for a in c.aliases() {
        // A release may keep the tree for the next no-change run (`idle.ID`: no lease, no run).
        let listing = String::from_utf8_lossy(&c.ssh(&a, &format!("ls -A {chdir}.pytest-cloud-runs")).stdout).into_owned();
        let left: Vec<&str> = listing.lines().filter(|l| !l.starts_with("idle.")).collect();
        assert_eq!(left, [".pytest-cloud-runs"], "{a}: no run tree or lease left once the output closed:\n{all}");
        let _ = c.ssh(&a, &format!("rm -rf {chdir} {chdir}.pytest-cloud-runs"));
    }
}

/// GNU parallel (a perl program) is started beside the probe only when the tree changed since
/// the last sync that left it stamped on every node (src/engine/sync/prepared.rs): a warm
/// no-change run starts none. That record decides only when parallel starts: a node whose
/// copy changed behind our back, or a changed tree, is still synced and gets the content. The
/// `parallel` first on PATH notes each start and execs the real one (a fake only for the
/// fault "started when not needed", which the real tool cannot report).
#[test]
fn a_warm_no_change_run_starts_no_gnu_parallel_and_a_change_is_still_synced() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::shared();
    let ex = Example::new();
    let chdir = format!("pc_hint_{}", std::process::id());
    let real = String::from_utf8(Command::new("sh").args(["-c", "command -v parallel"]).output().unwrap().stdout).unwrap();
    let tools = tempfile::tempdir().unwrap();
    let log = tools.path().join("starts.log");
    let fake = tools.path().join("parallel");
    std::fs::write(&fake, format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n", log.display(), real.trim())).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap());
    // Runs the launcher; returns the output and whether a parallel ran jobs (not `--version`).
    let run = |args: &[&str]| -> (Output, bool) {
        let _ = std::fs::remove_file(&log);
        let mut all = vec!["--cloud-chdir", &chdir];
        all.extend_from_slice(args);
        let out = cloud_command(&ex, &c, &all).env("PATH", &path).output().unwrap();
        let starts = std::fs::read_to_string(&log).unwrap_or_default();
        (out, starts.lines().any(|l| l.trim() != "--version"))
    };
    // The first run syncs. It also makes pytest's cache at the root, which changes the root
    // directory (its mtime travels), so the second run syncs that; the third finds the nodes
    // holding this very tree.
    for i in 0..2 {
        let (first, started) = run(&["tests/unit"]);
        assert_eq!(first.status.code(), Some(0), "{}", text(&first));
        assert!(started, "sync {i} needs rsync, so parallel:\n{}", text(&first));
    }
    let (warm, started) = run(&["tests/unit"]);
    assert_eq!(warm.status.code(), Some(0), "{}", text(&warm));
    assert!(!started, "a warm no-change run started GNU parallel:\n{}", text(&warm));

    // A node's copy changed behind our back: the record still says "no change", so parallel is
    // started late, by the first pre-flight that needs rsync, and the file is back.
    let gone = format!("{chdir}/tests/unit/test_square.py");
    assert!(c.ssh("node1", &format!("rm {gone}")).status.success());
    let (healed, started) = run(&["tests/unit"]);
    assert_eq!(healed.status.code(), Some(0), "{}", text(&healed));
    assert!(started, "node1 needed rsync:\n{}", text(&healed));
    assert!(c.ssh("node1", &format!("test -f {gone}")).status.success(), "node1 got the file back");
    assert_eq!(outcomes(&healed), outcomes(&local(&ex, &["tests/unit"])), "{}", text(&healed));

    // A changed tree: parallel starts up front, and the new test runs on the nodes.
    std::fs::write(ex.root().join("tests/unit/test_fresh.py"), "def test_fresh():\n    assert 'fresh'\n").unwrap();
    let (changed, started) = run(&["tests/unit"]);
    assert_eq!(changed.status.code(), Some(0), "{}", text(&changed));
    assert!(started, "a changed tree is synced with rsync:\n{}", text(&changed));
    assert!(outcomes(&changed).0.contains("PASSED tests/unit/test_fresh.py::test_fresh"), "{}", text(&changed));
    for alias in c.aliases() {
        assert!(c.ssh(&alias, &format!("test -f {chdir}/tests/unit/test_fresh.py")).status.success(), "{alias} has the new file");
    }
    let (warm, started) = run(&["tests/unit"]);
    assert_eq!(warm.status.code(), Some(0), "{}", text(&warm));
    assert!(!started, "warm again after the change was synced:\n{}", text(&warm));
    for alias in c.aliases() {
        let _ = c.ssh(&alias, &format!("rm -rf {chdir} {chdir}.pytest-cloud-runs"));
    }
}
