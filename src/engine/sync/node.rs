//! The node side of a sync, one ssh round trip each (`src/sync_node.sh`): the pre-flight
//! (interpreter, target directory, lock, with the wait for another run's lock), the clean-up
//! after rsync (`finish`) and giving the locks back.

use super::SyncEvent;
use super::SyncOptions;
use super::local::{Local, no_controls};
use crate::error::{Error, Exit, Result};
use crate::schema::{Dropped, ErrorKind, Facts, Plan, PlannedNode, Stage};
use crate::ssh::Destination;
use crate::engine::lease;
use crate::{interrupt, remote, rsync};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Per planned node: where it goes and what happened.
pub(super) struct NodeRun {
    pub(super) planned: PlannedNode,
    pub(super) dest: Destination,
    pub(super) facts: Facts,
    pub(super) lock: String,
    pub(super) started: Instant,
    /// The pre-flight said `lock=acquired`: this run holds the node's lock.
    pub(super) locked: bool,
    /// This run may hold the lock: a node script that takes or gives it back was sent and did
    /// not answer to its end (ssh died or hit its deadline, the script was cut short), or the
    /// lock was acquired and no finish has given it back yet. Every way out of the sync
    /// releases such a lock (only while its holder line is ours: it names our run id).
    pub(super) may_hold: bool,
    /// Why giving the lock back failed, when it did.
    pub(super) release_failed: Option<String>,
    /// The last sync into the directory ran its clean-up to the end (preflight's `clean=1`).
    pub(super) clean_before: bool,
    /// What rsync deleted there (None: unknown, so the clean-up sweeps the whole tree).
    pub(super) deleted: Option<Vec<String>>,
    /// Other runs' trees on the node, as preflight listed them.
    pub(super) run_entries: Vec<lease::RunEntry>,
    /// This run's own tree, once finish made it.
    pub(super) run_dir: Option<String>,
    pub(super) rsync: Option<(i32, rsync::Stats)>,
    pub(super) warning: Option<String>,
    pub(super) dropped: Option<Dropped>,
    /// The node's interpreter for the venv, and the digest of the managed venv files the node
    /// has (preflight's `rebased=`): src/engine/sync/rebase.rs.
    pub(super) interpreter: Option<crate::interp::Choice>,
    pub(super) rebased_before: Option<String>,
    /// The env the node builds for itself instead of taking the venv (src/engine/sync/build.rs).
    pub(super) build: Option<super::build::NodeBuild>,
    /// The fast path (super::fast): this sync's manifest digest, the digest the node's stamp
    /// gets after a complete sync, and how the tree got there (rsync, or skipped).
    pub(super) manifest: Option<std::sync::Arc<crate::manifest::Manifest>>,
    pub(super) stamp_digest: Option<String>,
    pub(super) transfer: &'static str,
    pub(super) transfer_reason: Option<String>,
}

impl NodeRun {
    pub(super) fn drop_with(&mut self, kind: ErrorKind, message: impl Into<String>) {
        self.dropped = Some(Dropped { node: self.planned.node.clone(), stage: Stage::Sync, error_kind: kind, message: message.into() });
    }
    pub(super) fn alive(&self) -> bool {
        self.dropped.is_none()
    }
}

/// Gives the node's lock back if its holder line is ours (the node script checks): whether
/// or not the pre-flight's answer said we took it. On an answer to its end the lock is not
/// ours any more (released, absent, or another run's); otherwise `release_failed` says why.
pub(super) fn release_lock(r: &mut NodeRun, config: &Path, local: &Local, deadline: Duration) {
    // Given back or given up: either way no longer renewed from here.
    local.held.remove(&r.dest);
    if let Some(gone) = connection_lost(r, config) {
        // A new connection to a node that just went silent waits a whole ConnectTimeout for
        // nothing; the lock left there goes stale once its heartbeat stops (beat.rs).
        r.may_hold = true;
        r.release_failed = Some(format!("the node's shared ssh connection is gone ({gone}), so no new connection was tried"));
        return;
    }
    let failed = match remote::sync_script(config, &r.dest, "", "release", &[&r.planned.remote_dir, &r.lock, &local.holder], deadline) {
        Err(e) => Some(e.message),
        Ok(reply) => match reply.failure("sync_node_end") {
            Some((_, why)) => Some(why),
            None => reply.get("error").map(String::from),
        },
    };
    r.may_hold = failed.is_some();
    r.release_failed = failed;
}

