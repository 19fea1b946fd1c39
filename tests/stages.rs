//! The laptop tier of the stages: everything `probe`, `plan`, `sync` and `exec` decide before
//! they touch a node (refusals, usage and input errors, missing tools), and golden
//! stdin -> stdout pairs for `plan`. No root, sshd or network needed; the tests that need real
//! nodes are the cluster tier (tests/cluster).

#[path = "common/require.rs"]
mod require;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Output, Stdio};

fn bin() -> Command {
    Command::cargo_bin("pytest-cloud").unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn pipe(cmd: &mut std::process::Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

struct Synced {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sync(input: &str, args: &[&str]) -> Synced {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    cmd.arg("sync").args(args).env_remove("VIRTUAL_ENV");
    let out = pipe(&mut cmd, input.as_bytes());
    Synced { code: out.status.code().unwrap_or(-1), stdout: text(&out.stdout), stderr: text(&out.stderr) }
}

// ---- probe and plan ----

#[test]
fn bad_nodes_are_usage_errors_before_any_connection() {
    for bad in ["a;rm -rf /", "host:99999", "a b", "a@b@", "h:0"] {
        bin()
            .args(["probe", "--node", "fine", &format!("--node={bad}")])
            .assert()
            .code(64)
            .stdout("")
            .stderr(predicate::str::contains("invalid node"));
    }
    bin().args(["probe", "--node=-oProxyCommand=touch /tmp/x"]).assert().code(64).stdout("");
    bin().args(["probe", "--nodes", "   "]).assert().code(64).stderr(predicate::str::contains("empty node"));
}

fn inventory_fixture() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plan/inventory.in.json")).unwrap()
}

fn project_fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/project")
}

/// Golden pairs: `<case>.args` (one argument per line) applied to inventory.in.json must
/// print `<case>.out.json` byte for byte (with @SOURCE@ and @VERSION@ substituted), twice.
#[test]
fn plan_golden_pairs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plan");
    let source = std::fs::canonicalize(project_fixture()).unwrap();
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = entry.path();
        if p.extension().map(|e| e != "args").unwrap_or(true) {
            continue;
        }
        let args: Vec<String> = std::fs::read_to_string(&p).unwrap().lines().map(String::from).collect();
        let expected = std::fs::read_to_string(p.with_extension("out.json"))
            .unwrap_or_default()
            .replace("@SOURCE@", &source.display().to_string())
            .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
        for _ in 0..2 {
            let out = bin().arg("plan").args(&args).arg("--source").arg(&source).env_remove("VIRTUAL_ENV").write_stdin(inventory_fixture()).output().unwrap();
            let got = String::from_utf8(out.stdout).unwrap();
            if require::bless() {
                let blessed = got.replace(&source.display().to_string(), "@SOURCE@").replace(env!("CARGO_PKG_VERSION"), "@VERSION@");
                std::fs::write(p.with_extension("out.json"), blessed).unwrap();
                continue;
            }
            assert_eq!(got, expected, "golden case {}", p.display());
        }
        cases += 1;
    }
    assert!(cases >= 3, "golden cases found: {cases}");
}

/// `bob@h` and `bob_h` have one readable label (`bob_h`): the plan tells them apart, so every
/// worker id is unique, and a node whose label is its own keeps it. Same input, same bytes.
#[test]
fn worker_ids_are_unique_when_two_nodes_share_a_readable_label() {
    let mut inv: Value = serde_json::from_str(&inventory_fixture()).unwrap();
    let ok = inv["nodes"][0].clone();
    let mut nodes = Vec::new();
    for name in ["bob@h", "bob_h", "node9", "bob_h.2"] {
        let mut n = ok.clone();
        n["node"] = name.into();
        nodes.push(n);
    }
    inv["nodes"] = nodes.into();
    let run = || {
        let out = bin()
            .args(["plan", "-q", "--max-processes", "2", "--source"])
            .arg(project_fixture())
            .env_remove("VIRTUAL_ENV")
            .write_stdin(inv.to_string())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let first = run();
    assert_eq!(first, run(), "byte-identical for the same input");
    let plan: Value = serde_json::from_str(&first).unwrap();
    let ids: Vec<&str> = plan["nodes"].as_array().unwrap().iter().flat_map(|n| n["workers"].as_array().unwrap()).map(|w| w.as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "worker ids collide: {ids:?}");
    assert_eq!(plan["nodes"][2]["workers"][0], "node9-0", "a unique label stays readable: {ids:?}");
    assert!(ids.iter().all(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))), "{ids:?}");
}

