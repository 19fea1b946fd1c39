//! `exec` end to end: real sshd nodes on loopback, real GNU parallel and ssh. The input is
//! made by the real `probe | plan` pipeline; the nodes' directories are made with plain ssh
//! (sync is another stage). Every run's stdout is checked to be JSON Lines with exactly one
//! summary, last. Deterministic parts are compared with golden files in tests/golden/exec
//! (durations zeroed, jobs in document order); `PYTEST_CLOUD_BLESS=1` rewrites them.

use crate::common;

use assert_cmd::Command;
use common::cluster::Cluster;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn bin() -> Command {
    Command::cargo_bin("pytest-cloud").unwrap()
}

/// A private directory for ssh's control sockets: a fresh one means no shared connection yet.
fn runtime_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("pce-").tempdir_in("/tmp").unwrap()
}

struct Fixture {
    cluster: Cluster,
    /// The plan document, with exactly two slots per node whatever this machine's CPUs.
    plan: Value,
    /// The runtime directory probe used: its shared connections are still open.
    runtime: tempfile::TempDir,
    _project: tempfile::TempDir,
}

fn setup(nodes: usize) -> Fixture {
    let cluster = Cluster::up(nodes);
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("pytest.ini"), "[pytest]\n").unwrap();
    let runtime = runtime_dir();
    let names: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    let inventory = bin()
        .args(["probe", "-q", "--ssh-config"])
        .arg(cluster.ssh_config())
        .args(["--nodes", &names.join(" ")])
        .env("PYTEST_CLOUD_RUNTIME_DIR", runtime.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let planned = bin()
        .args(["plan", "-q", "--chdir", "x", "--source"])
        .arg(project.path())
        .env_remove("VIRTUAL_ENV")
        .write_stdin(inventory)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let mut plan: Value = serde_json::from_slice(&planned).unwrap();
    for n in plan["nodes"].as_array_mut().unwrap() {
        let name = n["node"].as_str().unwrap().to_string();
        n["slots"] = json!(2);
        n["workers"] = json!([format!("{name}-0"), format!("{name}-1")]);
        let dir = n["remote_dir"].as_str().unwrap();
        let out = cluster.ssh(&name, &format!("mkdir -p {}", shell_words::quote(dir)));
        assert!(out.status.success(), "mkdir on {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Fixture { cluster, plan, runtime, _project: project }
}

/// One exec run: exit code, job records (in the order written), the summary, stderr, and
/// stdout's lines as printed.
struct Run {
    code: i32,
    jobs: Vec<Value>,
    summary: Value,
    stderr: String,
    lines: Vec<String>,
}

impl Run {
    fn job(&self, node: &str, slot: Option<u64>) -> &Value {
        self.jobs
            .iter()
            .find(|j| j["node"] == node && j["slot"].as_u64() == slot)
            .unwrap_or_else(|| panic!("no record for {node} slot {slot:?}: {:#?}", self.jobs))
    }
}

/// Checks that stdout is JSON Lines in the envelope with one summary, last, agreeing with the jobs.
fn parse_records(stdout: &[u8]) -> (Vec<Value>, Value) {
    let text = String::from_utf8(stdout.to_vec()).expect("stdout is UTF-8");
    assert!(text.ends_with('\n'), "stdout ends with a newline: {text:?}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\nall:\n{text}")))
        .collect();
    let (last, jobs) = lines.split_last().expect("at least the summary");
    assert_eq!(last["type"], "summary", "the summary is the last line:\n{text}");
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|r| {
            assert_eq!(r["type"], "job", "only job records before the summary:\n{text}");
            assert_eq!(r.as_object().unwrap().len(), 2, "envelope is type + data: {r}");
            r["data"].clone()
        })
        .collect();
    let s = &last["data"];
    assert_eq!(s["jobs"].as_u64().unwrap() as usize, jobs.len(), "{text}");
    let ok = jobs.iter().filter(|j| j["exit_code"] == 0 && j["error"].is_null() && j["timed_out"] == false).count();
    assert_eq!(s["succeeded"].as_u64().unwrap() as usize, ok, "{text}");
    assert_eq!(s["failed"].as_u64().unwrap() as usize, jobs.len() - ok, "{text}");
    let mut seqs: Vec<u64> = jobs.iter().map(|j| j["job"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=jobs.len() as u64).collect::<Vec<_>>(), "one record per job");
    (jobs, s.clone())
}

