//! The fast path of a no-change re-sync: one ssh round trip per node instead of three
//! (pre-flight, rsync, finish).
//!
//! The controller computes the manifest digest of what rsync would send ([`crate::manifest`]:
//! paths, types, sizes, mtimes, modes under the same filter rules), mixes in per node what
//! else decides the node's copy (its managed venv files, i.e. the rebase digest; the editable
//! `.pth` and its lines; the venv's interpreter path), and sends it with the pre-flight (a
//! prelude of shell variables, so the pre-flight's arguments stay as they are). `finish`
//! writes that digest into the base's stamp `.pytest-cloud-synced` after a complete sync
//! whose rsync exited 0; the pre-flight removes the stamp under the lock before any rsync, so
//! an interrupted sync leaves none. When the node's stamp holds our digest, nothing in the
//! base is newer than the stamp, and no lease needs our judgement, the pre-flight itself reaps
//! stale trees, makes this run's tree and lease, releases the lock and checks the venv in the
//! tree (`fast_path` in src/sync_node.sh). Anything else, and that pre-flight goes on exactly
//! as before: the full path. The node's tree for the run is a kept one where it can be (a
//! released tree still exactly as it was made, of the sync the base still holds: one rename
//! instead of a link per file), else linked from the base; a fresh lease of a run of this
//! machine does not stop the fast path: the node lists it, and its tree is reaped afterwards
//! when its holder is gone here ([`reap_gone_here`]).

use super::local::Local;
use super::node::{NodeRun, pth_lines};
use crate::engine::lease;
use crate::remote::Reply;
use crate::schema::ErrorKind;
use crate::{remote, rsync};
use std::path::Path;
use std::time::Duration;

/// What the sync document says about a node's transfer.
pub const TRANSFER_RSYNC: &str = "rsync";
/// The node's base already held this very tree: no rsync ran (the fast path).
pub const TRANSFER_SKIPPED: &str = "skipped";

/// The manifest digest of this sync's transfer, or None (no fast path) when the tree cannot be
/// read. `rsync_options` are rsync's as the fan-out runs it; those that do not change what
/// arrives (bandwidth, progress, the filter file's and ssh's paths, the timeout) are left out.
pub(super) fn manifest(hostname: &str, root: &Path, rules: &[String], rsync_options: &[String]) -> Option<crate::manifest::Manifest> {
    let root_s = root.display().to_string();
    let mut context: Vec<&str> = vec![hostname, &root_s];
    let mut skip_next = false;
    for o in rsync_options {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if o == "-e" {
            skip_next = true;
            continue;
        }
        let irrelevant = ["--bwlimit", "--filter", "--timeout", "--info=progress", "--no-inc-recursive"].iter().any(|p| o.starts_with(p));
        if !irrelevant {
            context.push(o);
        }
    }
    crate::manifest::manifest(root, rules, &context, true)
}

/// What the node's stamp holds after a complete sync of this tree, for this node.
fn node_digest(manifest: &str, r: &NodeRun, local: &Local) -> Option<String> {
    let rebased = match (&local.venv, &r.interpreter) {
        (Some(v), Some(c)) => v.layout.node_code(c).0,
        _ => String::new(),
    };
    let (pth, python) = venv_paths(local);
    let entries = pth_lines(&pth, &local.editable);
    if entries.iter().any(|e| e.contains(['\n', '\r'])) {
        return None;
    }
    let mut parts = vec![rebased, pth, python];
    parts.extend(entries);
    Some(format!("{manifest}.{:016x}", crate::ssh::fnv1a(parts.join("\0").as_bytes())))
}

fn venv_paths(local: &Local) -> (String, String) {
    match &local.venv {
        Some(v) => (v.pth.clone().unwrap_or_default(), format!("{}/bin/python", v.rel)),
        None => (String::new(), String::new()),
    }
}

/// The pre-flight's prelude: the shell variables `fast_path` reads. Empty (no fast path) when
/// the sync has no manifest. Also remembers the node's digest for `finish`'s stamp.
pub(super) fn preflight_prelude(r: &mut NodeRun, local: &Local) -> String {
    if r.build.is_some() {
        // The node builds its env itself (src/engine/sync/build.rs): not a tree the digest covers.
        r.stamp_digest = None;
        return String::new();
    }
    r.stamp_digest = r.manifest.as_ref().and_then(|m| node_digest(&m.digest, r, local));
    let Some(digest) = &r.stamp_digest else { return String::new() };
    let (pth, python) = venv_paths(local);
    let entries = pth_lines(&pth, &local.editable).join("\n");
    let boot = lease::boot_id();
    let vars = [
        ("fast_digest", digest.as_str()),
        ("fast_run_id", &local.run_id),
        ("fast_lease", &local.lease),
        ("fast_python", &python),
        ("fast_pth", &pth),
        ("fast_entries", &entries),
        ("fast_host", &local.hostname),
        ("fast_boot", &boot),
    ];
    let mut prelude: String = vars.iter().map(|(k, v)| format!("{k}={}\n", shell_words::quote(v))).collect();
    prelude.push_str(&cache_code(r.manifest.as_ref().and_then(|m| m.cache.as_deref())));
    prelude
}

