//! `pytest-cloud exec`: run a command on every synced node, or on every slot of every node,
//! through GNU parallel over ssh, and report each job as a JSON Lines record.
//!
//! Input: a `sync` document on stdin (or a `plan`, or a `session`, which carries a sync). Each of
//! its `nodes` (`node`, `slots`, `workers`, `remote_dir`, `python`) gets one job (`--per node`,
//! the default) or `slots` jobs (`--per slot`); ssh settings come from the carried inventory
//! (`plan.inventory.ssh`), overridden by `--ssh-config`, `--connect-timeout`, `--control-persist`.
//!
//! The command comes after `--` as words. In every word `{node}`, `{dir}` (the node's
//! `remote_dir`), `{python}`, `{slots}` (the node's slot count) and, with `--per slot`, `{slot}`
//! (0-based) and `{worker}` (the worker id) are replaced; any other `{...}` stays as written.
//! Each word reaches the node as one word (quoted with `ssh::remote_quote`); for shell syntax,
//! write `sh -c '...'`. The job runs in `remote_dir` with `PYTEST_CLOUD_NODE`,
//! `PYTEST_CLOUD_SLOTS` and, per slot, `PYTEST_CLOUD_SLOT` and `PYTEST_CLOUD_WORKER` set (by
//! `env NAME=value ...` in the remote command).
//!
//! Output (stdout, JSON Lines, one object a line, flushed as each job ends; full description in
//! share/doc/schema.md#exec):
//! ```text
//! {"type":"job","data":{"job":1,"node":"node1","slot":0,"worker":"node1-0","command":["sh","-c","echo node1 0"],
//!   "exit_code":0,"signal":null,"timed_out":false,"error":null,"duration_ms":41,
//!   "stdout_tail":"node1 0\n","stderr_tail":"","stdout_bytes":8,"stderr_bytes":0,"stdout_path":null,"stderr_path":null}}
//! {"type":"summary","data":{"jobs":1,"succeeded":1,"failed":0,"timed_out":0,"elapsed_ms":350}}
//! ```
//! (each record is one line; wrapped here). The summary is always the last line once jobs have
//! been started, whatever happened to them. A job succeeded when `exit_code` is 0 and `error` is
//! null. `signal` is set (and `exit_code` null) when the command died of a signal, as the node's
//! shell reports it (status 128+n). `error` says what went wrong around the command: `ssh failed:
//! ...` (ssh exited 255: it could not connect, or the connection broke), a missing `remote_dir`,
//! a timeout.
//!
//! Exit codes: 0 every job succeeded; 1 some job failed (its record says how); 64 no command
//! after `--`, `{slot}`/`{worker}` without `--per slot`, or a bad option; 65/66 bad or missing
//! stdin document; 69 the document has no node; 72 `parallel` or `ssh` missing; 74 the output
//! or runtime directory cannot be written. Nothing is written on stdout for 64 and up.
//!
//! How a job runs: GNU parallel (`--jobs` = all jobs at once unless `--jobs N`) runs
//! `ssh -F <generated config> -- <node> <remote command>` per job, saving stdout and stderr as
//! files (`--results`) and each job's status in its `--joblog`, which we read as it grows —
//! never parallel's exit status, which only counts failed jobs. The remote command is a small
//! POSIX sh wrapper (`WRAPPER`): it changes to `remote_dir`, runs the command as a child and
//! prints a status line with a per-run marker on stderr, which we strip from the output. The
//! marker is how a command that exits 255 is told apart from ssh failing (also 255), and the
//! wrapper, not ssh, enforces `--timeout`: killing a local ssh leaves the remote command
//! running (measured with OpenSSH 9.2), so the wrapper kills the job's process group on the
//! node; parallel's own `--timeout` (the limit plus connect timeout plus 10 s) only catches a
//! connection that hangs. With connection sharing on, one ssh connection per node is opened
//! before the jobs start, so the jobs multiplex over it instead of racing to connect.
//!
//! Example:
//! `pytest-cloud sync < plan.json | pytest-cloud exec --per slot -- sh -c 'echo {node} {slot}/{slots}' | jq -c .data`

use crate::cli::{ExecArgs, ExecPer};
use crate::cmd::say;
use crate::error::{Error, Exit, Outcome, Result};
use crate::proc::{self, Cmd, Status};
use crate::schema::{self, PlannedNode};
use crate::ssh::{self, Destination, SshSettings};
use serde::Serialize;
use serde_json::Value;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the work is split into jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Node,
    Slot,
}

