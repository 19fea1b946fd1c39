//! The fan-out: one GNU parallel running an rsync per node, fed a node at a time as each
//! passes its pre-flight.

use super::local::{Local, check_local_tools};
use super::prepared::Transfer;
use super::node::{NodeRun, preflight};
use super::{SyncEvent, SyncOptions};
use crate::error::{Error, Result};
use crate::schema::ErrorKind;
use crate::ssh;
use crate::{interrupt, parallel, rsync};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// What a running GNU parallel was started for; a transfer can use it only if all is equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FanoutKey {
    pub(super) root: PathBuf,
    pub(super) rules: Vec<String>,
    /// rsync's options but the filter file's path (which is the Fanout's own).
    pub(super) rsync_options: Vec<String>,
    pub(super) max_processes: Option<u32>,
    /// The venv, which a node that builds its own env does not get.
    pub(super) venv: Option<String>,
}

impl FanoutKey {
    pub(super) fn new(root: &Path, config: &Path, opts: &SyncOptions) -> FanoutKey {
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
            rules: rsync::filter_rules(&super::rebase::managed_rules(root, opts), &opts.excludes, ignore_file.as_deref(), opts.include_git),
            rsync_options: rsync::rsync_options(&spec),
            max_processes: opts.max_processes,
            venv: opts.venv.clone(),
        }
    }
}

/// GNU parallel running rsync, started before the nodes are ready for it: a perl program that
/// takes 0.1-0.5 s to start, which this overlaps with the pre-flights (and, from the launcher
/// when the tree changed, with the probe: super::prepared). Its jobs are lines on its stdin, one per node, written when that node
/// passed its pre-flight (`{}` is the line, the destination); nothing reaches a node before.
/// Dropped unused, it gets the end of its input and exits having run nothing.
pub(super) struct Fanout {
    pub(super) key: FanoutKey,
    pub(super) jobs: usize,
    pub(super) tmp: Option<tempfile::TempDir>,
    pub(super) joblog: PathBuf,
    pub(super) results: PathBuf,
    /// The write end and, in job order (= parallel's sequence number), the runs' indexes.
    pub(super) feed: Mutex<(Option<std::io::PipeWriter>, Vec<usize>)>,
    pub(super) running: Option<parallel::Running>,
    /// The per-job filter files: (takes the venv, builds its own env).
    pub(super) filters: (PathBuf, PathBuf),
}

impl Fanout {
    /// Starts GNU parallel for `jobs` rsyncs at once of the transfer `key`.
    pub(super) fn start_with(key: FanoutKey, jobs: usize) -> Result<Fanout> {
        check_local_tools()?;
        let tmp = tempfile::Builder::new()
            .prefix("sync-")
            .tempdir_in(ssh::runtime_dir()?)
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let filter_file = tmp.path().join("filters");
        std::fs::write(&filter_file, key.rules.join("\n") + "\n").map_err(|e| Error::io(filter_file.display(), e))?;
        // Each job's second column is its own filter file, read before the shared one: empty
        // for a node that takes the venv, the venv excluded (neither sent nor deleted there)
        // for one that builds its own env (src/engine/sync/build.rs).
        let (keep, leave) = (tmp.path().join("filters-sync"), tmp.path().join("filters-build"));
        std::fs::write(&keep, "").map_err(|e| Error::io(keep.display(), e))?;
        let venv_rule = key.venv.as_deref().map(|v| format!("- /{}\n", v.trim_end_matches('/'))).unwrap_or_default();
        std::fs::write(&leave, venv_rule).map_err(|e| Error::io(leave.display(), e))?;
        let mut command = vec!["rsync".to_string(), "--filter=. {2}".to_string()];
        for o in &key.rsync_options {
            command.push(if o.starts_with("--filter=. ") { format!("--filter=. {}", filter_file.display()) } else { o.clone() });
        }
        // The source is the working directory, so no local path passes through parallel's
        // replacement strings.
        command.extend(["./".to_string(), "{1}".to_string()]);
        let joblog = tmp.path().join("joblog");
        let results = tmp.path().join("results");
        let spec = parallel::Spec {
            jobs_at_once: jobs,
            joblog: joblog.clone(),
            results: Some(results.clone()),
            timeout_s: None,
            jobs: parallel::Jobs::Template(command),
        };
        let (reader, writer) = std::io::pipe().map_err(|e| Error::io("creating a pipe for GNU parallel", e))?;
        let running = parallel::start(parallel::command(&spec, &key.root), Some(reader))?;
        Ok(Fanout { key, jobs, tmp: Some(tmp), joblog, results, feed: Mutex::new((Some(writer), Vec::new())), running: Some(running), filters: (keep, leave) })
    }

    /// Queues run `index`'s rsync to `destination` (without the venv when `no_venv`); false
    /// when parallel no longer reads.
    fn push(&self, index: usize, destination: &str, no_venv: bool) -> bool {
        let filters = if no_venv { &self.filters.1 } else { &self.filters.0 };
        let mut f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let ok = f.0.as_mut().is_some_and(|w| w.write_all(format!("{destination}\t{}\n", filters.display()).as_bytes()).is_ok());
        if ok {
            f.1.push(index);
        }
        ok
    }

