//! Nodes that build their own env (issue 16): a venv made from CPython 3.12 on the controller,
//! nodes with 3.11 only. The launcher must run the suite there with the local run's test ids
//! and outcomes (msgpack's C extension, an editable package and its console script included),
//! a second run must build nothing, concurrent runs must build one env once, and a fleet
//! where one node takes the venv and one builds must pass.

use crate::common;
use common::cluster::Cluster;
use common::venvs::{self, RebaseProject};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The test ids with their outcomes (`-rA`'s short summary), and pytest's counts line.
fn outcomes(o: &Output) -> (BTreeSet<String>, String) {
    let out = String::from_utf8_lossy(&o.stdout);
    let set = out
        .lines()
        .filter_map(|l| ["PASSED ", "FAILED ", "ERROR ", "SKIPPED "].iter().find(|w| l.starts_with(**w)).map(|_| l.split(" - ").next().unwrap_or(l).trim().to_string()))
        .collect();
    let counts = out
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && (l.contains("passed") || l.contains("failed")))
        .and_then(|l| l.trim_matches(|c| c == '=' || c == ' ').rsplit_once(" in ").map(|(a, _)| a.to_string()))
        .unwrap_or_default();
    (set, counts)
}

/// pyenv's CPython 3.12 (`venvs::python_312`), or None after `require` said why the test
/// cannot run here (under CI it fails instead): no venv the 3.11 nodes cannot take.
fn base_312() -> Option<venvs::Base> {
    let b = venvs::python_312();
    crate::common::require::require(b.is_some(), venvs::PYTHON_312_MISSING, venvs::PYTHON_312_HOW).then_some(())?;
    b
}

fn cloud(root: &Path, c: &Cluster, nodes: &[String], args: &[&str]) -> Output {
    Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .arg("pytest")
        .arg(format!("--cloud-ssh-config={}", c.ssh_config().display()))
        .args(["--cloud-nodes", &nodes.join(" "), "--cloud-rsync-bandwidth-limit", "0", "--cloud-max-processes", "2"])
        .args(["-rA", "-v", "-p", "no:randomly"])
        .args(args)
        .current_dir(root)
        .env_remove("VIRTUAL_ENV")
        .env("PYTEST_CLOUD_UV", venvs::uv())
        .output()
        .unwrap()
}

fn local(p: &RebaseProject) -> Output {
    Command::new(p.python()).args(["-m", "pytest", "-rA", "-p", "no:randomly"]).current_dir(p.root()).output().unwrap()
}

/// The header line of `node`.
fn header<'a>(out: &'a str, node: &str) -> &'a str {
    let start = format!("pytest-cloud: {node}: ");
    out.lines().find(|l| l.starts_with(&start) && !l.contains("waiting for")).unwrap_or_else(|| panic!("no header line for {node} in:\n{out}"))
}

/// The envs on the node: (key, marker line) for each complete one.
fn node_envs(c: &Cluster, node: &str) -> Vec<String> {
    let o = c.ssh(node, "for m in ~/.cache/pytest-cloud/envs/*/.pytest-cloud-env; do [ -f \"$m\" ] && cat \"$m\"; done; true");
    String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect()
}