#[test]
fn plan_refuses_bad_numbers_and_dangerous_chdirs() {
    for bad in [["--mem-per-process", "0"], ["--mem-per-process", "-5"], ["--max-processes", "0"], ["--max-processes", "lots"], ["--mem-per-process", "1.5"]] {
        bin().arg("plan").args(bad).write_stdin(inventory_fixture()).assert().code(64).stdout("");
    }
    for chdir in ["", ".", "..", "../x", "~", "/", "/tmp/x", "a/../../b"] {
        bin()
            .args(["plan", "--chdir", chdir, "--source"])
            .arg(project_fixture())
            .write_stdin(inventory_fixture())
            .assert()
            .code(64)
            .stdout("")
            .stderr(predicate::str::contains("--chdir"));
    }
}

#[test]
fn plan_with_no_node_left_exits_69_with_reasons() {
    bin()
        .args(["plan", "--mem-per-process", "100000000", "--chdir", "x", "--source"])
        .arg(project_fixture())
        .write_stdin(inventory_fixture())
        .assert()
        .code(69)
        .stderr(predicate::str::contains("none of the given nodes can run tests").and(predicate::str::contains("bob@node2:2222: ")));
}

#[test]
fn plan_input_errors() {
    bin().arg("plan").write_stdin("").assert().code(66).stderr(predicate::str::contains("no input"));
    bin().arg("plan").write_stdin("{\"format_version\": 1, ").assert().code(65).stderr(predicate::str::contains("not a valid JSON"));
    bin().arg("plan").write_stdin(r#"{"format_version": 9, "kind": "inventory"}"#).assert().code(65).stderr(predicate::str::contains("newer"));
    bin().arg("plan").write_stdin(r#"{"format_version": 1, "kind": "recipe"}"#).assert().code(65).stderr(predicate::str::contains("\"recipe\""));
    bin().arg("plan").write_stdin(r#"{"format_version": 1, "kind": "inventory", "nodes": 3}"#).assert().code(65).stderr(predicate::str::contains("schema"));
}

/// A node is parsed once, when the document is read: a bad node string in any document is
/// one bad-input error (65) naming it, whichever stage reads it, before anything is touched.
#[test]
fn a_document_with_an_invalid_node_is_refused_naming_it() {
    let bad = "evil;rm -rf /";
    let mut plan = plan_fixture();
    plan["nodes"][0]["node"] = bad.into();
    for stage in [&["exec", "--", "true"][..], &["sync"][..]] {
        bin()
            .args(stage)
            .env_remove("VIRTUAL_ENV")
            .write_stdin(plan.to_string())
            .assert()
            .code(65)
            .stdout("")
            .stderr(predicate::str::contains("plan document does not match its schema").and(predicate::str::contains("\"evil;rm -rf /\"")));
    }
    // The same in the inventory a plan carries, in a dropped entry, and in plan's own input.
    let mut plan = plan_fixture();
    plan["inventory"]["nodes"][0]["node"] = "h:0".into();
    bin().args(["exec", "--", "true"]).write_stdin(plan.to_string()).assert().code(65).stdout("").stderr(predicate::str::contains("bad port \"0\""));
    let mut plan = plan_fixture();
    plan["dropped"][0]["node"] = "a@b@".into();
    bin().args(["exec", "--", "true"]).write_stdin(plan.to_string()).assert().code(65).stdout("").stderr(predicate::str::contains("\"a@b@\""));
    let mut inv: Value = serde_json::from_str(&inventory_fixture()).unwrap();
    inv["nodes"][0]["node"] = "-oProxyCommand=x".into();
    bin()
        .arg("plan")
        .write_stdin(inv.to_string())
        .assert()
        .code(65)
        .stdout("")
        .stderr(predicate::str::contains("inventory document does not match its schema").and(predicate::str::contains("-oProxyCommand=x")));
}

// ---- exec ----

fn plan_fixture() -> Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plan/defaults.out.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn usage_and_input_errors_write_nothing_on_stdout() {
    let plan = serde_json::to_string(&plan_fixture()).unwrap();
    bin()
        .args(["exec"])
        .write_stdin(plan.clone())
        .assert()
        .code(64)
        .stdout("")
        .stderr(predicate::str::contains("no command given"));
    bin().args(["exec", "--"]).write_stdin(plan.clone()).assert().code(64).stdout("");
    bin().args(["exec", "echo"]).write_stdin(plan.clone()).assert().code(64).stdout("");
    bin()
        .args(["exec", "--", "echo", "{slot}"])
        .write_stdin(plan.clone())
        .assert()
        .code(64)
        .stdout("")
        .stderr(predicate::str::contains("--per slot"));
    bin().args(["exec", "--per", "cluster", "--", "true"]).write_stdin(plan.clone()).assert().code(64).stdout("");
    bin().args(["exec", "--timeout", "0", "--", "true"]).write_stdin(plan.clone()).assert().code(64).stdout("");

    let mut empty = plan_fixture();
    empty["nodes"] = json!([]);
    bin()
        .args(["exec", "--", "true"])
        .write_stdin(empty.to_string())
        .assert()
        .code(69)
        .stdout("")
        .stderr(predicate::str::contains("no node to run on"));
    bin().args(["exec", "--", "true"]).write_stdin("").assert().code(66).stdout("");
    bin()
        .args(["exec", "--", "true"])
        .write_stdin(r#"{"format_version": 1, "kind": "inventory"}"#)
        .assert()
        .code(65)
        .stdout("")
        .stderr(predicate::str::contains("\"inventory\""));
    bin()
        .args(["exec", "--", "true"])
        .write_stdin(r#"{"format_version": 1, "kind": "sync", "nodes": 3}"#)
        .assert()
        .code(65)
        .stdout("");
}

#[test]
fn missing_parallel_is_exit_72_naming_it() {
    // A PATH with the real ssh but no GNU parallel.
    let bin_dir = tempfile::tempdir().unwrap();
    let ssh = std::process::Command::new("sh").args(["-c", "command -v ssh"]).output().unwrap();
    let ssh = String::from_utf8(ssh.stdout).unwrap();
    std::os::unix::fs::symlink(ssh.trim(), bin_dir.path().join("ssh")).unwrap();
    bin()
        .args(["exec", "--", "true"])
        .env("PATH", bin_dir.path())
        .write_stdin(plan_fixture().to_string())
        .assert()
        .code(72)
        .stdout("")
        .stderr(
            predicate::str::contains("parallel: not found on PATH")
                .and(predicate::str::contains("apt-get install parallel")),
        );
}

#[test]
fn exec_refuses_a_parallel_that_is_not_gnu_parallel() {
    // moreutils' `parallel` (a fake tool: the fault a real GNU parallel cannot show), with the
    // real ssh beside it.
    let bin_dir = tempfile::tempdir().unwrap();
    let ssh = std::process::Command::new("sh").args(["-c", "command -v ssh"]).output().unwrap();
    std::os::unix::fs::symlink(String::from_utf8(ssh.stdout).unwrap().trim(), bin_dir.path().join("ssh")).unwrap();
    let fake = bin_dir.path().join("parallel");
    std::fs::write(&fake, "#!/bin/sh\necho 'parallel [OPTIONS] command -- arguments'\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin()
        .args(["exec", "--", "true"])
        .env("PATH", bin_dir.path())
        .write_stdin(plan_fixture().to_string())
        .assert()
        .code(72)
        .stdout("")
        .stderr(predicate::str::contains("is not GNU parallel").and(predicate::str::contains(fake.display().to_string())).and(predicate::str::contains("apt-get install parallel")));
}

// ---- sync: refusals that need no node (the document is checked before anything is touched) ----

fn fixture_plan(chdir: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inv = std::fs::read(root.join("tests/golden/plan/inventory.in.json")).unwrap();
    let mut p = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    p.args(["plan", "-q", "--chdir", chdir, "--source"]).arg(root.join("tests/golden/project")).env_remove("VIRTUAL_ENV");
    serde_json::from_slice(&pipe(&mut p, &inv).stdout).unwrap()
}

#[test]
fn a_chdir_that_escapes_the_home_is_refused() {
    let mut plan = fixture_plan("pc");
    plan["options"]["chdir"] = "../../etc".into();
    plan["nodes"][0]["remote_dir"] = "/home/ci/../../etc".into();
    let s = sync(&plan.to_string(), &[]);
    assert_eq!(s.code, 65, "{}", s.stderr);
    assert!(s.stderr.contains("chdir") && s.stderr.contains("'..' is refused"), "{}", s.stderr);
    assert!(s.stdout.is_empty());

    // A remote_dir that does not match home + chdir is refused too.
    let mut plan = fixture_plan("pc");
    plan["nodes"][0]["remote_dir"] = "/home/ci".into();
    let s = sync(&plan.to_string(), &[]);
    assert_eq!(s.code, 65, "{}", s.stderr);
    assert!(s.stderr.contains("refusing to sync into it"), "{}", s.stderr);
}

#[test]
fn a_node_whose_home_is_not_absolute_is_dropped_and_the_others_go_on() {
    for home in ["", "relative/home"] {
        let mut plan = fixture_plan("pc");
        plan["inventory"]["nodes"][0]["facts"]["home"] = home.into();
        plan["nodes"][0]["remote_dir"] = format!("{home}/pc").into();
        // The other node (bob@node2:2222, given rsync here) does not resolve: it is tried over
        // ssh, and dropped for that.
        plan["inventory"]["nodes"][1]["facts"]["rsync_version"] = "3.2.7".into();
        let s = sync(&plan.to_string(), &["-q", "--connect-timeout", "2"]);
        assert_eq!(s.code, 69, "not a refusal of the whole document: {}", s.stderr);
        let doc: Value = serde_json::from_str(&s.stdout).unwrap_or_else(|e| panic!("{e}: {}", s.stdout));
        let dropped = doc["dropped"].as_array().unwrap();
        let mine = dropped.iter().find(|d| d["node"] == "node1").unwrap_or_else(|| panic!("{dropped:?}"));
        assert_eq!((mine["stage"].as_str(), mine["error_kind"].as_str()), (Some("sync"), Some("unsafe_target")), "{mine}");
        assert!(mine["message"].as_str().unwrap().contains("HOME"), "{mine}");
        let other = dropped.iter().find(|d| d["node"] == "bob@node2:2222").unwrap_or_else(|| panic!("{dropped:?}"));
        assert_eq!((other["stage"].as_str(), other["error_kind"].as_str()), (Some("sync"), Some("dns")), "the other node was tried: {other}");
    }
}

#[test]
fn exit_72_without_gnu_parallel() {
    let plan = fixture_plan("pc").to_string();
    let tools = tempfile::tempdir().unwrap();
    for t in ["rsync", "id", "uname", "sh"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{t}"), tools.path().join(t)).unwrap();
    }
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    cmd.args(["sync", "-q"]).env("PATH", tools.path());
    let out = pipe(&mut cmd, plan.as_bytes());
    assert_eq!(out.status.code(), Some(72), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("parallel: not found") && text(&out.stderr).contains("apt-get install parallel"), "{}", text(&out.stderr));

    // moreutils' `parallel` is not GNU parallel (a fake tool: the fault a real one cannot show here).
    let fake = tools.path().join("parallel");
    std::fs::write(&fake, "#!/bin/sh\necho 'parallel [OPTIONS] command -- arguments'\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    cmd.args(["sync", "-q"]).env("PATH", tools.path());
    let out = pipe(&mut cmd, plan.as_bytes());
    assert_eq!(out.status.code(), Some(72), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not GNU parallel"), "{}", text(&out.stderr));
}

#[test]
fn an_unknown_cipher_is_a_usage_error_before_any_node_is_touched() {
    let s = sync(&fixture_plan("pc").to_string(), &["-q", "--rsync-cipher", "nosuch-cipher"]);
    assert_eq!(s.code, 64, "{}", s.stderr);
    assert!(s.stderr.contains("--rsync-cipher \"nosuch-cipher\"") && s.stderr.contains("aes128-gcm@openssh.com"), "{}", s.stderr);
    assert!(s.stdout.is_empty());
}

/// A `sync -q` of the fixture plan with only `tools` on PATH (plus what it links in).
fn sync_with_tools(tools: &Path) -> std::process::Output {
    let plan = fixture_plan("pc").to_string();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    cmd.args(["sync", "-q"]).env("PATH", tools);
    pipe(&mut cmd, plan.as_bytes())
}

fn fake_tool(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn exit_72_with_macos_old_rsync_or_openrsync_naming_it() {
    // Fake tools: macOS's rsync 2.6.9 and openrsync cannot be installed here, and what they
    // print for --version is the fault (their output, as they print it).
    let tools = tempfile::tempdir().unwrap();
    for t in ["parallel", "perl", "id", "uname", "sh"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{t}"), tools.path().join(t)).unwrap();
    }
    for (banner, names) in [
        ("rsync  version 2.6.9  protocol version 29\nCopyright (C) 1996-2006 by Andrew Tridgell, Wayne Davison, and others.", "rsync 2.6.9"),
        ("openrsync: protocol version 29\nrsync version 2.6.9 compatible", "openrsync"),
    ] {
        let lines: Vec<String> = banner.lines().map(|l| format!("'{l}'")).collect();
        fake_tool(tools.path(), "rsync", &format!("printf '%s\\n' {}", lines.join(" ")));
        let out = sync_with_tools(tools.path());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(72), "{err}");
        assert!(err.contains(names) && err.contains("3.1") && err.contains("brew install rsync"), "{err}");
        assert!(out.stdout.is_empty());
    }
    // A real rsync 3.x passes this check (the run then fails later, for want of nodes).
    std::fs::remove_file(tools.path().join("rsync")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/rsync", tools.path().join("rsync")).unwrap();
    let out = sync_with_tools(tools.path());
    assert!(!text(&out.stderr).contains("brew install rsync"), "{}", text(&out.stderr));
}

#[test]
fn exit_72_with_a_parallel_that_is_not_gnu_parallel_says_how_to_get_it() {
    let tools = tempfile::tempdir().unwrap();
    for t in ["rsync", "id", "uname", "sh"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{t}"), tools.path().join(t)).unwrap();
    }
    // moreutils' parallel knows no --version (a fake: the foreign tool is not installed here).
    fake_tool(tools.path(), "parallel", "echo 'parallel: invalid option -- -' >&2\necho 'parallel [OPTIONS] command -- arguments' >&2\nexit 1");
    let out = sync_with_tools(tools.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(72), "{err}");
    assert!(err.contains("not GNU parallel") && err.contains("moreutils"), "{err}");
    assert!(err.contains("brew install parallel") && err.contains("apt-get install parallel"), "{err}");
    assert!(err.contains(&tools.path().join("parallel").display().to_string()), "names the program it ran: {err}");
}
