//! `pytest-cloud release`: remove the run trees (and their leases) that a sync document holds.
//!
//! Input: a `sync` document on stdin (or a `session`, which carries one). For each synced node
//! with a run tree (`run_id`, `lease`, `base_dir`), bytecode compiled in the tree is handed to
//! the shared base, then the tree and its lease are removed, only while the lease is still this
//! document's. With `--wait-pid PID` it first keeps the leases renewed while PID lives: the
//! launcher starts it so beside pytest, which is how a run's trees live exactly as long as the
//! run (share/doc/sync-safety.md, "Concurrent runs").
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
use std::io::Write;
use std::time::Duration;

pub fn run(args: &ReleaseArgs, _out: &mut dyn Write) -> Result<Outcome> {
    let doc = schema::read_stdin_document("sync")?;
    let doc = match schema::kind_of(&doc) {
        "session" => doc.get("sync").cloned().unwrap_or(serde_json::Value::Null),
        _ => doc,
    };
    let sync: schema::SyncDoc = schema::from_value(doc, "sync")?;
    keep_and_release(&sync, args.wait_pid, args.quiet)
}

/// Keeps the run trees of `sync` while `wait_pid` lives (None: not at all), then removes them.
/// Also what the launcher's own child does after handing the nodes to an early pytest.
pub fn keep_and_release(sync: &schema::SyncDoc, wait_pid: Option<u32>, quiet: bool) -> Result<Outcome> {
    let (config, held) = lease::held_in(sync)?;
    let answered = match wait_pid {
        Some(pid) => keep_while_alive(pid, &config, &held, quiet),
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
fn keep_while_alive(pid: u32, config: &std::path::Path, held: &[lease::Held], quiet: bool) -> Vec<bool> {
    let ignored = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&ignored));
    }
    let parent = std::os::unix::process::parent_id();
    // The launcher's pytest is our parent: when it exits we are re-parented at once, even
    // while it waits as a zombie for its own parent.
    let gone = || !lease::pid_alive(pid) || (parent == pid && std::os::unix::process::parent_id() != pid);
    let ((), answered) = lease::renewing(config, held, quiet, || {
        while !gone() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    answered
}