#[test]
fn a_312_venv_runs_on_311_nodes_in_envs_they_build_and_a_second_run_builds_nothing() {
    let Some(base) = base_312() else { return };
    let template = venvs::template("rebase312", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let c = Cluster::up(2);
    let nodes = c.aliases();
    let l = local(&p);
    assert_eq!(l.status.code(), Some(1), "the local run has its one failing test:\n{}", text(&l));
    let (lset, lcounts) = outcomes(&l);
    assert_eq!(lcounts, "1 failed, 4 passed", "{}", text(&l));

    // On node1, an env no run has used for 8 days and one used now: a new build prunes the first.
    // Three more, 8 days old too, each with a user: `inuse`'s run holds a live lease (renewed
    // now, ttl_min=30), so it stays whatever its age; `ended`'s lease went stale (ttl_min=2,
    // renewed an hour ago) and `gone`'s is no more (released two hours ago): both go.
    let seed = c.ssh(
        "node1",
        "e=~/.cache/pytest-cloud/envs && r=~/other.pytest-cloud-runs && mkdir -p $e/old $e/recent $e/inuse $e/ended $e/gone $r && \
         echo m > $e/.pytest-cloud-envs && for k in old recent inuse ended gone; do echo key=$k > $e/$k/.pytest-cloud-env; done && \
         mkdir -p $e/inuse.users $e/ended.users $e/gone.users && \
         echo 'pytest-cloud run=rA host=elsewhere boot=x pid=0 ttl_min=30 user=u started_unix=1 source=/p' > $r/rA.lease && \
         echo 'pytest-cloud run=rB host=elsewhere boot=x pid=0 ttl_min=2 user=u started_unix=1 source=/p' > $r/rB.lease && \
         touch -d '1 hour ago' $r/rB.lease && echo $r/rA.lease > $e/inuse.users/rA && echo $r/rB.lease > $e/ended.users/rB && \
         echo $r/rC.lease > $e/gone.users/rC && touch -d '2 hours ago' $e/gone.users/rC && \
         for k in old inuse ended gone; do touch -d '8 days ago' $e/$k/.pytest-cloud-env; done",
    );
    assert!(seed.status.success(), "{}", text(&seed));
    let r = cloud(p.root(), &c, &nodes, &["--cloud-chdir", "pc_envbuild"]);
    let out = text(&r);
    assert_eq!(r.status.code(), l.status.code(), "{out}");
    assert_eq!(outcomes(&r), (lset.clone(), lcounts.clone()), "{out}");
    let sys = Command::new("/usr/bin/python3").args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]).output().unwrap();
    let sys = String::from_utf8_lossy(&sys.stdout).trim().to_string();
    for n in &nodes {
        let line = header(&out, n);
        assert!(
            line.contains(&format!("env built for CPython {sys} /usr/bin/python3 from your venv's distributions (pinned) (your venv: {})", base.version)),
            "{line}"
        );
        assert!(out.contains(&format!("[{n}-0]")) || out.contains(&format!("[{n}-1]")), "tests ran on {n}'s workers:\n{out}");
        let envs: Vec<String> = node_envs(&c, n).into_iter().filter(|l| l != "key=recent" && l != "key=inuse").collect();
        assert_eq!(envs.len(), 1, "{n}: one env built, the old one pruned: {envs:?}");
        // The venv did not travel: the node's base has a link where the venv would be.
        let link = c.ssh(n, "readlink pc_envbuild/.venv");
        assert!(String::from_utf8_lossy(&link.stdout).contains("/.cache/pytest-cloud/envs/"), "{n}: {}", text(&link));
    }
    let kept = node_envs(&c, "node1");
    assert!(kept.contains(&"key=recent".to_string()), "an env used within the week stays: {kept:?}");
    assert!(kept.contains(&"key=inuse".to_string()), "an env a live lease uses stays, 8 days old: {kept:?}");
    let left = c.ssh("node1", "cd ~/.cache/pytest-cloud/envs && ls -d ended* gone* 2>/dev/null; ls inuse.users; ls ~/other.pytest-cloud-runs");
    assert_eq!(String::from_utf8_lossy(&left.stdout), "rA\nrA.lease\nrB.lease\n", "ended and gone went with their users; no lease was touched: {}", text(&left));
    // This run recorded itself as the user of the env it built: its run tree's lease.
    for n in &nodes {
        let users = c.ssh(n, "cat ~/.cache/pytest-cloud/envs/*.users/r* | grep -v other.pytest-cloud-runs");
        let users = String::from_utf8_lossy(&users.stdout).to_string();
        assert!(users.lines().any(|l| l.contains("/pc_envbuild.pytest-cloud-runs/r") && l.ends_with(".lease")), "{n}: {users}");
    }
    let before: Vec<Vec<String>> = nodes.iter().map(|n| node_envs(&c, n)).collect();

    let again = cloud(p.root(), &c, &nodes, &["--cloud-chdir", "pc_envbuild"]);
    let out2 = text(&again);
    assert_eq!(again.status.code(), l.status.code(), "{out2}");
    assert_eq!(outcomes(&again), (lset, lcounts), "{out2}");
    for (i, n) in nodes.iter().enumerate() {
        let line = header(&out2, n);
        assert!(line.contains("env (cached on the node) built for"), "the second run built nothing on {n}: {line}");
        assert_eq!(node_envs(&c, n), before[i], "{n}: the same env, not rebuilt (its marker names when it was built)");
    }
}

