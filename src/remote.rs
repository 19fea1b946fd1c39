//! The node-script transport: every node-side step (the probe, the sync's pre-flight and
//! finish, the leases' renew and drop) is a POSIX sh script sent on ssh's stdin and run as
//! `sh -s -- WORDS...`, one round trip, answering `key=value` lines on stdout and ending with
//! an end key of its own (`pytest_cloud_probe_end=1`, `sync_node_end=1`). Only here are such
//! scripts run and their answers read, so the steps that use them (engine::probe,
//! engine::sync, engine::lease) need not import each other.

use crate::error::Result;
use crate::proc::{Cmd, Output, Status};
use crate::schema::ErrorKind;
use crate::ssh::{self, Destination};
use std::path::Path;
use std::time::Duration;

/// The sync's node script (`src/sync_node.sh`): modes preflight, finish, release, renew, drop.
pub const SYNC_SCRIPT: &str = include_str!("sync_node.sh");
/// The probe (`src/probe.sh`).
pub const PROBE_SCRIPT: &str = include_str!("probe.sh");

/// What a node script answered.
#[derive(Debug)]
pub struct Reply {
    /// Its `key=value` lines, in order (a key may repeat).
    pub kv: Vec<(String, String)>,
    pub out: Output,
}

impl Reply {
    /// The first value of KEY.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Why the run did not reach the script's END_KEY, if it did not: ssh's deadline, ssh's
    /// own failure (exit 255, classified by its words), or the script stopping early.
    pub fn failure(&self, end_key: &str) -> Option<(ErrorKind, String)> {
        match self.out.status {
            Status::TimedOut => Some((ErrorKind::Timeout, with_output("the node did not answer in time; ssh was killed", &self.out))),
            Status::Exited(255) => {
                let msg = self.out.stderr_trimmed();
                Some((classify_ssh_error(&msg), msg))
            }
            _ if self.get(end_key).is_none() => Some((
                ErrorKind::SyncFailed,
                format!("the node-side script stopped (exit {}): {}", self.out.status.shell_code(), self.out.stderr_trimmed()),
            )),
            _ => None,
        }
    }
}

/// A timed-out step's message with what ssh or the script had said by then, so the user sees
/// more than "no answer".
pub fn with_output(what: &str, out: &Output) -> String {
    let said = out.stderr_trimmed();
    if said.is_empty() { what.to_string() } else { format!("{what}; it had said: {said}") }
}

/// Runs SCRIPT (after PRELUDE, shell code such as function definitions, when not empty) on
/// DEST as `sh -s -- WORDS...`, every word quoted for the remote shell.
pub fn run<S: AsRef<str>>(config: &Path, dest: &Destination, prelude: &str, script: &str, words: &[S], deadline: Duration) -> Result<Reply> {
    run_or_cut(config, dest, prelude, script, words, deadline, None)
}

/// A deadline that may be shortened: after the Duration, if the run still goes on, the
/// function is asked (once) whether to stop it then ([`Cmd::output_or_cut`]).
pub type Cut<'a> = Option<(Duration, &'a mut dyn FnMut() -> bool)>;

fn run_or_cut<S: AsRef<str>>(config: &Path, dest: &Destination, prelude: &str, script: &str, words: &[S], deadline: Duration, cut: Cut<'_>) -> Result<Reply> {
    let mut argv_words: Vec<&str> = vec!["sh", "-s", "--"];
    argv_words.extend(words.iter().map(|w| w.as_ref()));
    let argv = ssh::command_argv(config, dest, &ssh::remote_quote(&argv_words));
    let stdin = if prelude.is_empty() { script.to_string() } else { format!("{prelude}\n{script}") };
    let cmd = Cmd::new(argv).stdin(stdin).deadline(deadline);
    let out = match cut {
        None => cmd.output()?,
        Some((after, ask)) => cmd.output_or_cut(after, ask)?,
    };
    Ok(Reply { kv: parse_kv(&out.stdout_str()), out })
}

/// The sync node script in MODE with ARGS.
pub fn sync_script(config: &Path, dest: &Destination, prelude: &str, mode: &str, args: &[&str], deadline: Duration) -> Result<Reply> {
    sync_script_or_cut(config, dest, prelude, mode, args, deadline, None)
}

/// [`sync_script`] with a deadline that may be cut short ([`Cut`]).
pub fn sync_script_or_cut(config: &Path, dest: &Destination, prelude: &str, mode: &str, args: &[&str], deadline: Duration, cut: Cut<'_>) -> Result<Reply> {
    let mut words = vec![mode];
    words.extend_from_slice(args);
    run_or_cut(config, dest, prelude, SYNC_SCRIPT, &words, deadline, cut)
}

/// Maps ssh's own words (exit 255) to an error kind; the message is kept verbatim beside it.
pub fn classify_ssh_error(stderr: &str) -> ErrorKind {
    let s = stderr.to_ascii_lowercase();
    if s.contains("connection refused") {
        ErrorKind::Refused
    } else if s.contains("timed out") || s.contains("timeout") {
        ErrorKind::Timeout
    } else if s.contains("host key verification failed")
        || s.contains("remote host identification has changed")
        || s.contains("host key is known")
        || s.contains("no matching host key")
    {
        ErrorKind::HostKey
    } else if s.contains("permission denied") || s.contains("too many authentication failures") {
        ErrorKind::Auth
    } else if s.contains("could not resolve hostname") || s.contains("name or service not known") || s.contains("nodename nor servname") {
        ErrorKind::Dns
    } else if s.contains("no route to host") || s.contains("network is unreachable") {
        ErrorKind::Unreachable
    } else {
        ErrorKind::Ssh
    }
}

/// CONTENT as a quoted shell here-document: `<<'DELIM'`, then the returned text (CONTENT,
/// ending in a newline) and DELIM on a line of its own. The delimiter is derived from the
/// content and lengthened until no line of the content equals it, so any file can travel
/// inside a node script unchanged (a quoted here-document expands nothing).
pub fn heredoc(content: &str) -> (String, String) {
    let mut content = content.to_string();
    if !content.ends_with('\n') {
        content.push('\n');
    }
    let mut delim = format!("PYTEST_CLOUD_EOF_{:016x}", crate::ssh::fnv1a(content.as_bytes()));
    while content.lines().any(|l| l == delim) {
        delim.push('_');
    }
    (delim, content)
}

/// `key=value` lines; other lines are ignored. Pure, for tests.
pub fn parse_kv(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim_end().to_string()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heredoc_delimiter_never_stands_alone_in_its_content() {
        let (d, c) = heredoc("a\nb");
        assert_eq!(c, "a\nb\n");
        let tricky = format!("x\n{d}\n");
        let (d2, c2) = heredoc(&tricky);
        assert!(!c2.lines().any(|l| l == d2), "{d2} in {c2:?}");
    }

    #[test]
    fn key_value_lines_keep_their_order_and_skip_other_text() {
        let kv = parse_kv("a=1\nnoise\n b = x=y \na=2\n");
        assert_eq!(kv, vec![("a".into(), "1".into()), ("b".into(), " x=y".into()), ("a".into(), "2".into())]);
    }
}
