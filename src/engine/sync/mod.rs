//! The sync engine: mirror the project root, virtualenv included, into a directory on every
//! planned node. Split by job: `local` (checks on this machine before any node is touched),
//! `prepared` (that local half made at once, and whether parallel starts up front), `node`
//! (the node-side protocol: pre-flight, lock, clean-up), `fanout` (GNU parallel running
//! the rsyncs), `progress` (the terminal display). The subcommand is `src/cmd/sync.rs`.
//!
//! Everything local comes first and needs no node (`prepared`: the launcher makes it on a
//! thread while the probe runs). Then per node, in order, so nothing is sent to a node that
//! cannot use it:
//! 1. one ssh round trip (`src/sync_node.sh preflight`): the interpreter chosen for the venv
//!    from the probe's facts (`rebase`: the venv's own base, or a compatible one) runs there at
//!    the version the probe saw; the target directory is absent, empty, or carries
//!    the marker `.pytest-cloud-target` (anything else is refused and left untouched); an
//!    atomic `mkdir <dir>.pytest-cloud-lock` (waits `--lock-wait`, then names the holder);
//!    the directory and its marker are made under the lock;
//! 2. rsync, through one GNU parallel for all nodes, each node's status from the joblog;
//!    `--delete` only ever runs inside a marked directory. parallel reads one line per node
//!    on its stdin, written when that node passed step 1. It is started when the first node
//!    needs rsync, or, by the launcher, beside the probe when the tree changed since the last
//!    sync that left it on every node (`prepared`), so that its start-up (a perl program:
//!    0.1-0.5 s) overlaps the probe and the pre-flights when it is needed and costs nothing
//!    on a warm no-change run;
//! 3. one ssh round trip (`finish`): orphan bytecode removed (beside the files rsync reports
//!    deleted), the node's managed venv files written when they changed (`rebase`: pyvenv.cfg,
//!    bin/python*, relocatable scripts), the editable `.pth` written, the synced interpreter
//!    checked, the lock released.
//!
//! A no-change re-sync skips steps 2 and 3: step 1 itself finds that the node's base holds
//! exactly this tree and makes the run's tree there (`fast`, share/doc/sync.md).
//!
//! Where the time of a sync goes, and why it is done this way: share/doc/performance.md.

mod beat;
mod build;
mod fanout;
mod fast;
mod local;
mod node;
mod prepared;
mod progress;
mod rebase;

pub use build::describe_source;
pub use prepared::{Prepared, prepare};
pub use progress::{Screen, human_bytes};

use crate::error::{Error, Exit, Outcome, Result};
use crate::schema::{self, Dropped, ErrorKind, Plan, Stage, SyncDoc, SyncedNode};
use crate::{interrupt, options, rsync};
use fanout::preflight_and_transfer;
use local::check_local_tools;
use node::{finish, interrupted, inventory_destinations, left_locked, node_runs, release_left};
use std::path::PathBuf;
use std::time::Duration;

/// How `sync` runs; the launcher fills this in directly (no clap types).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Project root; None = the plan's `source`.
    pub source: Option<PathBuf>,
    /// KiB/s per rsync; 0 = unlimited.
    pub bwlimit_kbps: u64,
    /// rsync processes at once; None = all nodes.
    pub max_processes: Option<u32>,
    /// ssh cipher for rsync; None = ssh's choice.
    pub cipher: Option<String>,
    /// Extra rsync exclude patterns.
    pub excludes: Vec<String>,
    pub include_git: bool,
    /// Develop eggs (absolute, or relative to the current directory), besides the ini's.
    pub develop_eggs: Vec<PathBuf>,
    /// How long to wait for another run's lock on a node.
    pub lock_wait: Duration,
    /// A lock older than this is taken over where its holder line names no `ttl_min` (a holder
    /// without the heartbeat, src/engine/sync/beat.rs).
    pub lock_stale: Duration,
    /// Ask rsync for progress updates (read while it runs).
    pub live_progress: bool,
    /// The process that holds the run trees' leases (renews and releases them); 0 = none
    /// (`sync` alone: only the lease's age counts, `exec` renews it).
    pub lease_pid: u32,
    /// Minutes a lease stays valid without renewal.
    pub lease_ttl_min: u64,
    /// The project's virtualenv relative to the root (the plan's, when None): the node writes
    /// its managed files itself (src/rebase.rs), so rsync leaves them alone.
    pub venv: Option<String>,
    /// Which nodes build their own env instead of taking the venv (src/envbuild.rs).
    pub env: crate::envbuild::EnvMode,
    /// Build nodes install from the controller's wheelhouse with no index (`--wheelhouse`),
    /// not only after their index failed.
    pub wheelhouse: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            source: None,
            bwlimit_kbps: options::DEFAULT_RSYNC_BANDWIDTH_LIMIT_KBPS,
            max_processes: None,
            cipher: Some(DEFAULT_CIPHER.into()),
            excludes: Vec::new(),
            include_git: false,
            develop_eggs: Vec::new(),
            lock_wait: Duration::from_secs(options::DEFAULT_LOCK_WAIT_S),
            lock_stale: Duration::from_secs(options::DEFAULT_LOCK_STALE_S),
            live_progress: false,
            lease_pid: 0,
            lease_ttl_min: crate::engine::lease::DETACHED_TTL_MIN,
            venv: None,
            env: crate::envbuild::EnvMode::Auto,
            wheelhouse: false,
        }
    }
}

