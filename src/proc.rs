//! The one place that spawns processes. It keeps three failures apart: the tool could not be
//! started (say how to install it), it exited non-zero (code, trimmed stderr, the argv), or it
//! ran past its deadline (killed, nothing left running). Argument vectors only: never a local
//! `sh -c` string. Output is captured by duct on its own threads, so a chatty child cannot
//! deadlock us.

use crate::error::{Error, Exit};
use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A command to run: argv, optional stdin bytes, environment additions, working directory and
/// deadline.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    pub argv: Vec<OsString>,
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(OsString, OsString)>,
    pub dir: Option<PathBuf>,
    pub deadline: Option<Duration>,
}

/// How a finished child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
    /// Killed by us at the deadline.
    TimedOut,
}

impl Status {
    pub fn success(self) -> bool {
        self == Status::Exited(0)
    }
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Status::Exited(c) => c,
            Status::Signaled(s) => 128 + s,
            Status::TimedOut => 124,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_trimmed(&self) -> String {
        trim_message(&String::from_utf8_lossy(&self.stderr))
    }
}

/// After a kill, how long the child gets to be reaped and its pipes to drain.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// A child's stdout and stderr, each read to EOF on its own thread into a shared buffer, so
/// a chatty child never blocks and a killed one's text is kept.
struct Captured {
    bufs: [std::sync::Arc<std::sync::Mutex<Vec<u8>>>; 2],
    done: std::sync::mpsc::Receiver<()>,
}

impl Captured {
    fn start(out: std::io::PipeReader, err: std::io::PipeReader) -> Captured {
        use std::io::Read;
        use std::sync::{Arc, Mutex};
        let (tx, done) = std::sync::mpsc::channel();
        let bufs = [Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new()))];
        for (mut r, buf) in [(out, Arc::clone(&bufs[0])), (err, Arc::clone(&bufs[1]))] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    match r.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => buf.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                let _ = tx.send(());
            });
        }
        Captured { bufs, done }
    }

    /// What both streams held once they ended, or at `until`; and whether both ended.
    fn collect(self, until: Option<Instant>) -> (Vec<u8>, Vec<u8>, bool) {
        let mut ended = 0;
        while ended < 2 {
            let got = match until {
                None => self.done.recv().is_ok(),
                Some(u) => self.done.recv_timeout(u.saturating_duration_since(Instant::now())).is_ok(),
            };
            if !got {
                break;
            }
            ended += 1;
        }
        let take = |b: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
        (take(&self.bufs[0]), take(&self.bufs[1]), ended == 2)
    }
}

