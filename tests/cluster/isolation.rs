//! Concurrent runs on the same nodes never touch each other's files (issue 10, items 1-2):
//! two checkouts of "one project" (two different trees, both folders named `proj`, so one
//! default `--cloud-chdir`) run at once against the same two local-cluster nodes, and each
//! gets exactly its local outcomes; afterwards only the shared base is left on the nodes; the
//! tree of a run killed with SIGKILL (launcher and lease keeper) is removed by a later run.

use crate::common;

use common::cluster::Cluster;
use common::example::Example;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// (outcome, test id) for every test, from `-rA`'s short summary.
fn outcomes(o: &Output) -> BTreeSet<String> {
    let out = String::from_utf8_lossy(&o.stdout);
    let mut set = BTreeSet::new();
    for line in out.lines() {
        for word in ["PASSED", "FAILED", "XFAIL", "XPASS", "ERROR", "SKIPPED"] {
            if let Some(rest) = line.strip_prefix(&format!("{word} ")) {
                set.insert(format!("{word} {}", rest.split(" - ").next().unwrap_or(rest).trim()));
            }
        }
    }
    set
}

fn local(ex: &Example) -> Output {
    Command::new(ex.python()).args(["-m", "pytest", "-rA", "-p", "no:randomly"]).current_dir(ex.root()).output().unwrap()
}

fn cloud_command(ex: &Example, c: &Cluster) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    cmd.arg("pytest")
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .args(["--cloud-nodes", &c.aliases().join(" "), "--cloud-mem-per-process", "100", "--cloud-rsync-bandwidth-limit", "0"])
        .args(["-rA", "-p", "no:randomly"])
        .current_dir(ex.root())
        .env_remove("VIRTUAL_ENV")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap();
}

/// Tree A: tests that announce themselves (a file in /tmp per worker), then wait until the
/// file `<tag>-go` exists, then check that their tree is still theirs.
fn tree_a(tag: &str) -> Example {
    let a = Example::named("proj");
    write(
        &a.root().join("tests/test_long_a.py"),
        &format!(
            "# tree a\nimport os, time, pytest\n\n\
             @pytest.mark.parametrize('i', range(8))\n\
             def test_long(i):\n    \
                 open('/tmp/{tag}-' + os.environ.get('PYTEST_XDIST_WORKER', 'master'), 'w').close()\n    \
                 deadline = time.time() + 120\n    \
                 while not os.path.exists('/tmp/{tag}-go') and time.time() < deadline:\n        \
                     time.sleep(0.05)\n    \
                 assert open(__file__).read().startswith('# tree a')\n    \
                 assert os.path.exists('tests/slow/test_slow.py') and not os.path.exists('tests/test_b.py')\n"
        ),
    );
    a
}

/// Tree B: one project name, other contents: a file A lacks, and A's slow tests gone.
fn tree_b() -> Example {
    let b = Example::named("proj");
    std::fs::remove_dir_all(b.root().join("tests/slow")).unwrap();
    write(
        &b.root().join("tests/test_b.py"),
        "# tree b\nimport os\n\ndef test_sees_only_its_own_files():\n    \
             assert open(__file__).read().startswith('# tree b')\n    \
             assert not os.path.exists('tests/test_long_a.py') and not os.path.exists('tests/slow')\n",
    );
    b
}

