//! Run trees and their leases: how concurrent runs on one node never touch each other's files.
//!
//! `sync` keeps one shared *base* per node (`<home>/<chdir>`, the marked directory rsync
//! updates under its short lock) and makes, still under that lock, the run's own tree
//! `<base>.pytest-cloud-runs/<run id>`: hard links of the base (`cp -al`), so it costs no
//! transfer, and a later sync into the base never changes a file the run sees (rsync writes a
//! changed file as a new file and renames it over the old name). The run's workers and exec's
//! jobs work there. The rules and the measurements: share/doc/sync-safety.md.
//!
//! Each run tree has a lease `<runs>/<run id>.lease`: one holder line (this module's
//! [`lease_line`]) whose mtime is the heartbeat. The holder renews it (touch) every
//! [`RENEW_EVERY`] while the run lives and removes tree and lease when it ends
//! (`pytest-cloud release`). A later sync removes another run's tree when its lease is stale:
//! not renewed for the `ttl_min` minutes the holder line names (the node decides, by the
//! lease's mtime on its own clock), or at once when the holder names this very machine
//! (hostname and boot id) and its process is gone.

use crate::error::{Error, Result};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Beside the base: the directory holding the run trees and their leases.
pub const RUNS_SUFFIX: &str = ".pytest-cloud-runs";

/// The marker at the top of the runs directory (`src/sync_node.sh`): nothing is made or
/// removed in a runs directory without it.
pub const RUNS_MARKER: &str = ".pytest-cloud-runs";

/// How often a live run touches its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

/// A lease held by a process (the launcher, the plugin's pytest): stale after this many
/// minutes without renewal (6 missed renewals), or at once when that process is gone.
pub const PROCESS_TTL_MIN: u64 = 2;

/// A lease made by `sync` alone (no process holds it; `exec` renews it while it runs):
/// stale this many minutes after its last renewal unless `--keep-minutes` says otherwise.
pub const DETACHED_TTL_MIN: u64 = 30;

pub fn runs_dir(base: &str) -> String {
    format!("{base}{RUNS_SUFFIX}")
}

/// A run id: unique per run, usable in a path, an xdist spec and a shell word unquoted.
pub fn new_run_id() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut noise = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut noise);
    }
    let mix = u32::from_le_bytes(noise) ^ now.subsec_nanos();
    format!("r{}-{}-{:08x}", now.as_secs(), std::process::id(), mix)
}

/// This machine's boot id ([`crate::machine::boot_id`]).
pub fn boot_id() -> String {
    crate::machine::boot_id()
}

/// The lease's one line. `pid=0`: no process holds it (`sync` alone); only its age counts.
pub fn lease_line(run_id: &str, host: &str, pid: u32, ttl_min: u64, user: &str, source: &Path) -> String {
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let line = format!(
        "pytest-cloud run={run_id} host={host} boot={} pid={pid} ttl_min={ttl_min} user={user} started_unix={started} source={}",
        boot_id(),
        source.display()
    );
    line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Whether the holder named by `line` is a process of this machine (same hostname and boot)
/// that no longer exists: its run is over, whatever the lease's age. The same rule as the
/// node locks' ([`crate::machine::holder_gone_here`]).
pub fn holder_gone_here(line: &str, hostname: &str) -> bool {
    crate::machine::holder_gone_here(line, hostname)
}

/// A process that exists and is not a zombie ([`crate::machine::pid_alive`]).
pub fn pid_alive(pid: u32) -> bool {
    crate::machine::pid_alive(pid)
}

/// What preflight said about one entry of the runs directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEntry {
    pub id: String,
    /// The lease line; None: a tree without a lease (what a removal cut short leaves).
    pub holder: Option<String>,
    /// The node found the lease older than its ttl.
    pub stale: bool,
}

/// Reads preflight's `lease=ID STALE HOLDER` and `orphan=ID` lines.
pub fn parse_entries(kv: &[(String, String)]) -> Vec<RunEntry> {
    let mut out = Vec::new();
    for (k, v) in kv {
        match k.as_str() {
            "lease" => {
                let mut it = v.splitn(3, ' ');
                let (Some(id), Some(st)) = (it.next(), it.next()) else { continue };
                out.push(RunEntry { id: id.to_string(), holder: Some(it.next().unwrap_or("").to_string()), stale: st == "1" });
            }
            "orphan" => out.push(RunEntry { id: v.clone(), holder: None, stale: true }),
            _ => {}
        }
    }
    out
}