impl Cmd {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Cmd { argv: argv.into_iter().map(Into::into).collect(), ..Default::default() }
    }
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.dir = Some(d.into());
        self
    }
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// The argv as a shell would need it typed, for messages.
    pub fn display(&self) -> String {
        let words: Vec<String> =
            self.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        shell_words::join(words)
    }

    fn program(&self) -> String {
        self.argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// Starts the child with its stdout and stderr read by our own threads (not duct's
    /// capture), so that what a child wrote is still ours when it is killed at its deadline,
    /// even while something it started holds the pipes open.
    fn start(&self, pipe: Option<std::io::PipeReader>) -> Result<(duct::Handle, Captured), Error> {
        let mut e = duct::cmd(&self.argv[0], &self.argv[1..]);
        e = match (pipe, &self.stdin) {
            (Some(p), _) => e.stdin_file(p),
            (None, Some(b)) => e.stdin_bytes(b.clone()),
            (None, None) => e.stdin_null(),
        };
        for (k, v) in &self.env {
            e = e.env(k, v);
        }
        if let Some(d) = &self.dir {
            e = e.dir(d);
        }
        let (out_r, out_w) = std::io::pipe().map_err(|e| self.start_error(e))?;
        let (err_r, err_w) = std::io::pipe().map_err(|e| self.start_error(e))?;
        // The expression (holding our write ends) is dropped here, so only the child holds
        // them: the readers see EOF when it (and whatever it started) closes them.
        let handle = e.stdout_file(out_w).stderr_file(err_w).unchecked().start().map_err(|e| self.start_error(e))?;
        Ok((handle, Captured::start(out_r, err_r)))
    }

    /// Runs to completion (or the deadline) and returns whatever status it ended with, with
    /// what it wrote (also when it was killed at the deadline). Only a failure to start is an
    /// `Err`.
    pub fn output(&self) -> Result<Output, Error> {
        self.run(None, Duration::MAX, &mut |_| false)
    }

    /// Like [`output`](Self::output), but calls `tick` with the child's pids about every `every`
    /// while it runs: to read progress from files the child writes, or to pass an interrupt on.
    /// The deadline still applies.
    pub fn output_polling(&self, every: Duration, tick: &mut dyn FnMut(&[u32])) -> Result<Output, Error> {
        self.run(None, every, &mut |pids| {
            tick(pids);
            false
        })
    }

    /// Like [`output`](Self::output), but once `after` has passed with the child still
    /// running, asks `cut` (once): if it says so, the child is killed then, as at its deadline
    /// ([`Status::TimedOut`]). For a deadline that depends on what is learnt meanwhile
    /// (a node whose connection turns out to be gone is given less time), at no cost to a
    /// child that ends before `after`.
    pub fn output_or_cut(&self, after: Duration, cut: &mut dyn FnMut() -> bool) -> Result<Output, Error> {
        let mut asked = false;
        self.run(None, after, &mut |_| !std::mem::replace(&mut asked, true) && cut())
    }

    /// Like [`output_polling`](Self::output_polling), with the child's stdin read from `input`:
    /// the read end of a pipe whose write end the caller feeds (from another thread) and then
    /// drops, which is the child's end of input.
    pub fn output_polling_from(&self, input: std::io::PipeReader, every: Duration, tick: &mut dyn FnMut(&[u32])) -> Result<Output, Error> {
        self.run(Some(input), every, &mut |pids| {
            tick(pids);
            false
        })
    }

    /// Blocks in duct's `wait_deadline` until the child ends, the next tick or the deadline,
    /// whichever comes first (no sleep loop). A tick that answers true ends the child as its
    /// deadline would.
    fn run(&self, input: Option<std::io::PipeReader>, every: Duration, tick: &mut dyn FnMut(&[u32]) -> bool) -> Result<Output, Error> {
        let start = Instant::now();
        let until = self.deadline.and_then(|d| start.checked_add(d));
        let (handle, captured) = self.start(input)?;
        let mut next_tick = start.checked_add(every);
        loop {
            let wake = match (until, next_tick) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let ended = match wake {
                None => Some(handle.wait().map_err(|e| self.start_error(e))?.status),
                Some(w) => handle.wait_deadline(w).map_err(|e| self.start_error(e))?.map(|o| o.status),
            };
            if let Some(status) = ended {
                // The child is gone; its output ends when everything it started closed the
                // pipes too, which the deadline still bounds.
                let (stdout, stderr, complete) = captured.collect(until);
                let status = if complete { status_of(&status) } else { Status::TimedOut };
                return Ok(Output { status, stdout, stderr, elapsed: start.elapsed() });
            }
            let now = Instant::now();
            let cut = next_tick.is_some_and(|t| now >= t) && {
                let cut = tick(&handle.pids());
                next_tick = Instant::now().checked_add(every);
                cut
            };
            if cut || until.is_some_and(|u| now >= u) {
                // SIGKILL to the child, then a moment for it to be reaped and for the readers
                // to take in what is still in the pipes.
                let _ = handle.kill();
                let grace = now + KILL_GRACE;
                let _ = handle.wait_deadline(grace);
                let (stdout, stderr, _) = captured.collect(Some(grace));
                return Ok(Output { status: Status::TimedOut, stdout, stderr, elapsed: start.elapsed() });
            }
        }
    }

    /// Runs and requires exit 0; otherwise an error naming the command, its code and stderr.
    pub fn checked(&self) -> Result<Output, Error> {
        let out = self.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(Error::new(Exit::Partial, self.failure_message(&out)))
        }
    }

    pub fn failure_message(&self, out: &Output) -> String {
        let how = match out.status {
            Status::Exited(c) => format!("exited with status {c}"),
            Status::Signaled(s) => format!("was killed by signal {s}"),
            Status::TimedOut => "ran past its deadline and was killed".to_string(),
        };
        let err = out.stderr_trimmed();
        if err.is_empty() {
            format!("`{}` {how}", self.display())
        } else {
            format!("`{}` {how}: {err}", self.display())
        }
    }

    fn start_error(&self, e: io::Error) -> Error {
        let prog = self.program();
        if e.kind() == io::ErrorKind::NotFound {
            Error::new(Exit::MissingTool, format!("{prog}: not found on PATH. {}", install_hint(&prog)))
        } else {
            Error::new(Exit::Io, format!("could not run `{}`: {e}", self.display()))
        }
    }
}

