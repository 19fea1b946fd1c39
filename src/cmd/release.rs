//! `pytest-cloud release`: remove the run trees (and their leases) that a sync document holds.
//!
//! Input: a `sync` document on stdin (or a `session`, which carries one). For each synced node
//! with a run tree (`run_id`, `lease`, `base_dir`), bytecode compiled in the tree is handed to
//! the shared base, then the tree and its lease are removed, only while the lease is still this
//! document's. With `--wait-pid PID` it first keeps the leases renewed while PID lives: the
//! launcher starts it so beside pytest, which is how a run's trees live exactly as long as the
//! run (share/doc/sync-safety.md, "Concurrent runs"). The end of PID is waited for without
//! polling on Linux (a pidfd, [`crate::machine::ExitWatch`]); on macOS, which has no portable
//! blocking wait for a process that is not our child, it is looked for every 50 ms. Under the
//! early controller the launcher's own child does the same ([`keep_and_release`] with the
//! hand-over connection): pytest holds its end open while it lives, so its EOF says at once,
//! on every platform, that pytest has ended.
//! Output: nothing on stdout; one line per node that could not be released on stderr.
//! Exit codes: 0 every tree released (or none held); 1 some node failed (its tree is removed by
//! a later run once its lease is stale); 65/66 bad or missing stdin document.
//!
//! Example: `pytest-cloud sync < plan.json > s.json && pytest-cloud exec < s.json -- make check && pytest-cloud release < s.json`

use crate::cli::ReleaseArgs;
use crate::cmd::say;
use crate::error::{Outcome, Result};
use crate::engine::lease::{self, NodeAnswer};
use crate::schema;
use crate::machine::{ExitWatch, Woke};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub fn run(args: &ReleaseArgs, _out: &mut dyn Write) -> Result<Outcome> {
    let doc = schema::read_stdin_document("sync")?;
    let doc = match schema::kind_of(&doc) {
        "session" => doc.get("sync").cloned().unwrap_or(serde_json::Value::Null),
        _ => doc,
    };
    let sync: schema::SyncDoc = schema::from_value(doc, "sync")?;
    keep_and_release(&sync, args.wait_pid, None, args.quiet)
}

/// Keeps the run trees of `sync` while `wait_pid` lives (None: not at all), then removes them.
/// Also what the launcher's own child does after handing the nodes to an early pytest, with
/// `link` the hand-over connection, which pytest's glue keeps open for its life (an EOF there
/// is pytest's end, checked against the pid before it counts).
pub fn keep_and_release(sync: &schema::SyncDoc, wait_pid: Option<u32>, link: Option<&UnixStream>, quiet: bool) -> Result<Outcome> {
    let (config, held) = lease::held_in(sync)?;
    let answered = match wait_pid {
        Some(pid) => keep_while_alive(pid, link, &config, &held, quiet),
        None => vec![true; held.len()],
    };
    // Beside the launcher this holds its output open: a node that stopped answering (lost,
    // frozen) must not hold the end of the run for long; its tree is reaped by a later run.
    let deadline = if wait_pid.is_some() { Duration::from_secs(10) } else { Duration::from_secs(60) };
    let answers = lease::drop_answered(&config, &held, &answered, deadline);
    let mut failed = 0;
    for (h, a) in held.iter().zip(&answers) {
        if let NodeAnswer::Failed(why) = a {
            failed += 1;
            say(quiet, format!("pytest-cloud: release: {}: {}/{} not removed: {why}", h.node, h.runs, h.id));
        }
    }
    Ok(if failed == 0 { Outcome::Complete } else { Outcome::Partial })
}

/// Renews every [`lease::RENEW_EVERY`] until `pid` is gone; returns which nodes answered the
/// last renewal. Ctrl-C and a closed terminal reach this process with pytest's (same process
/// group): they are ignored here, because the trees must outlive pytest's own shutdown; the
/// end of `pid` is what ends the wait.
fn keep_while_alive(pid: u32, link: Option<&UnixStream>, config: &std::path::Path, held: &[lease::Held], quiet: bool) -> Vec<bool> {
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&ignored));
    }
    let watch = ExitWatch::new(pid);
    let ((), answered) = lease::renewing(config, held, quiet, || wait_for_end(&watch, link));
    answered
}

/// Blocks until the watched process is gone, woken at once by an EOF on `link`. The kernel
/// closes a process's descriptors a moment before it counts as exited, so an EOF is followed
/// by the watch's own wait (a blocking one on Linux). An EOF while it still lives (the glue
/// closed its end early) leaves the watch alone to wait.
fn wait_for_end(watch: &ExitWatch, link: Option<&UnixStream>) {
    use std::os::fd::AsFd;
    let mut link = link;
    loop {
        match watch.wait(link.map(|l| l.as_fd())) {
            Woke::Gone => return,
            Woke::Also => {
                let mut buf = [0u8; 256];
                match link.map(|mut l| l.read(&mut buf)) {
                    Some(Ok(n)) if n > 0 => {} // nothing is sent on it; ignored
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    _ => link = None,
                }
            }
        }
    }
}