fn exec(doc: &Value, runtime: &Path, args: &[&str]) -> Run {
    let out = bin()
        .arg("exec")
        .args(args)
        .env("PYTEST_CLOUD_RUNTIME_DIR", runtime)
        .write_stdin(serde_json::to_vec(doc).unwrap())
        .output()
        .unwrap();
    let (jobs, summary) = parse_records(&out.stdout);
    let code = out.status.code().expect("exec exited");
    let all_ok = summary["failed"] == 0;
    assert_eq!(code, if all_ok { 0 } else { 1 }, "exit 0 only when every job succeeded");
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    Run { code, jobs, summary, stderr: String::from_utf8_lossy(&out.stderr).into_owned(), lines }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/exec")
}

/// `"key":123` -> `"key":0` in a printed line.
fn zero_field(line: &str, key: &str) -> String {
    let pat = format!("\"{key}\":");
    match line.find(&pat) {
        None => line.to_string(),
        Some(i) => {
            let start = i + pat.len();
            let digits = line[start..].bytes().take_while(u8::is_ascii_digit).count();
            format!("{}0{}", &line[..start], &line[start + digits..])
        }
    }
}

/// Compares the deterministic part of a run, as printed (field order included), with
/// `tests/golden/exec/<name>.out.jsonl`: job lines in document order with `duration_ms` zeroed,
/// then the summary line with `elapsed_ms` zeroed.
fn assert_golden(name: &str, run: &Run) {
    let (summary, jobs) = run.lines.split_last().unwrap();
    let mut jobs: Vec<(u64, String)> = jobs
        .iter()
        .map(|l| {
            (serde_json::from_str::<Value>(l).unwrap()["data"]["job"].as_u64().unwrap(), zero_field(l, "duration_ms"))
        })
        .collect();
    jobs.sort();
    let mut text: String = jobs.into_iter().map(|(_, l)| l + "\n").collect();
    text.push_str(&zero_field(summary, "elapsed_ms"));
    text.push('\n');
    let path = golden_dir().join(format!("{name}.out.jsonl"));
    if common::require::bless() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with PYTEST_CLOUD_BLESS=1)", path.display()));
    assert_eq!(text, want, "golden {}", path.display());
}

