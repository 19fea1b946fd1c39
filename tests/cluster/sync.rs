//! `pytest-cloud sync` against real sshd nodes on loopback, real rsync, real GNU parallel and
//! a real venv (Debian's python3, pytest from PyPI), per issue #3's "Done when" list.
//!
//! The venv with pytest is built once per machine (`common::venv`) and copied into each test
//! project; the editable install is made by the real pip in each project.

use crate::common;

use common::cluster::Cluster;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("pytest-cloud")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    out
}

fn is_root() -> bool {
    text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0"
}

fn base_python_version() -> String {
    common::venv::base_python_version()
}

fn write(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A src-layout project with a `.venv` (pytest installed) and, when asked, the package
/// installed into it in editable mode by pip.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(editable: bool) -> Project {
        let dir = tempfile::Builder::new().prefix("pc-sync-proj-").tempdir().unwrap();
        let root = dir.path();
        write(
            &root.join("pyproject.toml"),
            "[build-system]\nrequires = [\"setuptools>=64\"]\nbuild-backend = \"setuptools.build_meta\"\n\
             [project]\nname = \"mypkg\"\nversion = \"0.1\"\n[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n",
        );
        write(&root.join("src/mypkg/__init__.py"), "def hello():\n    return 'hi'\n");
        write(&root.join("src/mypkg/keep.py"), "VALUE = 1\n");
        write(&root.join("src/mypkg/old.py"), "OLD = True\n");
        write(&root.join("tests/test_hello.py"), "import mypkg\n\ndef test_hello():\n    assert mypkg.hello() == 'hi'\n");
        common::venv::copy_to(&root.join(".venv"));
        if editable {
            common::venv::install_editable(root, &root.join(".venv"));
        }
        Project { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// `probe | plan` for these nodes, as a plan document.
fn plan(cluster: &Cluster, project: &Project, nodes: &str, chdir: &str) -> String {
    let inv = run(Command::new(bin())
        .args(["probe", "-q", "--ssh-config"])
        .arg(cluster.ssh_config())
        .args(["--nodes", nodes])
        .stdin(Stdio::null()));
    let mut p = Command::new(bin());
    p.args(["plan", "-q", "--chdir", chdir, "--source"]).arg(project.root()).env_remove("VIRTUAL_ENV");
    text(&pipe(&mut p, &inv.stdout).stdout)
}

fn pipe(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

struct Synced {
    code: i32,
    doc: Value,
    stdout: String,
    stderr: String,
}

fn sync(input: &str, args: &[&str]) -> Synced {
    sync_with_env(input, args, &[])
}

fn sync_with_env(input: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Synced {
    let mut cmd = Command::new(bin());
    cmd.arg("sync").args(args).env_remove("VIRTUAL_ENV");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = pipe(&mut cmd, input.as_bytes());
    let stdout = text(&out.stdout);
    Synced {
        code: out.status.code().unwrap_or(-1),
        doc: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: text(&out.stderr),
    }
}

fn node<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["nodes"].as_array().unwrap().iter().find(|n| n["node"] == name).unwrap_or_else(|| panic!("{name} not synced: {doc:#}"))
}

fn dropped<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["dropped"].as_array().unwrap().iter().find(|n| n["node"] == name).unwrap_or_else(|| panic!("{name} not dropped: {doc:#}"))
}

fn remote_dir(doc: &Value, name: &str) -> String {
    let plan = if doc["kind"] == "plan" { doc } else { &doc["plan"] };
    plan["nodes"].as_array().unwrap().iter().find(|n| n["node"] == name).unwrap()["remote_dir"].as_str().unwrap().to_string()
}

/// Runs `cmd` on the node as its user; returns stdout, panicking with stderr on failure.
fn on_node(cluster: &Cluster, alias: &str, cmd: &str) -> String {
    let out = cluster.ssh(alias, cmd);
    assert!(out.status.success(), "{alias}: {cmd}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn exists_on_node(cluster: &Cluster, alias: &str, path: &str) -> bool {
    cluster.ssh(alias, &format!("test -e {}", shell_words::quote(path))).status.success()
}

#[test]
fn four_nodes_get_the_project_with_its_venv_and_a_resync_sends_almost_nothing() {
    let cluster = Cluster::shared();
    let project = Project::new(true);
    // The pipe as a user types it.
    let b = shell_words::quote(bin().to_str().unwrap()).into_owned();
    let line = format!(
        "{b} probe -q --ssh-config {} --nodes 'node1 node2 node3 node4' | {b} plan -q --chdir pc_four --source {} | {b} sync --rsync-bandwidth-limit 0",
        shell_words::quote(cluster.ssh_config().to_str().unwrap()),
        shell_words::quote(project.root().to_str().unwrap()),
    );
    let t = Instant::now();
    let out = Command::new("sh").arg("-c").arg(&line).env_remove("VIRTUAL_ENV").output().unwrap();
    let first_s = t.elapsed().as_secs_f64();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["kind"], "sync");
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 4, "{doc:#}");
    assert_eq!(doc["virtualenv_path"], ".venv");
    assert_eq!(doc["editable_paths"], serde_json::json!(["src"]));
    assert!(stderr.contains(&format!("sync: source {}", project.root().display())), "says which source: {stderr}");
    assert!(stderr.contains("virtualenv .venv"), "says which venv: {stderr}");

    for alias in ["node1", "node2", "node3", "node4"] {
        let n = node(&doc, alias);
        assert_eq!(n["rsync_exit"], 0);
        assert!(n["bytes_sent"].as_u64().unwrap() > 1_000_000, "{n}");
        let dir = n["remote_dir"].as_str().unwrap();
        let got = on_node(
            &cluster,
            alias,
            &format!(
                "cd {dir} && .venv/bin/python -c 'import mypkg; print(mypkg.__file__)' && .venv/bin/python -m pytest --version 2>&1 && \
                 .venv/bin/python -m pytest -q -p no:cacheprovider 2>&1 | tail -n 1"
            ),
        );
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines[0], format!("{dir}/src/mypkg/__init__.py"), "imports from the node's copy: {got}");
        assert!(lines[1].starts_with("pytest "), "{got}");
        assert!(lines[2].contains("1 passed"), "{got}");
    }

    let t = Instant::now();
    let again = sync(&text(&out.stdout), &["--rsync-bandwidth-limit", "0"]);
    let resync_s = t.elapsed().as_secs_f64();
    assert_eq!(again.code, 0, "{}", again.stderr);
    for alias in ["node1", "node2", "node3", "node4"] {
        let (first, second) = (node(&doc, alias)["bytes_sent"].as_u64().unwrap(), node(&again.doc, alias)["bytes_sent"].as_u64().unwrap());
        assert!(second * 20 < first, "{alias}: a no-change re-sync sent {second} bytes after {first}");
        assert_eq!(node(&again.doc, alias)["files_transferred"], 0);
    }
    eprintln!(
        "measured: first pipe (probe+plan+sync) {first_s:.2} s, {} bytes to node1; no-change re-sync {resync_s:.2} s, {} bytes to node1",
        node(&doc, "node1")["bytes_sent"],
        node(&again.doc, "node1")["bytes_sent"]
    );
}

