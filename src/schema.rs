//! Every JSON document pytest-cloud reads or writes. The user-facing description with one
//! example per kind is `share/doc/schema.md`; change both together.
//!
//! Rules (format_version 1):
//! - every document is one JSON object with `format_version` (an integer, the major version)
//!   and `kind` (`inventory`, `plan`, `sync`, `session`); `exec` writes JSON Lines records
//!   `{"type": ..., "data": ...}` instead;
//! - readers ignore unknown fields and refuse a newer `format_version` with a hint;
//! - keys are snake_case with units in their names; enums are strings; maps are ordered, so
//!   the same input prints byte-identical output;
//! - each stage carries forward the document it read (`plan.inventory`, `sync.plan`), so a
//!   saved document restarts the pipeline.
//!
//! Changelog: 1 — first version.
//!
//! Every wire type is here: the documents, the `exec` records and the enums they use.

use crate::error::{Error, Exit, Result};
use crate::ssh::{Destination, SshSettings};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

pub const FORMAT_VERSION: u32 = 1;

pub fn created_by() -> String {
    format!("pytest-cloud {}", env!("CARGO_PKG_VERSION"))
}

/// `probe`'s output: every node asked for, reachable or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub format_version: u32,
    pub kind: String,
    pub created_by: String,
    pub ssh: SshSettings,
    /// The interpreter names the probe looked for on every node.
    pub pythons_asked: Vec<String>,
    pub nodes: Vec<NodeReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Ok,
    Error,
}

/// Why a node could not be used. Strings on the wire; see share/doc/schema.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// TCP connection refused.
    Refused,
    /// No answer within the connect timeout or the probe deadline (includes a node that
    /// accepts TCP but never sends an ssh banner).
    Timeout,
    /// ssh authentication failed.
    Auth,
    /// The host key is unknown or changed.
    HostKey,
    /// The host name does not resolve.
    Dns,
    /// No route / network unreachable.
    Unreachable,
    /// ssh failed for another reason (exit 255); the message is ssh's own.
    Ssh,
    /// Reachable, but none of the asked-for Python interpreters is there.
    NoPython,
    /// Reachable, but the OS is not one the probe understands.
    UnsupportedOs,
    /// Reachable, but the probe script failed or printed something unreadable.
    ProbeFailed,
    /// The plan gives this node no slot (CPU, memory or --max-processes).
    NoSlots,
    /// rsync is not installed on the node.
    NoRsync,
    /// The virtualenv's base interpreter is missing on the node or has another version.
    PythonMismatch,
    /// rsync to the node failed.
    SyncFailed,
    /// The node's target directory exists, is not empty and was not made by pytest-cloud.
    UnsafeTarget,
    /// Another run holds the node's directory lock.
    Locked,
    /// Installing a develop egg on the node failed.
    DevelopFailed,
    /// The node could not build its own env (`--env build`, or `auto` where the venv does not
    /// fit): a package without a wheel for it, no index, no uv.
    EnvBuildFailed,
}

impl ErrorKind {
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node as given, canonical `[user@]host[:port]` (or an ssh alias); on the wire
    /// its `key()`, parsed when the document is read.
    pub node: Destination,
    pub status: NodeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// ssh's (or the probe's) own message when status is error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub os: String,
    pub arch: String,
    pub hostname: String,
    pub user: String,
    pub home: String,
    /// Logical CPUs usable by this user: affinity, lowered by a cgroup CPU quota.
    pub cpus: u32,
    pub mem_total_bytes: u64,
    /// MemAvailable, lowered by a cgroup memory limit when that is tighter.
    pub mem_available_bytes: u64,
    /// `rsync --version`'s version number; None when rsync is missing.
    pub rsync_version: Option<String>,
    /// Interpreter name -> where it is and its version, for each one found.
    pub pythons: BTreeMap<String, PythonInfo>,
    /// The uv binaries found (on PATH, and those pytest-cloud sent earlier), for a node that
    /// builds its own env; absent in documents from older probes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uv: Vec<UvInfo>,
}

#[cfg(test)]
impl Facts {
    /// A Linux x86_64 node (2 CPUs, rsync, no interpreter, no uv) for unit tests, which set
    /// what they test with `Facts { cpus: 8, ..Facts::example() }`.
    pub fn example() -> Facts {
        Facts {
            os: "Linux".into(),
            arch: "x86_64".into(),
            hostname: "h".into(),
            user: "u".into(),
            home: "/home/u".into(),
            cpus: 2,
            mem_total_bytes: 1,
            mem_available_bytes: 1,
            rsync_version: Some("3.2.7".into()),
            pythons: BTreeMap::new(),
            uv: vec![],
        }
    }
}

