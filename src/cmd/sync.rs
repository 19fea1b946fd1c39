//! `pytest-cloud sync`: mirror the project root, virtualenv included, into a directory on
//! every planned node.
//!
//! Input: a `plan` on stdin (or a later document carrying one). Output: a `sync` document:
//! the plan carried forward, each planned node synced (bytes sent, time, rsync's status) or
//! dropped with the reason (stage `sync`).
//! Exit codes: 0 every node synced, 1 some dropped (here or earlier), 69 none left, 72 rsync
//! or GNU parallel missing, 75 every remaining node locked by another run, 64 bad option,
//! 65/66 bad or missing stdin document, 130 interrupted (locks released).
//!
//! How each node is synced, step by step: `src/engine/sync/mod.rs`.
//!
//! Example: `pytest-cloud probe --nodes 'n1 n2' | pytest-cloud plan | pytest-cloud sync > sync.json`

use crate::cli::SyncArgs;
use crate::cmd::{apply_ssh_args, emit, say};
use crate::engine::sync::{self, Screen, SyncOptions, human_bytes};
use crate::error::{Outcome, Result};
use crate::interrupt;
use crate::schema::{self, SyncDoc};
use std::io::{IsTerminal, Write};
use std::time::Duration;

pub fn run(args: &SyncArgs, out: &mut dyn Write) -> Result<Outcome> {
    let doc = schema::read_stdin_document("plan")?;
    let mut plan = schema::plan_from(doc, "plan")?;
    apply_ssh_args(&mut plan.inventory.ssh, &args.ssh);
    let cipher = match args.rsync_cipher.trim() {
        "" | "none" => None,
        c => Some(c.to_string()),
    };
    let tty = std::io::stderr().is_terminal() && !args.quiet;
    let opts = SyncOptions {
        source: args.source.clone(),
        bwlimit_kbps: args.rsync_bandwidth_limit,
        max_processes: args.rsync_max_processes,
        cipher,
        excludes: args.exclude.clone(),
        include_git: args.include_git,
        develop_eggs: args.develop_egg.clone(),
        lock_wait: Duration::from_secs(args.lock_wait),
        live_progress: tty,
        lease_ttl_min: args.keep_minutes,
        env: args.env,
        wheelhouse: args.wheelhouse,
        ..SyncOptions::default()
    };
    interrupt::install();
    let screen = Screen::new(args.quiet, tty);
    let doc = sync::sync_plan(&plan, &opts, &|e| screen.event(e));
    screen.clear();
    let doc = doc?;
    emit(out, &schema::to_pretty(&doc))?;
    report(&doc, args.quiet);
    Ok(sync::outcome(&doc))
}

fn report(doc: &SyncDoc, quiet: bool) {
    if doc.nodes.is_empty() {
        eprintln!("pytest-cloud: error: no node could be synced:");
        for d in &doc.dropped {
            eprintln!("  {}: {} ({}, stage {})", d.node, d.message, d.error_kind.as_str(), d.stage);
        }
        return;
    }
    let bytes: u64 = doc.nodes.iter().map(|n| n.bytes_sent).sum();
    say(
        quiet,
        format!(
            "sync: {} of {} planned nodes synced, {} sent in all, {} slots",
            doc.nodes.len(),
            doc.plan.nodes.len(),
            human_bytes(bytes),
            doc.total_slots
        ),
    );
}
