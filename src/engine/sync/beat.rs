//! The node locks' heartbeat: while a sync holds a node's lock (from the pre-flight that took
//! it to the finish or release that gives it back), a thread renews it every [`LOCK_BEAT`] by
//! touching the lock directory on the node (`src/sync_node.sh beat`, over the node's shared
//! ssh connection). The holder line says `ttl_min=`[`LOCK_TTL_MIN`], and another run takes a
//! lock over once the node's own clock says it was not renewed for that long (`find -mmin`):
//! a holder that is alive and renewing keeps it however long rsync runs, and one that can no
//! longer renew it (its machine or the node's connection gone) loses it after minutes, not an
//! hour. share/doc/sync-safety.md, "The lock and the base".

use super::local::Local;
use crate::remote;
use crate::ssh::Destination;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a held lock is renewed.
pub(super) const LOCK_BEAT: Duration = Duration::from_secs(20);
/// A lock whose holder line names this is taken over when not renewed for more than this
/// many minutes (6 missed beats: a slow round trip under load is not a dead holder).
pub(super) const LOCK_TTL_MIN: u64 = 2;

/// The locks this run holds now, by node key: (destination, target directory, lock).
#[derive(Default)]
pub(super) struct Held(Mutex<BTreeMap<String, (Destination, String, String)>>);

impl Held {
    pub(super) fn add(&self, dest: &Destination, dir: &str, lock: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(dest.key(), (dest.clone(), dir.to_string(), lock.to_string()));
    }
    pub(super) fn remove(&self, dest: &Destination) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&dest.key());
    }
    fn snapshot(&self) -> Vec<(Destination, String, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// Runs `f` while a thread renews every lock in `local.held` each [`LOCK_BEAT`], all nodes of
/// a round at once; a round that meets a node that does not answer ends at `deadline`.
pub(super) fn beating<T>(config: &Path, local: &Local, deadline: Duration, f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if last.elapsed() >= LOCK_BEAT {
                    last = Instant::now();
                    let held = local.held.snapshot();
                    std::thread::scope(|r| {
                        for (dest, dir, lock) in &held {
                            r.spawn(move || {
                                let _ = remote::sync_script(config, dest, "", "beat", &[dir, lock, &local.holder], deadline);
                            });
                        }
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let out = f();
        stop.store(true, Ordering::SeqCst);
        out
    })
}