    /// Ends the input and stops parallel if no job was queued (nothing can be queued after).
    fn stop_if_idle(&self) {
        let mut f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if f.1.is_empty() {
            f.0.take();
            if let Some(r) = &self.running {
                r.stop();
            }
        }
    }

    /// Ends the input and waits for parallel, calling `poll` with the job order while it runs.
    fn finish(&mut self, poll: &mut dyn FnMut(&[usize])) -> Result<(crate::proc::Output, Vec<usize>)> {
        let order = {
            let mut f = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            f.0.take();
            f.1.clone()
        };
        let mut running = self.running.take().ok_or_else(|| Error::internal("GNU parallel was already waited for"))?;
        let out = running.wait(Duration::from_millis(50), &mut || poll(&order))?;
        Ok((out, order))
    }
}

/// A joblog line as rsync's status.
pub(super) struct RsyncExit {
    pub(super) exitval: i32,
    pub(super) signal: i64,
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).0.take();
        drop(self.running.take());
        drop(self.tmp.take());
    }
}

/// Pre-flight on every node still in the running, and rsync through a [`Fanout`] to each node
/// that passed it, as soon as it did.
#[allow(clippy::too_many_arguments)]
pub(super) fn preflight_and_transfer(
    runs: &mut [NodeRun],
    pool: &rayon::ThreadPool,
    transfer: Option<&Transfer>,
    local: &Local,
    opts: &SyncOptions,
    ssh_deadline: Duration,
    progress: &(dyn Fn(&SyncEvent) + Sync),
    given: Option<Fanout>,
) -> Result<()> {
    let candidates = runs.iter().filter(|r| r.alive()).count();
    let Some(transfer) = transfer.filter(|_| candidates > 0) else { return Ok(()) };
    let (config, key) = (transfer.config.as_path(), &transfer.key);
    let needed = opts.max_processes.map(|m| m as usize).unwrap_or(candidates).min(candidates);
    // A Fanout started for this very transfer (the launcher's, when the tree changed) is used;
    // otherwise one is started when the first node needs rsync, so a sync whose nodes all take
    // the fast path never starts GNU parallel (a perl program: 0.1-0.5 s of CPU beside the
    // pre-flights).
    let given = match given {
        Some(f) if f.key == *key && f.jobs >= needed => Some(f),
        other => {
            drop(other);
            None
        }
    };
    for r in runs.iter_mut() {
        r.manifest = transfer.manifest.clone();
    }
    let cell: Mutex<(Option<Fanout>, Option<String>)> = Mutex::new((given, None));
    pool.install(|| {
        use rayon::prelude::*;
        runs.par_iter_mut().enumerate().filter(|(_, r)| r.alive()).for_each(|(i, r)| {
            preflight(r, config, local, opts, ssh_deadline, progress);
            if r.alive() && r.locked && !interrupt::requested() {
                let mut c = cell.lock().unwrap_or_else(|p| p.into_inner());
                if c.0.is_none() && c.1.is_none() {
                    match Fanout::start_with(key.clone(), needed) {
                        Ok(f) => c.0 = Some(f),
                        Err(e) => c.1 = Some(e.message),
                    }
                }
                // A failed write (parallel is gone) leaves the node out of the job order;
                // it is dropped below with parallel's own words.
                if let Some(f) = &c.0 {
                    f.push(i, &format!("{}:{}/", r.dest.ssh_target(), r.planned.remote_dir), super::build::excludes_venv(r));
                }
                drop(c);
                // A node that builds its own env does so while rsync sends the sources.
                super::build::ensure_env(r, config, local, opts);
            }
        });
    });
    let (fanout, start_error) = cell.into_inner().unwrap_or_else(|p| p.into_inner());
    let Some(mut fanout) = fanout else {
        for r in runs.iter_mut().filter(|r| r.alive() && r.locked) {
            let why = match &start_error {
                Some(e) => format!("GNU parallel could not start: {e}"),
                None => "interrupted before rsync started".to_string(),
            };
            r.drop_with(ErrorKind::SyncFailed, why);
        }
        return Ok(());
    };
    // Every node took the fast path (or was dropped): parallel has nothing to run, and may
    // still be starting (a perl program): stop it rather than wait for it.
    fanout.stop_if_idle();
    let results = fanout.results.clone();
    let mut started: Vec<bool> = Vec::new();
    let mut poll = |order: &[usize]| {
        started.resize(order.len(), false);
        for (k, &i) in order.iter().enumerate() {
            let (node, remote_dir) = (&runs[i].planned.node.key(), &runs[i].planned.remote_dir);
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
    let results_by_seq = parallel::parse_joblog(&log);
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
        match results_by_seq.get(&seq).map(|j| RsyncExit { exitval: j.exitval as i32, signal: j.signal }) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::Destination;

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
}
