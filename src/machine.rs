//! This machine (the controller), asked through system calls rather than `/proc` or spawned
//! tools, so the controller may be a Mac as well as Linux: our uid, our hostname, the boot id,
//! whether a process lives, a signal to a child, a FIFO.
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