/// Live processes of the node's unix user whose command line contains `needle`.
fn node_processes(cluster: &Cluster, alias: &str, needle: &str) -> Vec<String> {
    let status = cluster.status();
    let user = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(alias))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or_else(|| panic!("{alias} not in status:\n{status}"))
        .to_string();
    let out = std::process::Command::new("ps").args(["-u", &user, "-o", "stat=,args="]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim_start().starts_with('Z') && l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn per_slot_echo_gives_one_record_per_slot_over_one_connection_per_node() {
    let f = setup(2);
    let before: Vec<usize> = ["node1", "node2"].iter().map(|n| f.cluster.connections(n)).collect();
    // A fresh runtime directory: no shared connection yet, so exec opens its own.
    let fresh = runtime_dir();
    let run = exec(&f.plan, fresh.path(), &["--per", "slot", "--", "sh", "-c", "echo {node} {slot}"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.jobs.len(), 4);
    for node in ["node1", "node2"] {
        for slot in [0, 1] {
            let j = run.job(node, Some(slot));
            assert_eq!(j["stdout_tail"], format!("{node} {slot}\n"));
            assert_eq!(j["worker"], format!("{node}-{slot}"));
        }
    }
    assert_golden("per_slot_echo", &run);
    let after: Vec<usize> = ["node1", "node2"].iter().map(|n| f.cluster.connections(n)).collect();
    assert_eq!(
        after,
        before.iter().map(|b| b + 1).collect::<Vec<_>>(),
        "one ssh authentication per node for all its jobs"
    );
    assert!(run.stderr.contains("exec: 4 of 4 jobs succeeded"), "{}", run.stderr);

    // --per node (the default): one job per node; {slots} is the node's slot count.
    let run = exec(&f.plan, f.runtime.path(), &["--", "echo", "-j{slots}", "{node}"]);
    assert_eq!(run.jobs.len(), 2);
    for node in ["node1", "node2"] {
        let j = run.job(node, None);
        assert_eq!(j["stdout_tail"], format!("-j2 {node}\n"));
        assert!(j["worker"].is_null());
    }

    // The real `sync` stage: node1's directory holds a stranger's file, so sync refuses it
    // (unsafe_target) and its document lists node2 only; exec runs there only, in the synced copy.
    let dir1 = f.plan["nodes"][0]["remote_dir"].as_str().unwrap();
    let out = f.cluster.ssh("node1", &format!("touch {}/not-ours", shell_words::quote(dir1)));
    assert!(out.status.success());
    let sync = bin()
        .args(["sync", "-q"])
        .env("PYTEST_CLOUD_RUNTIME_DIR", f.runtime.path())
        .env_remove("VIRTUAL_ENV")
        .write_stdin(serde_json::to_vec(&f.plan).unwrap())
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let sync: Value = serde_json::from_slice(&sync).unwrap();
    assert_eq!(sync["dropped"][0]["node"], "node1", "{sync}");
    let run = exec(&sync, f.runtime.path(), &["--per", "slot", "-q", "--", "sh", "-c", "echo {worker}; ls pytest.ini"]);
    let outs: Vec<&str> = run.jobs.iter().map(|j| j["stdout_tail"].as_str().unwrap()).collect();
    assert_eq!(run.code, 0, "{outs:?}");
    assert_eq!(run.job("node2", Some(1))["stdout_tail"], "node2-1\npytest.ini\n");
    assert_eq!(run.jobs.len(), 2, "{outs:?}");
    assert_eq!(run.stderr, "", "-q: nothing on stderr");
}

#[test]
fn placeholders_env_and_quoting_reach_the_node_unchanged() {
    let f = setup(2);
    let script = "printf '%s|' {node} {slot} {slots} {worker} {dir} {python} \
        \"$PYTEST_CLOUD_NODE\" \"$PYTEST_CLOUD_SLOT\" \"$PYTEST_CLOUD_SLOTS\" \"$PYTEST_CLOUD_WORKER\" \"$(pwd)\"";
    let run = exec(&f.plan, f.runtime.path(), &["--per", "slot", "--", "sh", "-c", script]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for n in f.plan["nodes"].as_array().unwrap() {
        let node = n["node"].as_str().unwrap();
        let (dir, python) = (n["remote_dir"].as_str().unwrap(), n["python"].as_str().unwrap());
        for slot in 0..2u64 {
            let want = format!("{node}|{slot}|2|{node}-{slot}|{dir}|{python}|{node}|{slot}|2|{node}-{slot}|{dir}|");
            assert_eq!(run.job(node, Some(slot))["stdout_tail"], want);
        }
    }
    // Per node: the node's variables are set, the slot's are not.
    let run = exec(
        &f.plan,
        f.runtime.path(),
        &[
            "--",
            "sh",
            "-c",
            "echo \"$PYTEST_CLOUD_NODE/$PYTEST_CLOUD_SLOTS/${PYTEST_CLOUD_SLOT-unset}/${PYTEST_CLOUD_WORKER-unset}\"",
        ],
    );
    assert_eq!(run.job("node1", None)["stdout_tail"], "node1/2/unset/unset\n");

    // Every word arrives as one word, byte for byte: spaces, quotes, `;`, `$()`, globs, newlines.
    let tricky =
        ["a b", "it's \"quoted\"; echo injected", "$(id) `id` $HOME", "*", "", "two\nlines", "back\\slash", "{}", "-n"];
    let mut args = vec!["--", "printf", "[%s]\\n"];
    args.extend(tricky);
    let run = exec(&f.plan, f.runtime.path(), &args);
    let want: String = tricky.iter().map(|w| format!("[{w}]\n")).collect();
    assert_eq!(run.job("node2", None)["stdout_tail"], want);
    assert_eq!(run.job("node2", None)["command"], json!(args[1..]));
}

#[test]
fn failures_are_records_with_their_status_and_exit_1() {
    let f = setup(2);
    // One failing slot: its record has exit_code 3 and its stderr; the others succeed.
    let run = exec(
        &f.plan,
        f.runtime.path(),
        &["--per", "slot", "--", "sh", "-c", "if [ {worker} = node2-1 ]; then echo boom >&2; exit 3; fi; echo fine"],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.summary["failed"], 1);
    let bad = run.job("node2", Some(1));
    assert_eq!((&bad["exit_code"], &bad["signal"], &bad["error"]), (&json!(3), &Value::Null, &Value::Null));
    assert_eq!(bad["stderr_tail"], "boom\n");
    assert_golden("one_slot_fails", &run);
    assert!(run.stderr.contains("node2-1: exit 3"), "{}", run.stderr);

    // Killed by a signal: the signal, no exit code.
    let run = exec(&f.plan, f.runtime.path(), &["--", "sh", "-c", "kill -KILL $$"]);
    for node in ["node1", "node2"] {
        let j = run.job(node, None);
        assert_eq!((&j["exit_code"], &j["signal"]), (&Value::Null, &json!(9)), "{j}");
    }
    assert_eq!(run.code, 1);

    // A command's own 255 is its status, not an ssh failure.
    let run = exec(&f.plan, f.runtime.path(), &["--", "sh", "-c", "exit 255"]);
    let j = run.job("node1", None);
    assert_eq!((&j["exit_code"], &j["error"]), (&json!(255), &Value::Null), "{j}");

    // A node whose directory is missing (not synced): said so, in its record only.
    let mut plan = f.plan.clone();
    plan["nodes"][0]["remote_dir"] = json!("/nonexistent/pytest-cloud-test");
    let run = exec(&plan, f.runtime.path(), &["--", "true"]);
    let j = run.job("node1", None);
    assert!(j["error"].as_str().unwrap().contains("no directory /nonexistent/pytest-cloud-test"), "{j}");
    assert_eq!(run.job("node2", None)["exit_code"], 0);
}

#[test]
fn timeout_kills_the_job_on_the_node_and_output_dir_keeps_everything() {
    let f = setup(1);
    let run =
        exec(&f.plan, f.runtime.path(), &["--timeout", "1", "--", "sh", "-c", "echo started; sleep 67; echo never"]);
    let j = run.job("node1", None);
    assert_eq!(j["timed_out"], true, "{j}");
    assert_eq!(j["signal"], 15, "{j}");
    assert!(j["error"].as_str().unwrap().contains("timed out after 1s"), "{j}");
    assert_eq!(j["stdout_tail"], "started\n");
    assert_eq!(run.summary["timed_out"], 1);
    assert!(node_processes(&f.cluster, "node1", "sleep 67").is_empty(), "nothing left running on the node");

    // --output-dir: full output in files named by the records; the tail is the last N bytes.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("runs");
    let dir_arg = dir.to_str().unwrap();
    let run = exec(
        &f.plan,
        f.runtime.path(),
        &[
            "--per",
            "slot",
            "--output-dir",
            dir_arg,
            "--tail-bytes",
            "6",
            "--",
            "sh",
            "-c",
            "seq 1 1000; echo err-{slot} >&2; exit {slot}",
        ],
    );
    let full: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    for slot in 0..2u64 {
        let j = run.job("node1", Some(slot));
        assert_eq!(j["exit_code"], slot);
        assert_eq!(j["stdout_tail"], "\n1000\n");
        assert_eq!(j["stdout_bytes"], full.len());
        let stdout = std::fs::read_to_string(j["stdout_path"].as_str().unwrap()).unwrap();
        assert_eq!(stdout, full);
        let stderr_path = j["stderr_path"].as_str().unwrap();
        assert!(Path::new(stderr_path).starts_with(&dir), "{stderr_path}");
        assert_eq!(std::fs::read_to_string(stderr_path).unwrap(), format!("err-{slot}\n"), "only the command's stderr");
        assert_eq!(j["stderr_bytes"], 6);
    }
}

#[test]
fn a_stopped_node_gives_ssh_failed_records_while_the_others_succeed() {
    let f = setup(2);
    f.cluster.stop("node2");
    // Fresh runtime directories: no shared connection left over from the probe. With
    // connection sharing the failure is found once per node; without it, by each job's ssh.
    for extra in [&[][..], &["--control-persist", "0"][..]] {
        let fresh = runtime_dir();
        let mut args = vec!["--per", "slot"];
        args.extend(extra);
        args.extend(["--", "echo", "hi"]);
        let run = exec(&f.plan, fresh.path(), &args);
        assert_eq!(run.code, 1, "{extra:?}");
        for slot in 0..2 {
            let ok = run.job("node1", Some(slot));
            assert_eq!((&ok["exit_code"], &ok["stdout_tail"]), (&json!(0), &json!("hi\n")), "{extra:?}");
            let bad = run.job("node2", Some(slot));
            assert_eq!(bad["exit_code"], 255, "{extra:?}: {bad}");
            let error = bad["error"].as_str().unwrap();
            assert!(error.starts_with("ssh failed: ") && error.contains("Connection refused"), "{extra:?}: {error}");
        }
        assert_eq!((&run.summary["succeeded"], &run.summary["failed"]), (&json!(2), &json!(2)));
    }
}

#[test]
fn the_users_gnu_parallel_settings_do_not_change_what_exec_does() {
    let f = setup(1);
    let home = tempfile::Builder::new().prefix("pc-home-").tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".parallel")).unwrap();
    std::fs::write(home.path().join(".parallel/config"), "--dry-run\n").unwrap();
    let cases: [(&str, &str, &std::ffi::OsStr); 3] = [
        ("PARALLEL=--dry-run", "PARALLEL", "--dry-run".as_ref()),
        ("--dry-run in ~/.parallel/config", "HOME", home.path().as_os_str()),
        ("PARALLEL_SHELL=/bin/false", "PARALLEL_SHELL", "/bin/false".as_ref()),
    ];
    for (how, key, value) in cases {
        let out = bin()
            .args(["exec", "--per", "slot", "--", "sh", "-c", "echo {worker}"])
            .env("PYTEST_CLOUD_RUNTIME_DIR", f.runtime.path())
            .env(key, value)
            .write_stdin(serde_json::to_vec(&f.plan).unwrap())
            .output()
            .unwrap();
        let (jobs, summary) = parse_records(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "with {how}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(summary["succeeded"], 2, "with {how}");
        let mut tails: Vec<&str> = jobs.iter().map(|j| j["stdout_tail"].as_str().unwrap()).collect();
        tails.sort();
        assert_eq!(tails, ["node1-0\n", "node1-1\n"], "with {how}: the commands ran, not only printed");
    }
}

#[test]
fn exit_130_on_ctrl_c_with_a_record_per_job_the_summary_last_and_nothing_left_on_the_node() {
    use std::os::unix::process::CommandExt;
    let f = setup(1);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"));
    cmd.args(["exec", "--per", "slot", "--", "sleep", "71"])
        .env("PYTEST_CLOUD_RUNTIME_DIR", f.runtime.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group, so the SIGINT below reaches exec and its children as a
        // terminal's Ctrl-C does, and nothing else.
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&serde_json::to_vec(&f.plan).unwrap()).unwrap();
    }
    let started = std::time::Instant::now();
    while node_processes(&f.cluster, "node1", "sleep 71").len() < 2 {
        assert!(started.elapsed().as_secs() < 60, "the jobs never started on the node");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kill = std::process::Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "exit 130, not killed by the signal: {:?} {stderr}", out.status);
    let (jobs, summary) = parse_records(&out.stdout);
    assert_eq!(jobs.len(), 2, "a record per job: {jobs:#?}");
    assert_eq!(summary["succeeded"], 0);
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Nothing of the jobs is left on the node: the wrapper saw its ssh go and ended the
    // command's process group. A bound on waiting for something that must happen (TERM, then
    // KILL 2 s later), not a performance threshold.
    let mut left = node_processes(&f.cluster, "node1", "sleep 71");
    for _ in 0..600 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        left = node_processes(&f.cluster, "node1", "sleep 71");
    }
    assert!(left.is_empty(), "the jobs still run on the node after Ctrl-C: {left:#?}");
}