/// The remote side of every job, run as `sh -c WRAPPER pytest-cloud-exec MARKER TIMEOUT DIR
/// env NAME=value ... COMMAND...`. It does not `exec` the command: a command killed by a signal
/// would make sshd send `exit-signal`, which OpenSSH's client turns into a silent 255 (measured),
/// indistinguishable from ssh failing. `setsid` (when the node has it) puts the command in its
/// own process group so a timeout kills its children too; `wait`'s stderr is silenced because
/// dash reports "Terminated" there.
pub const WRAPPER: &str = r#"m=$1 t=$2 d=$3; shift 3
cd -- "$d" 2>/dev/null || { printf '%s nodir\n' "$m" >&2; exit 1; }
g=; command -v setsid >/dev/null 2>&1 && g=setsid
$g "$@" & p=$!
w=
if [ "$t" -gt 0 ]; then
  $g sh -c 'sleep "$1"; printf "%s timeout\n" "$3" >&2; kill -TERM -"$2" 2>/dev/null || kill -TERM "$2" 2>/dev/null; sleep 5; kill -KILL -"$2" 2>/dev/null || kill -KILL "$2" 2>/dev/null' - "$t" "$p" "$m" >/dev/null & w=$!
fi
wait "$p" 2>/dev/null; s=$?
[ -z "$w" ] || kill -TERM -"$w" 2>/dev/null || kill -TERM "$w" 2>/dev/null
printf '%s exit %s\n' "$m" "$s" >&2
exit "$s""#;

/// One job: where it runs and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// 1-based, in document order; parallel's sequence number.
    pub seq: usize,
    pub node: String,
    pub slot: Option<u32>,
    pub worker: Option<String>,
    pub remote_dir: String,
    /// The user's words with the placeholders replaced.
    pub command: Vec<String>,
    /// What the node's shell is given: wrapper, environment and command, quoted.
    pub remote_command: String,
    pub dest: Destination,
}

/// The record of one finished job (`{"type": "job", "data": ...}`); field order is the wire order.
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub jobs: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub elapsed_ms: u64,
}

/// The JSON Lines envelope, as ripgrep's `--json`: `{"type": ..., "data": ...}`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Record<'a> {
    Job(&'a JobRecord),
    Summary(&'a Summary),
}

impl Record<'_> {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("records always serialize");
        s.push('\n');
        s
    }
}

pub fn run(args: &ExecArgs, out: &mut dyn Write) -> Result<Outcome> {
    if args.command.is_empty() {
        return Err(Error::usage(
            "no command given: put it after `--`, e.g. `pytest-cloud exec --per slot -- sh -c 'echo {node} {slot}'`",
        ));
    }
    let per = match args.per {
        ExecPer::Node => Per::Node,
        ExecPer::Slot => Per::Slot,
    };
    check_placeholders(&args.command, per)?;
    let doc = schema::read_stdin_document("sync or plan")?;
    let (nodes, mut settings) = read_nodes(doc)?;
    if nodes.is_empty() {
        return Err(Error::new(
            Exit::NoNodes,
            "the document has no node to run on (every node was dropped; its \"dropped\" list says why)",
        ));
    }
    crate::engine::probe::apply_ssh_args(&mut settings, &args.ssh);
    let marker = new_marker();
    let jobs = make_jobs(&nodes, per, &args.command, args.timeout.unwrap_or(0), &marker)?;
    for tool in ["parallel", "ssh"] {
        if find_on_path(tool).is_none() {
            return Err(Error::new(
                Exit::MissingTool,
                format!("{tool}: not found on PATH. {}", proc::install_hint(tool)),
            ));
        }
    }
    let output_dir = match &args.output_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::io(format!("--output-dir {}", d.display()), e))?;
            Some(std::path::absolute(d).map_err(|e| Error::io(d.display(), e))?)
        }
        None => None,
    };
    let mut dests: Vec<Destination> = Vec::new();
    for j in &jobs {
        if !dests.contains(&j.dest) {
            dests.push(j.dest.clone());
        }
    }
    let config = ssh::write_config(&settings, &dests)?;
    let options = RunOptions {
        jobs_at_once: args.jobs.map(|n| n as usize).unwrap_or(jobs.len()).max(1),
        timeout_s: args.timeout,
        tail_bytes: args.tail_bytes,
        output_dir,
        marker,
        quiet: args.quiet,
    };
    say(
        args.quiet,
        format!(
            "exec: {} job{} on {} node{}",
            jobs.len(),
            if jobs.len() == 1 { "" } else { "s" },
            dests.len(),
            if dests.len() == 1 { "" } else { "s" }
        ),
    );
    let summary = run_jobs(&jobs, &config, &settings, &options, out)?;
    say(
        args.quiet,
        format!(
            "exec: {} of {} jobs succeeded in {:.1}s",
            summary.succeeded,
            summary.jobs,
            summary.elapsed_ms as f64 / 1000.0
        ),
    );
    Ok(if summary.failed == 0 { Outcome::Complete } else { Outcome::Partial })
}