/// `fast_cache TREE`: TREE gets the controller's pytest cache (a run rewrites it every time, so
/// it is carried here rather than compared): the copy made from the base goes, the entries are
/// written. None: the tree keeps what it has (the filters exclude the cache).
fn cache_code(cache: Option<&[crate::manifest::CacheEntry]>) -> String {
    use crate::manifest::{CacheEntry, PYTEST_CACHE};
    let q = |s: &str| shell_words::quote(s).into_owned();
    let mut body = String::new();
    if let Some(entries) = cache {
        body.push_str(&format!("    rm -rf -- \"$1\"/{} || return 1\n", q(PYTEST_CACHE)));
        for e in entries {
            match e {
                CacheEntry::Dir(rel) => body.push_str(&format!("    mkdir -p -- \"$1\"/{} || return 1\n", q(rel))),
                CacheEntry::File(rel, text) => body.push_str(&format!("    printf '%s' {} >\"$1\"/{} || return 1\n", q(text), q(rel))),
            }
        }
    }
    format!("fast_cache() {{\n{body}    return 0\n}}\n")
}

/// `finish`'s prelude: the digest its stamp gets. Only after an rsync that exited 0: after a
/// vanished source file (24) the node's copy is not exactly the tree the digest describes.
pub(super) fn finish_prelude(r: &NodeRun) -> String {
    match (&r.stamp_digest, &r.rsync) {
        (Some(d), Some((0, _))) => format!("stamp_digest={}\n", shell_words::quote(d)),
        _ => String::new(),
    }
}

/// Reads a pre-flight that got the lock: true when the node took the fast path (the run is
/// then synced, or dropped with the reason, and holds no lock).
pub(super) fn took_fast_path(r: &mut NodeRun, reply: &Reply, local: &Local, config: &Path, deadline: Duration) -> bool {
    if reply.get("fast") != Some("done") {
        r.transfer_reason = reply.get("fast_reason").map(String::from);
        return false;
    }
    // The node gave the lock back on every way through fast_path that reaches its end.
    r.locked = false;
    r.may_hold = false;
    r.transfer = TRANSFER_SKIPPED;
    r.run_dir = reply.get("run_dir").map(String::from);
    let (pth, python) = venv_paths(local);
    if let Some(e) = reply.get("error") {
        r.drop_with(ErrorKind::SyncFailed, format!("{e}: {}", reply.out.stderr_trimmed()));
    } else if reply.get("venv") == Some("failed") {
        let msg: Vec<&str> = reply.kv.iter().filter(|(k, _)| k == "venv_message").map(|(_, v)| v.as_str()).collect();
        let kind = if pth_lines(&pth, &local.editable).is_empty() { ErrorKind::PythonMismatch } else { ErrorKind::DevelopFailed };
        let tree = r.run_dir.as_deref().unwrap_or(&r.planned.remote_dir);
        r.drop_with(kind, format!("the synced interpreter {tree}/{python} does not work on the node: {}", msg.join(" / ")));
    } else if r.run_dir.is_none() {
        r.drop_with(ErrorKind::SyncFailed, format!("the node made no run tree: {}", reply.out.stderr_trimmed()));
    } else {
        r.rsync = Some((0, rsync::Stats::default()));
        reap_gone_here(r, reply, local, config, deadline);
    }
    if r.dropped.is_some() && r.run_dir.is_some() {
        let runs = lease::runs_dir(&r.planned.remote_dir);
        let _ = remote::sync_script(config, &r.dest, "", "drop", &[&r.planned.remote_dir, "", "", &runs, &local.run_id, &local.lease], deadline);
        r.run_dir = None;
    }
    true
}

/// The fast path lists the fresh leases of runs of this machine (`lease=ID 0 HOLDER`), whose
/// holders only this machine can judge; the trees of those that are gone (a run killed here)
/// are reaped in one more round trip, which a run pays only when there is such a tree. A
/// failure leaves the tree to a later run (its lease goes stale).
fn reap_gone_here(r: &NodeRun, reply: &Reply, local: &Local, config: &Path, deadline: Duration) {
    let entries = lease::parse_entries(&reply.kv);
    let gone = lease::to_reap(&entries, &local.run_id, &local.hostname);
    if gone.is_empty() {
        return;
    }
    let runs = lease::runs_dir(&r.planned.remote_dir);
    let n = gone.len().to_string();
    let mut args: Vec<&str> = vec![&r.planned.remote_dir, "", "", &runs, &n];
    for e in &gone {
        args.push(&e.id);
        args.push(e.holder.as_deref().unwrap_or(""));
    }
    let _ = remote::sync_script(config, &r.dest, "", "reap", &args, deadline);
}