#[test]
fn a_node_killed_mid_exec_gives_its_jobs_node_lost_records_while_the_others_succeed() {
    use std::os::unix::process::CommandExt;
    let f = setup(2);
    // Every job waits for this file (loopback nodes share /tmp), so node1's jobs end when the
    // test says, after node2 is gone.
    let go = format!("/tmp/pc-exec-go-{}", std::process::id());
    let _ = std::fs::remove_file(&go);
    let script = format!("while [ ! -e {go} ]; do sleep 0.1; done; echo done-{{worker}}");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pytest-cloud"))
        .args(["exec", "--per", "slot", "--", "sh", "-c", &script])
        .env("PYTEST_CLOUD_RUNTIME_DIR", f.runtime.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&serde_json::to_vec(&f.plan).unwrap()).unwrap();
    }
    let needle = format!("[ ! -e {go} ]");
    for node in ["node1", "node2"] {
        let mut n = 0;
        // A bound on waiting for the jobs to start, not a performance threshold.
        for _ in 0..1200 {
            n = node_processes(&f.cluster, node, &needle).len();
            if n >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(n >= 2, "the jobs never started on {node}");
    }
    f.cluster.kill("node2");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&go);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (jobs, summary) = parse_records(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "some jobs failed: exit 1: {stderr}");
    let run = Run { code: 1, jobs, summary, stderr: stderr.to_string(), lines: Vec::new() };
    for slot in 0..2 {
        let ok = run.job("node1", Some(slot));
        assert_eq!((&ok["exit_code"], &ok["error"]), (&json!(0), &Value::Null), "{ok}");
        assert_eq!(ok["stdout_tail"], format!("done-node1-{slot}\n"));
        let lost = run.job("node2", Some(slot));
        let error = lost["error"].as_str().unwrap_or_else(|| panic!("no error: {lost}"));
        assert!(error.starts_with("node lost: "), "{error}\n{}", run.stderr);
        assert_eq!(lost["exit_code"], 255, "{lost}");
    }
    assert_eq!((&run.summary["succeeded"], &run.summary["failed"]), (&json!(2), &json!(2)));
    assert!(run.stderr.contains("node2-0: node lost: "), "{}", run.stderr);
}