/// The nodes to run on and the ssh settings, from a sync (its synced nodes), a plan (its planned
/// nodes) or a session (its sync).
pub fn read_nodes(doc: Value) -> Result<(Vec<PlannedNode>, SshSettings)> {
    match schema::kind_of(&doc) {
        "plan" => {
            let plan = schema::plan_from(doc, "sync or plan")?;
            Ok((plan.nodes, plan.inventory.ssh))
        }
        "sync" => {
            let sync: schema::SyncDoc = schema::from_value(doc, "sync")?;
            Ok((sync.nodes.into_iter().map(|n| n.planned).collect(), sync.plan.inventory.ssh))
        }
        "session" => match doc.get("sync") {
            Some(sync) if schema::kind_of(sync) == "sync" => read_nodes(sync.clone()),
            _ => Err(Error::bad_input("the session document carries no \"sync\" document")),
        },
        k => Err(Error::bad_input(format!(
            "exec reads a sync document (from `pytest-cloud sync`) or a plan, got kind {k:?}"
        ))),
    }
}

const SLOT_ONLY: [&str; 2] = ["slot", "worker"];

/// `{slot}` and `{worker}` have no value when a job is a whole node.
pub fn check_placeholders(command: &[String], per: Per) -> Result<()> {
    if per == Per::Slot {
        return Ok(());
    }
    for word in command {
        for name in SLOT_ONLY {
            if word.contains(&format!("{{{name}}}")) {
                return Err(Error::usage(format!(
                    "{{{name}}} in {word:?} needs one job per slot: add --per slot (with --per node, use {{slots}})"
                )));
            }
        }
    }
    Ok(())
}

/// Replaces `{name}` for each known name, in one pass (a value that contains `{node}` is not
/// replaced again); unknown `{...}` stays as written, so `find -exec ... {} +` works.
pub fn substitute(word: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let replaced = after.find('}').and_then(|close| {
            let name = &after[..close];
            vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (v, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The jobs, in document order: nodes as listed, slots 0..slots within a node. Pure.
pub fn make_jobs(
    nodes: &[PlannedNode],
    per: Per,
    command: &[String],
    timeout_s: u64,
    marker: &str,
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for n in nodes {
        let dest = Destination::parse(&n.node)
            .map_err(|m| Error::bad_input(format!("the document's node {:?} is not a node name: {m}", n.node)))?;
        let slots: Vec<Option<u32>> = match per {
            Per::Node => vec![None],
            Per::Slot => (0..n.slots).map(Some).collect(),
        };
        for slot in slots {
            let worker =
                slot.map(|s| n.workers.get(s as usize).cloned().unwrap_or_else(|| format!("{}-{s}", dest.label())));
            let mut vars: Vec<(&str, String)> = vec![
                ("node", n.node.clone()),
                ("slots", n.slots.to_string()),
                ("dir", n.remote_dir.clone()),
                ("python", n.python.clone()),
            ];
            let mut env = vec![format!("PYTEST_CLOUD_NODE={}", n.node), format!("PYTEST_CLOUD_SLOTS={}", n.slots)];
            if let (Some(s), Some(w)) = (slot, &worker) {
                vars.push(("slot", s.to_string()));
                vars.push(("worker", w.clone()));
                env.push(format!("PYTEST_CLOUD_SLOT={s}"));
                env.push(format!("PYTEST_CLOUD_WORKER={w}"));
            }
            let words: Vec<String> = command.iter().map(|w| substitute(w, &vars)).collect();
            jobs.push(Job {
                seq: jobs.len() + 1,
                node: n.node.clone(),
                slot,
                worker,
                remote_dir: n.remote_dir.clone(),
                remote_command: remote_command(marker, timeout_s, &n.remote_dir, &env, &words),
                command: words,
                dest: dest.clone(),
            });
        }
    }
    Ok(jobs)
}

/// The string the node's login shell runs for one job.
pub fn remote_command(marker: &str, timeout_s: u64, dir: &str, env: &[String], words: &[String]) -> String {
    let mut all: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "pytest-cloud-exec".into(),
        marker.into(),
        timeout_s.to_string(),
        dir.into(),
        "env".into(),
    ];
    all.extend(env.iter().cloned());
    all.extend(words.iter().cloned());
    ssh::remote_quote(&all)
}

/// A marker no command prints by accident: fixed prefix, per-run nonce.
fn new_marker() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{}-{nanos}", std::process::id());
    format!("pytest-cloud-exec-status-{:016x}", ssh::fnv1a(seed.as_bytes()))
}

/// A program's path on PATH, without running it.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

/// One line of parallel's `--joblog`: `Seq Host Starttime JobRuntime Send Receive Exitval Signal
/// Command`, tab-separated. Exitval is -1 for a job parallel killed at its `--timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoblogEntry {
    pub seq: usize,
    pub runtime_ms: u64,
    pub exitval: i64,
    pub signal: i64,
}

/// Parses a joblog line; None for the header or anything else.
pub fn parse_joblog_line(line: &str) -> Option<JoblogEntry> {
    let f: Vec<&str> = line.splitn(9, '\t').collect();
    if f.len() < 8 {
        return None;
    }
    let runtime: f64 = f[3].trim().parse().ok()?;
    Some(JoblogEntry {
        seq: f[0].trim().parse().ok()?,
        runtime_ms: (runtime * 1000.0).round().max(0.0) as u64,
        exitval: f[6].trim().parse().ok()?,
        signal: f[7].trim().parse().ok()?,
    })
}

/// What the wrapper reported on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteReport {
    /// The command's status as the node's shell saw it (128+n after signal n).
    pub status: Option<i32>,
    pub timed_out: bool,
    pub no_dir: bool,
}