#[cfg(unix)]
fn status_of(s: &std::process::ExitStatus) -> Status {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => Status::Exited(c),
        (None, Some(sig)) => Status::Signaled(sig),
        (None, None) => Status::Exited(-1),
    }
}

/// The first executable `name` on PATH, as a spawn will find it, without running it.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// How to get a tool we shell out to.
pub fn install_hint(program: &str) -> &'static str {
    let base = program.rsplit('/').next().unwrap_or(program);
    match base {
        "ssh" => "Install OpenSSH's client (Debian: apt-get install openssh-client; macOS: built in).",
        "rsync" => "Install rsync on this machine and on every node (Debian: apt-get install rsync; macOS: brew install rsync).",
        "parallel" => "Install GNU parallel (Debian: apt-get install parallel; macOS: brew install parallel).",
        p if p.starts_with("python") => "Install Python 3 or pass the interpreter with --python.",
        _ => "Install it or put it on PATH.",
    }
}

/// The last few non-empty lines of a child's stderr, for a one-paragraph message.
pub fn trim_message(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let tail = if lines.len() > 6 { &lines[lines.len() - 6..] } else { &lines[..] };
    let joined = tail.join("\n");
    if joined.len() <= 2000 {
        return joined;
    }
    // The last 2,000 bytes, starting on a character: a byte offset can fall inside one.
    let mut start = joined.len() - 2000;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    joined[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_is_its_own_error_with_a_hint() {
        let err = Cmd::new(["pytest-cloud-no-such-tool"]).output().unwrap_err();
        assert_eq!(err.exit, Exit::MissingTool);
        assert!(err.message.contains("not found on PATH"), "{}", err.message);
    }

    #[test]
    fn nonzero_exit_names_the_command_and_stderr() {
        let cmd = Cmd::new(["sh", "-c", "echo boom >&2; exit 3"]);
        let out = cmd.output().unwrap();
        assert_eq!(out.status, Status::Exited(3));
        let msg = cmd.failure_message(&out);
        assert!(msg.contains("exited with status 3") && msg.contains("boom"), "{msg}");
        assert!(msg.contains("'echo boom >&2; exit 3'"), "argv is shell-quoted: {msg}");
    }

    #[test]
    fn deadline_kills_the_child() {
        let out = Cmd::new(["sleep", "30"]).deadline(Duration::from_millis(200)).output().unwrap();
        assert_eq!(out.status, Status::TimedOut);
        assert!(out.elapsed < Duration::from_secs(10));
    }

    #[test]
    fn a_timed_out_child_keeps_what_it_had_written() {
        // A child that wrote, then hangs (exec: the shell is the sleep, our direct child).
        let cmd = Cmd::new(["sh", "-c", "echo partial-out; echo 'ssh: said this' >&2; exec sleep 30"]).deadline(Duration::from_millis(300));
        let out = cmd.output().unwrap();
        assert_eq!(out.status, Status::TimedOut);
        assert_eq!(out.stdout_str(), "partial-out\n");
        assert_eq!(out.stderr_trimmed(), "ssh: said this");
        assert!(cmd.failure_message(&out).contains("ssh: said this"), "{}", cmd.failure_message(&out));
        // Also when a grandchild keeps the pipes open after the child was killed.
        let out = Cmd::new(["sh", "-c", "echo before-hang >&2; sleep 30; true"]).deadline(Duration::from_millis(300)).output().unwrap();
        assert_eq!((out.status, out.stderr_trimmed()), (Status::TimedOut, "before-hang".to_string()));
        let mut ticks = 0;
        let out = Cmd::new(["sh", "-c", "echo polled >&2; exec sleep 30"])
            .deadline(Duration::from_millis(300))
            .output_polling(Duration::from_millis(20), &mut |_| ticks += 1)
            .unwrap();
        assert_eq!((out.status, out.stderr_trimmed()), (Status::TimedOut, "polled".to_string()));
        assert!(ticks > 0);
    }

    #[test]
    fn a_cut_asked_after_its_time_ends_the_child_as_its_deadline_would() {
        let cmd = Cmd::new(["sh", "-c", "echo cut-me >&2; exec sleep 30"]).deadline(Duration::from_secs(60));
        let mut asked = 0;
        let out = cmd.output_or_cut(Duration::from_millis(100), &mut || {
            asked += 1;
            true
        });
        let out = out.unwrap();
        assert_eq!((out.status, out.stderr_trimmed(), asked), (Status::TimedOut, "cut-me".to_string(), 1));
        assert!(out.elapsed < Duration::from_secs(30), "cut, not the 60 s deadline: {:?}", out.elapsed);
        // Asked once, and a "no" lets the child finish.
        let mut asked = 0;
        let out = Cmd::new(["sleep", "0.3"]).output_or_cut(Duration::from_millis(50), &mut || {
            asked += 1;
            false
        });
        assert_eq!((out.unwrap().status, asked), (Status::Exited(0), 1));
        // A child that ends first is never asked about.
        let out = Cmd::new(["true"]).output_or_cut(Duration::from_secs(30), &mut || panic!("asked"));
        assert!(out.unwrap().status.success());
    }

    #[test]
    fn signal_is_reported_as_128_plus_n() {
        let out = Cmd::new(["sh", "-c", "kill -TERM $$"]).output().unwrap();
        assert_eq!(out.status, Status::Signaled(15));
        assert_eq!(out.status.shell_code(), 143);
    }

    #[test]
    fn a_pipe_fed_while_the_child_runs_reaches_it() {
        use std::io::Write;
        let (reader, mut writer) = std::io::pipe().unwrap();
        let feeder = std::thread::spawn(move || {
            writer.write_all(b"one\n").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            writer.write_all(b"two\n").unwrap();
        });
        let mut ticks = 0;
        let out = Cmd::new(["cat"]).output_polling_from(reader, Duration::from_millis(10), &mut |_| ticks += 1).unwrap();
        feeder.join().unwrap();
        assert_eq!(out.stdout, b"one\ntwo\n");
        assert!(out.status.success());
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        // 2,001 bytes: the cut 2,000 bytes from the end falls inside the first 'é'.
        let msg = format!("é{}", "x".repeat(1999));
        let trimmed = trim_message(&msg);
        assert_eq!(trimmed, "x".repeat(1999), "the partial character is dropped, the rest kept");
        let all_wide = "€".repeat(1000); // 3,000 bytes on one line
        let trimmed = trim_message(&all_wide);
        assert!(trimmed.len() <= 2000 && trimmed.chars().all(|c| c == '€'), "{}", trimmed.len());
        assert_eq!(trimmed.len(), 1998);
    }

    #[test]
    fn stdin_reaches_the_child() {
        let out = Cmd::new(["cat"]).stdin("hello").checked().unwrap();
        assert_eq!(out.stdout, b"hello");
    }
}