/// A uv binary on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UvInfo {
    pub path: String,
    /// `0.13.9`.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInfo {
    pub path: String,
    pub version: String,
    /// What decides whether a virtualenv made elsewhere runs on it (share/doc/sync.md); None
    /// from a probe older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<PythonAbi>,
}

/// What the probe learns about an interpreter without importing anything (`-I -S`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonAbi {
    /// `sys.implementation.name`: `cpython`, `pypy`.
    pub implementation: String,
    /// `sys.abiflags`: `""`, `t` (free-threaded), `d` (debug).
    pub abiflags: String,
    /// `sys.platform`: `linux`, `darwin`.
    pub platform: String,
    /// `os.uname().machine`: `x86_64`, `aarch64`, `arm64`.
    pub machine: String,
    /// The C library it runs on: `glibc 2.36`, `musl 1.2.4`, or `""` when unknown.
    pub libc: String,
    /// `sys.base_prefix`.
    pub prefix: String,
}

/// `plan`'s output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub kind: String,
    pub created_by: String,
    pub options: PlanOptions,
    /// The local project root the plan was made for (absolute).
    pub source: String,
    pub total_slots: u32,
    pub nodes: Vec<PlannedNode>,
    pub dropped: Vec<Dropped>,
    pub inventory: Inventory,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    pub mem_per_process_mb: Option<u64>,
    pub max_processes: Option<u32>,
    pub python: String,
    /// `python` was given by the user (`--python`, `--cloud-python`): a synced virtualenv
    /// runs on that interpreter or the node is dropped; otherwise sync picks a compatible one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub python_pinned: bool,
    pub chdir: String,
    /// The project's virtualenv, relative to the project root; None when there is none.
    pub virtualenv_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedNode {
    pub node: Destination,
    pub slots: u32,
    /// Stable, readable worker ids: `<label>-<i>`.
    pub workers: Vec<String>,
    /// Absolute directory on the node: `<home>/<chdir>`.
    pub remote_dir: String,
    /// The interpreter workers use on the node (the synced venv's, or the probed one).
    pub python: String,
}

/// The stage that dropped a node. Strings on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Probe,
    Plan,
    Sync,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Probe => "probe",
            Stage::Plan => "plan",
            Stage::Sync => "sync",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub node: Destination,
    /// Which stage dropped it.
    pub stage: Stage,
    pub error_kind: ErrorKind,
    pub message: String,
}

// ---------------------------------------------------------------------------------------
// `sync` (src/cmd/sync.rs; share/doc/schema.md#sync)
// ---------------------------------------------------------------------------------------

/// `sync`'s output: the plan carried forward, each planned node synced or dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncDoc {
    pub format_version: u32,
    pub kind: String,
    pub created_by: String,
    /// The local project root that was synced (absolute).
    pub source: String,
    /// The virtualenv synced with it, relative to the root; None when there is none.
    pub virtualenv_path: Option<String>,
    /// Project-relative directories put first on the synced venv's `sys.path` on every node
    /// (editable installs and develop eggs), `""` being the root itself.
    pub editable_paths: Vec<String>,
    /// Nodes whose directory now mirrors the source.
    pub nodes: Vec<SyncedNode>,
    /// The plan's dropped nodes, then those dropped here (stage `sync`).
    pub dropped: Vec<Dropped>,
    /// Slots of the synced nodes.
    pub total_slots: u32,
    pub plan: Plan,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncedNode {
    #[serde(flatten)]
    pub planned: PlannedNode,
    /// rsync's "Total bytes sent" (protocol bytes on the wire, before ssh).
    pub bytes_sent: u64,
    /// Regular files rsync transferred (new or changed).
    pub files_transferred: u64,
    /// The node's whole sync: checks, lock, rsync, cleanup.
    pub elapsed_ms: u64,
    /// rsync's exit status (0, or 24 when a source file vanished during the transfer).
    pub rsync_exit: i32,
    /// The interpreter the synced virtualenv runs on this node; None without a virtualenv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<NodeInterpreter>,
    /// The node's environment: synced, or built there; None without a virtualenv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<NodeEnv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The shared base rsync updated (`<home>/<chdir>`); `remote_dir` is then the run's own
    /// tree made from it, which is where workers and jobs run. Absent in documents written
    /// before run trees (remote_dir was the base itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    /// The run tree's name under `<base_dir>.pytest-cloud-runs/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The run tree's lease line, as written in `<base_dir>.pytest-cloud-runs/<run_id>.lease`
    /// (renewing or releasing it checks that it is still this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// How the base got this tree: `rsync`, or `skipped` when the node's base already held
    /// exactly this tree (the fast path: one round trip, nothing sent). Absent in documents
    /// written before the fast path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
    /// With `transfer: rsync`: why the node could not skip it (its words), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_reason: Option<String>,
}