/// Removes the wrapper's marker lines (marker to end of line) from stderr bytes and reads them.
pub fn strip_markers(bytes: &[u8], marker: &str) -> (Vec<u8>, RemoteReport) {
    let m = marker.as_bytes();
    let mut report = RemoteReport::default();
    let mut clean = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(m) {
            let end = bytes[i..].iter().position(|&b| b == b'\n').map(|p| i + p + 1).unwrap_or(bytes.len());
            let payload = String::from_utf8_lossy(&bytes[i + m.len()..end]);
            let mut words = payload.split_whitespace();
            match (words.next(), words.next()) {
                (Some("exit"), Some(n)) => report.status = n.parse().ok(),
                (Some("timeout"), _) => report.timed_out = true,
                (Some("nodir"), _) => report.no_dir = true,
                _ => {}
            }
            i = end;
        } else {
            clean.push(bytes[i]);
            i += 1;
        }
    }
    (clean, report)
}

/// The last `n` bytes as text, starting at a character boundary; invalid UTF-8 is replaced.
pub fn text_tail(bytes: &[u8], n: u64) -> String {
    let n = n.min(bytes.len() as u64) as usize;
    let mut start = bytes.len() - n;
    let mut skipped = 0;
    while start < bytes.len() && skipped < 3 && bytes[start] & 0b1100_0000 == 0b1000_0000 {
        start += 1;
        skipped += 1;
    }
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// How a job ended, decided from parallel's joblog line and the wrapper's report. Pure.
/// Returns (exit_code, signal, timed_out, error).
pub fn decide(
    job: &Job,
    log: Option<&JoblogEntry>,
    remote: &RemoteReport,
    stderr_text: &str,
    timeout_s: Option<u64>,
) -> (Option<i32>, Option<i32>, bool, Option<String>) {
    let Some(log) = log else {
        return (
            None,
            None,
            false,
            Some("parallel reported no status for this job (see parallel's message on stderr)".into()),
        );
    };
    if remote.no_dir {
        return (
            None,
            None,
            false,
            Some(format!("no directory {} on the node: sync the project there first", job.remote_dir)),
        );
    }
    let limit = timeout_s.unwrap_or(0);
    if let Some(s) = remote.status {
        let (code, signal) = if (129..=192).contains(&s) { (None, Some(s - 128)) } else { (Some(s), None) };
        let error = remote.timed_out.then(|| format!("timed out after {limit}s: killed on the node"));
        return (code, signal, remote.timed_out, error);
    }
    // No status from the wrapper: the job did not start, or its connection ended first.
    let message = proc::trim_message(stderr_text);
    if remote.timed_out || (log.exitval == -1 && timeout_s.is_some()) {
        let error =
            format!("timed out after {limit}s without a status from the node (the connection hung and ssh was killed)");
        return (None, None, true, Some(error));
    }
    if log.signal != 0 {
        return (None, Some(log.signal as i32), false, Some(format!("ssh was killed by signal {}", log.signal)));
    }
    if log.exitval == 255 {
        let error = if message.is_empty() {
            "ssh failed: ssh exited 255 without a message (the connection or the remote session ended before the job reported its status)".to_string()
        } else {
            format!("ssh failed: {message}")
        };
        return (Some(255), None, false, Some(error));
    }
    let error = if message.is_empty() {
        format!("the job did not start on the node (status {})", log.exitval)
    } else {
        format!("the job did not start on the node: {message}")
    };
    (Some(log.exitval as i32), None, false, Some(error))
}

struct RunOptions {
    jobs_at_once: usize,
    timeout_s: Option<u64>,
    tail_bytes: u64,
    output_dir: Option<PathBuf>,
    marker: String,
    quiet: bool,
}

/// Writes records to stdout as they come and keeps count; after a write error (a closed pipe)
/// it keeps counting but writes nothing more, and the error is returned at the end.
struct Emitter<'a> {
    out: &'a mut dyn Write,
    failed_write: Option<Error>,
    jobs: usize,
    succeeded: usize,
    timed_out: usize,
    quiet: bool,
}