/// The trees a sync removes: orphans, stale leases, and leases whose holder is gone here.
/// Never our own run.
pub fn to_reap<'a>(entries: &'a [RunEntry], own_id: &str, hostname: &str) -> Vec<&'a RunEntry> {
    entries
        .iter()
        .filter(|e| e.id != own_id)
        .filter(|e| match &e.holder {
            None => true,
            Some(h) => e.stale || holder_gone_here(h, hostname),
        })
        .collect()
}

/// A run tree as the sync document names it, for renewing and releasing.
#[derive(Debug, Clone)]
pub struct Held {
    pub node: String,
    pub dest: crate::ssh::Destination,
    pub base: String,
    pub runs: String,
    pub id: String,
    pub lease: String,
}

/// The run trees a sync document holds (nodes synced into a run tree), with the ssh config
/// its nodes use.
pub fn held_in(doc: &crate::schema::SyncDoc) -> Result<(std::path::PathBuf, Vec<Held>)> {
    let dests: Vec<crate::ssh::Destination> = doc
        .plan
        .inventory
        .nodes
        .iter()
        .map(|n| n.node.clone())
        .collect();
    let mut held = Vec::new();
    for n in &doc.nodes {
        let (Some(run_id), Some(lease)) = (&n.run_id, &n.lease) else { continue };
        let Some(base) = &n.base_dir else { continue };
        let dest = n.planned.node.clone();
        if run_id.is_empty() || run_id.contains(['/', ' ', '\n']) || run_id.starts_with('.') {
            return Err(Error::bad_input(format!("node {}: run_id {run_id:?} is not a run id", n.planned.node)));
        }
        held.push(Held { node: dest.key(), dest, base: base.clone(), runs: runs_dir(base), id: run_id.clone(), lease: lease.clone() });
    }
    let config = if held.is_empty() { std::path::PathBuf::new() } else { crate::ssh::write_config(&doc.plan.inventory.ssh, &dests)? };
    Ok((config, held))
}

/// What one renewal or release on one node gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAnswer {
    Done,
    /// The lease was no longer ours (taken over after it went stale).
    Lost,
    Failed(String),
}

/// Touches every lease, all nodes at once.
pub fn renew_all(config: &Path, held: &[Held], deadline: Duration) -> Vec<NodeAnswer> {
    on_all(config, held, "renew", deadline)
}

/// Removes every run tree and its lease (after handing new bytecode to the base).
pub fn drop_all(config: &Path, held: &[Held], deadline: Duration) -> Vec<NodeAnswer> {
    on_all(config, held, "drop", deadline)
}

fn on_all(config: &Path, held: &[Held], mode: &str, deadline: Duration) -> Vec<NodeAnswer> {
    std::thread::scope(|s| {
        let handles: Vec<_> = held.iter().map(|h| s.spawn(move || on_one(config, h, mode, deadline, None))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| NodeAnswer::Failed("panicked".into()))).collect()
    })
}

fn on_one(config: &Path, h: &Held, mode: &str, deadline: Duration, cut: crate::remote::Cut<'_>) -> NodeAnswer {
    let args = [h.base.as_str(), "", "", &h.runs, &h.id, &h.lease];
    match crate::remote::sync_script_or_cut(config, &h.dest, "", mode, &args, deadline, cut) {
        Err(e) => NodeAnswer::Failed(e.message),
        Ok(reply) => {
            if let Some((_, why)) = reply.failure("sync_node_end") {
                NodeAnswer::Failed(why)
            } else if let Some(e) = reply.get("error") {
                NodeAnswer::Failed(e.to_string())
            } else if reply.get("lease") == Some("lost") {
                NodeAnswer::Lost
            } else {
                NodeAnswer::Done
            }
        }
    }
}

/// How long the first renewal can wait: until [`RENEW_EVERY`] after the oldest of the leases
/// was written (the `started_unix` of its line, plus a second for the rounding), so the leases
/// a sync has just written are not renewed again while the run's workers start (at 64 nodes
/// that was 64 ssh sessions and node scripts in the middle of worker start). A lease without
/// a readable start, or an older one, is renewed at once.
pub fn first_renewal_in(held: &[Held], now_unix: u64) -> Duration {
    let mut wait = RENEW_EVERY;
    for h in held {
        let Some(started) = h.lease.split_whitespace().find_map(|w| w.strip_prefix("started_unix=")).and_then(|s| s.parse::<u64>().ok()) else {
            return Duration::ZERO;
        };
        let age = Duration::from_secs(now_unix.saturating_sub(started) + 1);
        wait = wait.min(RENEW_EVERY.saturating_sub(age));
    }
    wait
}