fn markers(tag: &str, node: &str) -> usize {
    std::fs::read_dir("/tmp").unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{tag}-{node}-"))).count()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    // A bound on waiting for something that must happen, not a performance threshold.
    for _ in 0..2400 {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// The entries of the node's runs directory (`<base>.pytest-cloud-runs`), and whether the
/// shared base is there.
/// What is left in the runs directory beside the base (whether that is there): the trees a
/// release kept for the next no-change run (`idle.ID`, at most two) are left out, since they
/// hold no lease and no run.
fn on_node(c: &Cluster, alias: &str) -> (Vec<String>, bool) {
    let out = c.ssh(alias, "cd && ls -A pytest_*_proj.pytest-cloud-runs && test -f pytest_*_proj/.pytest-cloud-target && echo BASE-OK");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let base = s.lines().any(|l| l == "BASE-OK");
    let kept = s.lines().filter(|l| l.starts_with("idle.")).count();
    assert!(kept <= 2, "{alias}: more kept trees than a release keeps: {s}");
    (s.lines().filter(|l| *l != "BASE-OK" && !l.starts_with("idle.")).map(String::from).collect(), base)
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn two_trees_with_one_project_name_run_at_once_and_a_dead_runs_tree_is_reaped() {
    let c = Cluster::up(2);
    let tag = format!("pc-iso-{}", std::process::id());
    let go = format!("/tmp/{tag}-go");
    let _cleanup = Cleanup(vec![go.clone()]);
    let (a, b) = (tree_a(&tag), tree_b());
    assert_eq!(a.root().file_name(), b.root().file_name(), "one project name");

    write(Path::new(&go), "");
    let (la, lb) = (local(&a), local(&b));
    std::fs::remove_file(&go).unwrap();
    let (want_a, want_b) = (outcomes(&la), outcomes(&lb));
    assert_eq!(la.status.code(), Some(0), "{}", text(&la));
    assert!(want_a.contains("PASSED tests/test_long_a.py::test_long[7]") && want_b.contains("PASSED tests/test_b.py::test_sees_only_its_own_files"));

    // A runs until told to go on; B is synced and run from start to end meanwhile.
    let run_a = cloud_command(&a, &c).spawn().unwrap();
    wait_for("A's tests running on both nodes", || markers(&tag, "node1") > 0 && markers(&tag, "node2") > 0);
    let got_b = cloud_command(&b, &c).output().unwrap();
    write(Path::new(&go), "");
    let got_a = run_a.wait_with_output().unwrap();
    assert_eq!(got_b.status.code(), lb.status.code(), "B:\n{}", text(&got_b));
    assert_eq!(outcomes(&got_b), want_b, "B:\n{}", text(&got_b));
    assert_eq!(got_a.status.code(), Some(0), "A, whose tree B's sync must not touch:\n{}", text(&got_a));
    assert_eq!(outcomes(&got_a), want_a, "A:\n{}", text(&got_a));
    for alias in c.aliases() {
        assert_eq!(on_node(&c, &alias), (vec![".pytest-cloud-runs".to_string()], true), "{alias}: only the shared base is left");
    }

    // A run killed outright leaves its tree; the next run on these nodes removes it. Outright:
    // pytest (the launcher's pid and process group) and the launcher's own child that keeps the
    // leases, which has a process group of its own (the early controller; without it, the
    // lease keeper was in the launcher's group).
    std::fs::remove_file(&go).unwrap();
    let tag2 = format!("{tag}-dead");
    let a2 = tree_a(&tag2);
    let _cleanup2 = Cleanup(vec![format!("/tmp/{tag2}-go")]);
    let mut cmd = cloud_command(&a2, &c);
    cmd.process_group(0);
    let mut dead = cmd.spawn().unwrap();
    wait_for("the doomed run's tests running on both nodes", || markers(&tag2, "node1") > 0 && markers(&tag2, "node2") > 0);
    let children = Command::new("ps").args(["-o", "pgid=", "--ppid", &dead.id().to_string()]).output().unwrap();
    let mut groups: Vec<String> = String::from_utf8_lossy(&children.stdout).split_whitespace().map(|g| format!("-{g}")).collect();
    groups.push(format!("-{}", dead.id()));
    let killed = Command::new("kill").arg("-KILL").arg("--").args(&groups).status().unwrap();
    assert!(killed.success(), "{groups:?}");
    let _ = dead.wait();
    // Its workers on the nodes may outlive it a moment; let them end.
    write(Path::new(&format!("/tmp/{tag2}-go")), "");
    for alias in c.aliases() {
        let (entries, _) = on_node(&c, &alias);
        assert_eq!(entries.iter().filter(|e| e.ends_with(".lease")).count(), 1, "{alias}: the killed run's lease is left: {entries:?}");
    }
    let again = cloud_command(&b, &c).output().unwrap();
    assert_eq!(outcomes(&again), want_b, "{}", text(&again));
    for alias in c.aliases() {
        assert_eq!(on_node(&c, &alias), (vec![".pytest-cloud-runs".to_string()], true), "{alias}: the dead run's tree was reaped");
    }
    for p in std::fs::read_dir("/tmp").unwrap().flatten() {
        if p.file_name().to_string_lossy().starts_with(&tag) {
            let _ = std::fs::remove_file(p.path());
        }
    }
}

/// A run tree's new bytecode goes to the shared base when the run ends (`run_harvest` in
/// src/sync_node.sh, one `ln` per `__pycache__`), so the next run's tree starts with it: the
/// venv's (a cold node has none), the project's, and a directory whose name has a quote.
#[test]
fn bytecode_compiled_in_a_run_tree_is_given_to_the_base_when_the_run_ends() {
    let c = Cluster::up(1);
    let ex = Example::named("proj");
    std::fs::create_dir_all(ex.root().join("quo'te")).unwrap();
    write(&ex.root().join("quo'te/qmod.py"), "VALUE = 7\n");
    write(
        &ex.root().join("tests/test_quote.py"),
        "import os, sys\n\ndef test_imports_from_a_quoted_dir():\n    \
             sys.path.insert(0, os.path.join(os.getcwd(), \"quo'te\"))\n    \
             import qmod\n    \
             assert qmod.VALUE == 7\n",
    );
    let got = cloud_command(&ex, &c).output().unwrap();
    assert_eq!(got.status.code(), Some(0), "{}", text(&got));
    let count = |pattern: &str| -> usize {
        let out = c.ssh("node1", &format!("cd pytest_*_proj && ls -d {pattern} 2>/dev/null | wc -l"));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    assert!(count(".venv/lib/python3*/site-packages/_pytest/__pycache__/*.pyc") > 10, "the venv's bytecode is in the base");
    assert_eq!(count("\"quo'te\"/__pycache__/qmod.*.pyc"), 1, "the quoted directory's bytecode is in the base");
    assert!(count("tests/__pycache__/test_quote.*.pyc") >= 1, "the tests' bytecode is in the base");
    assert_eq!(on_node(&c, "node1"), (vec![".pytest-cloud-runs".to_string()], true), "the run tree is gone");
}