impl Emitter<'_> {
    fn write_line(&mut self, line: &str) {
        if self.failed_write.is_some() {
            return;
        }
        if let Err(e) = self.out.write_all(line.as_bytes()).and_then(|_| self.out.flush()) {
            self.failed_write = Some(Error::io("writing stdout", e));
        }
    }

    fn job(&mut self, r: &JobRecord) {
        self.jobs += 1;
        if r.succeeded() {
            self.succeeded += 1;
        } else {
            let what = match (&r.error, r.exit_code, r.signal) {
                (Some(e), _, _) => e.clone(),
                (None, Some(c), _) => format!("exit {c}"),
                (None, None, Some(s)) => format!("killed by signal {s}"),
                (None, None, None) => "failed".into(),
            };
            let name = r.worker.clone().unwrap_or_else(|| r.node.clone());
            say(self.quiet, format!("{name}: {what}"));
        }
        if r.timed_out {
            self.timed_out += 1;
        }
        self.write_line(&Record::Job(r).line());
    }
}

/// Runs every job and streams its record; the summary is written last whatever happened.
fn run_jobs(
    jobs: &[Job],
    config: &Path,
    settings: &SshSettings,
    o: &RunOptions,
    out: &mut dyn Write,
) -> Result<Summary> {
    let start = Instant::now();
    let mut em = Emitter { out, failed_write: None, jobs: 0, succeeded: 0, timed_out: 0, quiet: o.quiet };
    let result = run_all(jobs, config, settings, o, &mut em);
    let summary = Summary {
        jobs: em.jobs,
        succeeded: em.succeeded,
        failed: em.jobs - em.succeeded,
        timed_out: em.timed_out,
        elapsed_ms: start.elapsed().as_millis() as u64,
    };
    em.write_line(&Record::Summary(&summary).line());
    result?;
    match em.failed_write {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// The part that can fail outright (temporary files, parallel not starting); jobs that got no
/// record by then are reported as such, so every job has exactly one record.
fn run_all(jobs: &[Job], config: &Path, settings: &SshSettings, o: &RunOptions, em: &mut Emitter) -> Result<()> {
    let mut reported = vec![false; jobs.len()];
    let outcome = run_all_inner(jobs, config, settings, o, em, &mut reported);
    let why = match &outcome {
        Ok(()) => "parallel ended without reporting this job".to_string(),
        Err(e) => format!("not run: {}", e.message),
    };
    for (job, done) in jobs.iter().zip(&reported) {
        if !done {
            em.job(&bare_record(job, None, None, 0, why.clone()));
        }
    }
    outcome
}

fn bare_record(job: &Job, exit_code: Option<i32>, signal: Option<i32>, duration_ms: u64, error: String) -> JobRecord {
    JobRecord {
        job: job.seq,
        node: job.node.clone(),
        slot: job.slot,
        worker: job.worker.clone(),
        command: job.command.clone(),
        exit_code,
        signal,
        timed_out: false,
        error: Some(error),
        duration_ms,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_path: None,
        stderr_path: None,
    }
}

fn run_all_inner(
    jobs: &[Job],
    config: &Path,
    settings: &SshSettings,
    o: &RunOptions,
    em: &mut Emitter,
    reported: &mut [bool],
) -> Result<()> {
    // Nodes that cannot be reached get their records now, from the one connection attempt.
    let unreachable = open_connections(jobs, config, settings)?;
    let mut to_run: Vec<&Job> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match unreachable.iter().find(|u| u.dest == job.dest) {
            Some(u) => {
                em.job(&bare_record(job, u.exit_code, None, u.elapsed_ms, format!("ssh failed: {}", u.message)));
                reported[i] = true;
            }
            None => to_run.push(job),
        }
    }
    if to_run.is_empty() {
        return Ok(());
    }
    let work = tempfile::Builder::new()
        .prefix("pytest-cloud-exec-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let results = match &o.output_dir {
        Some(d) => d.clone(),
        None => work.path().join("results"),
    };
    std::fs::create_dir_all(&results).map_err(|e| Error::io(results.display(), e))?;
    // One shell command line per job, NUL-terminated: parallel runs each with PARALLEL_SHELL,
    // and a command may contain newlines. Input order = parallel's sequence number.
    let mut lines = Vec::new();
    for job in &to_run {
        lines
            .extend_from_slice(shell_words::join(ssh::command_argv(config, &job.dest, &job.remote_command)).as_bytes());
        lines.push(0);
    }
    let input = work.path().join("jobs");
    std::fs::write(&input, &lines).map_err(|e| Error::io(input.display(), e))?;
    let joblog = work.path().join("joblog");
    let mut argv: Vec<String> = vec![
        "parallel".into(),
        "--plain".into(), // ignore ~/.parallel/config and $PARALLEL
        "--will-cite".into(),
        "--null".into(),
        "--jobs".into(),
        o.jobs_at_once.to_string(),
        "--joblog".into(),
        joblog.display().to_string(),
        // Relative to parallel's working directory (the results directory), so a DIR with
        // braces in its path is not taken for replacement strings.
        "--results".into(),
        "{#}/".into(),
    ];
    if let Some(t) = o.timeout_s {
        argv.push("--timeout".into());
        argv.push((t + settings.connect_timeout_s + 10).to_string());
    }
    argv.push("-a".into());
    argv.push(input.display().to_string());
    let cmd = Cmd::new(argv).env("PARALLEL_SHELL", "/bin/sh").dir(&results);

    let mut log = JoblogReader { path: joblog, offset: 0, partial: Vec::new() };
    let mut handle = |entry: JoblogEntry, em: &mut Emitter| {
        let Some(job) = entry.seq.checked_sub(1).and_then(|i| to_run.get(i)) else {
            return;
        };
        let record = finished_record(job, &entry, &results.join(entry.seq.to_string()), o);
        em.job(&record);
        if let Some(i) = jobs.iter().position(|j| j.seq == job.seq) {
            reported[i] = true;
        }
    };
    let finished = std::thread::scope(|s| -> Result<proc::Output> {
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = tx.send(cmd.output());
        });
        loop {
            let done = match rx.recv_timeout(Duration::from_millis(25)) {
                Ok(r) => Some(r),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    Some(Err(Error::internal("the thread running parallel ended without a result")))
                }
            };
            for entry in log.read_new() {
                handle(entry, em);
            }
            if let Some(r) = done {
                return r;
            }
        }
    })?;
    let stderr = finished.stderr_trimmed();
    if !stderr.is_empty() {
        // parallel's own warnings (e.g. "This job was killed because it timed out").
        say(o.quiet, stderr.lines().map(|l| format!("exec: {l}")).collect::<Vec<_>>().join("\n"));
    }
    if !matches!(finished.status, Status::Exited(c) if (0..=101).contains(&c)) {
        return Err(Error::new(Exit::Partial, format!("GNU parallel failed: {}", proc::trim_message(&stderr))));
    }
    Ok(())
}

