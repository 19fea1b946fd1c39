//! The exec engine: jobs from the nodes of a document (`jobs`), GNU parallel running them
//! over ssh (`runner`), and what each job's outcome was (`outcome`). The subcommand around it
//! is `src/cmd/exec.rs`; the records it writes are `schema::{JobRecord, ExecSummary}`.
//!
//! How a job runs: GNU parallel (`--jobs` = all jobs at once unless `--jobs N`) runs
//! `ssh -F <generated config> -- <node> <remote command>` per job, saving stdout and stderr as
//! files (`--results`) and each job's status in its `--joblog`, which we read as it grows —
//! never parallel's exit status, which only counts failed jobs. The remote command is a small
//! POSIX sh wrapper (`WRAPPER`): it changes to `remote_dir`, puts the run tree's venv `bin/`
//! first on PATH (synced or node-built: `exec -- pytest` and console scripts run by name), runs
//! the command as a child and prints a status line with a per-run marker on stderr, which we strip from the output. The
//! marker is how a command that exits 255 is told apart from ssh failing (also 255), and the
//! wrapper, not ssh, enforces `--timeout`: killing a local ssh leaves the remote command
//! running (measured with OpenSSH 9.2), so the wrapper kills the job's process group on the
//! node; parallel's own `--timeout` (the limit plus connect timeout plus 10 s) only catches a
//! connection that hangs. With connection sharing on, one ssh connection per node is opened
//! before the jobs start, so the jobs multiplex over it instead of racing to connect.

mod jobs;
mod outcome;
mod runner;

pub use jobs::{Job, Per, WRAPPER, check_placeholders, make_jobs, remote_command, substitute};
pub use outcome::{RemoteReport, decide, strip_markers, text_tail};

use crate::error::{Error, Exit, Result};
use crate::schema::{self, ExecSummary, PlannedNode};
use crate::ssh::{self, Destination, SshSettings};
use super::say;
use crate::proc;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

/// How `exec` runs; the subcommand fills it in from its arguments.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub per: Per,
    /// The user's words, placeholders not yet replaced.
    pub command: Vec<String>,
    /// Jobs at once; None = all of them.
    pub jobs: Option<u32>,
    pub timeout_s: Option<u64>,
    pub tail_bytes: u64,
    pub output_dir: Option<PathBuf>,
    pub quiet: bool,
}

/// Runs `opts.command` on the nodes and writes a record per job, then the summary, on `out`.
pub fn run(nodes: &[PlannedNode], settings: &SshSettings, opts: &ExecOptions, out: &mut dyn Write) -> Result<ExecSummary> {
    let marker = jobs::new_marker();
    let jobs = make_jobs(nodes, opts.per, &opts.command, opts.timeout_s.unwrap_or(0), &marker)?;
    // The same check as sync's: `parallel` must be GNU parallel (moreutils ships another).
    crate::parallel::check_installed()?;
    if proc::on_path("ssh").is_none() {
        return Err(Error::new(Exit::MissingTool, format!("ssh: not found on PATH. {}", proc::install_hint("ssh"))));
    }
    let output_dir = match &opts.output_dir {
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
    let config = ssh::write_config(settings, &dests)?;
    let options = runner::RunOptions {
        jobs_at_once: opts.jobs.map(|n| n as usize).unwrap_or(jobs.len()).max(1),
        timeout_s: opts.timeout_s,
        tail_bytes: opts.tail_bytes,
        output_dir,
        marker,
        quiet: opts.quiet,
    };
    say(
        opts.quiet,
        format!(
            "exec: {} job{} on {} node{}",
            jobs.len(),
            if jobs.len() == 1 { "" } else { "s" },
            dests.len(),
            if dests.len() == 1 { "" } else { "s" }
        ),
    );
    let summary = runner::run_jobs(&jobs, &config, settings, &options, out)?;
    say(
        opts.quiet,
        format!(
            "exec: {} of {} jobs succeeded in {:.1}s",
            summary.succeeded,
            summary.jobs,
            summary.elapsed_ms as f64 / 1000.0
        ),
    );
    Ok(summary)
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
