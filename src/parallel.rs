//! GNU parallel, the one way sync (an rsync per node) and exec (a command per job) fan out:
//! the argv, the check that `parallel` is GNU parallel, the runner, and the joblog reader.
//!
//! Each job's outcome is its own line of `--joblog` (parallel's exit status only counts failed
//! jobs); each job's stdout and stderr land in `--results <dir>/{#}/` as it runs, which is
//! where the callers read progress, statistics and output tails.

use crate::error::{Error, Exit, Result};
use crate::proc::{self, Cmd, Output};
use crate::{interrupt, ssh};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the jobs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jobs {
    /// One job per line of parallel's stdin: `command` with `{}` replaced by the line. `-q`
    /// keeps every word of `command` one argument through parallel's shell. Jobs start as
    /// their lines arrive, so parallel (a perl program that takes a few hundred milliseconds
    /// to start) can be started before the work is ready.
    Template(Vec<String>),
    /// One shell command line per NUL-terminated record of this file (a command may contain
    /// newlines), run by `PARALLEL_SHELL`; the record's position is the job's sequence number.
    CommandFile(PathBuf),
}

/// One run of GNU parallel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Jobs running at once (at least 1).
    pub jobs_at_once: usize,
    pub joblog: PathBuf,
    /// The directory of `--results`: job `<seq>`'s output goes to `<dir>/<seq>/`. None: the
    /// working directory, so a path with braces in it is never taken for replacement strings.
    pub results: Option<PathBuf>,
    /// parallel's own `--timeout` in seconds.
    pub timeout_s: Option<u64>,
    pub jobs: Jobs,
}

/// The argv of [`Spec`].
pub fn argv(spec: &Spec) -> Vec<String> {
    // `--plain`: the user's `~/.parallel/config` (and /etc/parallel/config, ~/.parallelrc,
    // $PARALLEL_HOME/config, `$PARALLEL`) must not change what we run: `--dry-run`, `--bar`
    // or `-j` there broke sync (GNU parallel 20221122, `read_options`). `--will-cite` keeps
    // the citation notice silent.
    let mut v: Vec<String> = vec!["parallel".into(), "--plain".into(), "--will-cite".into()];
    if matches!(spec.jobs, Jobs::CommandFile(_)) {
        v.push("--null".into());
    }
    v.extend(["--jobs".to_string(), spec.jobs_at_once.max(1).to_string()]);
    v.extend(["--joblog".to_string(), spec.joblog.display().to_string()]);
    v.push("--results".into());
    v.push(match &spec.results {
        Some(d) => format!("{}/{{#}}/", d.display()),
        None => "{#}/".into(),
    });
    if let Some(t) = spec.timeout_s {
        v.extend(["--timeout".to_string(), t.to_string()]);
    }
    match &spec.jobs {
        Jobs::Template(command) => {
            // A line's tab-separated columns are {1}, {2}, ...; {} is the whole line.
            v.extend(["--colsep".to_string(), "\t".to_string()]);
            v.push("-q".into());
            v.extend(command.iter().cloned());
        }
        Jobs::CommandFile(f) => v.extend(["-a".to_string(), f.display().to_string()]),
    }
    v
}

/// The command for [`Spec`], run in `dir`. Its jobs run under `/bin/sh` whatever the user's
/// `PARALLEL_SHELL` or login shell: exec's command lines are POSIX sh, and sync's quoted words
/// (`-q`) are quoted for it.
pub fn command(spec: &Spec, dir: &Path) -> Cmd {
    Cmd::new(argv(spec)).dir(dir).env("PARALLEL_SHELL", "/bin/sh")
}

/// GNU parallel running on its own thread. On an interrupt (Ctrl-C, see [`interrupt`]) the
/// signal is passed on to it, so its jobs end and it writes their joblog lines.
pub struct Running {
    thread: Option<JoinHandle<Result<Output>>>,
    /// Set by [`Running::stop`]; the pids parallel runs as, as last seen.
    stop: std::sync::Arc<(std::sync::atomic::AtomicBool, std::sync::Mutex<Vec<u32>>)>,
}

/// Starts `cmd` (a [`command`]); its stdin is `input` (the read end of a pipe the caller
/// feeds and then drops), or nothing.
pub fn start(cmd: Cmd, input: Option<std::io::PipeReader>) -> Result<Running> {
    let stop = std::sync::Arc::new((std::sync::atomic::AtomicBool::new(false), std::sync::Mutex::new(Vec::new())));
    let seen = stop.clone();
    let thread = std::thread::Builder::new()
        .name("gnu-parallel".into())
        .spawn(move || {
            let mut forwarded = false;
            let mut stopped = false;
            let mut tick = |pids: &[u32]| {
                if interrupt::requested() && !forwarded {
                    interrupt::forward(pids);
                    forwarded = true;
                }
                *seen.1.lock().unwrap_or_else(|p| p.into_inner()) = pids.to_vec();
                if seen.0.load(std::sync::atomic::Ordering::SeqCst) && !stopped {
                    terminate(pids);
                    stopped = true;
                }
            };
            let every = Duration::from_millis(50);
            match input {
                Some(reader) => cmd.output_polling_from(reader, every, &mut tick),
                None => cmd.output_polling(every, &mut tick),
            }
        })
        .map_err(|e| Error::internal(format!("starting a thread for GNU parallel: {e}")))?;
    Ok(Running { thread: Some(thread), stop })
}