pub const DEFAULT_CIPHER: &str = options::DEFAULT_RSYNC_CIPHER;

/// What `sync_plan` reports while it works, from several threads.
#[derive(Debug)]
pub enum SyncEvent<'a> {
    /// A decision worth telling the user (source, virtualenv, filters).
    Info(String),
    /// Another run holds the node's lock; we wait.
    Waiting { node: &'a str, holder: &'a str },
    /// rsync to the node started.
    Started { node: &'a str, remote_dir: &'a str },
    Progress { node: &'a str, progress: &'a rsync::Progress },
    Synced(&'a SyncedNode),
    Dropped(&'a Dropped),
}

/// 0 all synced, 1 some dropped, 69 none left, 75 none left because every one was locked.
pub fn outcome(doc: &SyncDoc) -> Outcome {
    if doc.nodes.is_empty() {
        let ours: Vec<&Dropped> = doc.dropped.iter().filter(|d| d.stage == Stage::Sync).collect();
        if !ours.is_empty() && ours.iter().all(|d| d.error_kind == ErrorKind::Locked) {
            Outcome::Code(Exit::Busy.code())
        } else {
            Outcome::NoNodes
        }
    } else if doc.dropped.is_empty() {
        Outcome::Complete
    } else {
        Outcome::Partial
    }
}

/// Syncs the project to every node of the plan. Dropped nodes are records, not errors; an
/// `Err` means nothing could be attempted (bad document, missing local tool, interrupt).
pub fn sync_plan(plan: &Plan, opts: &SyncOptions, progress: &(dyn Fn(&SyncEvent) + Sync)) -> Result<SyncDoc> {
    let prepared = prepare(&plan.source, &plan.options, &plan.inventory.ssh, &inventory_destinations(plan), opts, false);
    sync_prepared(plan, prepared, progress)
}

/// [`sync_plan`] with its local half made earlier ([`prepare`]: by the launcher, while the
/// probe ran). It is used when it was made for this very plan (same source, options, ssh
/// settings and nodes); otherwise a new one is made, so it only ever saves time.
pub fn sync_prepared(plan: &Plan, prepared: Prepared, progress: &(dyn Fn(&SyncEvent) + Sync)) -> Result<SyncDoc> {
    let mut prepared = prepared.for_plan(plan);
    for line in std::mem::take(&mut prepared.infos) {
        progress(&SyncEvent::Info(line));
    }
    let local = std::mem::replace(&mut prepared.local, Err(Error::internal("the local facts were taken")))?;
    let opts = &prepared.opts.clone();
    let mut runs = node_runs(plan)?;
    if !runs.is_empty() {
        check_local_tools()?;
    }
    for r in runs.iter_mut() {
        if r.facts.rsync_version.is_none() {
            r.drop_with(ErrorKind::NoRsync, "rsync is not installed on the node (the probe found none); install it there (Debian: apt-get install rsync)");
        }
    }
    // The config of every node in the inventory, as the probe wrote it.
    let transfer = match &prepared.transfer {
        _ if runs.is_empty() => None,
        Ok(t) => Some(t),
        Err(e) => return Err(Error::new(e.exit, e.message.clone())),
    };
    let config = transfer.map(|t| t.config.clone()).unwrap_or_default();
    let fanout = prepared.fanout.take();
    let pool = crate::engine::node_pool(runs.len())?;
    let ssh_deadline = Duration::from_secs(plan.inventory.ssh.connect_timeout_s + 60);
    // Giving a lock back is one short round trip; a node that cannot answer it in this time
    // is lost anyway, and its lock is then taken over by the stale rule.
    let release_deadline = Duration::from_secs(plan.inventory.ssh.connect_timeout_s + 10);

    // From the pre-flights to the last release, the locks held are renewed (beat.rs).
    beat::beating(&config, &local, release_deadline, || -> Result<()> {
        if let Err(e) = preflight_and_transfer(&mut runs, &pool, transfer, &local, opts, ssh_deadline, progress, fanout) {
            // The pre-flights may have taken locks: give them back before saying why we stop.
            let _ = interrupted(&pool, &mut runs, &config, &local, release_deadline);
            return Err(e);
        }
        if interrupt::requested() {
            return Err(interrupted(&pool, &mut runs, &config, &local, release_deadline));
        }
        pool.install(|| {
            use rayon::prelude::*;
            runs.par_iter_mut().filter(|r| r.locked).for_each(|r| finish(r, &config, &local, ssh_deadline * 2));
        });
        // Nodes whose pre-flight or finish was cut short after the node may have taken the lock.
        release_left(&pool, &mut runs, &config, &local, release_deadline);
        Ok(())
    })?;
    for r in runs.iter_mut() {
        if let (Some(why), Some(d)) = (r.release_failed.clone(), r.dropped.as_mut()) {
            d.message = format!("{}; {}", d.message, left_locked(&r.lock, &why));
        }
    }

    // Every node of the plan now holds this very tree, stamped: the next run of it will very
    // likely need no rsync (prepared.rs).
    let all_stamped = plan.dropped.is_empty()
        && !runs.is_empty()
        && runs.iter().all(|r| r.dropped.is_none() && r.stamp_digest.is_some() && matches!(r.rsync, Some((0, _))));
    prepared.remember(all_stamped);

    let mut nodes = Vec::new();
    let mut dropped = plan.dropped.clone();
    for r in runs {
        let env = build::node_env(&r, &local);
        match (r.dropped, r.rsync) {
            (Some(d), _) => {
                progress(&SyncEvent::Dropped(&d));
                dropped.push(d);
            }
            (None, Some((code, stats))) => {
                let base = r.planned.remote_dir.clone();
                let run_dir = r.run_dir.clone().ok_or_else(|| Error::internal(format!("node {} synced without a run tree", r.planned.node)))?;
                let mut planned = r.planned;
                // Workers and jobs run in the run tree, with its own venv.
                if let Some(rest) = planned.python.strip_prefix(&format!("{base}/")) {
                    planned.python = format!("{run_dir}/{rest}");
                }
                planned.remote_dir = run_dir;
                let n = SyncedNode {
                    planned,
                    base_dir: Some(base),
                    run_id: Some(local.run_id.clone()),
                    lease: Some(local.lease.clone()),
                    bytes_sent: stats.bytes_sent,
                    files_transferred: stats.files_transferred,
                    elapsed_ms: r.started.elapsed().as_millis() as u64,
                    rsync_exit: code,
                    warning: r.warning,
                    interpreter: rebase::node_interpreter(&local, r.interpreter.as_ref()),
                    env,
                    transfer: Some(r.transfer.to_string()),
                    transfer_reason: r.transfer_reason,
                };
                progress(&SyncEvent::Synced(&n));
                nodes.push(n);
            }
            (None, None) => return Err(Error::internal(format!("node {} ended neither synced nor dropped", r.planned.node))),
        }
    }
    Ok(SyncDoc {
        format_version: schema::FORMAT_VERSION,
        kind: "sync".into(),
        created_by: schema::created_by(),
        source: local.root.display().to_string(),
        virtualenv_path: local.venv.as_ref().map(|v| v.rel.clone()),
        editable_paths: local.editable.clone(),
        total_slots: nodes.iter().map(|n| n.planned.slots).sum(),
        nodes,
        dropped,
        plan: plan.clone(),
    })
}