/// Reads complete lines appended to the joblog since the last call.
struct JoblogReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl JoblogReader {
    fn read_new(&mut self) -> Vec<JoblogEntry> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=last_nl).collect();
        String::from_utf8_lossy(&complete).lines().filter_map(parse_joblog_line).collect()
    }
}

/// How much of stderr's end is searched for the wrapper's lines beyond the tail kept: the
/// status line is the last thing written; the timeout line comes before whatever the command
/// printed while being killed.
const MARKER_WINDOW: u64 = 1 << 20;

/// The record of a job parallel has finished: its joblog line and its output files.
fn finished_record(job: &Job, entry: &JoblogEntry, dir: &Path, o: &RunOptions) -> JobRecord {
    let (stdout_path, stderr_path) = (dir.join("stdout"), dir.join("stderr"));
    let (stdout_bytes, stdout_window) = read_end(&stdout_path, o.tail_bytes);
    let (stderr_len, stderr_window) = read_end(&stderr_path, o.tail_bytes + MARKER_WINDOW);
    let (clean, remote) = strip_markers(&stderr_window, &o.marker);
    let removed = (stderr_window.len() - clean.len()) as u64;
    if removed > 0 && o.output_dir.is_some() {
        // The saved file is the command's stderr, without our status lines.
        let _ = rewrite_end(&stderr_path, stderr_len - stderr_window.len() as u64, &clean);
    }
    let (exit_code, signal, timed_out, error) =
        decide(job, Some(entry), &remote, &String::from_utf8_lossy(&clean), o.timeout_s);
    let keep = o.output_dir.is_some();
    JobRecord {
        job: job.seq,
        node: job.node.clone(),
        slot: job.slot,
        worker: job.worker.clone(),
        command: job.command.clone(),
        exit_code,
        signal,
        timed_out,
        error,
        duration_ms: entry.runtime_ms,
        stdout_tail: text_tail(&stdout_window, o.tail_bytes),
        stderr_tail: text_tail(&clean, o.tail_bytes),
        stdout_bytes,
        stderr_bytes: stderr_len - removed,
        stdout_path: keep.then(|| stdout_path.display().to_string()),
        stderr_path: keep.then(|| stderr_path.display().to_string()),
    }
}

/// A file's length and its last `n` bytes (empty when it cannot be read).
fn read_end(path: &Path, n: u64) -> (u64, Vec<u8>) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (0, Vec::new());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(n);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return (0, Vec::new());
    }
    (len, buf)
}

/// Replaces a file's bytes from `offset` on with `bytes`.
fn rewrite_end(path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(bytes)?;
    f.set_len(offset + bytes.len() as u64)
}