/// Why the node is out of reach, when it was dropped for a timeout or a lost connection and
/// its shared ssh connection is gone too (`ssh -O check`); None when a release is worth trying
/// (no shared connection to ask, or the node was dropped for another reason).
fn connection_lost(r: &NodeRun, config: &Path) -> Option<String> {
    let d = r.dropped.as_ref()?;
    let lost = match d.error_kind {
        ErrorKind::Timeout | ErrorKind::Refused | ErrorKind::Unreachable | ErrorKind::Ssh => true,
        // rsync's ssh died (status 255, or a signal).
        ErrorKind::SyncFailed => d.message.contains("status 255"),
        _ => false,
    };
    if !lost {
        return None;
    }
    crate::ssh::master_gone(config, &r.dest)
}

/// Releases every lock this run may hold, all nodes at once.
pub(super) fn release_left(pool: &rayon::ThreadPool, runs: &mut [NodeRun], config: &Path, local: &Local, deadline: Duration) {
    pool.install(|| {
        use rayon::prelude::*;
        runs.par_iter_mut().filter(|r| r.may_hold).for_each(|r| release_lock(r, config, local, deadline));
    });
}

/// What a lock left behind after a failed release means for the user.
pub(super) fn left_locked(lock: &str, why: &str) -> String {
    format!(
        "its lock {lock} could not be released ({why}); another run takes it over once it has not been renewed \
         for {} min, a run from this machine at once once this process is gone; or remove it on the node",
        super::beat::LOCK_TTL_MIN
    )
}

/// Releases every lock we may hold (also on nodes whose pre-flight was cut short), then
/// reports the interrupt, saying per node what was and was not released.
pub(super) fn interrupted(pool: &rayon::ThreadPool, runs: &mut [NodeRun], config: &Path, local: &Local, deadline: Duration) -> Error {
    let tried: Vec<bool> = runs.iter().map(|r| r.may_hold).collect();
    release_left(pool, runs, config, local, deadline);
    let released: Vec<String> = runs.iter().zip(&tried).filter(|(r, t)| **t && !r.may_hold).map(|(r, _)| r.planned.node.key()).collect();
    let kept: Vec<String> = runs
        .iter()
        .filter(|r| r.may_hold)
        .map(|r| format!("{}: {}", r.planned.node, left_locked(&r.lock, r.release_failed.as_deref().unwrap_or("no answer"))))
        .collect();
    let mut msg = String::from("interrupted; ");
    msg.push_str(&match (released.is_empty(), kept.is_empty()) {
        (true, true) => "no node's lock was held".to_string(),
        (false, true) => format!("the lock was released on {}", released.join(", ")),
        (true, false) => format!("a lock was NOT released: {}", kept.join("; ")),
        (false, false) => format!("the lock was released on {}; NOT released: {}", released.join(", "), kept.join("; ")),
    });
    msg.push_str(" (a node may hold a partial copy, which the next sync completes)");
    Error::new(Exit::Interrupted, msg)
}

