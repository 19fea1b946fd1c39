//! How a job ended, from parallel's joblog line and what the remote wrapper printed, and the
//! record that says so.

use super::jobs::Job;
use super::runner::RunOptions;
use crate::parallel::JoblogEntry;
use crate::proc;
use crate::schema::JobRecord;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;


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

/// How much of stderr's end is searched for the wrapper's lines beyond the tail kept: the
/// status line is the last thing written; the timeout line comes before whatever the command
/// printed while being killed.
const MARKER_WINDOW: u64 = 1 << 20;

/// The record of a job parallel has finished: its joblog line and its output files.
pub(super) fn finished_record(job: &Job, entry: &JoblogEntry, dir: &Path, o: &RunOptions) -> JobRecord {
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
        ..job.blank_record()
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

#[cfg(test)]
mod tests {
    use super::super::jobs::tests::{node, words};
    use super::super::jobs::{Per, make_jobs};
    use super::*;

    #[test]
    fn markers_are_stripped_and_read() {        let (clean, r) = strip_markers(b"warn\nhalfM timeout\nlastM exit 143\n", "M");
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
}