#[test]
fn changes_deletions_and_orphan_bytecode_arrive_and_excluded_files_stay_out() {
    let cluster = Cluster::shared();
    let project = Project::new(true);
    let root = project.root();
    write(&root.join("src/mypkg/sub/__init__.py"), "");
    write(&root.join("src/mypkg/sub/m.py"), "M = 1\n");
    write(&root.join("data.txt"), "data\n");
    write(&root.join(".git/HEAD"), "ref: refs/heads/main\n");
    write(&root.join(".pytest_cache/v/x"), "{}");
    write(&root.join("debug.log"), "local log\n");
    write(&root.join("secret.txt"), "local secret\n");
    write(&root.join(".pytest-cloud-ignore"), "# rsync filter rules\n- *.log\n");
    write(&root.join(".hidden-config"), "kept: no blanket dot-file exclusion\n");
    // A develop egg by option (src layout) and one by ini (flat), neither installed locally.
    write(&root.join("libs/helper/pyproject.toml"), "[project]\nname = \"helper\"\nversion = \"1\"\n");
    write(&root.join("libs/helper/src/helper/__init__.py"), "H = 'helper'\n");
    write(&root.join("libs/tool/tool.py"), "T = 'tool'\n");
    let pyproject = std::fs::read_to_string(root.join("pyproject.toml")).unwrap();
    write(&root.join("pyproject.toml"), &format!("{pyproject}cloud_develop_eggs = [\"libs/tool\"]\n"));

    let plan = plan(&cluster, &project, "node1", "pc_changes");
    let first = sync(&plan, &["--rsync-bandwidth-limit", "0", "--exclude", "secret.txt", "--develop-egg", root.join("libs/helper").to_str().unwrap()]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.doc["editable_paths"], serde_json::json!(["src", "libs/helper/src", "libs/tool"]));
    let dir = remote_dir(&first.doc, "node1");
    let import_all = format!(
        "cd {dir} && .venv/bin/python -c 'import mypkg, mypkg.keep, mypkg.old, mypkg.sub.m, helper, tool; print(mypkg.keep.VALUE, helper.__file__, tool.__file__)'"
    );
    let got = on_node(&cluster, "node1", &import_all);
    assert_eq!(got.trim(), format!("1 {dir}/libs/helper/src/helper/__init__.py {dir}/libs/tool/tool.py"));
    for (path, present) in [
        (".git", false),
        (".pytest_cache/v/x", true),
        ("debug.log", false),
        ("secret.txt", false),
        (".hidden-config", true),
        (".pytest-cloud-ignore", true),
        (".pytest-cloud-target", true),
    ] {
        assert_eq!(exists_on_node(&cluster, "node1", &format!("{dir}/{path}")), present, "{path}");
    }
    // Editable-install metadata in the tree is part of the project (importlib.metadata reads it).
    for meta in ["src/mypkg.egg-info"] {
        assert_eq!(exists_on_node(&cluster, "node1", &format!("{dir}/{meta}")), root.join(meta).exists(), "{meta}");
    }
    let pyc = |name: &str| format!("{dir}/src/mypkg/__pycache__/{name}.cpython-{}.pyc", base_python_version().split('.').take(2).collect::<Vec<_>>().join(""));
    assert!(exists_on_node(&cluster, "node1", &pyc("old")), "the node compiled old.py");
    let init_pyc_mtime = on_node(&cluster, "node1", &format!("stat -c %Y {}", pyc("__init__")));
    // Node-side files that the filters exclude are the node's own: kept. The pytest cache is
    // the controller's (workers read --lf state from it): mirrored, node-side files go.
    on_node(&cluster, "node1", &format!("mkdir -p {dir}/.pytest_cache && echo node > {dir}/.pytest_cache/n && echo node > {dir}/debug.log"));

    write(&root.join("src/mypkg/keep.py"), "VALUE = 2222\n");
    std::fs::remove_file(root.join("data.txt")).unwrap();
    std::fs::remove_file(root.join("src/mypkg/old.py")).unwrap();
    std::fs::remove_dir_all(root.join("src/mypkg/sub")).unwrap();
    let second = sync(&first.stdout, &["--rsync-bandwidth-limit", "0", "--exclude", "secret.txt", "--develop-egg", root.join("libs/helper").to_str().unwrap()]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let got = on_node(&cluster, "node1", &format!("cd {dir} && .venv/bin/python -c 'import mypkg.keep; print(mypkg.keep.VALUE)'"));
    assert_eq!(got.trim(), "2222", "the changed file arrived");
    assert!(!exists_on_node(&cluster, "node1", &format!("{dir}/data.txt")), "deleted file is gone");
    assert!(!exists_on_node(&cluster, "node1", &format!("{dir}/src/mypkg/old.py")));
    assert!(!exists_on_node(&cluster, "node1", &pyc("old")), "the deleted module's .pyc is gone");
    assert!(!exists_on_node(&cluster, "node1", &format!("{dir}/src/mypkg/sub")), "a deleted package goes with its __pycache__");
    let gone = cluster.ssh("node1", &format!("cd {dir} && .venv/bin/python -c 'import mypkg.old'"));
    assert!(text(&gone.stderr).contains("ModuleNotFoundError"), "{}", text(&gone.stderr));
    assert_eq!(on_node(&cluster, "node1", &format!("stat -c %Y {}", pyc("__init__"))), init_pyc_mtime, "unchanged modules keep their bytecode");
    assert_eq!(on_node(&cluster, "node1", &format!("cat {dir}/debug.log")), "node\n");
    assert!(!exists_on_node(&cluster, "node1", &format!("{dir}/.pytest_cache/n")), "the cache mirrors the controller's");
    assert!(exists_on_node(&cluster, "node1", &format!("{dir}/.pytest-cloud-synced")), "a finished sync leaves its stamp");

    // A sync stopped between rsync and its clean-up (Ctrl-C, kill) deleted a module and left
    // its bytecode and no stamp. The next sync hears of no deletion from rsync, so it must
    // sweep the whole tree because the stamp is missing.
    write(&root.join("src/mypkg/gone.py"), "G = 1\n");
    let third = sync(&second.stdout, &["--rsync-bandwidth-limit", "0", "--exclude", "secret.txt", "--develop-egg", root.join("libs/helper").to_str().unwrap()]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    on_node(&cluster, "node1", &format!("cd {dir} && .venv/bin/python -c 'import mypkg.gone'"));
    assert!(exists_on_node(&cluster, "node1", &pyc("gone")), "the node compiled gone.py");
    std::fs::remove_file(root.join("src/mypkg/gone.py")).unwrap();
    on_node(&cluster, "node1", &format!("rm {dir}/src/mypkg/gone.py {dir}/.pytest-cloud-synced"));
    let fourth = sync(&third.stdout, &["--rsync-bandwidth-limit", "0", "--exclude", "secret.txt", "--develop-egg", root.join("libs/helper").to_str().unwrap()]);
    assert_eq!(fourth.code, 0, "{}", fourth.stderr);
    assert!(!exists_on_node(&cluster, "node1", &pyc("gone")), "the interrupted sync's orphan bytecode is swept");
    assert_eq!(on_node(&cluster, "node1", &format!("stat -c %Y {}", pyc("__init__"))), init_pyc_mtime, "and only orphans");
    assert!(exists_on_node(&cluster, "node1", &format!("{dir}/.pytest-cloud-synced")));
}

#[test]
fn a_node_whose_rsync_fails_is_dropped_with_rsyncs_message_and_the_others_go_on() {
    assert!(is_root(), "this test makes a directory on the node that its user cannot write: run as root");
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let plan = plan(&cluster, &project, "node1 node2", "pc_fail");
    let first = sync(&plan, &["-q", "--rsync-bandwidth-limit", "0"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // The nodes live on this machine: as root, put a directory the node's user cannot write
    // where the next sync must write.
    let dir2 = remote_dir(&first.doc, "node2");
    std::fs::create_dir_all(format!("{dir2}/src/mypkg/locked")).unwrap();
    write(&project.root().join("src/mypkg/locked/new.py"), "NEW = 1\n");
    let second = sync(&first.stdout, &["--rsync-bandwidth-limit", "0", "--rsync-max-processes", "1"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    node(&second.doc, "node1");
    let d = dropped(&second.doc, "node2");
    assert_eq!((d["stage"].as_str(), d["error_kind"].as_str()), (Some("sync"), Some("sync_failed")));
    let msg = d["message"].as_str().unwrap();
    assert!(msg.contains("status 23") && msg.contains("Permission denied"), "rsync's code and words: {msg}");
    assert!(second.stderr.contains("node2: dropped (sync_failed"), "{}", second.stderr);
    assert!(exists_on_node(&cluster, "node1", &format!("{}/src/mypkg/locked/new.py", remote_dir(&first.doc, "node1"))));
    assert!(!Path::new(&format!("{dir2}.pytest-cloud-lock")).exists(), "the failed node's lock is released");
}

#[test]
fn a_non_empty_unmarked_target_is_refused_and_left_untouched() {
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let plan = plan(&cluster, &project, "node1 node2", "pc_precious");
    let doc: Value = serde_json::from_str(&plan).unwrap();
    let (dir1, dir2) = (remote_dir(&doc, "node1"), remote_dir(&doc, "node2"));
    on_node(&cluster, "node1", &format!("mkdir {dir1} && echo mine > {dir1}/precious.txt"));
    on_node(&cluster, "node2", &format!("mkdir {dir2}"));
    let s = sync(&plan, &["--rsync-bandwidth-limit", "0"]);
    assert_eq!(s.code, 1, "{}", s.stderr);
    let d = dropped(&s.doc, "node1");
    assert_eq!(d["error_kind"], "unsafe_target");
    let msg = d["message"].as_str().unwrap();
    assert!(msg.contains("precious.txt") && msg.contains("untouched") && msg.contains(&dir1), "{msg}");
    assert_eq!(on_node(&cluster, "node1", &format!("ls -A {dir1}; cat {dir1}/precious.txt")), "precious.txt\nmine\n");
    assert!(!exists_on_node(&cluster, "node1", &format!("{dir1}.pytest-cloud-lock")));
    // An empty directory is adopted: marked, then mirrored.
    node(&s.doc, "node2");
    assert!(exists_on_node(&cluster, "node2", &format!("{dir2}/.pytest-cloud-target")));
    assert!(exists_on_node(&cluster, "node2", &format!("{dir2}/.venv/bin/python")));
}

#[test]
fn a_node_without_the_pinned_python_is_dropped_before_any_byte_is_sent() {
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let inv = run(Command::new(bin())
        .args(["probe", "-q", "--ssh-config"])
        .arg(cluster.ssh_config())
        .args(["--nodes", "node1", "--python", "python3", "--python", "python9.99"])
        .stdin(Stdio::null()));
    let mut p = Command::new(bin());
    p.args(["plan", "-q", "--chdir", "pc_python", "--python", "python9.99", "--source"]).arg(project.root()).env_remove("VIRTUAL_ENV");
    let plan = text(&pipe(&mut p, &inv.stdout).stdout);
    let s = sync(&plan, &["--rsync-bandwidth-limit", "0"]);
    assert_eq!(s.code, 69, "{}", s.stderr);
    let d = dropped(&s.doc, "node1");
    assert_eq!(d["error_kind"], "python_mismatch");
    let msg = d["message"].as_str().unwrap();
    let v = base_python_version();
    let minor = v.rsplit_once('.').unwrap().0;
    assert!(msg.contains(&format!("the virtualenv needs CPython {minor}, cp{}", minor.replace('.', ""))), "names what the venv needs: {msg}");
    assert!(msg.contains("the node has no python9.99"), "{msg}");
    let dir = remote_dir(&s.doc, "node1");
    assert!(!exists_on_node(&cluster, "node1", &dir), "nothing was created on the node");
    assert!(!exists_on_node(&cluster, "node1", &format!("{dir}.pytest-cloud-lock")));
}

/// Issue 9: a venv made from an interpreter the node users cannot reach, rebased per node;
/// a no-change re-sync writes nothing; a package added locally arrives rebased; the local venv
/// is never touched; the node's tree still works copied elsewhere (per-run trees).
#[test]
fn the_venv_is_rebased_on_each_node_resyncs_cheaply_and_an_added_package_arrives_rebased() {
    use common::venvs::{self, RebaseProject};
    let base = venvs::hidden_base_311();
    let template = venvs::template("rebase", &base, venvs::PACKAGES);
    let project = RebaseProject::new(&template);
    let root = project.root();
    let local_state = || -> Vec<(String, String)> {
        let bin = root.join(".venv/bin");
        let mut v: Vec<(String, String)> = std::fs::read_dir(&bin)
            .unwrap()
            .flatten()
            .map(|e| {
                let p = e.path();
                let what = match std::fs::read_link(&p) {
                    Ok(t) => format!("-> {}", t.display()),
                    Err(_) => std::fs::read(&p).map(|b| format!("{:x}", b.len())).unwrap_or_default() + &std::fs::read_to_string(&p).unwrap_or_default(),
                };
                (e.file_name().to_string_lossy().into_owned(), what)
            })
            .collect();
        v.push(("pyvenv.cfg".into(), std::fs::read_to_string(root.join(".venv/pyvenv.cfg")).unwrap()));
        v.sort();
        v
    };
    let before = local_state();
    let cluster = Cluster::up(2);
    let inv = run(Command::new(bin()).args(["probe", "-q", "--ssh-config"]).arg(cluster.ssh_config()).args(["--nodes", "node1 node2"]).stdin(Stdio::null()));
    let mut p = Command::new(bin());
    p.args(["plan", "-q", "--chdir", "pc_rebase", "--source"]).arg(root).env_remove("VIRTUAL_ENV");
    let plan = text(&pipe(&mut p, &inv.stdout).stdout);
    let first = sync(&plan, &["--rsync-bandwidth-limit", "0"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let sys = base_python_version();
    for alias in ["node1", "node2"] {
        let n = node(&first.doc, alias);
        let i = &n["interpreter"];
        assert_eq!((i["implementation"].as_str(), i["version"].as_str()), (Some("CPython"), Some(sys.as_str())), "{n}");
        assert!(i["path"].as_str().unwrap().starts_with("/usr/bin/python3"), "{i}");
        assert_eq!(i["venv_base_path"], base.python.to_str().unwrap());
        assert_eq!((i["venv_base_version"].as_str(), i["rebased"].as_bool()), (Some(base.version.as_str()), Some(true)));
        let dir = n["remote_dir"].as_str().unwrap();
        let cfg = on_node(&cluster, alias, &format!("cat {dir}/.venv/pyvenv.cfg"));
        assert!(cfg.contains("home = /usr/bin\n") && !cfg.contains(base.python.parent().unwrap().to_str().unwrap()) && !cfg.contains(dir), "{cfg}");
        assert_eq!(on_node(&cluster, alias, &format!("readlink {dir}/.venv/bin/python")).trim(), i["path"].as_str().unwrap());
        let head = on_node(&cluster, alias, &format!("head -q -n 3 {dir}/.venv/bin/mytool {dir}/.venv/bin/pytest"));
        assert!(!head.contains(dir) && !head.contains(root.to_str().unwrap()) && head.matches("#!/bin/sh").count() == 2, "relocatable: {head}");
        let got = on_node(&cluster, alias, &format!("cd {dir} && .venv/bin/mytool hi && .venv/bin/pytest -q -p no:cacheprovider 2>&1 | tail -n 1"));
        assert!(got.starts_with(&format!("mytool says hi from {dir}/src/clipkg/__init__.py\n")) && got.contains("1 failed, 4 passed"), "{got}");
    }
    let dir1 = remote_dir(&first.doc, "node1");
    // The shared base is where sync writes (a run's tree links to it).
    let base1 = node(&first.doc, "node1")["base_dir"].as_str().unwrap().to_string();
    let inode = |f: &str| on_node(&cluster, "node1", &format!("stat -c %i {base1}/{f}"));
    let (tool_inode, cfg_inode) = (inode(".venv/bin/mytool"), inode(".venv/pyvenv.cfg"));

    let again = sync(&first.stdout, &["--rsync-bandwidth-limit", "0"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for alias in ["node1", "node2"] {
        let (a, b) = (node(&first.doc, alias)["bytes_sent"].as_u64().unwrap(), node(&again.doc, alias)["bytes_sent"].as_u64().unwrap());
        assert!(b * 20 < a, "{alias}: a no-change re-sync sent {b} bytes after {a}");
        assert_eq!(node(&again.doc, alias)["files_transferred"], 0);
    }
    assert_eq!((inode(".venv/bin/mytool"), inode(".venv/pyvenv.cfg")), (tool_inode.clone(), cfg_inode), "nothing rewritten without a change");

    // A package with a console script installed locally: it reaches the nodes rebased, and the
    // managed files are replaced by new files (renamed into place), never changed in place.
    let extra = root.join("libs/extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("pyproject.toml"), "[build-system]\nrequires = [\"setuptools>=64\"]\nbuild-backend = \"setuptools.build_meta\"\n[project]\nname = \"extra\"\nversion = \"1\"\n[project.scripts]\nextratool = \"extra:main\"\n").unwrap();
    std::fs::write(extra.join("extra.py"), "import sys\n\ndef main():\n    print('extra on', sys.version_info[:2])\n").unwrap();
    run(Command::new(project.python())
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-build-isolation", "--no-deps"])
        .arg(&extra)
        .current_dir(root));
    let before_added = local_state();
    let third = sync(&again.stdout, &["--rsync-bandwidth-limit", "0"]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    for alias in ["node1", "node2"] {
        let dir = remote_dir(&third.doc, alias);
        let got = on_node(&cluster, alias, &format!("{dir}/.venv/bin/extratool && head -n 1 {dir}/.venv/bin/extratool"));
        assert_eq!(got, "extra on (3, 11)\n#!/bin/sh\n");
    }
    assert_ne!(inode(".venv/bin/mytool"), tool_inode, "a rewritten file is a new file");
    assert_eq!(local_state(), before_added, "the local venv is never modified by a sync");
    assert_ne!(before, before_added);

    // A copy of the node's tree elsewhere (as per-run trees are) still runs: nothing in the
    // rewritten files names the directory.
    let got = on_node(&cluster, "node1", &format!("cp -a {dir1} {dir1}-copy && cd {dir1}-copy && .venv/bin/mytool x && .venv/bin/python -c 'import sys; print(sys.prefix)'"));
    let lines: Vec<&str> = got.lines().collect();
    assert!(lines.len() == 2 && lines[0].starts_with("mytool says x from ") && lines[1] == format!("{dir1}-copy/.venv"), "{got}");
}

#[test]
fn exit_75_while_another_live_run_holds_the_lock_and_a_dead_holders_lock_is_taken_over() {
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let plan = plan(&cluster, &project, "node1", "pc_lock");
    let dir = remote_dir(&serde_json::from_str(&plan).unwrap(), "node1");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_string();
    // A live holder: this test process.
    let holder = format!("pytest-cloud run=r1 host={host} boot={boot} pid={} user=other started_unix=1 source=/elsewhere", std::process::id());
    on_node(&cluster, "node1", &format!("mkdir {dir}.pytest-cloud-lock && echo {} > {dir}.pytest-cloud-lock/holder", shell_words::quote(&holder)));
    let s = sync(&plan, &["--rsync-bandwidth-limit", "0", "--lock-wait", "1"]);
    assert_eq!(s.code, 75, "{}", s.stderr);
    let d = dropped(&s.doc, "node1");
    assert_eq!(d["error_kind"], "locked");
    let msg = d["message"].as_str().unwrap();
    assert!(msg.contains(&format!("pid={}", std::process::id())) && msg.contains("source=/elsewhere"), "names the holder: {msg}");
    assert!(s.stderr.contains("waiting for the lock"), "{}", s.stderr);
    assert!(!exists_on_node(&cluster, "node1", &dir), "nothing synced while locked");

    // A holder on this machine whose process is gone: taken over at once.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let holder = format!("pytest-cloud run=r2 host={host} boot={boot} pid={dead} user=other started_unix=1 source=/elsewhere");
    on_node(&cluster, "node1", &format!("echo {} > {dir}.pytest-cloud-lock/holder", shell_words::quote(&holder)));
    let s = sync(&plan, &["--rsync-bandwidth-limit", "0", "--lock-wait", "1"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(!exists_on_node(&cluster, "node1", &format!("{dir}.pytest-cloud-lock")), "released after the sync");
}

/// (pid, args) of the processes whose command line holds every one of `words`.
fn processes_with(words: &[&str]) -> Vec<(u32, String)> {
    let ps = text(&Command::new("ps").args(["-eo", "pid=,args="]).output().unwrap().stdout);
    ps.lines()
        .filter_map(|l| l.trim_start().split_once(' ').map(|(p, a)| (p.parse().unwrap_or(0), a.trim().to_string())))
        .filter(|(_, a)| words.iter().all(|w| a.contains(w)))
        .collect()
}

/// Issue 17: the node made the lock, then the sync's ssh died before the answer arrived
/// (killed here right after the node's mkdir, while the pre-flight lists a runs directory of
/// 150 leases: a slow step after the mkdir). The sync gives that lock back itself: when it
/// has ended the node is not locked, and another sync gets the lock at once.
#[test]
fn a_lock_made_just_before_the_syncs_ssh_died_is_given_back() {
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let plan = plan(&cluster, &project, "node1", "pc_lock_left");
    let dir = remote_dir(&serde_json::from_str(&plan).unwrap(), "node1");
    let (lock, runs) = (format!("{dir}.pytest-cloud-lock"), format!("{dir}.pytest-cloud-runs"));
    // Live runs from elsewhere (fresh leases of another host): listed, never reaped.
    on_node(
        &cluster,
        "node1",
        &format!(
            "mkdir -p {runs} && echo x > {runs}/.pytest-cloud-runs && i=0 && while [ $i -lt 150 ]; do \
             echo \"pytest-cloud run=x$i host=elsewhere boot=b pid=1 ttl_min=600\" > {runs}/x$i.lease; i=$((i+1)); done"
        ),
    );
    let child = spawn_sync(&plan, "0", false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(&lock).exists() {
        assert!(Instant::now() < deadline, "the pre-flight never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The sync's own ssh client for this pre-flight (not the node's shell, also on this machine).
    let clients: Vec<u32> =
        processes_with(&["preflight", &dir]).into_iter().filter(|(_, a)| a.starts_with("ssh ")).map(|(p, _)| p).collect();
    assert!(!clients.is_empty(), "no ssh client of the pre-flight: {:?}", processes_with(&["preflight"]));
    for pid in &clients {
        run(Command::new("kill").args(["-KILL", &pid.to_string()]));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "the only node was dropped: {stderr}");
    // The node's shell goes on to its end, with nobody reading it; then nothing may be locked.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !processes_with(&["preflight", &dir]).is_empty() {
        assert!(Instant::now() < deadline, "the node's pre-flight never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!Path::new(&lock).exists(), "the lock was left behind: {}", std::fs::read_to_string(format!("{lock}/holder")).unwrap_or_default());
    let s = sync(&plan, &["--rsync-bandwidth-limit", "0", "--lock-wait", "1"]);
    assert_eq!(s.code, 0, "another sync gets the lock at once: {}", s.stderr);
    assert!(!s.stderr.contains("waiting for the lock"), "{}", s.stderr);
}

fn rsync_processes_for(dir: &str) -> Vec<String> {
    let ps = text(&Command::new("ps").args(["-eo", "args"]).output().unwrap().stdout);
    ps.lines().filter(|l| l.contains("rsync") && l.contains(dir)).map(str::to_string).collect()
}

/// `sync --rsync-bandwidth-limit KBPS` started on PLAN (stdin written and closed, stdout and
/// stderr piped); `group`: in its own process group, as a terminal's job is.
fn spawn_sync(plan: &str, kbps: &str, group: bool) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin());
    cmd.args(["sync", "--rsync-bandwidth-limit", kbps]).env_remove("VIRTUAL_ENV");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if group {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(plan.as_bytes()).unwrap();
    child
}

/// Starts a slow sync, waits until rsync runs, interrupts it (`group`: the whole process
/// group, as a terminal's Ctrl-C does; else the pid alone, as `kill -INT` does).
fn interrupt_a_sync(plan: &str, dir: &str, group: bool) {
    let child = spawn_sync(plan, "100", group);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rsync_processes_for(dir).is_empty() {
        assert!(Instant::now() < deadline, "rsync never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Path::new(&format!("{dir}.pytest-cloud-lock")).exists());
    let target = if group { format!("-{}", child.id()) } else { child.id().to_string() };
    run(Command::new("kill").args(["-INT", "--", &target]));
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(out.stdout.is_empty(), "no document after an interrupt");
    assert!(text(&out.stderr).contains("interrupted"), "{}", text(&out.stderr));
    assert!(!Path::new(&format!("{dir}.pytest-cloud-lock")).exists(), "lock released");
    // The node's rsync ends when its connection does; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rsync_processes_for(dir).is_empty() {
        assert!(Instant::now() < deadline, "rsync left running: {:?}", rsync_processes_for(dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_interrupt_stops_rsync_and_releases_the_lock() {
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let plan = plan(&cluster, &project, "node1", "pc_interrupt");
    let dir = remote_dir(&serde_json::from_str(&plan).unwrap(), "node1");
    interrupt_a_sync(&plan, &dir, false);
    // Ctrl-C reaches the whole process group; parallel runs each rsync in a group of its own.
    std::fs::remove_dir_all(&dir).unwrap();
    interrupt_a_sync(&plan, &dir, true);
}

/// Issue 17: Ctrl-C while one node is frozen: the lock of the node that answers is released,
/// the frozen node's cannot be, and the message says so per node instead of "released".
#[test]
fn an_interrupt_says_which_locks_were_released_and_which_were_not() {
    let cluster = Cluster::up(2);
    let project = Project::new(false);
    let plan = plan(&cluster, &project, "node1 node2", "pc_interrupt_report");
    let doc: Value = serde_json::from_str(&plan).unwrap();
    let (dir1, dir2) = (remote_dir(&doc, "node1"), remote_dir(&doc, "node2"));
    let child = spawn_sync(&plan, "100", false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rsync_processes_for(&dir1).is_empty() || rsync_processes_for(&dir2).is_empty() {
        assert!(Instant::now() < deadline, "rsync never started on both nodes");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.freeze("node2");
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    cluster.thaw("node2");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("the lock was released on node1"), "{stderr}");
    assert!(stderr.contains("NOT released: node2") && stderr.contains(&format!("{dir2}.pytest-cloud-lock")), "names the lock left: {stderr}");
    assert!(!Path::new(&format!("{dir1}.pytest-cloud-lock")).exists(), "node1's lock released");
    assert!(Path::new(&format!("{dir2}.pytest-cloud-lock")).exists(), "node2's lock is indeed still there");
}

/// A home whose `~/.parallel/config` holds `line`, as a user's GNU parallel configuration.
pub fn home_with_parallel_config(line: &str) -> tempfile::TempDir {
    let home = tempfile::Builder::new().prefix("pc-home-").tempdir().unwrap();
    write(&home.path().join(".parallel/config"), &format!("{line}\n"));
    home
}

#[test]
fn the_users_gnu_parallel_settings_do_not_change_what_sync_does() {
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let home = home_with_parallel_config("--dry-run");
    let cases: [(&str, Vec<(&str, &std::ffi::OsStr)>); 3] = [
        ("PARALLEL=--dry-run", vec![("PARALLEL", "--dry-run".as_ref())]),
        ("--dry-run in ~/.parallel/config", vec![("HOME", home.path().as_os_str())]),
        ("PARALLEL_SHELL=/bin/false", vec![("PARALLEL_SHELL", "/bin/false".as_ref())]),
    ];
    for (i, (how, env)) in cases.iter().enumerate() {
        let plan = plan(&cluster, &project, "node1", &format!("pc_parallel_env_{i}"));
        let s = sync_with_env(&plan, &["--rsync-bandwidth-limit", "0"], env);
        assert_eq!(s.code, 0, "with {how}: {}{}", s.stderr, s.stdout);
        let dir = remote_dir(&s.doc, "node1");
        assert!(exists_on_node(&cluster, "node1", &format!("{dir}/src/mypkg/keep.py")), "with {how}, the project reached the node");
    }
}

fn transfers(doc: &Value) -> Vec<String> {
    doc["nodes"].as_array().unwrap().iter().map(|n| n["transfer"].as_str().unwrap_or("absent").to_string()).collect()
}

fn release(doc: &str) {
    let out = pipe(Command::new(bin()).args(["release"]), doc.as_bytes());
    assert!(out.status.success(), "release: {}", text(&out.stderr));
}

/// A release whose drops answer asks no node's shared connection whether it is still there
/// (`ssh -O check` is for a drop that fails or is still running at the lost node's deadline,
/// engine::lease::drop_answered), so it costs the release nothing, and every run tree goes.
/// What ssh is asked is seen through an `ssh` first on PATH that notes its arguments and runs
/// the real one.
#[test]
fn a_release_whose_drops_answer_checks_no_connection_and_removes_every_tree() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = Cluster::shared();
    let project = Project::new(false);
    let plan = plan(&cluster, &project, "node1 node2", "pc_release_check");
    let s = sync(&plan, &["--rsync-bandwidth-limit", "0"]);
    assert_eq!(s.code, 0, "{}", s.stderr);
    let spy = tempfile::tempdir().unwrap();
    let log = spy.path().join("ssh.log");
    let real = pytest_cloud::proc::on_path("ssh").expect("ssh on PATH");
    let ssh = spy.path().join("ssh");
    write(&ssh, &format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n", log.display(), real.display()));
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", spy.path().display(), std::env::var("PATH").unwrap_or_default());
    let out = pipe(Command::new(bin()).arg("release").env("PATH", path), s.stdout.as_bytes());
    assert!(out.status.success(), "release: {}", text(&out.stderr));
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(calls.lines().filter(|l| l.contains(" drop ")).count(), 2, "one drop per node:\n{calls}");
    assert!(!calls.contains("-O check"), "no connection check for drops that answered:\n{calls}");
    for alias in ["node1", "node2"] {
        let tree = node(&s.doc, alias)["remote_dir"].as_str().unwrap().to_string();
        assert!(tree.contains(".pytest-cloud-runs/"), "{tree}");
        assert!(!exists_on_node(&cluster, alias, &tree), "{alias}: {tree} removed");
    }
}

/// Issue 18: a no-change re-sync is one round trip per node (no rsync, no finish: the
/// document says `transfer: skipped`); every kind of change takes the full path and arrives.
#[test]
fn a_no_change_resync_skips_the_transfer_on_every_node_and_every_change_takes_the_full_path() {
    let cluster = Cluster::shared();
    let project = Project::new(true);
    let root = project.root();
    write(&root.join("data.txt"), "data\n");
    write(&root.join("debug.log"), "log\n");
    write(&root.join(".pytest-cloud-ignore"), "- *.log\n");
    let nodes = ["node1", "node2", "node3", "node4"];
    let plan = plan(&cluster, &project, &nodes.join(" "), "pc_fastpath");
    let args = ["--rsync-bandwidth-limit", "0"];
    let first = sync(&plan, &args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(transfers(&first.doc), vec!["rsync"; 4], "a first sync transfers");
    // Releasing the run hands the bytecode its venv check compiled to the base, in new
    // __pycache__ directories (their parents keep their mtimes: only bytecode was added).
    release(&first.stdout);
    let settle = sync(&first.stdout, &args);
    assert_eq!(settle.code, 0, "{}", settle.stderr);
    assert_eq!(transfers(&settle.doc), vec!["skipped"; 4], "the bytecode handed back is no change to the base:\n{}", settle.stderr);
    release(&settle.stdout);
    let mut last = settle.stdout.clone();

    // Syncs the last document again and checks each node's transfer.
    fn resync(last: &mut String, what: &str, want: &str) -> Synced {
        let s = sync(last, &["--rsync-bandwidth-limit", "0"]);
        assert_eq!(s.code, 0, "{what}: {}", s.stderr);
        assert_eq!(transfers(&s.doc), vec![want; 4], "{what}:\n{}\n{}", s.stderr, s.stdout);
        release(&s.stdout);
        *last = s.stdout.clone();
        s
    }
    let same = resync(&mut last, "no change", "skipped");
    for alias in nodes {
        let n = node(&same.doc, alias);
        assert_eq!((n["bytes_sent"].as_u64(), n["files_transferred"].as_u64(), n["rsync_exit"].as_i64()), (Some(0), Some(0), Some(0)), "{n}");
        assert!(same.stderr.contains(&format!("{alias}: synced, transfer: skipped (unchanged")), "{}", same.stderr);
    }
    // The skipped node still got this run's tree and lease, and its venv runs there. (The
    // document was released above; a new no-change sync makes a tree to look into.)
    let kept = sync(&last, &args);
    assert_eq!(transfers(&kept.doc), vec!["skipped"; 4], "{}\n{}", kept.stderr, kept.stdout);
    for alias in nodes {
        let n = node(&kept.doc, alias);
        let dir = n["remote_dir"].as_str().unwrap();
        let runs = format!("{}.pytest-cloud-runs", n["base_dir"].as_str().unwrap());
        assert!(dir.starts_with(&format!("{runs}/")), "{n}");
        assert_eq!(on_node(&cluster, alias, &format!("head -n 1 {runs}/{}.lease", n["run_id"].as_str().unwrap())).trim(), n["lease"].as_str().unwrap());
        let got = on_node(&cluster, alias, &format!("cd {dir} && .venv/bin/python -c 'import mypkg; print(mypkg.__file__)' && cat data.txt"));
        assert_eq!(got, format!("{dir}/src/mypkg/__init__.py\ndata\n"));
    }
    release(&kept.stdout);

    // Content, same size and mtime kept: rsync's quick check would miss it too, so the
    // content changes size here.
    write(&root.join("src/mypkg/keep.py"), "VALUE = 22\n");
    let s = resync(&mut last, "a changed file", "rsync");
    // Released already: the base is where a change must be (each run's tree links it).
    let base = |doc: &Value, alias: &str| node(doc, alias)["base_dir"].as_str().unwrap().to_string();
    for alias in nodes {
        assert_eq!(on_node(&cluster, alias, &format!("cat {}/src/mypkg/keep.py", base(&s.doc, alias))), "VALUE = 22\n");
    }
    resync(&mut last, "no change after a change", "skipped");
    // mtime only.
    let f = std::fs::File::options().write(true).open(root.join("data.txt")).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000)).unwrap();
    drop(f);
    let s = resync(&mut last, "a changed mtime", "rsync");
    for alias in nodes {
        assert_eq!(on_node(&cluster, alias, &format!("stat -c %Y {}/data.txt", base(&s.doc, alias))).trim(), "1500000000");
    }
    std::fs::remove_file(root.join("data.txt")).unwrap();
    let s = resync(&mut last, "a deleted file", "rsync");
    for alias in nodes {
        assert!(!exists_on_node(&cluster, alias, &format!("{}/data.txt", base(&s.doc, alias))), "{alias}");
    }
    write(&root.join("src/mypkg/new.py"), "NEW = 1\n");
    let s = resync(&mut last, "a new file", "rsync");
    for alias in nodes {
        assert_eq!(on_node(&cluster, alias, &format!("cat {}/src/mypkg/new.py", base(&s.doc, alias))), "NEW = 1\n");
    }
    // The ignore file no longer excludes the log: the log arrives.
    write(&root.join(".pytest-cloud-ignore"), "- *.tmp\n");
    let s = resync(&mut last, "a changed exclude pattern", "rsync");
    for alias in nodes {
        assert_eq!(on_node(&cluster, alias, &format!("cat {}/debug.log", base(&s.doc, alias))), "log\n");
    }
    resync(&mut last, "no change again", "skipped");
    // pytest's cache, which every run rewrites, is no change: it travels with the one round
    // trip into the run's tree, where the workers read it (--lf). (Its first appearance
    // changes the root directory, which is a change.)
    write(&root.join(".pytest_cache/v/cache/nodeids"), "[]");
    resync(&mut last, "a new .pytest_cache directory at the root", "rsync");
    for content in ["{\"tests/test_a.py::test_x\": true}", "{}"] {
        write(&root.join(".pytest_cache/v/cache/lastfailed"), content);
        let s = sync(&last, &args);
        assert_eq!(transfers(&s.doc), vec!["skipped"; 4], "{}\n{}", s.stderr, s.stdout);
        for alias in nodes {
            let tree = node(&s.doc, alias)["remote_dir"].as_str().unwrap().to_string();
            assert_eq!(on_node(&cluster, alias, &format!("cat {tree}/.pytest_cache/v/cache/lastfailed")), content, "{alias}");
        }
        release(&s.stdout);
        last = s.stdout.clone();
    }
    // A sync with other options (an extra --exclude) is another tree.
    let other = sync(&last, &["--rsync-bandwidth-limit", "0", "--exclude", "nothing-matches"]);
    assert_eq!(transfers(&other.doc), vec!["rsync"; 4], "{}", other.stderr);
    release(&other.stdout);
    last = other.stdout.clone();
    // Changed on the node itself since the last sync: the full path repairs it.
    for alias in nodes {
        on_node(&cluster, alias, &format!("echo tampered > {}/src/mypkg/keep.py", base(&other.doc, alias)));
    }
    let s = sync(&last, &args);
    assert_eq!(transfers(&s.doc), vec!["rsync"; 4], "{}", s.stderr);
    for alias in nodes {
        assert_eq!(on_node(&cluster, alias, &format!("cat {}/src/mypkg/keep.py", base(&s.doc, alias))), "VALUE = 22\n", "{alias}: repaired");
    }
    release(&s.stdout);
    // An interrupted sync (no stamp) is never taken for a complete one.
    for alias in nodes {
        on_node(&cluster, alias, &format!("rm {}/.pytest-cloud-synced", base(&s.doc, alias)));
    }
    let s = sync(&s.stdout, &args);
    assert_eq!(transfers(&s.doc), vec!["rsync"; 4], "{}", s.stderr);
    release(&s.stdout);
}

/// Issue 18: a released tree still exactly as it was made is kept (`idle.ID`) and the next
/// no-change sync takes it (the same directory: one rename instead of a link per file); a tree
/// its run changed (a file written, one deleted) is removed as before, and a kept tree of an
/// older sync of the base is never handed out, even when the base's digest is the same.
#[test]
fn a_released_tree_left_as_made_is_the_next_no_change_runs_tree_and_a_changed_or_outdated_one_is_not() {
    let cluster = Cluster::shared();
    let project = Project::new(true);
    let root = project.root();
    write(&root.join("data.txt"), "data\n");
    write(&root.join("sub/other.txt"), "other\n");
    let plan = plan(&cluster, &project, "node1", "pc_kept");
    let args = ["--rsync-bandwidth-limit", "0"];
    // A first sync, then one that settles the bytecode handed back (as in the test above).
    let mut last = plan.clone();
    for _ in 0..2 {
        let s = sync(&last, &args);
        assert_eq!(s.code, 0, "{}", s.stderr);
        release(&s.stdout);
        last = s.stdout;
    }
    let ls = |runs: &str| -> Vec<String> { on_node(&cluster, "node1", &format!("ls -A {runs}")).lines().map(String::from).collect() };
    let inode = |p: &str| on_node(&cluster, "node1", &format!("stat -c %i {p}")).trim().to_string();
    // One no-change sync: its tree, released, is kept.
    let next = |last: &str| {
        let s = sync(last, &args);
        assert_eq!(transfers(&s.doc), ["skipped"], "{}\n{}", s.stderr, s.stdout);
        let n = node(&s.doc, "node1");
        (s.stdout.clone(), n["remote_dir"].as_str().unwrap().to_string(), n["run_id"].as_str().unwrap().to_string())
    };
    let (a, tree_a, id_a) = next(&last);
    let runs = tree_a.rsplit_once('/').unwrap().0.to_string();
    let made = inode(&tree_a);
    release(&a);
    assert_eq!(ls(&runs), [".pytest-cloud-runs".to_string(), format!("idle.{id_a}")], "released and kept");
    assert_eq!(inode(&format!("{runs}/idle.{id_a}")), made);

    // The next no-change run gets that very tree, and it is the project as synced.
    let (b, tree_b, _) = next(&a);
    assert_eq!(inode(&tree_b), made, "the kept tree is the next run's");
    assert!(!ls(&runs).iter().any(|e| e.starts_with("idle.")), "{:?}", ls(&runs));
    // (-B: no bytecode written, so the file below is the tree's one change.)
    let got = on_node(&cluster, "node1", &format!("cd {tree_b} && .venv/bin/python -B -c 'import mypkg; print(mypkg.__file__)' && cat data.txt sub/other.txt"));
    assert_eq!(got, format!("{tree_b}/src/mypkg/__init__.py\ndata\nother\n"));

    // A run that leaves a file in its tree: not kept; the next tree is a new one without it.
    on_node(&cluster, "node1", &format!("echo x > {tree_b}/sub/left-by-a-test.txt"));
    release(&b);
    assert_eq!(ls(&runs), [".pytest-cloud-runs"], "a changed tree is removed");
    let (c, tree_c, _) = next(&b);
    assert_ne!(inode(&tree_c), made);
    assert!(!exists_on_node(&cluster, "node1", &format!("{tree_c}/sub/left-by-a-test.txt")));
    // A run that deletes a file of its tree (only its directory's mtime tells): not kept.
    on_node(&cluster, "node1", &format!("rm {tree_c}/sub/other.txt"));
    release(&c);
    assert_eq!(ls(&runs), [".pytest-cloud-runs"], "a tree missing a file is removed");
    let (d, tree_d, id_d) = next(&c);
    assert_eq!(on_node(&cluster, "node1", &format!("cat {tree_d}/sub/other.txt")), "other\n");
    release(&d);
    let kept_d = format!("{runs}/idle.{id_d}");
    assert!(exists_on_node(&cluster, "node1", &kept_d), "{tree_d} kept: {:?}", ls(&runs));

    // Another sync of the same tree into the base since (its nonce, not its digest, differs):
    // the kept tree is of an older sync, so it is removed, not handed out.
    let base = node(&serde_json::from_str(&d).unwrap(), "node1")["base_dir"].as_str().unwrap().to_string();
    on_node(&cluster, "node1", &format!("cd {base} && read -r d n < .pytest-cloud-synced && printf '%s other-sync\\n' \"$d\" > .pytest-cloud-synced"));
    let ino_d = inode(&kept_d);
    let (e, tree_e, _) = next(&d);
    assert_ne!(inode(&tree_e), ino_d, "not the outdated kept tree");
    assert!(!exists_on_node(&cluster, "node1", &kept_d), "the outdated kept tree is removed");
    release(&e);
    // A file changed in place in the base changes it in the kept tree too (one inode): the
    // full path repairs the base, and no tree of before is handed out afterwards.
    let kept_e: Vec<String> = ls(&runs).into_iter().filter(|e| e.starts_with("idle.")).collect();
    assert_eq!(kept_e.len(), 1, "{kept_e:?}");
    on_node(&cluster, "node1", &format!("echo tampered > {base}/data.txt"));
    let s = sync(&e, &args);
    assert_eq!(transfers(&s.doc), ["rsync"], "{}", s.stderr);
    release(&s.stdout);
    let (f, tree_f, _) = next(&s.stdout);
    assert_eq!(on_node(&cluster, "node1", &format!("cat {tree_f}/data.txt")), "data\n");
    assert!(!exists_on_node(&cluster, "node1", &format!("{runs}/{}", kept_e[0])), "the tampered kept tree is gone");
    release(&f);

    // A fresh lease of a run of this machine whose process is gone (a run killed here): the
    // fast path still holds, and that run's tree is reaped; a live one's is left alone.
    let doc: Value = serde_json::from_str(&f).unwrap();
    let (line, id_f) = (node(&doc, "node1")["lease"].as_str().unwrap().to_string(), node(&doc, "node1")["run_id"].as_str().unwrap().to_string());
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    for (id, pid) in [("rdead1", dead_pid), ("rlive1", std::process::id())] {
        let l = line.replace(&format!("run={id_f} "), &format!("run={id} ")).replace(" pid=0 ", &format!(" pid={pid} "));
        assert_ne!(l, line);
        on_node(&cluster, "node1", &format!("mkdir {runs}/{id} && printf '%s\\n' {} > {runs}/{id}.lease", shell_words::quote(&l)));
    }
    let (g, _, _) = next(&f);
    assert!(!exists_on_node(&cluster, "node1", &format!("{runs}/rdead1")) && !exists_on_node(&cluster, "node1", &format!("{runs}/rdead1.lease")), "{:?}", ls(&runs));
    assert!(exists_on_node(&cluster, "node1", &format!("{runs}/rlive1")) && exists_on_node(&cluster, "node1", &format!("{runs}/rlive1.lease")), "{:?}", ls(&runs));
    on_node(&cluster, "node1", &format!("rm -r {runs}/rlive1 {runs}/rlive1.lease"));
    release(&g);

    // A kept tree changed after its release judged it (a process its run left behind, an
    // edit on the node) is not handed out either.
    let kept_g: Vec<String> = ls(&runs).into_iter().filter(|e| e.starts_with("idle.")).collect();
    assert_eq!(kept_g.len(), 1, "{kept_g:?}");
    on_node(&cluster, "node1", &format!("echo late > {runs}/{}/sub/late.txt", kept_g[0]));
    let (h, tree_h, _) = next(&g);
    assert!(!exists_on_node(&cluster, "node1", &format!("{tree_h}/sub/late.txt")), "{:?}", ls(&runs));
    assert!(!exists_on_node(&cluster, "node1", &format!("{runs}/{}", kept_g[0])), "the changed kept tree is removed");
    release(&h);
}

fn mtime(p: &str) -> std::time::SystemTime {
    std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Issue 17, fault matrix "lock left" (kill/freeze/unplug at rsync): a sync renews the lock
/// it holds (its mtime) while rsync runs, so a live slow sync's lock never looks stale; a node
/// frozen mid-rsync is dropped without a new connection for the release (its shared one is
/// gone), and the lock left there is taken over by a run from another machine once it has not
/// been renewed for its ttl_min, not after the old hour.
#[test]
fn a_syncs_lock_is_renewed_while_rsync_runs_and_one_left_on_a_lost_node_goes_stale_within_its_ttl() {
    let cluster = Cluster::up(1);
    let project = Project::new(false);
    // Incompressible bytes, so that rsync at 50 KiB/s runs well past a renewal.
    let mut big = vec![0u8; 4 << 20];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut big)).unwrap();
    std::fs::write(project.root().join("big.bin"), &big).unwrap();
    let plan = plan(&cluster, &project, "node1", "pc_lock_beat");
    let dir = remote_dir(&serde_json::from_str(&plan).unwrap(), "node1");
    let lock = format!("{dir}.pytest-cloud-lock");
    let child = spawn_sync(&plan, "50", false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rsync_processes_for(&dir).is_empty() {
        assert!(Instant::now() < deadline, "rsync never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let holder = std::fs::read_to_string(format!("{lock}/holder")).unwrap();
    assert!(holder.contains(" ttl_min="), "the holder line says how long the lock lasts unrenewed: {holder}");
    let made = mtime(&lock);
    // The heartbeat: the lock's mtime moves on while rsync still runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    while mtime(&lock) == made {
        assert!(Instant::now() < deadline, "the lock was never renewed while rsync ran");
        assert!(!rsync_processes_for(&dir).is_empty(), "rsync ended before a renewal; make the transfer slower");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(std::fs::read_to_string(format!("{lock}/holder")).unwrap(), holder, "still ours");
    cluster.freeze("node1");
    let out = child.wait_with_output().unwrap();
    cluster.thaw("node1");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "the only node was dropped: {stderr}");
    assert!(
        stderr.contains("could not be released (the node's shared ssh connection is gone"),
        "no new connection (and its connect timeout) for the release of a node whose connection is gone: {stderr}"
    );
    assert!(Path::new(&lock).exists(), "the frozen node kept the lock");
    // A run on another machine left it: the same holder line with another host (written in
    // place: the lock directory's mtime, its last renewal, stays as it was).
    let elsewhere: String = holder.split(' ').map(|w| if w.starts_with("host=") { "host=another-machine".to_string() } else { w.to_string() }).collect::<Vec<_>>().join(" ");
    let renewed = mtime(&lock);
    std::fs::write(format!("{lock}/holder"), &elsewhere).unwrap();
    assert_eq!(mtime(&lock), renewed);
    // Far less than the old hour; more than the ttl (2 min) plus find's rounding.
    let s = sync(&plan, &["--rsync-bandwidth-limit", "0", "--lock-wait", "240"]);
    assert!(s.stderr.contains("waiting for the lock"), "another machine's lock is not taken over at once: {}", s.stderr);
    assert_eq!(s.code, 0, "the unrenewed lock was taken over: {}", s.stderr);
    assert!(!Path::new(&lock).exists(), "and given back");
}
