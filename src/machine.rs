//! This machine (the controller), asked through system calls rather than `/proc` or spawned
//! tools, so the controller may be a Mac as well as Linux: our uid, our hostname, the boot id,
//! whether a process lives, a signal to a child, a FIFO, the end of a process waited for
//! ([`ExitWatch`]).
//!
//! The one "holder is gone" rule ([`holder_gone_here`]) lives here: a node lock's holder line
//! and a run tree's lease line both name `host=`, `boot=` and `pid=`, and both are taken over
//! at once (instead of after their stale time) by exactly this test. The rule and what it
//! means on each platform: share/doc/sync-safety.md ("When a holder is gone").

use rustix::io::Errno;
use rustix::process::Pid;
use std::path::Path;

/// The real uid of this process.
pub fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The node name (`uname -n`), or "unknown".
pub fn hostname() -> String {
    let name = rustix::system::uname().nodename().to_string_lossy().trim().to_string();
    if name.is_empty() { "unknown".into() } else { name }
}

/// An id of the current boot, so that "same host" also means "same boot": a pid means
/// something only within one. Linux: the kernel's random boot id. Elsewhere none is read (""),
/// and then [`holder_gone_here`] never says "gone": holders there are taken over by their
/// stale time only, which is slower but never wrong.
pub fn boot_id() -> String {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        String::new()
    }
}

/// Whether a process `pid` exists and has not exited: `kill(pid, 0)` succeeds (ours) or is
/// refused with EPERM (another user's: it exists); ESRCH means there is none. A zombie (an
/// exited process its parent has not yet waited for) has ended, as far as the runs it held
/// go: seen on Linux; elsewhere a zombie counts as alive until it is reaped. pid 0 and pids
/// beyond the platform's range name no process.
pub fn pid_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else { return false };
    match rustix::process::test_kill_process(p) {
        Ok(()) => !is_zombie(pid),
        Err(Errno::SRCH) => false,
        // EPERM: it exists, owned by someone else. Any other answer: assume it lives (the
        // safe side: its lock or lease then waits for its stale time).
        Err(_) => !is_zombie(pid),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last ')' (comm may hold anything).
        Ok(stat) => matches!(stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()), Some('Z' | 'X')),
        Err(_) => false,
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn is_zombie(_pid: u32) -> bool {
    false
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

/// The one rule for both node locks and run-tree leases: the holder named by `line` is a
/// process of this very machine (same hostname and same boot, the boot id known) that no
/// longer lives, so what it held is over whatever its age. `pid=0` (a lease no process
/// holds), another machine, another boot, an unknown boot id or a line without these fields:
/// not gone (only the stale time decides then).
pub fn holder_gone_here(line: &str, hostname: &str) -> bool {
    let here = boot_id();
    match (field(line, "host="), field(line, "boot="), field(line, "pid=").and_then(|p| p.parse::<u32>().ok())) {
        (Some(h), Some(b), Some(pid)) if pid != 0 && h == hostname && !here.is_empty() && b == here => !pid_alive(pid),
        _ => false,
    }
}

/// Sends SIGINT to `pid` (best effort: a process already gone is no error to us).
pub fn interrupt(pid: u32) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::INT);
    }
}

/// Sends SIGTERM to `pid` (best effort): a GNU parallel that was given no job.
pub fn terminate(pid: u32) {
    if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
}

/// Waits for another process's end (one we did not start, so `waitpid` cannot). Linux: a
/// pidfd, which poll(2) finds readable the moment the process has exited (a zombie counts),
/// so the wait is one blocking call. Elsewhere (macOS; a Linux kernel before 5.3, or a
/// sandbox refusing pidfd_open) there is no portable blocking wait for a process that is not
/// our child: [`ExitWatch::wait`] then looks after 1, 2, 4 ... ms, then every
/// [`ExitWatch::FALLBACK_EVERY`] (kill(pid, 0), and whether we were re-parented when it was our
/// parent), still woken at once by `also` (so an EOF there, which a process's exit gives a
/// moment before the process counts as gone, is confirmed within a few ms).
pub struct ExitWatch {
    pid: u32,
    /// It was our parent when the watch began: its end re-parents us, even while it waits
    /// as a zombie for its own parent (which [`pid_alive`] sees only on Linux).
    parent: bool,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pidfd: Option<std::os::fd::OwnedFd>,
}

