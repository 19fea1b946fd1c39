//! Runs the jobs: one ssh connection per node opened first, then GNU parallel over them,
//! each job's record written as its joblog line appears; the summary always last.

use super::jobs::Job;
use super::outcome::finished_record;
use crate::engine::say;
use crate::error::{Error, Exit, Result};
use crate::parallel::{self, JoblogEntry, JoblogReader};
use crate::proc::{self, Cmd, Status};
use crate::schema::{ExecRecord, ExecSummary, JobRecord};
use crate::ssh::{self, Destination, SshSettings};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};


pub(super) struct RunOptions {
    pub(super) jobs_at_once: usize,
    pub(super) timeout_s: Option<u64>,
    pub(super) tail_bytes: u64,
    pub(super) output_dir: Option<PathBuf>,
    pub(super) marker: String,
    pub(super) quiet: bool,
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
        self.write_line(&ExecRecord::Job(r).line());
    }
}

/// Runs every job and streams its record; the summary is written last whatever happened.
pub(super) fn run_jobs(
    jobs: &[Job],
    config: &Path,
    settings: &SshSettings,
    o: &RunOptions,
    out: &mut dyn Write,
) -> Result<ExecSummary> {
    let start = Instant::now();
    let mut em = Emitter { out, failed_write: None, jobs: 0, succeeded: 0, timed_out: 0, quiet: o.quiet };
    let result = run_all(jobs, config, settings, o, &mut em);
    let summary = ExecSummary {
        jobs: em.jobs,
        succeeded: em.succeeded,
        failed: em.jobs - em.succeeded,
        timed_out: em.timed_out,
        elapsed_ms: start.elapsed().as_millis() as u64,
    };
    em.write_line(&ExecRecord::Summary(&summary).line());
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
    JobRecord { exit_code, signal, error: Some(error), duration_ms, ..job.blank_record() }
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
    //
    // Each ssh reads its stdin from `channel`, a FIFO that this process holds open (and never
    // writes) until parallel has ended: so the remote wrapper reads EOF on the ssh channel
    // exactly when that job's ssh is gone (Ctrl-C, parallel's timeout, this process killed),
    // and then ends the command on the node. parallel's own stdin for its jobs cannot serve:
    // GNU parallel 20221122 gives each job an empty pipe, at EOF at once (measured).
    let channel = work.path().join("ssh-stdin");
    crate::machine::mkfifo(&channel).map_err(|e| Error::io(format!("making the FIFO {}", channel.display()), e))?;
    // Read and write: the open does not wait for a reader, and the FIFO never reaches EOF
    // while `_hold` lives.
    let _hold = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&channel)
        .map_err(|e| Error::io(channel.display(), e))?;
    let stdin_redirect = format!(" <{}", shell_words::quote(&channel.display().to_string()));
    let mut lines = Vec::new();
    for job in &to_run {
        lines
            .extend_from_slice(shell_words::join(ssh::command_argv(config, &job.dest, &job.remote_command)).as_bytes());
        lines.extend_from_slice(stdin_redirect.as_bytes());
        lines.push(0);
    }
    let input = work.path().join("jobs");
    std::fs::write(&input, &lines).map_err(|e| Error::io(input.display(), e))?;
    let joblog = work.path().join("joblog");
    let spec = parallel::Spec {
        jobs_at_once: o.jobs_at_once,
        joblog: joblog.clone(),
        // Relative to parallel's working directory (the results directory), so a DIR with
        // braces in its path is not taken for replacement strings.
        results: None,
        timeout_s: o.timeout_s.map(|t| t + settings.connect_timeout_s + 10),
        jobs: parallel::Jobs::CommandFile(input),
    };
    let cmd = parallel::command(&spec, &results);

    let mut log = JoblogReader::new(joblog);
    // Nodes found lost, with ssh's words: asked once per node.
    let mut lost: Vec<(Destination, Option<String>)> = Vec::new();
    let mut handle = |entry: JoblogEntry, em: &mut Emitter| {
        let Some(job) = entry.seq.checked_sub(1).and_then(|i| to_run.get(i)) else {
            return;
        };
        let mut record = finished_record(job, &entry, &results.join(entry.seq.to_string()), o);
        node_lost(&mut record, job, config, &mut lost, settings);
        em.job(&record);
        if let Some(i) = jobs.iter().position(|j| j.seq == job.seq) {
            reported[i] = true;
        }
    };
    let finished = parallel::start(cmd, None)?.wait(Duration::from_millis(25), &mut || {
        for entry in log.read_new() {
            handle(entry, em);
        }
    })?;
    // The lines written between the last poll and parallel's end.
    for entry in log.read_new() {
        handle(entry, em);
    }
    let stderr = finished.stderr_trimmed();
    if !stderr.is_empty() {
        // parallel's own warnings (e.g. "This job was killed because it timed out").
        say(o.quiet, stderr.lines().map(|l| format!("exec: {l}")).collect::<Vec<_>>().join("\n"));
    }
    if crate::interrupt::requested() {
        // The jobs parallel had not finished get their record ("not run: interrupted") from
        // run_all, and the summary is still the last line.
        return Err(Error::new(Exit::Interrupted, "interrupted (Ctrl-C); the running jobs were stopped"));
    }
    if !matches!(finished.status, Status::Exited(c) if (0..=101).contains(&c)) {
        return Err(Error::new(Exit::Partial, format!("GNU parallel failed: {}", proc::trim_message(&stderr))));
    }
    Ok(())
}


