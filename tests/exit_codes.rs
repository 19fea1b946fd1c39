//! One test per row of the README's exit-code table (the rows that need nodes or pytest are
//! tested where those live: 75 in the sync and launcher tests, exec's 130 in the exec tests,
//! sync's 130 in the sync tests, pytest's pass-through in the launcher tests).

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

fn bin() -> Command {
    Command::cargo_bin("pytest-cloud").unwrap()
}

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plan/inventory.in.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn project() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/project")
}

fn plan(inventory: &Value, extra: &[&str]) -> assert_cmd::assert::Assert {
    bin().args(["plan", "-q", "--chdir", "pc", "--source"]).arg(project()).args(extra).write_stdin(inventory.to_string()).assert()
}

#[test]
fn exit_0_when_every_node_is_planned() {
    let mut inv = fixture();
    inv["nodes"].as_array_mut().unwrap().retain(|n| n["status"] == "ok");
    plan(&inv, &[]).code(0);
}

#[test]
fn exit_1_when_some_node_is_dropped_but_the_document_is_written() {
    let out = plan(&fixture(), &[]).code(1);
    let doc: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(doc["dropped"][0]["node"], "node3");
}

#[test]
fn exit_64_on_usage_errors() {
    bin().args(["probe", "--node=a;b"]).assert().code(64);
    bin().args(["plan", "--no-such-flag"]).assert().code(64);
    bin().args(["pytest", "--cloud-mem-per-process=0"]).assert().code(64);
}

#[test]
fn exit_65_on_a_bad_document() {
    bin().arg("plan").write_stdin("not json").assert().code(65);
}

#[test]
fn exit_66_without_input() {
    bin().arg("plan").write_stdin("").assert().code(66);
}

#[test]
fn exit_69_when_no_node_is_left() {
    plan(&fixture(), &["--mem-per-process", "999999999"]).code(69);
}

#[test]
fn exit_72_when_ssh_is_missing() {
    bin()
        .args(["probe", "--node", "somewhere"])
        .env("PATH", "/nonexistent")
        .assert()
        .code(72)
        .stderr(predicates::str::contains("ssh: not found on PATH"));
}

#[test]
fn exit_74_when_the_runtime_dir_is_unusable() {
    let f = tempfile::NamedTempFile::new().unwrap();
    bin()
        .args(["probe", "--node", "somewhere"])
        .env("PYTEST_CLOUD_RUNTIME_DIR", f.path())
        .assert()
        .code(74)
        .stderr(predicates::str::contains("refusing to keep ssh sockets there"));
}

#[test]
fn exit_0_on_a_closed_stdout() {
    // `| head -c 0`: the reader is gone before the first write, so that write fails with EPIPE
    // whatever the document's size (a live reader that closes later could instead swallow a
    // document that fits in the pipe buffer, and the error path would never run). The child's
    // stdout is the write end of a pipe whose read end is closed before it starts.
    let mut inv = fixture();
    inv["nodes"].as_array_mut().unwrap().retain(|n| n["status"] == "ok");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .args(["plan", "-q", "--chdir", "pc", "--source"])
        .arg(project())
        .stdin(std::process::Stdio::piped())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), inv.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "status {:?}, stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn exit_70_when_an_internal_step_fails() {
    // No thread can be started (RLIMIT_NPROC of 1, `prlimit` from util-linux): probe cannot
    // make its pool, which is pytest-cloud's own failure, not the nodes' or the input's.
    // The limit does not bind root, so as root the binary runs as `nobody`, from a copy that
    // user can read wherever the checkout is.
    let dir = tempfile::Builder::new().prefix("pc-exit70-").tempdir().unwrap();
    let copy = dir.path().join("pytest-cloud");
    std::fs::copy(assert_cmd::cargo::cargo_bin("pytest-cloud"), &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let root = String::from_utf8_lossy(&std::process::Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
    if root {
        let chown = std::process::Command::new("chown").args(["nobody"]).arg(&runtime).status().unwrap();
        assert!(chown.success(), "chown nobody {}", runtime.display());
    }
    let mut cmd = if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "nobody", "--", "prlimit", "--nproc=1"]);
        c
    } else {
        let mut c = std::process::Command::new("prlimit");
        c.arg("--nproc=1");
        c
    };
    let out = cmd
        .arg(&copy)
        .args(["probe", "-q", "--node", "somewhere"])
        .env("PYTEST_CLOUD_RUNTIME_DIR", &runtime)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run prlimit (util-linux) and, as root, runuser");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("pytest-cloud: error: thread pool:"), "{stderr}");
    assert!(out.stdout.is_empty());
}