/// How a node gets its environment (share/doc/sync.md, "Which environment runs on a node").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvStrategy {
    /// The project's venv travels with the sources (rebased where needed).
    Sync,
    /// The node builds an env with uv for its own interpreter, cached under a key.
    Build,
}

/// The environment a synced node runs: its strategy and, for `build`, what was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEnv {
    pub strategy: EnvStrategy,
    /// The cache key (`build`): sha256 of what is installed, the interpreter and uv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where the requirements came from: `uv.lock`, `pylock.toml` or `venv` (its installed
    /// distributions, pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The env on the node (`<home>/.cache/pytest-cloud/envs/<key>`); the run tree's
    /// `<virtualenv_path>` links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The node's interpreter it was built for, and its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    /// The uv that built it: `node` (the node's own) or `supplied` (sent by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uv_version: Option<String>,
    /// This run built it (false: the node had it already, or another run built it meanwhile).
    #[serde(default)]
    pub built: bool,
    /// Built from wheels the controller fetched and sent, with no index (`--wheelhouse`, or
    /// the node reached no index).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wheelhouse: bool,
    /// A first install from the node's index failed for want of a network (then the
    /// wheelhouse was used). Never with `--wheelhouse`, which tries no index.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub index_failed: bool,
    /// Milliseconds the build took on the node (when built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ms: Option<u64>,
    /// Distributions of the venv that could not be pinned (installed from a local file or
    /// directory), left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// The base interpreter a node's copy of the virtualenv was pointed at (share/doc/sync.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInterpreter {
    /// `CPython`.
    pub implementation: String,
    pub version: String,
    /// Absolute path on the node.
    pub path: String,
    /// The interpreter the virtualenv was made from on the controller, and its version.
    pub venv_base_path: String,
    pub venv_base_version: String,
    /// The node's copy names another interpreter than the controller's (`pyvenv.cfg`,
    /// `bin/python*`); false when the venv's own base is there at the same version.
    pub rebased: bool,
}

// ---------------------------------------------------------------------------------------
// `session` (src/engine/session.rs; share/doc/schema.md#session)
// ---------------------------------------------------------------------------------------

/// What the plugin (or `--cloud-prepare`) needs to point xdist at the nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XdistArgs {
    pub tx: Vec<String>,
    pub dist: String,
    pub max_worker_restart: usize,
}

/// The session document: what `--cloud-prepare` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub format_version: u32,
    pub kind: String,
    pub created_by: String,
    pub rootdir: String,
    /// The local interpreter that runs pytest (the project's venv).
    pub python: String,
    pub xdist: XdistArgs,
    /// Environment the controller needs (the glue).
    pub env: BTreeMap<String, String>,
    /// The lines of the stderr header.
    pub header: Vec<String>,
    pub timings_ms: BTreeMap<String, u64>,
    /// The sync document this session runs on (which carries the plan and inventory).
    pub sync: SyncDoc,
}

// ---------------------------------------------------------------------------------------
// `exec` (src/engine/exec; share/doc/schema.md#exec): JSON Lines records, not documents
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    pub job: usize,
    pub node: String,
    pub slot: Option<u32>,
    pub worker: Option<String>,
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_path: Option<String>,
    pub stderr_path: Option<String>,
}

impl JobRecord {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none() && !self.timed_out
    }
}

/// The last record of every exec (`{"type": "summary", "data": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecSummary {
    pub jobs: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub elapsed_ms: u64,
}

/// The JSON Lines envelope, as ripgrep's `--json`: `{"type": ..., "data": ...}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ExecRecord<'a> {
    Job(&'a JobRecord),
    Summary(&'a ExecSummary),
}

impl ExecRecord<'_> {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("records always serialize");
        s.push('\n');
        s
    }
}

/// Reads one document from stdin, refusing a terminal (which would hang) and empty input.
pub fn read_stdin_document(what: &str) -> Result<Value> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(Error::new(
            Exit::NoInput,
            format!("expected a {what} document on stdin, but stdin is a terminal; pipe one in, e.g. `pytest-cloud probe --node HOST | pytest-cloud plan`"),
        ));
    }
    let mut text = String::new();
    stdin.lock().read_to_string(&mut text).map_err(|e| Error::io("reading stdin", e))?;
    parse_envelope(&text, what)
}