/// What ended an [`ExitWatch::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The process is gone.
    Gone,
    /// The other descriptor is readable or hung up (and the process still lives).
    Also,
}

impl ExitWatch {
    /// How often the fallback looks.
    pub const FALLBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

    /// Watches `pid`; if it is our parent now, its end is also seen as our re-parenting.
    pub fn new(pid: u32) -> ExitWatch {
        Self::with_parent(pid, std::os::unix::process::parent_id() == pid)
    }

    /// Watches `pid`, which started us: gone at once if we have been re-parented already.
    pub fn of_parent(pid: u32) -> ExitWatch {
        Self::with_parent(pid, true)
    }

    /// The watch without a pidfd, as on a platform that has none (for the tests).
    #[cfg(test)]
    fn polling(pid: u32) -> ExitWatch {
        ExitWatch {
            pid,
            parent: false,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            pidfd: None,
        }
    }

    fn with_parent(pid: u32, parent: bool) -> ExitWatch {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let pidfd = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
        ExitWatch {
            pid,
            parent,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            pidfd,
        }
    }

    /// Whether the process is gone now (no wait).
    pub fn gone(&self) -> bool {
        if self.parent && std::os::unix::process::parent_id() != self.pid {
            return true;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = &self.pidfd {
            return readable(&[fd.as_fd()], Some(std::time::Duration::ZERO)).first().copied().unwrap_or(false);
        }
        !pid_alive(self.pid)
    }

    /// Blocks until the process is gone ([`Woke::Gone`]) or `also` is readable or hung up
    /// ([`Woke::Also`]; an EOF there is the caller's to read). Signals do not end the wait.
    pub fn wait(&self, also: Option<std::os::fd::BorrowedFd<'_>>) -> Woke {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = &self.pidfd {
            let mut fds = vec![fd.as_fd()];
            fds.extend(also);
            loop {
                let ready = readable(&fds, None);
                if ready.first().copied().unwrap_or(false) {
                    return Woke::Gone;
                }
                if ready.get(1).copied().unwrap_or(false) {
                    return Woke::Also;
                }
            }
        }
        let mut every = std::time::Duration::from_millis(1);
        loop {
            if self.gone() {
                return Woke::Gone;
            }
            let fds: Vec<_> = also.into_iter().collect();
            if readable(&fds, Some(every)).first().copied().unwrap_or(false) {
                return Woke::Also;
            }
            every = (every * 2).min(Self::FALLBACK_EVERY);
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
use std::os::fd::AsFd;

/// poll(2) for input (or hang-up) on `fds` until one is ready or `timeout` (None: no
/// limit); which ones are. An interrupted poll (a signal) answers "none yet".
fn readable(fds: &[std::os::fd::BorrowedFd<'_>], timeout: Option<std::time::Duration>) -> Vec<bool> {
    use rustix::event::{PollFd, PollFlags};
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, PollFlags::IN)).collect();
    let timeout = timeout.and_then(|t| rustix::event::Timespec::try_from(t).ok());
    if fds.is_empty() {
        // Nothing to wait on but time: poll with no descriptor is a plain, signal-safe sleep.
        let _ = rustix::event::poll(&mut polled, timeout.as_ref());
        return Vec::new();
    }
    match rustix::event::poll(&mut polled, timeout.as_ref()) {
        Ok(_) => polled.iter().map(|p| !p.revents().is_empty()).collect(),
        Err(_) => vec![false; fds.len()],
    }
}

/// Makes a FIFO at `path` readable and writable by this user only.
pub fn mkfifo(path: &Path) -> std::io::Result<()> {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(0o600)).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn this_process_lives_and_a_pid_that_cannot_exist_does_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0), "pid 0 names no process");
        assert!(!pid_alive(4_000_000_000), "beyond any pid range");
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // Its pid may be reused, but not within the few microseconds of this test in practice.
        assert!(!pid_alive(pid));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: a zombie once it exited.
        let mut alive = true;
        for _ in 0..200 {
            alive = pid_alive(pid);
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if cfg!(target_os = "linux") {
            assert!(!alive && Path::new(&format!("/proc/{pid}")).exists(), "a zombie (still in /proc) counts as gone");
        }
        drop(child);
    }

    /// kill(pid, 0) on another user's process is EPERM, and that process is alive. pid 1 is
    /// root's; as root every process may be signalled, so the check runs again in this test
    /// binary as user nobody (setpriv, util-linux).
    #[test]
    fn another_users_process_is_alive() {
        if uid() != 0 {
            let init = Pid::from_raw(1).unwrap();
            assert_eq!(rustix::process::test_kill_process(init), Err(Errno::PERM), "pid 1 is not ours");
            assert!(pid_alive(1), "EPERM means it exists");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(["--exact", "machine::tests::another_users_process_is_alive", "--test-threads=1"])
            .output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                assert!(o.status.success() && text.contains("1 passed"), "as nobody: {text}{}", String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => panic!("setpriv (util-linux) is needed to run this check as another user when root: {e}"),
        }
    }

    #[test]
    fn the_holder_rule_needs_this_host_this_boot_and_a_dead_pid() {
        let host = hostname();
        let boot = boot_id();
        let me = std::process::id();
        if boot.is_empty() {
            assert!(!holder_gone_here(&format!("host={host} boot= pid=4000000000"), &host), "no boot id: never gone");
            return;
        }
        assert!(holder_gone_here(&format!("pytest-cloud run=r1 host={host} boot={boot} pid=4000000000 user=u"), &host));
        assert!(!holder_gone_here(&format!("pytest-cloud host={host} boot={boot} pid={me}"), &host), "alive");
        assert!(!holder_gone_here(&format!("host=elsewhere boot={boot} pid=4000000000"), &host), "another machine");
        assert!(!holder_gone_here(&format!("host={host} boot=another-boot pid=4000000000"), &host), "another boot");
        assert!(!holder_gone_here(&format!("host={host} boot={boot} pid=0"), &host), "no process holds it");
        assert!(!holder_gone_here(&format!("host={host} pid=4000000000"), &host), "an old line without a boot id");
        assert!(!holder_gone_here("", &host));
    }

    #[test]
    fn hostname_and_uid_match_the_tools() {
        let out = std::process::Command::new("uname").arg("-n").output().unwrap();
        assert_eq!(hostname(), String::from_utf8_lossy(&out.stdout).trim());
        let out = std::process::Command::new("id").arg("-u").output().unwrap();
        assert_eq!(uid().to_string(), String::from_utf8_lossy(&out.stdout).trim());
    }

    #[test]
    fn interrupt_reaches_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        interrupt(child.id());
        assert_eq!(child.wait().unwrap().signal(), Some(2));
        interrupt(0); // names no process: nothing happens
    }

    /// The watch wakes when the process ends (a zombie: not waited for) and when the other
    /// descriptor's peer closes, and says which.
    #[test]
    fn a_watch_wakes_at_the_end_of_the_process_or_at_an_eof() {
        watch_wakes(ExitWatch::new);
    }

    /// The same where no pidfd can be had (macOS): it looks, still woken at once by an EOF.
    #[test]
    fn a_polling_watch_wakes_at_the_end_of_the_process_or_at_an_eof() {
        watch_wakes(ExitWatch::polling);
    }

    fn watch_wakes(new: fn(u32) -> ExitWatch) {
        use std::os::fd::AsFd;
        let mut child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let watch = new(child.id());
        assert!(!watch.gone(), "it runs");
        assert_eq!(watch.wait(None), Woke::Gone);
        assert!(watch.gone());
        assert!(child.try_wait().unwrap().is_some(), "it had exited");
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let watch = new(child.id());
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(theirs);
        });
        assert_eq!(watch.wait(Some(ours.as_fd())), Woke::Also, "the peer closed while the process lives");
        closer.join().unwrap();
        assert!(!watch.gone());
        child.kill().unwrap();
        assert_eq!(watch.wait(None), Woke::Gone);
        let _ = child.wait();
        // A process that is gone before the watch begins.
        assert!(new(4_000_000_000).gone());
        assert_eq!(new(4_000_000_000).wait(None), Woke::Gone);
    }

    #[test]
    fn a_fifo_is_made_private() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        mkfifo(&p).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert!(m.file_type().is_fifo());
        assert_eq!(m.permissions().mode() & 0o077, 0, "no access for others");
    }
}