#[test]
fn two_concurrent_runs_needing_one_new_env_build_it_once() {
    let Some(base) = base_312() else { return };
    let template = venvs::template("rebase312", &base, venvs::PACKAGES);
    let (a, b) = (RebaseProject::new(&template), RebaseProject::new(&template));
    // Different sources, one env: b's answer is 41, so its test_fails passes. Each run tree
    // must import its own project's sources through the shared env.
    std::fs::write(b.root().join("src/clipkg/__init__.py"), "def answer():\n    return 41\n").unwrap();
    let c = Cluster::up(2);
    let nodes = c.aliases();
    let spawn = |p: &RebaseProject| {
        let (root, cfg, nodes) = (p.root().to_path_buf(), c.ssh_config(), nodes.join(" "));
        std::thread::spawn(move || {
            Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
                .arg("pytest")
                .arg(format!("--cloud-ssh-config={}", cfg.display()))
                .args(["--cloud-nodes", &nodes, "--cloud-rsync-bandwidth-limit", "0", "--cloud-max-processes", "2", "-rA", "-p", "no:randomly"])
                .current_dir(&root)
                .env_remove("VIRTUAL_ENV")
                .env("PYTEST_CLOUD_UV", venvs::uv())
                .output()
                .unwrap()
        })
    };
    let (ta, tb) = (spawn(&a), spawn(&b));
    let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
    let (la, lb) = (local(&a), local(&b));
    assert_eq!((la.status.code(), lb.status.code()), (Some(1), Some(0)), "the two projects differ locally");
    let both = format!("{}\n----\n{}", text(&ra), text(&rb));
    for (r, l) in [(&ra, &la), (&rb, &lb)] {
        assert_eq!(r.status.code(), l.status.code(), "{both}");
        assert_eq!(outcomes(r), outcomes(l), "{both}");
    }
    for n in &nodes {
        let lines = [header(&text(&ra), n).to_string(), header(&text(&rb), n).to_string()];
        let built = lines.iter().filter(|l| l.contains(", env built for ")).count();
        let cached = lines.iter().filter(|l| l.contains(", env (cached on the node) built for ")).count();
        assert_eq!((built, cached), (1, 1), "{n}: one run built the env, the other used it:\n{lines:?}");
        assert_eq!(node_envs(&c, n).len(), 1, "{n}");
        let left = c.ssh(n, "ls -d ~/.cache/pytest-cloud/envs/*.lock 2>/dev/null; true");
        assert_eq!(String::from_utf8_lossy(&left.stdout), "", "{n}: no build lock left");
    }
}