/// Parses text as a document and checks its envelope (not yet its kind).
pub fn parse_envelope(text: &str, what: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Err(Error::new(Exit::NoInput, format!("expected a {what} document on stdin, got no input (did the previous stage fail?)")));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Error::bad_input(format!("stdin is not a valid JSON document ({e}); expected a {what} document from pytest-cloud"))
    })?;
    let obj = v.as_object().ok_or_else(|| Error::bad_input(format!("stdin is JSON but not an object; expected a {what} document")))?;
    let version = obj.get("format_version").and_then(Value::as_u64).ok_or_else(|| {
        Error::bad_input(format!("stdin has no integer \"format_version\"; expected a {what} document from pytest-cloud"))
    })?;
    if version > FORMAT_VERSION as u64 {
        return Err(Error::bad_input(format!(
            "the input has format_version {version}, newer than this pytest-cloud understands ({FORMAT_VERSION}); \
             use the same pytest-cloud version for every stage, or upgrade this one"
        )));
    }
    if obj.get("kind").and_then(Value::as_str).is_none() {
        return Err(Error::bad_input(format!("stdin has no \"kind\"; expected a {what} document")));
    }
    Ok(v)
}

pub fn kind_of(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// Deserializes a checked document into its type, naming the field that is wrong.
pub fn from_value<T: DeserializeOwned>(v: Value, what: &str) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::bad_input(format!("the {what} document does not match its schema: {e}")))
}

/// Takes a document and returns the plan inside it (a plan, or a later stage carrying one).
pub fn plan_from(v: Value, what: &str) -> Result<Plan> {
    match kind_of(&v) {
        "plan" => from_value(v, "plan"),
        "sync" => {
            let inner = v.get("plan").cloned().ok_or_else(|| Error::bad_input("the sync document carries no \"plan\""))?;
            from_value(inner, "plan")
        }
        "session" => {
            let inner = v.get("sync").cloned().ok_or_else(|| Error::bad_input("the session document carries no \"sync\""))?;
            plan_from(inner, what)
        }
        k => Err(Error::bad_input(format!("expected a {what} document, got kind {k:?}"))),
    }
}

/// Serializes a document (pretty, with a trailing newline) for stdout.
pub fn to_pretty<T: Serialize>(doc: &T) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("documents always serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_newer_major_version_with_a_hint() {
        let e = parse_envelope(r#"{"format_version": 2, "kind": "inventory"}"#, "inventory").unwrap_err();
        assert_eq!(e.exit, Exit::BadInput);
        assert!(e.message.contains("newer") && e.message.contains("upgrade"), "{}", e.message);
    }

    #[test]
    fn empty_and_garbage_inputs_are_explained() {
        assert_eq!(parse_envelope("  \n", "plan").unwrap_err().exit, Exit::NoInput);
        assert_eq!(parse_envelope("{\"format_version\": 1, \"kind\"", "plan").unwrap_err().exit, Exit::BadInput);
        assert_eq!(parse_envelope("[1]", "plan").unwrap_err().exit, Exit::BadInput);
        assert_eq!(parse_envelope("{\"kind\": \"plan\"}", "plan").unwrap_err().exit, Exit::BadInput);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let v = parse_envelope(
            r#"{"format_version":1,"kind":"inventory","created_by":"x","future":true,
               "ssh":{"config_file":null,"connect_timeout_s":5,"control_persist_s":0,"new":1},
               "pythons_asked":["python3"],"nodes":[]}"#,
            "inventory",
        )
        .unwrap();
        let inv: Inventory = from_value(v, "inventory").unwrap();
        assert!(inv.nodes.is_empty());
    }

    #[test]
    fn stages_are_the_strings_they_always_were() {
        for (stage, s) in [(Stage::Probe, "probe"), (Stage::Plan, "plan"), (Stage::Sync, "sync")] {
            assert_eq!(serde_json::to_value(stage).unwrap(), s);
            assert_eq!(stage.as_str(), s);
            assert_eq!(serde_json::from_value::<Stage>(s.into()).unwrap(), stage);
        }
    }

    #[test]
    fn error_kinds_are_snake_case_strings() {
        assert_eq!(ErrorKind::HostKey.as_str(), "host_key");
        assert_eq!(ErrorKind::NoPython.as_str(), "no_python");
    }

    #[test]
    fn records_use_the_ripgrep_envelope() {
        let s = ExecSummary { jobs: 2, succeeded: 1, failed: 1, timed_out: 0, elapsed_ms: 9 };
        assert_eq!(
            ExecRecord::Summary(&s).line(),
            "{\"type\":\"summary\",\"data\":{\"jobs\":2,\"succeeded\":1,\"failed\":1,\"timed_out\":0,\"elapsed_ms\":9}}\n"
        );
    }
}