/// Each planned node with its destination and facts; the remote directory is re-derived from
/// the node's home and the chdir, never taken on trust.
pub(super) fn node_runs(plan: &Plan) -> Result<Vec<NodeRun>> {
    let facts: BTreeMap<&Destination, &Facts> =
        plan.inventory.nodes.iter().filter_map(|n| n.facts.as_ref().map(|f| (&n.node, f))).collect();
    let mut runs = Vec::new();
    for n in &plan.nodes {
        let dest = n.node.clone();
        let f = facts
            .get(&n.node)
            .ok_or_else(|| Error::bad_input(format!("the plan's node {} has no facts in its inventory", n.node)))?;
        let home = f.home.trim_end_matches('/');
        // A fact of that node (its user's HOME), not a fault of the document: only that node
        // is dropped, before anything is sent to it.
        let bad_home = !f.home.starts_with('/') || home.contains(['\n', '\r', '\0']) || Path::new(home).components().any(|c| c == std::path::Component::ParentDir);
        let expected = format!("{home}/{}", plan.options.chdir);
        if !bad_home && n.remote_dir != expected {
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
            may_hold: false,
            release_failed: None,
            clean_before: false,
            deleted: None,
            run_entries: Vec::new(),
            run_dir: None,
            rsync: None,
            warning: None,
            dropped: None,
            interpreter: None,
            rebased_before: None,
            build: None,
            manifest: None,
            stamp_digest: None,
            transfer: super::fast::TRANSFER_RSYNC,
            transfer_reason: None,
        });
        if bad_home {
            let r = runs.last_mut().expect("just pushed");
            r.drop_with(
                ErrorKind::UnsafeTarget,
                format!(
                    "the node's HOME is {:?}, not an absolute path, so --chdir {} has no safe place there; \
                     nothing was sent to it. Give that user an absolute HOME (or use another user on that node)",
                    f.home, plan.options.chdir
                ),
            );
        }
    }
    Ok(runs)
}

pub(super) fn inventory_destinations(plan: &Plan) -> Vec<Destination> {
    plan.inventory.nodes.iter().map(|n| n.node.clone()).collect()
}