/// A node whose connection could not be opened: ssh's exit code if it exited, and its message.
struct Unreachable {
    dest: Destination,
    exit_code: Option<i32>,
    elapsed_ms: u64,
    message: String,
}

/// Opens the shared connection to every node before the jobs start, concurrently, so that
/// a node's jobs multiplex over one connection instead of each racing to connect (and
/// printing "ControlSocket ... already exists" into the job's stderr). Returns the nodes
/// that could not be reached.
fn open_connections(jobs: &[Job], config: &Path, settings: &SshSettings) -> Result<Vec<Unreachable>> {
    if settings.control_persist_s == 0 {
        return Ok(Vec::new());
    }
    let mut dests: Vec<&Destination> = Vec::new();
    for j in jobs {
        if !dests.contains(&&j.dest) {
            dests.push(&j.dest);
        }
    }
    let deadline = Duration::from_secs(settings.connect_timeout_s + 10);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(dests.len().clamp(1, 128))
        .build()
        .map_err(|e| Error::internal(format!("thread pool: {e}")))?;
    let results: Vec<Result<Option<Unreachable>>> = pool.install(|| {
        use rayon::prelude::*;
        dests
            .par_iter()
            .map(|d| {
                let out = Cmd::new(ssh::command_argv(config, d, "true")).deadline(deadline).output()?;
                let ms = out.elapsed.as_millis() as u64;
                let unreachable =
                    |exit_code, message| Unreachable { dest: (*d).clone(), exit_code, elapsed_ms: ms, message };
                Ok(match out.status {
                    Status::Exited(255) => {
                        let msg = out.stderr_trimmed();
                        let msg = if msg.is_empty() { "ssh exited 255 without a message".into() } else { msg };
                        Some(unreachable(Some(255), msg))
                    }
                    Status::TimedOut => {
                        Some(unreachable(None, format!("no connection within {}s; ssh was killed", deadline.as_secs())))
                    }
                    // Anything else is the node's shell answering: connected.
                    _ => None,
                })
            })
            .collect()
    });
    Ok(results.into_iter().collect::<Result<Vec<_>>>()?.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, slots: u32) -> PlannedNode {
        PlannedNode {
            node: name.into(),
            slots,
            workers: (0..slots).map(|i| format!("{name}-{i}")).collect(),
            remote_dir: format!("/home/u/pytest_u_proj/{name}"),
            python: "/home/u/pytest_u_proj/.venv/bin/python".into(),
        }
    }

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn placeholders_are_replaced_once_and_unknown_ones_kept() {
        let vars = vec![("node", "n{slot}".to_string()), ("slot", "3".to_string())];
        assert_eq!(substitute("{node}:{slot}", &vars), "n{slot}:3");
        assert_eq!(substitute("find . -exec rm {} +", &vars), "find . -exec rm {} +");
        assert_eq!(substitute("{{slot}}", &vars), "{3}");
        assert_eq!(substitute("{unclosed", &vars), "{unclosed");
        assert_eq!(substitute("é{slot}ü", &vars), "é3ü");
    }

    #[test]
    fn per_slot_gives_one_job_per_slot_in_document_order() {
        let jobs = make_jobs(
            &[node("a", 2), node("b", 1)],
            Per::Slot,
            &words(&["echo", "{node}", "{slot}/{slots}", "{worker}"]),
            0,
            "M",
        )
        .unwrap();
        let got: Vec<(usize, &str, Option<u32>, Vec<String>)> =
            jobs.iter().map(|j| (j.seq, j.node.as_str(), j.slot, j.command.clone())).collect();
        assert_eq!(
            got,
            vec![
                (1, "a", Some(0), words(&["echo", "a", "0/2", "a-0"])),
                (2, "a", Some(1), words(&["echo", "a", "1/2", "a-1"])),
                (3, "b", Some(0), words(&["echo", "b", "0/1", "b-0"])),
            ]
        );
    }

    #[test]
    fn per_node_refuses_slot_placeholders() {
        let e = check_placeholders(&words(&["echo", "{worker}"]), Per::Node).unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.message.contains("--per slot"), "{}", e.message);
        assert!(check_placeholders(&words(&["make", "-j{slots}"]), Per::Node).is_ok());
        let jobs = make_jobs(&[node("a", 4)], Per::Node, &words(&["make", "-j{slots}"]), 0, "M").unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].slot, &jobs[0].worker), (None, &None));
        assert_eq!(jobs[0].command, words(&["make", "-j4"]));
    }

    #[test]
    fn remote_command_keeps_every_word_whole() {
        let tricky = "it's a \"test\"; echo pwned $(id) `id` \n next";
        let cmd =
            remote_command("MARK", 7, "/d ir", &words(&["PYTEST_CLOUD_NODE=a"]), &words(&["printf", "%s", tricky]));
        let back = shell_words::split(&cmd).unwrap();
        assert_eq!(back[0..3], words(&["sh", "-c", WRAPPER]));
        assert_eq!(
            back[3..],
            words(&["pytest-cloud-exec", "MARK", "7", "/d ir", "env", "PYTEST_CLOUD_NODE=a", "printf", "%s", tricky])
        );
    }

    #[test]
    fn a_bad_node_name_in_the_document_is_bad_input() {
        let e = make_jobs(&[node("a;b", 1)], Per::Node, &words(&["true"]), 0, "M").unwrap_err();
        assert_eq!(e.exit, Exit::BadInput);
    }

    #[test]
    fn joblog_lines_parse_and_the_header_does_not() {
        assert_eq!(
            parse_joblog_line("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"),
            None
        );
        assert_eq!(
            parse_joblog_line("3\t:\t1795888027.281\t     0.532\t0\t0\t2\t0\tssh -F c -- n 'a\tb'"),
            Some(JoblogEntry { seq: 3, runtime_ms: 532, exitval: 2, signal: 0 })
        );
        assert_eq!(
            parse_joblog_line("1\t:\t1795888749.068\t     1.945\t0\t0\t-1\t15\tsh -c 'sleep 5'")
                .map(|e| (e.exitval, e.signal)),
            Some((-1, 15))
        );
    }

    #[test]
    fn markers_are_stripped_and_read() {
        let (clean, r) = strip_markers(b"warn\nhalfM timeout\nlastM exit 143\n", "M");
        assert_eq!(clean, b"warn\nhalflast");
        assert_eq!(r, RemoteReport { status: Some(143), timed_out: true, no_dir: false });
        let (clean, r) = strip_markers(b"M nodir\n", "M");
        assert!(clean.is_empty() && r.no_dir && r.status.is_none());
    }

    #[test]
    fn tails_start_on_a_character() {
        assert_eq!(text_tail("aé".as_bytes(), 1), "");
        assert_eq!(text_tail("aé".as_bytes(), 2), "é");
        assert_eq!(text_tail(b"abc", 10), "abc");
        assert_eq!(text_tail(b"abc", 0), "");
    }

    fn job() -> Job {
        make_jobs(&[node("a", 1)], Per::Slot, &words(&["x"]), 0, "M").unwrap().remove(0)
    }

    fn entry(exitval: i64, signal: i64) -> JoblogEntry {
        JoblogEntry { seq: 1, runtime_ms: 5, exitval, signal }
    }

    #[test]
    fn decide_reads_the_wrapper_first() {
        let r = |status| RemoteReport { status: Some(status), ..Default::default() };
        assert_eq!(decide(&job(), Some(&entry(3, 0)), &r(3), "", None), (Some(3), None, false, None));
        assert_eq!(decide(&job(), Some(&entry(143, 0)), &r(143), "", None), (None, Some(15), false, None));
        // A command's own 255 is not an ssh failure when the wrapper reported it.
        assert_eq!(decide(&job(), Some(&entry(255, 0)), &r(255), "", None), (Some(255), None, false, None));
        let timed = RemoteReport { status: Some(143), timed_out: true, no_dir: false };
        let (code, sig, to, err) = decide(&job(), Some(&entry(143, 0)), &timed, "", Some(2));
        assert_eq!((code, sig, to), (None, Some(15), true));
        assert!(err.unwrap().contains("timed out after 2s"));
    }

    #[test]
    fn decide_without_the_wrapper_blames_ssh_or_the_timeout() {
        let none = RemoteReport::default();
        let (code, _, _, err) =
            decide(&job(), Some(&entry(255, 0)), &none, "ssh: connect to host x port 22: Connection refused\n", None);
        assert_eq!(code, Some(255));
        assert_eq!(err.unwrap(), "ssh failed: ssh: connect to host x port 22: Connection refused");
        let (code, sig, to, err) = decide(&job(), Some(&entry(-1, 15)), &none, "", Some(3));
        assert_eq!((code, sig, to), (None, None, true));
        assert!(err.unwrap().contains("timed out"));
        let (_, _, _, err) = decide(&job(), None, &none, "", None);
        assert!(err.unwrap().contains("no status"));
        let nodir = RemoteReport { no_dir: true, ..Default::default() };
        let (_, _, _, err) = decide(&job(), Some(&entry(1, 0)), &nodir, "", None);
        assert!(err.unwrap().contains("no directory /home/u/pytest_u_proj/a"));
    }

    #[test]
    fn records_use_the_ripgrep_envelope() {
        let s = Summary { jobs: 2, succeeded: 1, failed: 1, timed_out: 0, elapsed_ms: 9 };
        assert_eq!(
            Record::Summary(&s).line(),
            "{\"type\":\"summary\",\"data\":{\"jobs\":2,\"succeeded\":1,\"failed\":1,\"timed_out\":0,\"elapsed_ms\":9}}\n"
        );
    }
}