fn terminate(pids: &[u32]) {
    for &pid in pids {
        crate::machine::terminate(pid);
    }
}

impl Running {
    /// Terminates parallel (for one that has been given no job: nothing of ours is cut short).
    pub fn stop(&self) {
        self.stop.0.store(true, std::sync::atomic::Ordering::SeqCst);
        terminate(&self.stop.1.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Waits for parallel to end, calling `poll` about every `every` while it runs.
    pub fn wait(&mut self, every: Duration, poll: &mut dyn FnMut()) -> Result<Output> {
        let thread = self.thread.take().ok_or_else(|| Error::internal("GNU parallel was already waited for"))?;
        while !thread.is_finished() {
            poll();
            std::thread::sleep(every);
        }
        thread.join().unwrap_or_else(|_| Err(Error::internal("the thread running GNU parallel panicked")))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `parallel` on PATH must be GNU parallel (exit 72 otherwise). `parallel --version` costs a
/// perl start-up (0.2-0.5 s), as much as a whole no-change sync otherwise: a program file
/// once found to be GNU parallel is remembered by its identity (path, inode, size, change
/// time), which any replacement of the file changes.
pub fn check_installed() -> Result<()> {
    let stamp = proc::on_path("parallel").and_then(|p| tool_stamp(&p));
    if stamp.as_ref().is_some_and(|s| s.exists()) {
        return Ok(());
    }
    let out = Cmd::new(["parallel", "--version"]).deadline(Duration::from_secs(30)).output()?;
    if !out.stdout_str().contains("GNU parallel") {
        let at = proc::on_path("parallel").map(|p| p.display().to_string()).unwrap_or_else(|| "on PATH".into());
        let said = format!("{}\n{}", out.stdout_str(), String::from_utf8_lossy(&out.stderr));
        let first = said.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("nothing");
        return Err(Error::new(
            Exit::MissingTool,
            format!(
                "`parallel` at {at} is not GNU parallel (`parallel --version` printed {first:?}): moreutils (and some macOS package sets) ship a different program of that name. Install GNU parallel: Debian: apt-get install parallel (it replaces moreutils' parallel); macOS: brew install parallel."
            ),
        ));
    }
    if let Some(s) = stamp {
        let _ = std::fs::write(s, b"GNU parallel\n");
    }
    Ok(())
}

/// Where the verdict on the program file `path` is remembered, or None when it cannot be.
fn tool_stamp(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    let id = format!("{}\0{}\0{}\0{}\0{}\0{}", real.display(), m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec());
    Some(ssh::runtime_dir().ok()?.join(format!("tool-ok-{:016x}", ssh::fnv1a(id.as_bytes()))))
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

/// A whole joblog: seq -> entry. A job that never ended has no line.
pub fn parse_joblog(text: &str) -> BTreeMap<usize, JoblogEntry> {
    text.lines().filter_map(parse_joblog_line).map(|e| (e.seq, e)).collect()
}

/// Reads complete lines appended to a joblog since the last call, while parallel runs.
pub struct JoblogReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl JoblogReader {
    pub fn new(path: PathBuf) -> Self {
        JoblogReader { path, offset: 0, partial: Vec::new() }
    }

    pub fn read_new(&mut self) -> Vec<JoblogEntry> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_reads_jobs_from_a_file_and_logs_each() {
        let spec = Spec {
            jobs_at_once: 0,
            joblog: "/t/log".into(),
            results: Some("/t/res".into()),
            timeout_s: None,
            jobs: Jobs::Template(vec!["rsync".into(), "{}".into()]),
        };
        assert_eq!(argv(&spec).join(" "), "parallel --plain --will-cite --jobs 1 --joblog /t/log --results /t/res/{#}/ --colsep \t -q rsync {}");
        let spec = Spec { jobs_at_once: 3, results: None, timeout_s: Some(20), jobs: Jobs::CommandFile("/t/jobs".into()), ..spec };
        assert_eq!(
            argv(&spec).join(" "),
            "parallel --plain --will-cite --null --jobs 3 --joblog /t/log --results {#}/ --timeout 20 -a /t/jobs"
        );
    }

    #[test]
    fn joblog_gives_each_jobs_own_status() {
        let log = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n\
            1\t:\t1795887952.258\t     3.034\t0\t17\t0\t0\trsync a\n\
            3\t:\t1795887952.276\t     0.5\t0\t15\t23\t0\trsync c\n\
            2\t:\t1795887952.276\t     0.1\t0\t0\t-1\t15\trsync b\n";
        let j = parse_joblog(log);
        assert_eq!(j.len(), 3);
        assert_eq!(j[&1], JoblogEntry { seq: 1, exitval: 0, signal: 0, runtime_ms: 3034 });
        assert_eq!(j[&3].exitval, 23);
        assert_eq!(j[&2].signal, 15);
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
}