pub(super) fn preflight(r: &mut NodeRun, config: &Path, local: &Local, opts: &SyncOptions, deadline: Duration, progress: &(dyn Fn(&SyncEvent) + Sync)) {
    r.started = Instant::now();
    let (py, want) = match super::build::choose(r, local, opts) {
        Ok(x) => x,
        Err((kind, why)) => return r.drop_with(kind, why),
    };
    let env_prelude = super::build::preflight_prelude(r);
    let marker_text = no_controls(&format!(
        "Made by pytest-cloud: mirrors {}:{}. Files not in the source are deleted here on every sync.",
        local.hostname,
        local.root.display()
    ));
    let stale_min = (opts.lock_stale.as_secs() / 60).max(1).to_string();
    let mut break_holder = String::new();
    let mut waited_for: Option<String> = None;
    let wait_start = Instant::now();
    let runs = lease::runs_dir(&r.planned.remote_dir);
    let fast = super::fast::preflight_prelude(r, local);
    loop {
        let args = [r.planned.remote_dir.as_str(), &r.lock, &local.holder, &stale_min, &break_holder, &py, &want, &marker_text, &runs];
        // From here until a whole answer says otherwise, the lock may be ours: the node may
        // have made it just before ssh died or hit its deadline.
        r.may_hold = true;
        let reply = match remote::sync_script(config, &r.dest, &format!("{env_prelude}{fast}"), "preflight", &args, deadline) {
            Ok(x) => x,
            Err(e) => {
                r.may_hold = false; // ssh did not start: nothing reached the node
                return r.drop_with(ErrorKind::SyncFailed, e.message);
            }
        };
        if let Some((kind, msg)) = reply.failure("sync_node_end") {
            return r.drop_with(kind, msg);
        }
        // A whole answer: the lock is ours exactly when it says so (where the script gave it
        // back itself, a release finds it absent, which costs one round trip in that rare case).
        r.may_hold = reply.get("lock") == Some("acquired");
        if let Some(found) = reply.get("python") {
            // The probe saw it; the node changed since (or the plan is old).
            if found == "missing" || found != want {
                let now = if found == "missing" { "is gone".to_string() } else { format!("is now {found}") };
                return r.drop_with(
                    ErrorKind::PythonMismatch,
                    format!(
                        "the virtualenv {} ({}) was to run on the node's {py} (Python {want} when probed), which {now}{}; probe the node again",
                        venv_name(local), venv_from(local), node_pythons(&r.facts)
                    ),
                );
            }
        }
        if reply.get("rsync") == Some("missing") {
            return r.drop_with(ErrorKind::NoRsync, "rsync is not installed on the node; install it there (Debian: apt-get install rsync)");
        }
        if let Some(state) = reply.get("target").filter(|s| !matches!(*s, "created" | "marked")) {
            let what = match state {
                "notdir" => "exists and is not a directory".to_string(),
                "unreadable" => "exists and cannot be listed".to_string(),
                _ => format!("exists, is not empty ({}...) and has no {} marker", reply.get("target_sample").unwrap_or("").trim(), rsync::MARKER),
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
        if reply.get("runs") == Some("unsafe") {
            return r.drop_with(
                ErrorKind::UnsafeTarget,
                format!(
                    "{runs} exists and was not made by pytest-cloud (no {} marker), so no run tree is made or removed there; \
                     it was left untouched. Remove it if it is yours to lose, or pick another --chdir",
                    lease::RUNS_MARKER
                ),
            );
        }
        if let Some(e) = reply.get("error") {
            let stderr = reply.out.stderr_trimmed();
            return r.drop_with(ErrorKind::SyncFailed, if stderr.is_empty() { e.to_string() } else { format!("{e}: {stderr}") });
        }
        match reply.get("lock") {
            Some("acquired") => {
                r.locked = true;
                r.clean_before = reply.get("clean") == Some("1");
                r.run_entries = lease::parse_entries(&reply.kv);
                r.rebased_before = reply.get("rebased").map(String::from);
                super::build::read_preflight(r, &reply);
                // The fast path gave the lock back in this very round trip; else it is renewed
                // until finish or a release gives it back (beat.rs).
                if !super::fast::took_fast_path(r, &reply, local, config, deadline) {
                    local.held.add(&r.dest, &r.planned.remote_dir, &r.lock);
                }
                return;
            }
            Some("held") => {
                let holder = reply.get("lock_holder").unwrap_or("").to_string();
                let stale = reply.get("lock_stale") == Some("1") || holder_is_dead(&holder, &local.hostname);
                if stale && break_holder != holder {
                    // Taken over on the next round trip, only if the holder is still the same.
                    break_holder = holder;
                    continue;
                }
                if waited_for.as_deref() != Some(holder.as_str()) {
                    progress(&SyncEvent::Waiting { node: &r.planned.node.key(), holder: &holder });
                    waited_for = Some(holder.clone());
                }
                if wait_start.elapsed() >= opts.lock_wait || interrupt::requested() {
                    return r.drop_with(
                        ErrorKind::Locked,
                        format!(
                            "{} is locked by another run ({}); waited {} s. If that run is gone, remove {} on the node \
                             (a lock is taken over once not renewed for {} min, or {} min where its holder line names no ttl_min)",
                            r.planned.remote_dir,
                            describe_holder(&holder),
                            wait_start.elapsed().as_secs(),
                            r.lock,
                            super::beat::LOCK_TTL_MIN,
                            opts.lock_stale.as_secs() / 60
                        ),
                    );
                }
                sleep_unless_interrupted(Duration::from_millis(500));
            }
            _ => {
                return r.drop_with(ErrorKind::SyncFailed, format!("the node-side check printed no lock state: {}", reply.out.stderr_trimmed()));
            }
        }
    }
}

pub(super) fn sleep_unless_interrupted(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !interrupt::requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn venv_name(local: &Local) -> &str {
    local.venv.as_ref().map(|v| v.rel.as_str()).unwrap_or("")
}

pub(super) fn venv_from(local: &Local) -> String {
    local.venv.as_ref().map(|v| format!("{}/pyvenv.cfg; {}", v.rel, v.base.from)).unwrap_or_default()
}

pub(super) fn node_pythons(f: &Facts) -> String {
    if f.pythons.is_empty() {
        return String::new();
    }
    let list: Vec<String> = f.pythons.values().map(|p| format!("{} ({})", p.path, p.version)).collect();
    format!(" (it has {})", list.join(", "))
}

/// A holder on this very machine whose process is gone left its lock behind (Ctrl-C'd
/// twice, killed): take it over at once instead of waiting for it to go stale. The same rule
/// as the run trees' leases.
pub(super) fn holder_is_dead(holder: &str, hostname: &str) -> bool {
    crate::machine::holder_gone_here(holder, hostname)
}

pub(super) fn describe_holder(holder: &str) -> String {
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

/// After rsync: orphan bytecode, the editable `.pth`, a check that the synced interpreter
/// runs with those paths, and the lock released (also for nodes whose rsync failed).
pub(super) fn finish(r: &mut NodeRun, config: &Path, local: &Local, deadline: Duration) {
    let dir = r.planned.remote_dir.clone();
    if !r.alive() {
        return release_lock(r, config, local, deadline);
    }
    let built = super::build::finish_parts(r);
    let (pth, python) = match (&built, &local.venv) {
        (Some((pth, python, _)), _) => (pth.clone(), python.clone()),
        (None, Some(v)) => (v.pth.clone().unwrap_or_default(), format!("{}/bin/python", v.rel)),
        (None, None) => (String::new(), String::new()),
    };
    let entries = pth_lines(&pth, &local.editable);
    let (sweep, deleted_py) = cleanup_scope(r.clean_before, r.deleted.as_deref());
    let count = deleted_py.len().to_string();
    let runs = lease::runs_dir(&dir);
    let reap = lease::to_reap(&r.run_entries, &local.run_id, &local.hostname);
    let nreap = reap.len().to_string();
    let (rebase, mut prelude) = super::rebase::rebase_code(r, local);
    if let Some((_, _, attach)) = built {
        prelude.push_str(&attach);
    }
    let prelude = super::fast::finish_prelude(r) + &prelude;
    let mut args: Vec<&str> = vec![&dir, &r.lock, &local.holder, &pth, &python, &rebase, &runs, &local.run_id, &local.lease, &nreap];
    for e in &reap {
        args.push(&e.id);
        args.push(e.holder.as_deref().unwrap_or(""));
    }
    args.extend([sweep, count.as_str()]);
    args.extend(deleted_py.iter().copied());
    args.extend(entries.iter().map(String::as_str));
    let reply = match remote::sync_script(config, &r.dest, &prelude, "finish", &args, deadline) {
        Ok(x) => x,
        Err(e) => return r.drop_with(ErrorKind::SyncFailed, e.message),
    };
    if let Some((kind, msg)) = reply.failure("sync_node_end") {
        // may_hold stays: the caller gives the lock back if the script did not get to.
        return r.drop_with(kind, format!("after rsync: {msg}"));
    }
    // The script gives the lock back on every path it runs to its end.
    r.may_hold = false;
    local.held.remove(&r.dest);
    r.run_dir = reply.get("run_dir").map(String::from);
    if let Some(e) = reply.get("error") {
        let detail: Vec<&str> = reply.kv.iter().filter(|(k, _)| k == "rebase_error").map(|(_, v)| v.as_str()).collect();
        let detail = if detail.is_empty() { String::new() } else { format!(" ({})", detail.join("; ")) };
        r.drop_with(ErrorKind::SyncFailed, format!("after rsync: {e}{detail}: {}", reply.out.stderr_trimmed()));
    } else if reply.get("venv") == Some("failed") {
        let msg: Vec<&str> = reply.kv.iter().filter(|(k, _)| k == "venv_message").map(|(_, v)| v.as_str()).collect();
        let kind = if entries.is_empty() { ErrorKind::PythonMismatch } else { ErrorKind::DevelopFailed };
        let tree = r.run_dir.as_deref().unwrap_or(&dir);
        r.drop_with(kind, format!("the synced interpreter {tree}/{python} does not work on the node: {}", msg.join(" / ")));
    } else if r.run_dir.is_none() {
        r.drop_with(ErrorKind::SyncFailed, format!("after rsync: the node made no run tree: {}", reply.out.stderr_trimmed()));
    }
    if r.dropped.is_some() && r.run_dir.is_some() {
        // A dropped node runs nothing: its tree goes at once.
        let _ = remote::sync_script(config, &r.dest, "", "drop", &[&dir, "", "", &runs, &local.run_id, &local.lease], deadline);
        r.run_dir = None;
    }
}

/// The lines of the editable `.pth`: each source directory relative to the `.pth`'s own
/// directory (site-packages), which is how `site` reads a relative line. They hold in the base
/// and in every run tree linked from it (no node path in them).
pub(super) fn pth_lines(pth: &str, editable: &[String]) -> Vec<String> {
    let depth = Path::new(pth).parent().map(|p| p.components().count()).unwrap_or(0);
    let up = vec![".."; depth].join("/");
    editable.iter().map(|e| if e.is_empty() { up.clone() } else { format!("{up}/{e}") }).collect()
}

/// More deleted modules than this and the clean-up sweeps the tree instead of taking them
/// as arguments (one command line).
pub(super) const MAX_LISTED_DELETIONS: usize = 500;

/// How the clean-up after rsync finds orphan bytecode: `"listed"` with the deleted `.py`
/// files (relative to the target) when the list is known to be complete, else `"full"`. The
/// list is complete when rsync's output was read and the previous sync cleaned up after
/// itself (an interrupted one may have deleted modules whose bytecode is still there).
pub(super) fn cleanup_scope(clean_before: bool, deleted: Option<&[String]>) -> (&'static str, Vec<&str>) {
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

#[cfg(test)]
mod tests {
    use super::super::local::local_hostname;
    use super::*;

    #[test]
    fn dead_local_holders_are_recognised() {
        let me = local_hostname();
        let boot = crate::machine::boot_id();
        let alive = format!("pytest-cloud run=r1 host={me} boot={boot} pid={} user=u started_unix=1 source=/p", std::process::id());
        assert!(!holder_is_dead(&alive, &me));
        assert_eq!(holder_is_dead(&format!("pytest-cloud run=r1 host={me} boot={boot} pid=4000000000 user=u"), &me), !boot.is_empty());
        assert!(!holder_is_dead("pytest-cloud host=elsewhere pid=4000000000 user=u", &me), "another machine's pid says nothing");
        assert!(!holder_is_dead("", &me));
    }

    /// Runs the node script here (it is POSIX sh; a node is just another machine) with its
    /// stdout a pipe nobody reads any more, as when the controller's ssh was killed mid-step.
    fn node_script_unread(prelude: &str, words: &[&str]) {
        use std::io::Write;
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut child = std::process::Command::new("sh")
            .args(["-s", "--"])
            .args(words)
            .stdin(std::process::Stdio::piped())
            .stdout(writer)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{prelude}\n{}", remote::SYNC_SCRIPT).as_bytes()).unwrap();
        drop(stdin);
        child.wait().unwrap();
    }

    #[test]
    fn a_node_script_whose_answer_nobody_reads_leaves_no_lock() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("base");
        let (dir_s, lock) = (dir.display().to_string(), format!("{}.pytest-cloud-lock", dir.display()));
        let runs = format!("{dir_s}.pytest-cloud-runs");
        let holder = "pytest-cloud run=r1 host=h boot=b pid=1";
        // preflight: it takes the lock, then cannot write lock=acquired (nor anything after).
        node_script_unread("", &["preflight", &dir_s, &lock, holder, "60", "", "", "", "marker text", &runs]);
        assert!(dir.join(rsync::MARKER).exists(), "the pre-flight ran to its end");
        assert!(!Path::new(&lock).exists(), "a pre-flight nobody heard gives its lock back");
        // finish: under our lock, it cannot write rebase=done.
        std::fs::create_dir(&lock).unwrap();
        std::fs::write(format!("{lock}/holder"), format!("{holder}\n")).unwrap();
        node_script_unread("rebase_venv() { return 0; }", &["finish", &dir_s, &lock, holder, "", "", "yes", &runs, "", "", "0", "listed", "0"]);
        assert!(dir.join(".pytest-cloud-synced").exists(), "finish ran to its end");
        assert!(!Path::new(&lock).exists(), "finish released the lock though its stdout was gone");
    }

    /// Runs the node script here in MODE (no prelude) and returns its stdout.
    fn node_script(words: &[&str]) -> String {
        let out = crate::proc::Cmd::new(["sh", "-s", "--"].into_iter().chain(words.iter().copied()).map(String::from).collect::<Vec<_>>())
            .stdin(remote::SYNC_SCRIPT.to_string())
            .deadline(Duration::from_secs(30))
            .output()
            .unwrap();
        out.stdout_str().to_string()
    }

    fn lock_aged(lock: &Path, holder: &str, age: Duration) {
        let _ = std::fs::remove_dir_all(lock);
        std::fs::create_dir(lock).unwrap();
        std::fs::write(lock.join("holder"), format!("{holder}\n")).unwrap();
        std::fs::File::open(lock).unwrap().set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn a_lock_whose_holder_stopped_renewing_it_goes_stale_after_its_ttl_and_the_beat_renews_only_ours() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("base");
        let lock = t.path().join("base.pytest-cloud-lock");
        let (dir_s, lock_s) = (dir.display().to_string(), lock.display().to_string());
        let other = "pytest-cloud run=r9 host=elsewhere boot=b pid=1 ttl_min=2 user=u";
        let preflight = |me: &str| node_script(&["preflight", &dir_s, &lock_s, me, "60", "", "", "", "marker text", ""]);
        let me = "pytest-cloud run=r1 host=here boot=b pid=1 ttl_min=2 user=u";
        // Not renewed for 3 minutes, 2 allowed: stale.
        lock_aged(&lock, other, Duration::from_secs(180));
        let out = preflight(me);
        assert!(out.contains("lock=held") && out.contains("lock_stale=1"), "{out}");
        // Renewed a moment ago: held, not stale, however long ago it was made.
        lock_aged(&lock, other, Duration::from_secs(30));
        let out = preflight(me);
        assert!(out.contains("lock=held") && !out.contains("lock_stale"), "{out}");
        // A holder line without ttl_min (a pytest-cloud without the heartbeat): STALE_MIN decides.
        lock_aged(&lock, "pytest-cloud host=elsewhere pid=1 user=u", Duration::from_secs(180));
        let out = preflight(me);
        assert!(out.contains("lock=held") && !out.contains("lock_stale"), "{out}");
        // The beat touches only its own lock.
        lock_aged(&lock, other, Duration::from_secs(180));
        assert!(node_script(&["beat", &dir_s, &lock_s, me]).contains("lock=lost"));
        assert!(preflight(me).contains("lock_stale=1"), "another's lock is not renewed by our beat");
        lock_aged(&lock, me, Duration::from_secs(180));
        let out = node_script(&["beat", &dir_s, &lock_s, me]);
        assert!(out.contains("lock=renewed") && out.contains("sync_node_end=1"), "{out}");
        let out = preflight(other);
        assert!(out.contains("lock=held") && !out.contains("lock_stale"), "renewed: {out}");
    }

    #[test]
    fn pth_lines_are_relative_to_site_packages() {
        let pth = ".venv/lib/python3.11/site-packages/000-pytest-cloud-editable.pth";
        assert_eq!(pth_lines(pth, &["src".into(), "".into(), "libs/a/src".into()]), ["../../../../src", "../../../..", "../../../../libs/a/src"]);
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
}
