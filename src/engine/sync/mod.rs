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
//! Per node, in order, so nothing is sent to a node that cannot use it:
//! 1. one ssh round trip (`src/sync_node.sh preflight`): the venv's base interpreter exists
//!    there with the same major.minor.patch; the target directory is absent, empty, or carries
//!    the marker `.pytest-cloud-target` (anything else is refused and left untouched); an
//!    atomic `mkdir <dir>.pytest-cloud-lock` (waits `--lock-wait`, then names the holder);
//!    the directory and its marker are made under the lock;
//! 2. rsync, through one GNU parallel for all nodes, each node's status from the joblog;
//!    `--delete` only ever runs inside a marked directory. parallel is started before the
//!    pre-flights (the launcher starts it even before the probe: [`Fanout`]) and reads one
//!    line per node on its stdin, written when that node passed step 1, so its start-up (a
//!    perl program: 0.1-0.5 s) overlaps the pre-flights;
//! 3. one ssh round trip (`finish`): orphan bytecode removed (beside the files rsync reports
//!    deleted), the editable `.pth` written, the synced interpreter checked, the lock released.
//!
//! Where the time of a sync goes, and why it is done this way: share/doc/performance.md.
//!
//! Example: `pytest-cloud probe --nodes 'n1 n2' | pytest-cloud plan | pytest-cloud sync > sync.json`

use crate::cli::SyncArgs;
use crate::cmd::{emit, say};
use crate::error::{Error, Exit, Outcome, Result};
use crate::proc::{Cmd, Status};
use crate::schema::{self, Dropped, ErrorKind, Facts, Plan, PlannedNode, SyncDoc, SyncedNode};
use crate::ssh::{self, Destination};
use crate::{interrupt, project, rsync, venv};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NODE_SCRIPT: &str = include_str!("../../sync_node.sh");

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
    /// A lock older than this is taken over (its run is assumed dead).
    pub lock_stale: Duration,
    /// Ask rsync for progress updates (read while it runs).
    pub live_progress: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            source: None,
            bwlimit_kbps: 5000,
            max_processes: None,
            cipher: Some(DEFAULT_CIPHER.into()),
            excludes: Vec::new(),
            include_git: false,
            develop_eggs: Vec::new(),
            lock_wait: Duration::from_secs(60),
            lock_stale: Duration::from_secs(3600),
            live_progress: false,
        }
    }
}

pub const DEFAULT_CIPHER: &str = "aes128-gcm@openssh.com";

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

pub fn run(args: &SyncArgs, out: &mut dyn Write) -> Result<Outcome> {
    let doc = schema::read_stdin_document("plan")?;
    let mut plan = schema::plan_from(doc, "plan")?;
    crate::engine::probe::apply_ssh_args(&mut plan.inventory.ssh, &args.ssh);
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
        ..SyncOptions::default()
    };
    interrupt::install();
    let screen = Screen::new(args.quiet, tty);
    let doc = sync_plan(&plan, &opts, &|e| screen.event(e));
    screen.clear();
    let doc = doc?;
    emit(out, &schema::to_pretty(&doc))?;
    report(&doc, args.quiet);
    Ok(outcome(&doc))
}