#[test]
fn a_node_that_reaches_no_index_builds_from_the_controllers_wheels() {
    let Some(base) = base_312() else { return };
    let template = venvs::template("rebase312", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let c = Cluster::up(2);
    let nodes = c.aliases();
    c.offline("node2");
    let cut = c.ssh("node2", "/usr/bin/python3 -c \"import urllib.request as u; u.urlopen('https://pypi.org/simple/', timeout=5)\"");
    assert!(!cut.status.success(), "node2 must not reach PyPI:\n{}", text(&cut));
    let l = local(&p);
    let r = cloud(p.root(), &c, &nodes, &[]);
    let out = text(&r);
    c.online("node2");
    assert_eq!(r.status.code(), l.status.code(), "{out}");
    assert_eq!(outcomes(&r), outcomes(&l), "{out}");
    assert!(header(&out, "node1").contains(", env built for CPython"), "node1 used its index: {out}");
    assert!(header(&out, "node2").contains(", env built from the controller's wheels (the node reaches no index) for CPython"), "{out}");
    assert!(out.contains("[node2-0]") || out.contains("[node2-1]"), "tests ran on node2:\n{out}");
}

#[test]
fn with_cloud_wheelhouse_an_offline_node_builds_from_the_controllers_wheels_and_tries_no_index() {
    let Some(base) = base_312() else { return };
    let template = venvs::template("rebase312", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let c = Cluster::up(1);
    let nodes = c.aliases();
    c.offline("node1");
    let cut = c.ssh("node1", "/usr/bin/python3 -c \"import urllib.request as u; u.urlopen('https://pypi.org/simple/', timeout=5)\"");
    assert!(!cut.status.success(), "node1 must not reach PyPI:\n{}", text(&cut));
    let l = local(&p);
    let r = cloud(p.root(), &c, &nodes, &["--cloud-wheelhouse"]);
    let out = text(&r);
    c.online("node1");
    assert_eq!(r.status.code(), l.status.code(), "{out}");
    assert_eq!(outcomes(&r), outcomes(&l), "{out}");
    // "(no index tried)": the controller saw no failed install from the node's index (a
    // first attempt that failed would say "(the node reaches no index)").
    assert!(header(&out, "node1").contains(", env built from the controller's wheels (no index tried) for CPython 3.11"), "{out}");
    let envs = node_envs(&c, "node1");
    assert_eq!(envs.len(), 1, "{envs:?}");
    assert!(envs[0].contains(" from=wheels:") && envs[0].contains("/.cache/pytest-cloud/wheels/cp311-"), "the node installed from the wheels only: {envs:?}");
}

/// A 3.12 venv whose base only node1's user can run: node1 takes the venv, node2 (3.11) cannot.
fn mixed_fleet(test: &str) -> Option<(venvs::Base, RebaseProject, Cluster)> {
    let _ = test; // require names the running test itself
    base_312()?;
    let base = venvs::copied_312().unwrap();
    let template = venvs::template("mixed312", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let c = Cluster::up(2);
    let user1 = String::from_utf8_lossy(&c.ssh("node1", "id -un").stdout).trim().to_string();
    let st = Command::new("chown").arg(&user1).arg("/tmp/pcm312").status().unwrap();
    assert!(st.success());
    std::fs::set_permissions("/tmp/pcm312", std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let py = base.python.display().to_string();
    assert!(c.ssh("node1", &format!("{py} -c pass")).status.success(), "node1 runs {py}");
    assert!(!c.ssh("node2", &format!("{py} -c pass")).status.success(), "node2 cannot run {py}");
    Some((base, p, c))
}

#[test]
fn a_mixed_fleet_syncs_the_venv_where_it_fits_and_builds_where_it_does_not() {
    let Some((base, p, c)) = mixed_fleet("a_mixed_fleet_syncs_the_venv_where_it_fits_and_builds_where_it_does_not") else { return };
    let nodes = c.aliases();
    let py = base.python.display().to_string();

    let l = local(&p);
    let r = cloud(p.root(), &c, &nodes, &["--cloud-env", "auto"]);
    let out = text(&r);
    assert_eq!(r.status.code(), l.status.code(), "{out}");
    assert_eq!(outcomes(&r), outcomes(&l), "{out}");
    let one = header(&out, "node1");
    assert!(one.starts_with(&format!("pytest-cloud: node1: 2 slots, CPython {} {py}", base.version)), "node1 takes the venv: {one}");
    let two = header(&out, "node2");
    assert!(two.contains(", env built for CPython 3.11"), "node2 builds its own: {two}");
    assert!(out.contains("[node1-0]") || out.contains("[node1-1]"), "tests ran on node1:\n{out}");
    assert!(out.contains("[node2-0]") || out.contains("[node2-1]"), "tests ran on node2:\n{out}");
    assert_eq!(node_envs(&c, "node1").len(), 0, "node1 built nothing");
    assert_eq!(node_envs(&c, "node2").len(), 1);
}

#[test]
fn a_package_that_cannot_be_installed_on_a_node_drops_only_that_node_naming_it() {
    let Some((_, p, c)) = mixed_fleet("a_package_that_cannot_be_installed_on_a_node_drops_only_that_node_naming_it") else { return };
    let nodes = c.aliases();
    // A pylock.toml (the source before the venv's pins) with the venv's distributions and
    // PyYAML 5.4.1: no wheel for CPython 3.11, and its sdist does not build with Cython 3.
    let freeze = Command::new(p.python()).args(["-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"]).output().unwrap();
    let mut lock = String::from("lock-version = \"1.0\"\ncreated-by = \"pytest-cloud tests\"\n");
    for l in String::from_utf8_lossy(&freeze.stdout).lines().chain(["PyYAML==5.4.1"]) {
        if let Some((n, v)) = l.split_once("==") {
            lock.push_str(&format!("\n[[packages]]\nname = \"{n}\"\nversion = \"{v}\"\n"));
        }
    }
    std::fs::write(p.root().join("pylock.toml"), lock).unwrap();
    let l = local(&p);
    let r = cloud(p.root(), &c, &nodes, &[]);
    let out = text(&r);
    assert_eq!(r.status.code(), l.status.code(), "the run goes on on node1: {out}");
    assert_eq!(outcomes(&r), outcomes(&l), "{out}");
    let two = header(&out, "node2");
    assert!(two.starts_with("pytest-cloud: node2: dropped at sync (env_build_failed: "), "{two}");
    let low = two.to_lowercase();
    assert!(low.contains("pyyaml") && two.contains("CPython 3.11") && two.contains(std::env::consts::ARCH), "names the package, the node's Python and platform: {two}");
    assert!(two.contains("pin a version that has one, or leave the node out"), "says what to do: {two}");
    assert!(header(&out, "node1").starts_with("pytest-cloud: node1: 2 slots, CPython 3.12"), "{out}");
}

#[test]
fn a_project_with_a_uv_lock_is_built_from_it() {
    let Some(base) = base_312() else { return };
    let template = venvs::template("rebase312", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let pyproject = p.root().join("pyproject.toml");
    let before = std::fs::read_to_string(&pyproject).unwrap();
    std::fs::write(&pyproject, format!("{before}[dependency-groups]\ndev = [\"pytest>=8,<10\", \"pytest-xdist>=3.6,<3.9\"]\n")).unwrap();
    let lock = Command::new(venvs::uv()).args(["lock", "--no-config", "--quiet"]).current_dir(p.root()).env("UV_SYSTEM_CERTS", "1").output().unwrap();
    assert!(lock.status.success(), "uv lock: {}", text(&lock));
    let c = Cluster::up(1);
    let nodes = c.aliases();
    let l = local(&p);
    let r = cloud(p.root(), &c, &nodes, &[]);
    let out = text(&r);
    assert_eq!(r.status.code(), l.status.code(), "{out}");
    assert_eq!(outcomes(&r), outcomes(&l), "{out}");
    assert!(header(&out, "node1").contains(" from uv.lock (your venv: 3.12"), "{out}");
    let reqs = c.ssh("node1", "cat ~/.cache/pytest-cloud/envs/*/.pytest-cloud-requirements.txt");
    let reqs = String::from_utf8_lossy(&reqs.stdout).to_string();
    assert!(reqs.lines().any(|l| l.starts_with("msgpack==")) && reqs.lines().any(|l| l.starts_with("pytest-xdist==")), "the lock's pins: {reqs}");
    assert!(!reqs.contains("clipkg"), "the project itself comes from the synced sources: {reqs}");
}

#[test]
fn sync_alone_builds_the_env_and_exec_runs_in_it() {
    let Some(base) = base_312() else { return };
    let template = venvs::template("rebase312", &base, venvs::PACKAGES);
    let p = RebaseProject::new(&template);
    let c = Cluster::up(1);
    let bin = assert_cmd::cargo::cargo_bin("pytest-cloud");
    let step = |args: &[&str], input: &[u8]| -> Output {
        use std::io::Write;
        let mut child = Command::new(&bin)
            .args(args)
            .current_dir(p.root())
            .env_remove("VIRTUAL_ENV")
            .env("PYTEST_CLOUD_UV", venvs::uv())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let cfg = c.ssh_config().display().to_string();
    let inv = step(&["probe", "-q", "--ssh-config", &cfg, "--nodes", "node1"], b"");
    let plan = step(&["plan", "-q", "--chdir", "pc_envexec"], &inv.stdout);
    // --wheelhouse: the controller's wheels, no index tried (the node could reach one).
    let synced = step(&["sync", "-q", "--env", "build", "--wheelhouse", "--rsync-bandwidth-limit", "0"], &plan.stdout);
    assert_eq!(synced.status.code(), Some(0), "{}", text(&synced));
    let doc: serde_json::Value = serde_json::from_slice(&synced.stdout).unwrap();
    let env = &doc["nodes"][0]["env"];
    assert_eq!((env["strategy"].as_str(), env["source"].as_str(), env["built"].as_bool()), (Some("build"), Some("venv"), Some(true)), "{env}");
    assert_eq!((env["wheelhouse"].as_bool(), env.get("index_failed")), (Some(true), None), "{env}");
    let marker = c.ssh("node1", "cat ~/.cache/pytest-cloud/envs/*/.pytest-cloud-env");
    assert!(String::from_utf8_lossy(&marker.stdout).contains(" from=wheels:"), "{}", text(&marker));
    assert_eq!(doc["nodes"][0]["bytes_sent"].as_u64().map(|b| b < 200_000), Some(true), "the venv did not travel: {}", doc["nodes"][0]);
    let code = "import sys, msgpack, clipkg; print(sys.version_info[:2], clipkg.__file__)";
    // Console scripts by name: the run tree's venv bin/ (a link to the env) leads the job's PATH.
    let ex = step(
        &["exec", "--", "sh", "-c", &format!("{{python}} -c '{code}' && mytool hi && echo \"at $(command -v mytool)\" && pytest --version")],
        &synced.stdout,
    );
    let out = text(&ex);
    assert_eq!(ex.status.code(), Some(0), "{out}");
    let dir = doc["nodes"][0]["remote_dir"].as_str().unwrap();
    assert!(out.contains(&format!("(3, 11) {dir}/src/clipkg/__init__.py")), "the node's 3.11 imports the run tree's sources: {out}");
    assert!(out.contains(&format!("mytool says hi from {dir}/src/clipkg/__init__.py")), "the console script by name too: {out}");
    assert!(out.contains(&format!("at {dir}/.venv/bin/mytool")), "found in the run tree's venv: {out}");
    assert!(out.contains("pytest 8.") || out.contains("pytest 9."), "pytest by name, from the env: {out}");
    let _ = step(&["release"], &synced.stdout);
}
