//! A run's reports stay exact when a node is lost mid-run (issue 17): the tests that were
//! running there run again on a live node, and every report pytest writes holds each test once,
//! with the outcome of the run that counted, as a fault-free run's reports do.

use crate::common;
use crate::launcher::{local, spawn_cloud, text, wait_for};

use common::cluster::Cluster;
use common::example::Example;
use std::collections::BTreeSet;
use std::process::Output;

/// 16 tests that each take 0.6 s in their call and 0.6 s in their teardown, noting in /tmp
/// when each phase starts (`/tmp/<tag>-<worker>-<phase>-<i>`), so a fault can hit a node while
/// one of its tests is in its teardown (its call's report already sent) and another in its
/// call. Some fail and some skip, so "the outcome that counted" is more than "passed".
fn add_report_tests(ex: &Example, tag: &str) {
    let body = format!(
        "import os, time, pytest\n\n\
         def _note(phase, i):\n    \
             open('/tmp/{tag}-' + os.environ.get('PYTEST_XDIST_WORKER', 'master') + '-' + phase + '-' + str(i), 'w').close()\n\n\
         @pytest.fixture\n\
         def slow_teardown(request):\n    \
             yield\n    \
             _note('teardown', request.node.callspec.params['i'])\n    \
             time.sleep(0.6)\n\n\
         @pytest.mark.parametrize('i', range(16))\n\
         def test_report(i, slow_teardown):\n    \
             _note('call', i)\n    \
             time.sleep(0.6)\n    \
             if i % 5 == 3:\n        \
                 pytest.skip('every fifth skips')\n    \
             assert i % 4 != 1, 'every fourth fails'\n"
    );
    std::fs::write(ex.root().join("tests/test_report.py"), body).unwrap();
}

fn phase_markers(tag: &str, worker_prefix: &str, phase: &str) -> usize {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("{tag}-{worker_prefix}")) && name.contains(&format!("-{phase}-"))
        })
        .count()
}

