//! `probe` and `plan` end to end: real sshd nodes on loopback. The golden stdin -> stdout
//! pairs for `plan` and the input errors of both need no node: tests/stages.rs.

use crate::common;

use assert_cmd::Command;
use common::cluster::Cluster;
use serde_json::Value;

fn bin() -> Command {
    Command::cargo_bin("pytest-cloud").unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn nproc() -> u64 {
    let out = std::process::Command::new("nproc").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// ssh client processes (not sshd) whose command line names `word`.
fn ssh_processes_naming(word: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().map(|a| a == "ssh" || a.ends_with("/ssh")).unwrap_or(false) && args.iter().any(|a| a == word) {
            found.push(args.join(" "));
        }
    }
    found
}

#[test]
fn probe_then_plan_keeps_good_nodes_and_explains_the_dropped_ones() {
    let c = Cluster::up(3);
    c.refuse("gone");
    c.hang("hung", 60);
    let cfg = c.ssh_config();
    let probe = bin()
        .args(["probe", "--ssh-config"])
        .arg(&cfg)
        .args(["--nodes", "node1 node2 node3", "--node", "gone", "--node", "hung", "--connect-timeout", "2"])
        .assert()
        .code(1);
    let inv = json(&probe.get_output().stdout);
    let stderr = String::from_utf8_lossy(&probe.get_output().stderr).into_owned();
    assert_eq!(inv["kind"], "inventory");
    let nodes = inv["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["node1", "node2", "node3", "gone", "hung"], "order as given");
    let homes: std::collections::BTreeSet<&str> = nodes[..3].iter().map(|n| n["facts"]["home"].as_str().unwrap()).collect();
    assert_eq!(homes.len(), 3, "each node is its own user with its own home");
    for n in &nodes[..3] {
        assert_eq!(n["status"], "ok", "{n}");
        assert_eq!(n["facts"]["cpus"].as_u64().unwrap(), nproc());
        assert!(n["facts"]["mem_available_bytes"].as_u64().unwrap() > 0);
        assert!(n["facts"]["rsync_version"].is_string());
        assert!(n["facts"]["pythons"]["python3"]["version"].as_str().unwrap().starts_with("3."));
    }
    assert_eq!(nodes[3]["error_kind"], "refused");
    assert!(nodes[3]["message"].as_str().unwrap().contains("Connection refused"));
    assert_eq!(nodes[4]["error_kind"], "timeout");
    assert!(stderr.contains("gone: unreachable (refused"), "{stderr}");
    assert!(ssh_processes_naming("hung").is_empty(), "the hung node's ssh is gone: {:?}", ssh_processes_naming("hung"));

    let plan = bin().args(["plan", "--mem-per-process", "100", "--explain", "--chdir", "pc_test"]).write_stdin(probe.get_output().stdout.clone()).assert().code(1);
    let plan_doc = json(&plan.get_output().stdout);
    let explain = String::from_utf8_lossy(&plan.get_output().stderr).into_owned();
    let planned = plan_doc["nodes"].as_array().unwrap();
    assert_eq!(planned.len(), 3);
    for (i, n) in planned.iter().enumerate() {
        assert_eq!(n["slots"].as_u64().unwrap(), nproc());
        assert_eq!(n["workers"][0], format!("node{}-0", i + 1));
        assert!(n["remote_dir"].as_str().unwrap().ends_with("/pc_test"));
    }
    let dropped: Vec<(&str, &str)> = plan_doc["dropped"].as_array().unwrap().iter().map(|d| (d["node"].as_str().unwrap(), d["error_kind"].as_str().unwrap())).collect();
    assert_eq!(dropped, [("gone", "refused"), ("hung", "timeout")]);
    assert!(explain.contains("MiB per process"), "{explain}");
    assert_eq!(plan_doc["inventory"], inv, "the plan carries its inventory forward");
}

#[test]
fn probe_reads_nodes_from_stdin_and_counts_one_connection_per_node() {
    let c = Cluster::up(2);
    let before = c.connections("node1");
    let out = bin()
        .args(["probe", "-q", "--ssh-config"])
        .arg(c.ssh_config())
        .write_stdin(r#"{"format_version": 1, "kind": "nodes", "nodes": ["node1", "node2", "node1"]}"#)
        .assert()
        .success()
        .stderr("");
    let inv = json(&out.get_output().stdout);
    assert_eq!(inv["nodes"].as_array().unwrap().len(), 2, "de-duplicated");
    assert_eq!(c.connections("node1"), before + 1);
    // Re-probing from an inventory reuses the shared connection: no new authentication.
    bin().args(["probe", "-q"]).write_stdin(out.get_output().stdout.clone()).assert().success();
    assert_eq!(c.connections("node1"), before + 1, "ControlMaster connection reused");
}

#[test]
fn probe_reports_missing_python_as_no_python() {
    let c = Cluster::up(1);
    let out = bin()
        .args(["probe", "--python", "python9.99", "--node", "node1", "--ssh-config"])
        .arg(c.ssh_config())
        .assert()
        .code(69);
    let inv = json(&out.get_output().stdout);
    assert_eq!(inv["nodes"][0]["error_kind"], "no_python");
    assert!(inv["nodes"][0]["message"].as_str().unwrap().contains("python9.99"));
}


/// Issue 17: a node given as `alias:port` keeps the user's `Host alias` block (HostName,
/// User, IdentityFile, IdentitiesOnly, its known_hosts), as `ssh -p PORT alias` would: the
/// probe reaches it as that user, and a job runs there.
#[test]
fn a_config_alias_given_with_a_port_keeps_its_host_block() {
    let c = Cluster::shared();
    let said = std::process::Command::new("ssh").arg("-G").arg("-F").arg(c.ssh_config()).arg("node1").output().unwrap();
    let said = String::from_utf8_lossy(&said.stdout).into_owned();
    let value = |k: &str| said.lines().find_map(|l| l.strip_prefix(&format!("{k} "))).unwrap_or_else(|| panic!("no {k} in {said}")).to_string();
    let (port, user) = (value("port"), value("user"));
    let node = format!("node1:{port}");
    let out = bin().args(["probe", "-q", "--ssh-config"]).arg(c.ssh_config()).args(["--node", &node]).output().unwrap();
    let inv = json(&out.stdout);
    let n = &inv["nodes"][0];
    assert_eq!(n["status"], "ok", "{n}");
    assert_eq!(n["node"], node.as_str());
    assert_eq!(n["facts"]["user"], user.as_str(), "the Host block's User: {n}");
    assert!(c.ssh("node1", "mkdir -p pc_alias_port").status.success());
    let plan = bin().args(["plan", "-q", "--chdir", "pc_alias_port"]).write_stdin(out.stdout.clone()).output().unwrap();
    let run = bin().args(["exec", "--", "id", "-un"]).write_stdin(plan.stdout).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&run.stderr));
    assert!(text.contains(&format!("\"stdout_tail\":\"{user}\\n\"")), "{text}");
}