/// A job whose ssh failed (255, no status from the wrapper) while the node's shared connection
/// is gone: the node was lost mid-exec (killed, frozen, off the network: the keepalive ends
/// the connection within the node timeout, `node_timeout_s`). Its record says `node lost: <ssh's words>`; a
/// command's own 255 (reported by the wrapper) and a failure of one session over a live
/// connection stay as they were. Not asked after Ctrl-C (the connection is fine, ssh was
/// interrupted).
fn node_lost(
    record: &mut JobRecord,
    job: &Job,
    config: &Path,
    lost: &mut Vec<(Destination, Option<String>)>,
    settings: &SshSettings,
) {
    let Some(rest) = record.error.as_deref().and_then(|e| e.strip_prefix(SSH_FAILED)) else {
        return;
    };
    if record.exit_code != Some(255) || settings.control_persist_s == 0 || crate::interrupt::requested() {
        return;
    }
    let gone = match lost.iter().find(|(d, _)| *d == job.dest) {
        Some((_, g)) => g.clone(),
        None => {
            // Only a gone connection is remembered: a live one may still die later.
            let g = ssh::master_gone(config, &job.dest);
            if g.is_some() {
                lost.push((job.dest.clone(), g.clone()));
            }
            g
        }
    };
    if gone.is_some() {
        // The job's ssh usually says nothing when the shared connection under it closes;
        // the check's own words name only the control socket.
        let words = if rest.starts_with("ssh exited 255 without a message") {
            "the shared ssh connection to the node closed (the node was killed, hung past the node timeout or went off the network)".to_string()
        } else {
            rest.to_string()
        };
        record.error = Some(format!("{NODE_LOST}{words}"));
    }
}

/// The `error` prefixes of a job whose ssh failed, and of one whose node was lost.
pub(super) const SSH_FAILED: &str = "ssh failed: ";
pub(super) const NODE_LOST: &str = "node lost: ";

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
    let pool = crate::engine::node_pool(dests.len())?;
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
                        let what = format!("no connection within {}s; ssh was killed", deadline.as_secs());
                        Some(unreachable(None, crate::remote::with_output(&what, &out)))
                    }
                    // Anything else is the node's shell answering: connected.
                    _ => None,
                })
            })
            .collect()
    });
    Ok(results.into_iter().collect::<Result<Vec<_>>>()?.into_iter().flatten().collect())
}