fn remove_markers(tag: &str) {
    for e in std::fs::read_dir("/tmp").unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("{tag}-")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What the files a run wrote say, read by the project's own Python: every JUnit `<testcase>`
/// as [classname, name, outcome, properties] in file order, every `--report-log` TestReport as
/// [nodeid, when, outcome], the `--lf` cache's ids and the ids of pytest-cloud's durations
/// history (`pytest-cloud/durations` in the cache).
const READ_REPORTS: &str = r#"
import json, sys, xml.etree.ElementTree as ET
junit, report_log, cache = sys.argv[1:4]
cases = []
for tc in ET.parse(junit).getroot().iter("testcase"):
    kinds = [c.tag for c in tc if c.tag in ("failure", "error", "skipped")]
    props = [[p.get("name"), p.get("value")] for p in tc.iter("property")]
    cases.append([tc.get("classname"), tc.get("name"), ",".join(kinds) or "passed", props])
log = []
for line in open(report_log):
    d = json.loads(line)
    if d.get("$report_type") == "TestReport":
        log.append([d["nodeid"], d["when"], d["outcome"]])
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
lastfailed = load(cache + "/v/cache/lastfailed") or {}
durations = load(cache + "/v/pytest-cloud/durations") or {}
print(json.dumps({"junit": cases, "report_log": sorted(log), "lastfailed": sorted(lastfailed),
                  "durations": sorted(durations.get("tests", {}))}))
"#;

fn read_reports(ex: &Example, junit: &str, report_log: &str) -> serde_json::Value {
    let out = std::process::Command::new(ex.python())
        .args(["-c", READ_REPORTS, junit, report_log, ".pytest_cache"])
        .current_dir(ex.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "reading the reports: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The lines of `-rA`'s short test summary, sorted (one per test, SKIPPED lines grouped with
/// their count as pytest prints them).
fn summary_lines(o: &Output) -> Vec<String> {
    let out = String::from_utf8_lossy(&o.stdout);
    let mut lines: Vec<String> = out
        .lines()
        .skip_while(|l| !l.contains("short test summary info"))
        .skip(1)
        .take_while(|l| !l.starts_with('='))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The tests the "nodes lost" section says were moved: `  moved: <id> (was on <worker>): ...`.
fn moved_ids(all: &str) -> BTreeSet<String> {
    all.lines()
        .filter_map(|l| l.trim_start().strip_prefix("moved: "))
        .filter_map(|rest| rest.split(" (was on ").next())
        .map(str::to_string)
        .collect()
}

/// A node lost while one of its tests is in its teardown and another in its call: the -rA lines,
/// the JUnit testcases (classname, name, outcome), the `--report-log` test reports and the `--lf`
/// cache equal those of a fault-free run of the same tests (local, `-n 4`); each moved test's
/// testcase carries `pytest_cloud_moved_from` = the lost node, no other does; the durations
/// history names exactly the tests.
fn reports_exact_when_a_node_is_lost(fault: &str, revive: Option<&str>) {
    let c = Cluster::up(2);
    let ex = Example::new();
    let tag = format!("pc-rep-{fault}-{}", std::process::id());
    add_report_tests(&ex, &tag);
    let child = spawn_cloud(
        &ex,
        &c,
        &["tests/test_report.py", "-rA", "-p", "no:randomly", "--cloud-node-timeout=4", "--junitxml=cloud.xml", "--report-log=cloud.jsonl"],
    );
    wait_for("a test in its teardown on node2", || phase_markers(&tag, "node2-", "teardown") > 0);
    c.script(&[fault, "node2"]);
    let out = child.wait_with_output().unwrap();
    if let Some(cmd) = revive {
        c.script(&[cmd, "node2"]);
    }
    let all = text(&out);
    let cloud = read_reports(&ex, "cloud.xml", "cloud.jsonl");
    // The fault-free run, after the cloud run's cache was read (both write the same cache).
    let reference_out = local(&ex, &["tests/test_report.py", "-n", "4", "--junitxml=local.xml", "--report-log=local.jsonl"]);
    let reference = read_reports(&ex, "local.xml", "local.jsonl");
    remove_markers(&tag);

    assert!(all.contains("node node2 is lost"), "the fault was seen:\n{all}");
    let moved = moved_ids(&all);
    assert!(!moved.is_empty(), "tests were moved from node2:\n{all}");
    assert_eq!(out.status.code(), reference_out.status.code(), "{all}");
    assert_eq!(summary_lines(&out), summary_lines(&reference_out), "-rA lines, one per test:\n{all}");

    let cases = cloud["junit"].as_array().unwrap();
    let without_props = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut v: Vec<serde_json::Value> = v.as_array().unwrap().iter().map(|c| serde_json::json!([c[0], c[1], c[2]])).collect();
        v.sort_by_key(|c| c.to_string());
        v
    };
    assert_eq!(without_props(&cloud["junit"]), without_props(&reference["junit"]), "JUnit testcases:\n{cloud}\n{all}");
    for case in cases {
        let id = format!("{}.py::{}", case[0].as_str().unwrap().replace('.', "/"), case[1].as_str().unwrap());
        let expected = if moved.contains(&id) { serde_json::json!([["pytest_cloud_moved_from", "node2"]]) } else { serde_json::json!([]) };
        assert_eq!(case[3], expected, "{id}'s properties:\n{cloud}\n{all}");
    }
    assert_eq!(cloud["report_log"], reference["report_log"], "--report-log test reports:\n{all}");
    assert_eq!(cloud["lastfailed"], reference["lastfailed"], "the --lf cache:\n{all}");
    let ids: Vec<String> = (0..16).map(|i| format!("tests/test_report.py::test_report[{i}]")).collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(cloud["durations"], serde_json::json!(ids), "the durations history:\n{all}");
}

#[test]
fn a_node_killed_mid_run_leaves_every_report_as_a_fault_free_run_writes_it() {
    reports_exact_when_a_node_is_lost("kill", None);
}

#[test]
fn a_node_frozen_mid_run_leaves_every_report_as_a_fault_free_run_writes_it() {
    reports_exact_when_a_node_is_lost("freeze", Some("thaw"));
}