/// 0 all synced, 1 some dropped, 69 none left, 75 none left because every one was locked.
pub fn outcome(doc: &SyncDoc) -> Outcome {
    if doc.nodes.is_empty() {
        let ours: Vec<&Dropped> = doc.dropped.iter().filter(|d| d.stage == "sync").collect();
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

/// The local facts a sync needs, checked before any node is touched.
struct Local {
    root: PathBuf,
    venv: Option<LocalVenv>,
    /// Project-relative sys.path entries for the node's `.pth` ("" = root).
    editable: Vec<String>,
    holder: String,
    hostname: String,
}

struct LocalVenv {
    rel: String,
    base: venv::BaseInterpreter,
    /// The `.pth` path relative to the project root.
    pth: Option<String>,
}

/// Per planned node: where it goes and what happened.
struct NodeRun {
    planned: PlannedNode,
    dest: Destination,
    facts: Facts,
    lock: String,
    started: Instant,
    locked: bool,
    /// The last sync into the directory ran its clean-up to the end (preflight's `clean=1`).
    clean_before: bool,
    /// What rsync deleted there (None: unknown, so the clean-up sweeps the whole tree).
    deleted: Option<Vec<String>>,
    rsync: Option<(i32, rsync::Stats)>,
    warning: Option<String>,
    dropped: Option<Dropped>,
}

impl NodeRun {
    fn drop_with(&mut self, kind: ErrorKind, message: impl Into<String>) {
        self.dropped = Some(Dropped { node: self.planned.node.clone(), stage: "sync".into(), error_kind: kind, message: message.into() });
    }
    fn alive(&self) -> bool {
        self.dropped.is_none()
    }
}

/// Syncs the project to every node of the plan. Dropped nodes are records, not errors; an
/// `Err` means nothing could be attempted (bad document, missing local tool, interrupt).
pub fn sync_plan(plan: &Plan, opts: &SyncOptions, progress: &(dyn Fn(&SyncEvent) + Sync)) -> Result<SyncDoc> {
    sync_plan_with(plan, opts, progress, None)
}

/// [`sync_plan`] with a [`Fanout`] started earlier (by the launcher, before the probe). It is
/// used when it was started for this very transfer (same project root, rsync options and
/// filters); otherwise it is closed unused and a new one started, so it only ever saves time.
pub fn sync_plan_with(plan: &Plan, opts: &SyncOptions, progress: &(dyn Fn(&SyncEvent) + Sync), fanout: Option<Fanout>) -> Result<SyncDoc> {
    let local = local_facts(plan, opts, progress)?;
    let mut runs = node_runs(plan)?;
    if !runs.is_empty() {
        check_local_tools()?;
    }
    for r in runs.iter_mut() {
        if r.facts.rsync_version.is_none() {
            r.drop_with(ErrorKind::NoRsync, "rsync is not installed on the node (the probe found none); install it there (Debian: apt-get install rsync)");
        }
    }
    // The config of every node in the inventory, as the probe (and a Fanout) wrote it.
    let config = if runs.is_empty() { PathBuf::new() } else { ssh::write_config(&plan.inventory.ssh, &inventory_destinations(plan)?)? };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(runs.len().clamp(1, 128))
        .build()
        .map_err(|e| Error::internal(format!("thread pool: {e}")))?;
    let ssh_deadline = Duration::from_secs(plan.inventory.ssh.connect_timeout_s + 60);

    if let Err(e) = preflight_and_transfer(&mut runs, &pool, &config, &local, opts, ssh_deadline, progress, fanout) {
        // The pre-flights may have taken locks: give them back before saying why we stop.
        let _ = interrupted(&pool, &runs, &config, &local);
        return Err(e);
    }
    if interrupt::requested() {
        return Err(interrupted(&pool, &runs, &config, &local));
    }

    pool.install(|| {
        use rayon::prelude::*;
        runs.par_iter_mut().filter(|r| r.locked).for_each(|r| finish(r, &config, &local, ssh_deadline * 2));
    });

    let mut nodes = Vec::new();
    let mut dropped = plan.dropped.clone();
    for r in runs {
        match (r.dropped, r.rsync) {
            (Some(d), _) => {
                progress(&SyncEvent::Dropped(&d));
                dropped.push(d);
            }
            (None, Some((code, stats))) => {
                let n = SyncedNode {
                    planned: r.planned,
                    bytes_sent: stats.bytes_sent,
                    files_transferred: stats.files_transferred,
                    elapsed_ms: r.started.elapsed().as_millis() as u64,
                    rsync_exit: code,
                    warning: r.warning,
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

/// Releases every lock we may hold (also on nodes whose pre-flight was cut short), then
/// reports the interrupt.
fn interrupted(pool: &rayon::ThreadPool, runs: &[NodeRun], config: &Path, local: &Local) -> Error {
    pool.install(|| {
        use rayon::prelude::*;
        runs.par_iter().filter(|r| r.facts.rsync_version.is_some()).for_each(|r| {
            let _ = node_script(config, &r.dest, "release", &[&r.planned.remote_dir, &r.lock, &local.holder], Duration::from_secs(10));
        });
    });
    Error::new(Exit::Interrupted, "interrupted; the node directories' locks were released (a node may hold a partial copy, which the next sync completes)")
}

fn local_facts(plan: &Plan, opts: &SyncOptions, progress: &(dyn Fn(&SyncEvent) + Sync)) -> Result<Local> {
    let info = |s: String| progress(&SyncEvent::Info(s));
    let root = match &opts.source {
        Some(s) => {
            let r = project::project_root(Some(s))?;
            info(format!("sync: source {} (--source)", r.display()));
            r
        }
        None => {
            let r = PathBuf::from(&plan.source);
            if !r.is_absolute() || !r.is_dir() {
                return Err(Error::bad_input(format!(
                    "the plan's source {:?} is not a directory here; run sync on the machine that made the plan, or pass --source DIR",
                    plan.source
                )));
            }
            info(format!("sync: source {} (the plan's project root)", r.display()));
            r
        }
    };
    // The chdir decides what `--delete` may touch: re-check what the document says.
    project::validate_chdir(&plan.options.chdir)
        .map_err(|e| Error::bad_input(format!("the plan's chdir is refused: {}", e.message)))?;
    for e in &opts.excludes {
        if e.contains(['\n', '\r']) || e.trim().is_empty() {
            return Err(Error::usage(format!("--exclude {e:?}: a pattern is one non-empty line")));
        }
    }
    if let Some(c) = &opts.cipher {
        if !c.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '@' | '.' | '-' | '_' | ',')) {
            return Err(Error::usage(format!("--rsync-cipher {c:?}: not a cipher name (see `ssh -Q cipher`)")));
        }
        // Caught here, a typo costs one message instead of one failed rsync per node.
        if let Ok(out) = Cmd::new(["ssh", "-Q", "cipher"]).deadline(Duration::from_secs(5)).output() {
            let known: Vec<String> = out.stdout_str().lines().map(|l| l.trim().to_string()).collect();
            if out.status.success() && !known.is_empty() && !known.iter().any(|k| k == c) {
                return Err(Error::usage(format!(
                    "--rsync-cipher {c:?}: this ssh does not know it (`ssh -Q cipher` lists {}); use --rsync-cipher none for ssh's choice",
                    known.join(", ")
                )));
            }
        }
    }

    let venv = match &plan.options.virtualenv_path {
        None => {
            info(format!("sync: no virtualenv in the project; the nodes run {}", plan.options.python));
            None
        }
        Some(rel) => {
            let rel_path = project::relative_inside(&root, Path::new(rel)).filter(|r| r == Path::new(rel)).ok_or_else(|| {
                Error::bad_input(format!("the plan's virtualenv_path {rel:?} is not a directory inside {}", root.display()))
            })?;
            let abs = root.join(&rel_path);
            if !abs.join("pyvenv.cfg").is_file() {
                return Err(Error::bad_input(format!("the plan names the virtualenv {rel}, but {} has no pyvenv.cfg", abs.display())));
            }
            let base = venv::base_interpreter(&abs)?;
            let site = venv::site_packages(&abs);
            info(format!(
                "sync: virtualenv {rel} synced with the project (Python {} from {}; each node needs that interpreter)",
                base.version, base.path
            ));
            let pth = site.first().map(|s| format!("{rel}/{}/{}", s.display(), venv::EDITABLE_PTH));
            Some((LocalVenv { rel: rel.clone(), base, pth }, abs, site))
        }
    };

    let mut editable: Vec<String> = Vec::new();
    let mut push = |rel: &Path| {
        let s = rel.to_string_lossy().trim_end_matches('/').to_string();
        if !editable.contains(&s) {
            editable.push(s);
        }
    };
    if let Some((v, abs, site)) = &venv {
        for s in site {
            for target in venv::editable_targets(&abs.join(s)) {
                match venv::inside_or_root(&root, &target) {
                    Some(rel) if rel.starts_with(&v.rel) => {}
                    Some(rel) => push(&rel),
                    None => info(format!(
                        "sync: warning: the editable install at {} is outside the project root, so the nodes cannot import it from a synced copy",
                        target.display()
                    )),
                }
            }
        }
    }
    let mut eggs: Vec<(PathBuf, String)> =
        opts.develop_eggs.iter().map(|p| (p.clone(), format!("--develop-egg {}", p.display()))).collect();
    eggs.extend(venv::ini_develop_eggs(&root).into_iter().map(|p| (root.join(&p), format!("ini cloud_develop_eggs {p}"))));
    for (path, what) in &eggs {
        if venv.is_none() {
            return Err(Error::usage(format!("{what}: develop eggs are installed into the project's virtualenv, and the plan has none")));
        }
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        let rel = venv::inside_or_root(&root, &abs)
            .filter(|_| abs.is_dir())
            .ok_or_else(|| Error::usage(format!("{what}: must be a directory inside the project root {}", root.display())))?;
        push(&venv::develop_egg_import_root(&root, &rel));
    }
    if !editable.is_empty() {
        let shown: Vec<String> = editable.iter().map(|e| if e.is_empty() { ".".to_string() } else { e.clone() }).collect();
        info(format!("sync: nodes import editable sources from their synced copy of: {}", shown.join(", ")));
    }
    if root.join(rsync::IGNORE_FILE).is_file() {
        info(format!("sync: filter rules from {}", rsync::IGNORE_FILE));
    }
    let hostname = local_hostname();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let holder = one_line(&format!(
        "pytest-cloud host={hostname} pid={} user={} started_unix={started} source={}",
        std::process::id(),
        project::local_user(),
        root.display()
    ));
    Ok(Local { root, venv: venv.map(|v| v.0), editable, holder, hostname })
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| Cmd::new(["uname", "-n"]).checked().ok().map(|o| o.stdout_str()))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Each planned node with its destination and facts; the remote directory is re-derived from
/// the node's home and the chdir, never taken on trust.
fn node_runs(plan: &Plan) -> Result<Vec<NodeRun>> {
    let facts: BTreeMap<&str, &Facts> =
        plan.inventory.nodes.iter().filter_map(|n| n.facts.as_ref().map(|f| (n.node.as_str(), f))).collect();
    let mut runs = Vec::new();
    for n in &plan.nodes {
        let dest = Destination::parse(&n.node).map_err(|m| Error::bad_input(format!("the plan's node {:?}: {m}", n.node)))?;
        let f = facts
            .get(n.node.as_str())
            .ok_or_else(|| Error::bad_input(format!("the plan's node {} has no facts in its inventory", n.node)))?;
        let home = f.home.trim_end_matches('/');
        if !f.home.starts_with('/') || home.contains(['\n', '\r', '\0']) || Path::new(home).components().any(|c| c == std::path::Component::ParentDir) {
            return Err(Error::bad_input(format!("node {}: home {:?} is not an absolute path", n.node, f.home)));
        }
        let expected = format!("{home}/{}", plan.options.chdir);
        if n.remote_dir != expected {
            return Err(Error::bad_input(format!(
                "node {}: remote_dir {:?} is not the node's home plus the chdir ({expected:?}); refusing to sync into it",
                n.node, n.remote_dir
            )));
        }
        runs.push(NodeRun {
            planned: n.clone(),
            dest,
            facts: (*f).clone(),
            lock: format!("{expected}.pytest-cloud-lock"),
            started: Instant::now(),
            locked: false,
            clean_before: false,
            deleted: None,
            rsync: None,
            warning: None,
            dropped: None,
        });
    }
    Ok(runs)
}

fn inventory_destinations(plan: &Plan) -> Result<Vec<Destination>> {
    plan.inventory
        .nodes
        .iter()
        .map(|n| Destination::parse(&n.node).map_err(|m| Error::bad_input(format!("the inventory's node {:?}: {m}", n.node))))
        .collect()
}

/// rsync and GNU parallel must be here before any node is touched (exit 72 otherwise).
fn check_local_tools() -> Result<()> {
    Cmd::new(["rsync", "--version"]).output()?;
    // `parallel --version` costs a perl start-up (0.2-0.5 s), as much as a whole no-change
    // sync otherwise: a program file once found to be GNU parallel is remembered by its
    // identity (path, inode, size, change time), which any replacement of the file changes.
    let stamp = on_path("parallel").and_then(|p| tool_stamp(&p));
    if stamp.as_ref().is_some_and(|s| s.exists()) {
        return Ok(());
    }
    let out = Cmd::new(["parallel", "--version"]).output()?;
    if !out.stdout_str().contains("GNU parallel") {
        return Err(Error::new(
            Exit::MissingTool,
            format!("`parallel` on PATH is not GNU parallel (moreutils ships another one). {}", crate::proc::install_hint("parallel")),
        ));
    }
    if let Some(s) = stamp {
        let _ = std::fs::write(s, b"GNU parallel\n");
    }
    Ok(())
}

/// The first executable `name` on PATH, as the spawn will find it.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Where the verdict on the program file `path` is remembered, or None when it cannot be.
fn tool_stamp(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    let id = format!("{}\0{}\0{}\0{}\0{}\0{}", real.display(), m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec());
    Some(ssh::runtime_dir().ok()?.join(format!("tool-ok-{:016x}", ssh::fnv1a(id.as_bytes()))))
}

/// Runs the node script in MODE with ARGS over ssh; returns its key=value lines (in order)
/// and the output.
fn node_script(config: &Path, dest: &Destination, mode: &str, args: &[&str], deadline: Duration) -> Result<(Vec<(String, String)>, crate::proc::Output)> {
    let mut words = vec!["sh", "-s", "--", mode];
    words.extend_from_slice(args);
    let argv = ssh::command_argv(config, dest, &ssh::remote_quote(&words));
    let out = Cmd::new(argv).stdin(NODE_SCRIPT).deadline(deadline).output()?;
    let kv = out
        .stdout_str()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim_end().to_string())))
        .collect();
    Ok((kv, out))
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Why a node script run failed, when it did not reach its end.
fn script_failure(out: &crate::proc::Output, kv: &[(String, String)]) -> Option<(ErrorKind, String)> {
    match out.status {
        Status::TimedOut => Some((ErrorKind::Timeout, "the node did not answer in time; ssh was killed".into())),
        Status::Exited(255) => {
            let msg = out.stderr_trimmed();
            Some((crate::engine::probe::classify_ssh_error(&msg), msg))
        }
        _ if get(kv, "sync_node_end").is_none() => Some((
            ErrorKind::SyncFailed,
            format!("the node-side script stopped (exit {}): {}", out.status.shell_code(), out.stderr_trimmed()),
        )),
        _ => None,
    }
}

fn preflight(r: &mut NodeRun, config: &Path, local: &Local, opts: &SyncOptions, deadline: Duration, progress: &(dyn Fn(&SyncEvent) + Sync)) {
    r.started = Instant::now();
    let (py, want) = match &local.venv {
        Some(v) => (v.base.path.clone(), v.base.version.clone()),
        None => (String::new(), String::new()),
    };
    let marker_text = one_line(&format!(
        "Made by pytest-cloud: mirrors {}:{}. Files not in the source are deleted here on every sync.",
        local.hostname,
        local.root.display()
    ));
    let stale_min = (opts.lock_stale.as_secs() / 60).max(1).to_string();
    let mut break_holder = String::new();
    let mut waited_for: Option<String> = None;
    let wait_start = Instant::now();
    loop {
        let args = [r.planned.remote_dir.as_str(), &r.lock, &local.holder, &stale_min, &break_holder, &py, &want, &marker_text];
        let (kv, out) = match node_script(config, &r.dest, "preflight", &args, deadline) {
            Ok(x) => x,
            Err(e) => return r.drop_with(ErrorKind::SyncFailed, e.message),
        };
        if let Some((kind, msg)) = script_failure(&out, &kv) {
            return r.drop_with(kind, msg);
        }
        if let Some(found) = get(&kv, "python") {
            if found == "missing" {
                let others = node_pythons(&r.facts);
                return r.drop_with(
                    ErrorKind::PythonMismatch,
                    format!(
                        "the virtualenv {} needs Python {} at {} ({}), and the node has no {}{others}; \
                         install that interpreter on the node or make the venv from one the nodes have",
                        venv_name(local), want, py, venv_from(local), py
                    ),
                );
            }
            if found != want {
                return r.drop_with(
                    ErrorKind::PythonMismatch,
                    format!(
                        "the virtualenv {} needs Python {} at {} ({}), but the node's {} is {}; \
                         use the same Python version here and on the nodes",
                        venv_name(local), want, py, venv_from(local), py, found
                    ),
                );
            }
        }
        if get(&kv, "rsync") == Some("missing") {
            return r.drop_with(ErrorKind::NoRsync, "rsync is not installed on the node; install it there (Debian: apt-get install rsync)");
        }
        if let Some(state) = get(&kv, "target").filter(|s| !matches!(*s, "created" | "marked")) {
            let what = match state {
                "notdir" => "exists and is not a directory".to_string(),
                "unreadable" => "exists and cannot be listed".to_string(),
                _ => format!("exists, is not empty ({}...) and has no {} marker", get(&kv, "target_sample").unwrap_or("").trim(), rsync::MARKER),
            };
            return r.drop_with(
                ErrorKind::UnsafeTarget,
                format!(
                    "{} {what}, so pytest-cloud will not mirror into it (that deletes files it does not know); \
                     it was left untouched. Pick another --chdir, or empty it if it is yours to lose",
                    r.planned.remote_dir
                ),
            );
        }
        if let Some(e) = get(&kv, "error") {
            let stderr = out.stderr_trimmed();
            return r.drop_with(ErrorKind::SyncFailed, if stderr.is_empty() { e.to_string() } else { format!("{e}: {stderr}") });
        }
        match get(&kv, "lock") {
            Some("acquired") => {
                r.locked = true;
                r.clean_before = get(&kv, "clean") == Some("1");
                return;
            }
            Some("held") => {
                let holder = get(&kv, "lock_holder").unwrap_or("").to_string();
                let stale = get(&kv, "lock_stale") == Some("1") || holder_is_dead(&holder, &local.hostname);
                if stale && break_holder != holder {
                    // Taken over on the next round trip, only if the holder is still the same.
                    break_holder = holder;
                    continue;
                }
                if waited_for.as_deref() != Some(holder.as_str()) {
                    progress(&SyncEvent::Waiting { node: &r.planned.node, holder: &holder });
                    waited_for = Some(holder.clone());
                }
                if wait_start.elapsed() >= opts.lock_wait || interrupt::requested() {
                    return r.drop_with(
                        ErrorKind::Locked,
                        format!(
                            "{} is locked by another run ({}); waited {} s. If that run is gone, remove {} on the node \
                             (a lock older than {} min is taken over)",
                            r.planned.remote_dir,
                            describe_holder(&holder),
                            wait_start.elapsed().as_secs(),
                            r.lock,
                            opts.lock_stale.as_secs() / 60
                        ),
                    );
                }
                sleep_unless_interrupted(Duration::from_millis(500));
            }
            _ => {
                return r.drop_with(ErrorKind::SyncFailed, format!("the node-side check printed no lock state: {}", out.stderr_trimmed()));
            }
        }
    }
}

fn sleep_unless_interrupted(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !interrupt::requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn venv_name(local: &Local) -> &str {
    local.venv.as_ref().map(|v| v.rel.as_str()).unwrap_or("")
}

fn venv_from(local: &Local) -> String {
    local.venv.as_ref().map(|v| format!("{}/pyvenv.cfg; {}", v.rel, v.base.from)).unwrap_or_default()
}

fn node_pythons(f: &Facts) -> String {
    if f.pythons.is_empty() {
        return String::new();
    }
    let list: Vec<String> = f.pythons.values().map(|p| format!("{} ({})", p.path, p.version)).collect();
    format!(" (it has {})", list.join(", "))
}

/// A holder on this very machine whose process is gone left its lock behind (Ctrl-C'd
/// twice, killed): take it over at once instead of waiting for it to go stale.
fn holder_is_dead(holder: &str, hostname: &str) -> bool {
    let field = |k: &str| holder.split_whitespace().find_map(|w| w.strip_prefix(k));
    match (field("host="), field("pid=").and_then(|p| p.parse::<u32>().ok())) {
        (Some(h), Some(pid)) if h == hostname && Path::new("/proc/self").exists() => !Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

fn describe_holder(holder: &str) -> String {
    if holder.trim().is_empty() {
        return "holder unknown".into();
    }
    let age = holder
        .split_whitespace()
        .find_map(|w| w.strip_prefix("started_unix="))
        .and_then(|s| s.parse::<u64>().ok())
        .and_then(|t| SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|now| now.as_secs().saturating_sub(t)));
    match age {
        Some(a) => format!("{}, started {a} s ago", holder.trim()),
        None => holder.trim().to_string(),
    }
}

/// What a running GNU parallel was started for; a transfer can use it only if all is equal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FanoutKey {
    root: PathBuf,
    rules: Vec<String>,
    /// rsync's options but the filter file's path (which is the Fanout's own).
    rsync_options: Vec<String>,
    max_processes: Option<u32>,
}

impl FanoutKey {
    fn new(root: &Path, config: &Path, opts: &SyncOptions) -> FanoutKey {
        let ignore = root.join(rsync::IGNORE_FILE);
        let ignore_file = ignore.is_file().then_some(ignore);
        let spec = rsync::RsyncSpec {
            rsh: ssh::rsync_rsh(config, opts.cipher.as_deref()),
            bwlimit_kbps: opts.bwlimit_kbps,
            progress: opts.live_progress,
            filter_file: String::new(),
            timeout_s: 120,
        };
        FanoutKey {
            root: root.to_path_buf(),
            rules: rsync::filter_rules(&opts.excludes, ignore_file.as_deref(), opts.include_git),
            rsync_options: rsync::rsync_options(&spec),
            max_processes: opts.max_processes,
        }
    }
}

/// GNU parallel running rsync, started before the nodes are ready for it: a perl program that
/// takes 0.1-0.5 s to start, which this overlaps with the pre-flights (and, from the launcher,
/// with the probe). Its jobs are lines on its stdin, one per node, written when that node
/// passed its pre-flight (`{}` is the line, the destination); nothing reaches a node before.
/// Dropped unused, it gets the end of its input and exits having run nothing.
pub struct Fanout {
    key: FanoutKey,
    jobs: usize,
    tmp: Option<tempfile::TempDir>,
    joblog: PathBuf,
    results: PathBuf,
    /// The write end and, in job order (= parallel's sequence number), the runs' indexes.
    feed: Mutex<(Option<std::io::PipeWriter>, Vec<usize>)>,
    thread: Option<std::thread::JoinHandle<Result<crate::proc::Output>>>,
}

impl Fanout {
    /// For the launcher: a Fanout for syncing the project at `root` to some of `nodes` (those
    /// the probe and plan keep) with these ssh settings and options.
    pub fn start(root: &Path, settings: &ssh::SshSettings, nodes: &[Destination], opts: &SyncOptions) -> Result<Fanout> {
        let config = ssh::write_config(settings, nodes)?;
        let jobs = opts.max_processes.map(|m| m as usize).unwrap_or(nodes.len()).min(nodes.len());
        Fanout::start_with(FanoutKey::new(root, &config, opts), jobs)
    }

    fn start_with(key: FanoutKey, jobs: usize) -> Result<Fanout> {
        check_local_tools()?;
        let tmp = tempfile::Builder::new()
            .prefix("sync-")
            .tempdir_in(ssh::runtime_dir()?)
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let filter_file = tmp.path().join("filters");
        std::fs::write(&filter_file, key.rules.join("\n") + "\n").map_err(|e| Error::io(filter_file.display(), e))?;
        let mut command = vec!["rsync".to_string()];
        for o in &key.rsync_options {
            command.push(if o.starts_with("--filter=. ") { format!("--filter=. {}", filter_file.display()) } else { o.clone() });
        }
        // The source is the working directory, so no local path passes through parallel's
        // replacement strings.
        command.extend(["./".to_string(), "{}".to_string()]);
        let joblog = tmp.path().join("joblog");
        let results = tmp.path().join("results");
        let cmd = Cmd::new(rsync::parallel_argv(jobs, &joblog, &results, &command)).dir(&key.root);
        let (reader, writer) = std::io::pipe().map_err(|e| Error::io("creating a pipe for GNU parallel", e))?;
        let thread = std::thread::Builder::new()
            .name("gnu-parallel".into())
            .spawn(move || {
                let mut forwarded = false;
                let mut tick = |pids: &[u32]| {
                    if interrupt::requested() && !forwarded {
                        interrupt::forward(pids);
                        forwarded = true;
                    }
                };
                cmd.output_polling_from(reader, Duration::from_millis(50), &mut tick)
            })
            .map_err(|e| Error::internal(format!("starting a thread for GNU parallel: {e}")))?;
        Ok(Fanout { key, jobs, tmp: Some(tmp), joblog, results, feed: Mutex::new((Some(writer), Vec::new())), thread: Some(thread) })
    }

    /// Queues run `index`'s rsync to `destination`; false when parallel no longer reads.
    fn push(&self, index: usize, destination: &str) -> bool {
        let mut f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let ok = f.0.as_mut().is_some_and(|w| w.write_all(format!("{destination}\n").as_bytes()).is_ok());
        if ok {
            f.1.push(index);
        }
        ok
    }

    /// Ends the input and waits for parallel, calling `poll` with the job order while it runs.
    fn finish(&mut self, poll: &mut dyn FnMut(&[usize])) -> Result<(crate::proc::Output, Vec<usize>)> {
        let order = {
            let mut f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            f.0.take();
            f.1.clone()
        };
        let thread = self.thread.take().ok_or_else(|| Error::internal("GNU parallel was already waited for"))?;
        while !thread.is_finished() {
            poll(&order);
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = thread.join().unwrap_or_else(|_| Err(Error::internal("the thread running GNU parallel panicked")))?;
        Ok((out, order))
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).0.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.tmp.take());
    }
}

/// Pre-flight on every node still in the running, and rsync through a [`Fanout`] to each node
/// that passed it, as soon as it did.
#[allow(clippy::too_many_arguments)]
fn preflight_and_transfer(
    runs: &mut [NodeRun],
    pool: &rayon::ThreadPool,
    config: &Path,
    local: &Local,
    opts: &SyncOptions,
    ssh_deadline: Duration,
    progress: &(dyn Fn(&SyncEvent) + Sync),
    given: Option<Fanout>,
) -> Result<()> {
    let candidates = runs.iter().filter(|r| r.alive()).count();
    if candidates == 0 {
        return Ok(());
    }
    let key = FanoutKey::new(&local.root, config, opts);
    let needed = opts.max_processes.map(|m| m as usize).unwrap_or(candidates).min(candidates);
    let mut fanout = match given {
        Some(f) if f.key == key && f.jobs >= needed => f,
        other => {
            drop(other);
            Fanout::start_with(key, needed)?
        }
    };
    pool.install(|| {
        use rayon::prelude::*;
        runs.par_iter_mut().enumerate().filter(|(_, r)| r.alive()).for_each(|(i, r)| {
            preflight(r, config, local, opts, ssh_deadline, progress);
            if r.alive() && r.locked && !interrupt::requested() {
                // A failed write (parallel is gone) leaves the node out of the job order;
                // it is dropped below with parallel's own words.
                fanout.push(i, &format!("{}:{}/", r.dest.ssh_target(), r.planned.remote_dir));
            }
        });
    });
    let results = fanout.results.clone();
    let mut started: Vec<bool> = Vec::new();
    let mut poll = |order: &[usize]| {
        started.resize(order.len(), false);
        for (k, &i) in order.iter().enumerate() {
            let (node, remote_dir) = (&runs[i].planned.node, &runs[i].planned.remote_dir);
            let dir = results.join((k + 1).to_string());
            if !started[k] && dir.exists() {
                started[k] = true;
                progress(&SyncEvent::Started { node, remote_dir });
            }
            if opts.live_progress && started[k] {
                if let Some(p) = std::fs::read(dir.join("stdout")).ok().and_then(|b| rsync::parse_progress(&String::from_utf8_lossy(&b))) {
                    progress(&SyncEvent::Progress { node, progress: &p });
                }
            }
        }
    };
    let (out, order) = fanout.finish(&mut poll)?;
    let joblog = fanout.joblog.clone();
    let log = std::fs::read_to_string(&joblog).unwrap_or_default();
    let results_by_seq = rsync::parse_joblog(&log);
    let mut seq_of = vec![None; runs.len()];
    for (k, &i) in order.iter().enumerate() {
        seq_of[i] = Some(k + 1);
    }
    for (i, r) in runs.iter_mut().enumerate() {
        if !r.alive() || !r.locked {
            continue;
        }
        let Some(seq) = seq_of[i] else {
            r.drop_with(
                ErrorKind::SyncFailed,
                if interrupt::requested() {
                    "interrupted before rsync started".to_string()
                } else {
                    format!("GNU parallel stopped taking jobs (exit {}): {}", out.status.shell_code(), out.stderr_trimmed())
                },
            );
            continue;
        };
        let dir = results.join(seq.to_string());
        let stdout = std::fs::read(dir.join("stdout")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let stderr = std::fs::read(dir.join("stderr")).map(|b| crate::proc::trim_message(&String::from_utf8_lossy(&b))).unwrap_or_default();
        match results_by_seq.get(&seq) {
            None => {
                let why = out.stderr_trimmed();
                r.drop_with(
                    ErrorKind::SyncFailed,
                    if interrupt::requested() {
                        "interrupted before rsync finished".to_string()
                    } else {
                        format!("rsync did not run to its end (GNU parallel exited with {}): {why}", out.status.shell_code())
                    },
                );
            }
            Some(j) if j.signal != 0 => r.drop_with(ErrorKind::SyncFailed, format!("rsync was killed by signal {}: {stderr}", j.signal)),
            Some(j) if rsync::usable(j.exitval) => {
                let stats = rsync::parse_stats(&stdout).unwrap_or_default();
                if j.exitval != 0 {
                    r.warning = Some(format!("rsync exit {} ({}): {stderr}", j.exitval, rsync::exit_meaning(j.exitval)));
                }
                // Without its stats the output may be cut short: then the deletions are unknown.
                r.deleted = if rsync::parse_stats(&stdout).is_some() { rsync::parse_deleted(&stdout) } else { None };
                r.rsync = Some((j.exitval, stats));
            }
            Some(j) => {
                let hint = if stderr.contains("no matching cipher") || stderr.contains("Unknown cipher") {
                    " (the node's sshd does not offer the --rsync-cipher; try --rsync-cipher none)"
                } else {
                    ""
                };
                r.drop_with(
                    ErrorKind::SyncFailed,
                    format!("rsync exited with status {} ({}){hint}: {stderr}", j.exitval, rsync::exit_meaning(j.exitval)),
                )
            }
        }
    }
    Ok(())
}

/// After rsync: orphan bytecode, the editable `.pth`, a check that the synced interpreter
/// runs with those paths, and the lock released (also for nodes whose rsync failed).
fn finish(r: &mut NodeRun, config: &Path, local: &Local, deadline: Duration) {
    let dir = r.planned.remote_dir.clone();
    if !r.alive() {
        let _ = node_script(config, &r.dest, "release", &[&dir, &r.lock, &local.holder], deadline);
        return;
    }
    let (pth, python) = match &local.venv {
        Some(v) => (v.pth.clone().unwrap_or_default(), format!("{dir}/{}/bin/python", v.rel)),
        None => (String::new(), String::new()),
    };
    let entries: Vec<String> =
        local.editable.iter().map(|e| if e.is_empty() { dir.clone() } else { format!("{dir}/{e}") }).collect();
    let (sweep, deleted_py) = cleanup_scope(r.clean_before, r.deleted.as_deref());
    let count = deleted_py.len().to_string();
    let mut args: Vec<&str> = vec![&dir, &r.lock, &local.holder, &pth, &python, sweep, &count];
    args.extend(deleted_py.iter().copied());
    args.extend(entries.iter().map(String::as_str));
    let (kv, out) = match node_script(config, &r.dest, "finish", &args, deadline) {
        Ok(x) => x,
        Err(e) => return r.drop_with(ErrorKind::SyncFailed, e.message),
    };
    if let Some((kind, msg)) = script_failure(&out, &kv) {
        return r.drop_with(kind, format!("after rsync: {msg}"));
    }
    if let Some(e) = get(&kv, "error") {
        return r.drop_with(ErrorKind::SyncFailed, format!("after rsync: {e}: {}", out.stderr_trimmed()));
    }
    if get(&kv, "venv") == Some("failed") {
        let msg: Vec<&str> = kv.iter().filter(|(k, _)| k == "venv_message").map(|(_, v)| v.as_str()).collect();
        let kind = if entries.is_empty() { ErrorKind::PythonMismatch } else { ErrorKind::DevelopFailed };
        r.drop_with(kind, format!("the synced interpreter {python} does not work on the node: {}", msg.join(" / ")));
    }
}

/// More deleted modules than this and the clean-up sweeps the tree instead of taking them
/// as arguments (one command line).
const MAX_LISTED_DELETIONS: usize = 500;

/// How the clean-up after rsync finds orphan bytecode: `"listed"` with the deleted `.py`
/// files (relative to the target) when the list is known to be complete, else `"full"`. The
/// list is complete when rsync's output was read and the previous sync cleaned up after
/// itself (an interrupted one may have deleted modules whose bytecode is still there).
fn cleanup_scope(clean_before: bool, deleted: Option<&[String]>) -> (&'static str, Vec<&str>) {
    match deleted {
        Some(d) if clean_before => {
            let py: Vec<&str> = d
                .iter()
                .map(String::as_str)
                .filter(|f| f.ends_with(".py") && !f.starts_with('/') && !f.split('/').any(|c| c == ".." || c.is_empty()))
                .collect();
            if py.len() <= MAX_LISTED_DELETIONS { ("listed", py) } else { ("full", Vec::new()) }
        }
        _ => ("full", Vec::new()),
    }
}

/// Progress on stderr: plain lines, or with a terminal, one updating line per node in
/// flight below the plain lines.
struct Screen {
    quiet: bool,
    tty: bool,
    state: Mutex<ScreenState>,
}

#[derive(Default)]
struct ScreenState {
    /// Node -> its live line, in start order.
    live: Vec<(String, String)>,
    drawn: usize,
}

impl Screen {
    fn new(quiet: bool, tty: bool) -> Self {
        Screen { quiet, tty, state: Mutex::new(ScreenState::default()) }
    }

    fn event(&self, e: &SyncEvent) {
        if self.quiet {
            return;
        }
        let line = match e {
            SyncEvent::Info(s) => Some(s.clone()),
            SyncEvent::Waiting { node, holder } => Some(format!("{node}: waiting for the lock held by {}", describe_holder(holder))),
            SyncEvent::Started { node, remote_dir } => {
                if self.tty {
                    self.update(node, format!("{node}: syncing to {remote_dir}"));
                    None
                } else {
                    Some(format!("{node}: syncing to {remote_dir}"))
                }
            }
            SyncEvent::Progress { node, progress } => {
                self.update(node, format!("{node}: {} {:>3}% {}", human_bytes(progress.bytes), progress.percent, progress.rate));
                None
            }
            SyncEvent::Synced(n) => {
                self.forget(&n.planned.node);
                Some(format!(
                    "{}: synced, {} sent ({} files) in {:.1} s{}",
                    n.planned.node,
                    human_bytes(n.bytes_sent),
                    n.files_transferred,
                    n.elapsed_ms as f64 / 1000.0,
                    n.warning.as_deref().map(|w| format!("; warning: {w}")).unwrap_or_default()
                ))
            }
            SyncEvent::Dropped(d) => {
                self.forget(&d.node);
                Some(format!("{}: dropped ({}: {})", d.node, d.error_kind.as_str(), d.message))
            }
        };
        if let Some(l) = line {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.erase(&mut st);
            to_stderr(&format!("{l}\n"));
            self.draw(&mut st);
        }
    }

    fn update(&self, node: &str, line: String) {
        if !self.tty {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.live.iter_mut().find(|(n, _)| n == node) {
            Some(entry) if entry.1 == line => return,
            Some(entry) => entry.1 = line,
            None => st.live.push((node.to_string(), line)),
        }
        self.erase(&mut st);
        self.draw(&mut st);
    }

    fn forget(&self, node: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.live.retain(|(n, _)| n != node);
    }

    fn erase(&self, st: &mut ScreenState) {
        if self.tty && st.drawn > 0 {
            // Up to the first live line, then clear to the end of the screen.
            to_stderr(&format!("\x1b[{}A\r\x1b[J", st.drawn));
            st.drawn = 0;
        }
    }

    fn draw(&self, st: &mut ScreenState) {
        if self.tty {
            for (_, l) in &st.live {
                to_stderr(&format!("{l}\n"));
            }
            st.drawn = st.live.len();
        }
    }

    fn clear(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.live.clear();
        self.erase(&mut st);
    }
}

/// Progress must never take the sync down: a closed terminal (EIO) is ignored, where
/// `eprintln!` would panic in the middle of holding the nodes' locks.
fn to_stderr(s: &str) {
    let _ = std::io::stderr().write_all(s.as_bytes());
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_local_holders_are_recognised() {
        let me = local_hostname();
        let alive = format!("pytest-cloud host={me} pid={} user=u started_unix=1 source=/p", std::process::id());
        assert!(!holder_is_dead(&alive, &me));
        assert!(holder_is_dead(&format!("pytest-cloud host={me} pid=4000000000 user=u"), &me));
        assert!(!holder_is_dead("pytest-cloud host=elsewhere pid=4000000000 user=u", &me), "another machine's pid says nothing");
        assert!(!holder_is_dead("", &me));
    }

    #[test]
    fn the_clean_up_looks_only_at_deleted_modules_when_it_can_trust_the_list() {
        let d: Vec<String> = ["a/old.py", "data.txt", "pkg/", "../x.py", "/abs.py", "m.py"].map(String::from).to_vec();
        assert_eq!(cleanup_scope(true, Some(&d)), ("listed", vec!["a/old.py", "m.py"]));
        assert_eq!(cleanup_scope(true, Some(&[])), ("listed", vec![]));
        assert_eq!(cleanup_scope(false, Some(&d)).0, "full", "the last sync did not clean up after itself");
        assert_eq!(cleanup_scope(true, None).0, "full", "rsync's list could not be read");
        let many: Vec<String> = (0..=MAX_LISTED_DELETIONS).map(|i| format!("m{i}.py")).collect();
        assert_eq!(cleanup_scope(true, Some(&many)), ("full", vec![]));
    }

    #[test]
    fn a_fanout_started_from_the_command_line_fits_the_transfer_of_its_plan() {
        // The launcher starts it from the nodes as given; sync later derives the ssh config
        // from the inventory's spelling of the same nodes. Same config, same key: reused.
        let given = ssh::parse_nodes(["node1 bob@h:2200 [fe80::1]:22 u@[::1] alias.example"]).unwrap();
        let from_inventory: Vec<Destination> = given.iter().map(|d| Destination::parse(&d.key()).unwrap()).collect();
        assert_eq!(from_inventory, given);
        let settings = ssh::SshSettings::default();
        let dir = Path::new("/run/pc");
        assert_eq!(ssh::config_text(&settings, &given, dir), ssh::config_text(&settings, &from_inventory, dir));
        let opts = SyncOptions::default();
        let key = FanoutKey::new(Path::new("/p"), Path::new("/run/pc/cfg"), &opts);
        assert_eq!(key, FanoutKey::new(Path::new("/p"), Path::new("/run/pc/cfg"), &opts));
        // Anything that changes what rsync does makes a fresh one.
        for other in [
            FanoutKey::new(Path::new("/q"), Path::new("/run/pc/cfg"), &opts),
            FanoutKey::new(Path::new("/p"), Path::new("/run/pc/cfg2"), &opts),
            FanoutKey::new(Path::new("/p"), Path::new("/run/pc/cfg"), &SyncOptions { bwlimit_kbps: 0, ..SyncOptions::default() }),
            FanoutKey::new(Path::new("/p"), Path::new("/run/pc/cfg"), &SyncOptions { excludes: vec!["*.log".into()], ..SyncOptions::default() }),
            FanoutKey::new(Path::new("/p"), Path::new("/run/pc/cfg"), &SyncOptions { max_processes: Some(1), ..SyncOptions::default() }),
        ] {
            assert_ne!(key, other);
        }
    }

    #[test]
    fn bytes_read_as_humans_do() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20 * 1024 * 1024 + 1), "20.0 MiB");
    }
}