/// Runs `f` while a thread renews the leases every [`RENEW_EVERY`] (the first time when
/// [`first_renewal_in`] says), so that nothing removes the trees under it. A lost lease is said on stderr. Returns `f`'s
/// value and which nodes answered the last renewal (a node that did not may be lost: its
/// release is then given less time). The thread waits on a channel between renewals, so the
/// end of `f` ends it at once (unless a renewal is under way, which is waited for: a touch
/// after the drop would leave a lease behind).
pub fn renewing<T>(config: &Path, held: &[Held], quiet: bool, f: impl FnOnce() -> T) -> (T, Vec<bool>) {
    let answered = std::sync::Mutex::new(vec![true; held.len()]);
    if held.is_empty() {
        return (f(), Vec::new());
    }
    let out = std::thread::scope(|s| {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let answered = &answered;
        s.spawn(move || {
            let mut said = vec![false; held.len()];
            let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let mut next = std::time::Instant::now() + first_renewal_in(held, now_unix);
            // Timeout: time to renew; anything else is the end of `f` (the sender dropped).
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(next.saturating_duration_since(std::time::Instant::now())) {
                next = std::time::Instant::now() + RENEW_EVERY;
                let answers = renew_all(config, held, Duration::from_secs(20));
                let mut ok = answered.lock().unwrap_or_else(|p| p.into_inner());
                for (i, a) in answers.into_iter().enumerate() {
                    ok[i] = !matches!(a, NodeAnswer::Failed(_));
                    if a == NodeAnswer::Lost && !said[i] && !quiet {
                        said[i] = true;
                        eprintln!(
                            "pytest-cloud: {}: warning: the lease of {}/{} was taken over (not renewed in time); a later run may have removed that tree",
                            held[i].node, held[i].runs, held[i].id
                        );
                    }
                }
            }
        });
        let out = f();
        drop(stop);
        out
    });
    (out, answered.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// How long the release of a node that may be lost is given.
pub const LOST_NODE_DEADLINE: Duration = Duration::from_secs(3);

/// Releases every tree, all nodes at once: nodes that answered their last renewal get
/// `deadline`, the others [`LOST_NODE_DEADLINE`] (a node that is gone cannot be cleaned now;
/// a later run reaps its tree). A node lost since its last renewal (killed mid-run) is one
/// whose shared ssh connection is gone (`ssh -O check`): that is asked only of a drop still
/// running at [`LOST_NODE_DEADLINE`] (then cut there if so) or one that failed, never of the
/// drops that answer, so the check adds nothing to a release that goes well; a failure says
/// that the connection was gone.
pub fn drop_answered(config: &Path, held: &[Held], answered: &[bool], deadline: Duration) -> Vec<NodeAnswer> {
    std::thread::scope(|s| {
        let handles: Vec<_> = held
            .iter()
            .enumerate()
            .map(|(i, h)| {
                s.spawn(move || {
                    if !answered.get(i).copied().unwrap_or(true) {
                        return on_one(config, h, "drop", LOST_NODE_DEADLINE, None);
                    }
                    // None: not asked (the drop ended within LOST_NODE_DEADLINE).
                    let mut gone: Option<Option<String>> = None;
                    let mut ask = || {
                        let g = crate::ssh::master_gone(config, &h.dest);
                        let cut = g.is_some();
                        gone = Some(g);
                        cut
                    };
                    let answer = on_one(config, h, "drop", deadline, Some((LOST_NODE_DEADLINE, &mut ask)));
                    let NodeAnswer::Failed(why) = answer else { return answer };
                    let secs = LOST_NODE_DEADLINE.as_secs();
                    NodeAnswer::Failed(match gone {
                        Some(Some(g)) => format!("its shared ssh connection was gone ({g}), so it was given {secs} s: {why}"),
                        None => match crate::ssh::master_gone(config, &h.dest) {
                            Some(g) => format!("its shared ssh connection was gone ({g}), so it was given {secs} s: {why}"),
                            None => why,
                        },
                        // Alive at LOST_NODE_DEADLINE: it had the full deadline.
                        Some(None) => match crate::ssh::master_gone(config, &h.dest) {
                            Some(g) => format!("its shared ssh connection was lost during the drop ({g}): {why}"),
                            None => why,
                        },
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| NodeAnswer::Failed("panicked".into()))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_plain() {
        let (a, b) = (new_run_id(), new_run_id());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{a}");
    }

    #[test]
    fn entries_are_read_and_only_dead_ones_reaped() {
        let host = "ctl";
        let boot = boot_id();
        let dead = format!("pytest-cloud run=r2 host={host} boot={boot} pid=4000000000 ttl_min=2");
        let alive = format!("pytest-cloud run=r3 host={host} boot={boot} pid={} ttl_min=2", std::process::id());
        let kv: Vec<(String, String)> = [
            ("lease", "r1 1 pytest-cloud run=r1 host=other boot=x pid=7 ttl_min=2".to_string()),
            ("lease", format!("r2 0 {dead}")),
            ("lease", format!("r3 0 {alive}")),
            ("lease", "r4 0 pytest-cloud run=r4 host=other boot=x pid=1 ttl_min=2".to_string()),
            ("orphan", "r5".to_string()),
            ("lease", "mine 1 whatever".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let entries = parse_entries(&kv);
        assert_eq!(entries.len(), 6);
        assert_eq!(entries[4], RunEntry { id: "r5".into(), holder: None, stale: true });
        let reaped: Vec<&str> = to_reap(&entries, "mine", host).iter().map(|e| e.id.as_str()).collect();
        // stale by age, holder gone here, orphan; not the live one, another host's fresh one, or ours.
        assert_eq!(reaped, ["r1", "r2", "r5"]);
    }

    /// The run keeper (`release --wait-pid`) asks whether the launcher lives: on a controller
    /// without /proc (macOS) that answer must still be right, or the run trees go at once.
    /// As root the check runs again in this test binary in a mount namespace whose /proc is
    /// an empty tmpfs (unshare + mount, util-linux).
    #[test]
    fn liveness_is_known_without_proc() {
        if std::env::var_os("PYTEST_CLOUD_TEST_NO_PROC").is_some() {
            assert!(!Path::new("/proc/self").exists(), "/proc is hidden here");
            assert!(pid_alive(std::process::id()), "this process lives");
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            assert!(!pid_alive(child.id()), "a reaped child is gone");
            return;
        }
        if crate::machine::uid() != 0 {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "liveness_is_known_without_proc needs root (unshare --mount) to hide /proc");
            eprintln!("liveness_is_known_without_proc: not root, /proc cannot be hidden; not checked");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", "mount -t tmpfs none /proc && exec \"$@\"", "sh"])
            .arg(&exe)
            .args(["--exact", "engine::lease::tests::liveness_is_known_without_proc", "--test-threads=1"])
            .env("PYTEST_CLOUD_TEST_NO_PROC", "1")
            .output()
            .expect("unshare (util-linux) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "without /proc: {text}{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn fresh_leases_wait_for_their_first_renewal_and_old_or_unreadable_ones_do_not() {
        let held = |line: &str| Held {
            node: "n".into(),
            dest: crate::ssh::Destination::parse("n").unwrap(),
            base: "/b".into(),
            runs: "/b.pytest-cloud-runs".into(),
            id: "r1".into(),
            lease: line.into(),
        };
        let made_at = |t: u64| held(&format!("pytest-cloud run=r1 host=h boot=b pid=1 ttl_min=2 user=u started_unix={t} source=/p"));
        assert_eq!(first_renewal_in(&[made_at(1000)], 1000), RENEW_EVERY - Duration::from_secs(1));
        assert_eq!(first_renewal_in(&[made_at(1000), made_at(995)], 1000), RENEW_EVERY - Duration::from_secs(6), "the oldest decides");
        assert_eq!(first_renewal_in(&[made_at(1000)], 1000 + RENEW_EVERY.as_secs()), Duration::ZERO);
        assert_eq!(first_renewal_in(&[made_at(1000), held("pytest-cloud run=r1 pid=1")], 1000), Duration::ZERO);
        assert_eq!(first_renewal_in(&[made_at(2000)], 1000), RENEW_EVERY - Duration::from_secs(1), "a clock behind the lease's");
        let real = lease_line("r1", "ctl", 1, 2, "me", Path::new("/p"));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(first_renewal_in(&[held(&real)], now) >= RENEW_EVERY - Duration::from_secs(2), "{real}");
    }

    #[test]
    fn a_detached_lease_counts_only_by_age() {
        let line = lease_line("r1", "ctl", 0, 30, "me", Path::new("/p"));
        assert!(line.contains(" pid=0 ttl_min=30 ") && !holder_gone_here(&line, "ctl"), "{line}");
        assert!(!holder_gone_here(&lease_line("r1", "ctl", std::process::id(), 2, "me", Path::new("/p")), "ctl"));
    }
}
