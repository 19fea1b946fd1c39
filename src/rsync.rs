//! rsync as `sync` drives it: the argv, the filter rules, and reading what it reports. Pure
//! functions, tested without processes.
//!
//! One rsync per node runs under GNU parallel (`crate::parallel`); each job's stdout lands in
//! `--results DIR/{#}/` as it runs, which is where progress and `--stats` are read.

use std::path::Path;

/// The marker at the top of a node's target directory: written by pytest-cloud when it
/// creates (or adopts an empty) directory. Without it, nothing is deleted there.
pub const MARKER: &str = ".pytest-cloud-target";

/// Written beside the marker when a sync's clean-up ran to its end, and removed (under the
/// lock) before the next transfer: its absence tells the next sync that the list of
/// deletions it gets from rsync may be incomplete (see `src/sync_node.sh`).
pub const SYNCED_STAMP: &str = ".pytest-cloud-synced";

/// Caches and tool state that never belong on a node. Perishable (`-p`): they do not keep a
/// directory alive on the node that was deleted locally. `__pycache__` is compiled on the
/// node by its own interpreter; orphans are removed after the transfer. `.pytest_cache` is
/// NOT here: xdist workers read `--lf`/`--ff`/`--nf`/`--sw` state from their own rootdir,
/// which is the node's mirror, so the controller's cache must travel with the project.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "__pycache__/",
    ".tox/",
    ".nox/",
    ".mypy_cache/",
    ".ruff_cache/",
    "/.local-cluster/",
];

/// The project's own ignore file at the project root, in rsync filter syntax.
pub const IGNORE_FILE: &str = ".pytest-cloud-ignore";

/// The filter rules in the order rsync applies them (first match wins): our own files on the
/// node first (so no user rule can expose them to `--delete`), with the venv files the node
/// writes itself (`managed`, from [`crate::rebase::Layout::filter_rules`]), then the user's
/// `--exclude`s, then the ignore file, then the defaults.
pub fn filter_rules(managed: &[String], user_excludes: &[String], ignore_file: Option<&Path>, include_git: bool) -> Vec<String> {
    let mut rules = vec![
        format!("- /{MARKER}"),
        format!("- /{SYNCED_STAMP}"),
        format!("-p {}", crate::venv::EDITABLE_PTH),
    ];
    rules.extend(managed.iter().cloned());
    rules.extend(user_excludes.iter().map(|p| format!("- {p}")));
    if let Some(f) = ignore_file {
        rules.push(format!(". {}", f.display()));
    }
    if !include_git {
        rules.push("-p .git".into());
    }
    rules.extend(DEFAULT_EXCLUDES.iter().map(|p| format!("-p {p}")));
    rules
}

/// What one rsync run needs besides source and destination.
#[derive(Debug, Clone)]
pub struct RsyncSpec {
    /// The `-e` value: ssh with our config and cipher.
    pub rsh: String,
    /// KiB/s per rsync; 0 = unlimited.
    pub bwlimit_kbps: u64,
    /// Report overall progress on stdout (`--info=progress2`).
    pub progress: bool,
    /// The file holding [`filter_rules`].
    pub filter_file: String,
    /// rsync's I/O timeout in seconds.
    pub timeout_s: u64,
}

/// rsync's options. `-rlpt`, not `-a`: a node user cannot set owners or make devices, and
/// trying would turn a good sync into exit 23. `--delete` is safe here because `sync` only
/// runs rsync into a directory that carries [`MARKER`]. `--info=del` lists what was deleted
/// ([`parse_deleted`]), so the clean-up after the transfer looks only there.
pub fn rsync_options(spec: &RsyncSpec) -> Vec<String> {
    let mut v: Vec<String> = ["-rlpt", "--delete", "--stats", "--info=del"].map(String::from).to_vec();
    v.push(format!("--timeout={}", spec.timeout_s));
    if spec.bwlimit_kbps > 0 {
        v.push(format!("--bwlimit={}", spec.bwlimit_kbps));
    }
    if spec.progress {
        // Without incremental recursion the percentage is of the whole tree.
        v.extend(["--info=progress2".to_string(), "--no-inc-recursive".to_string()]);
    }
    v.push(format!("--filter=. {}", spec.filter_file));
    v.push("-e".into());
    v.push(spec.rsh.clone());
    v
}

/// What `--stats` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub files_transferred: u64,
}

fn number_after(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().rev().find(|l| l.trim_start().starts_with(label))?;
    let rest = &line.trim_start()[label.len()..];
    let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.').filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Reads `--stats` output (numbers may carry thousands separators).
pub fn parse_stats(stdout: &str) -> Option<Stats> {
    Some(Stats {
        bytes_sent: number_after(stdout, "Total bytes sent:")?,
        bytes_received: number_after(stdout, "Total bytes received:").unwrap_or(0),
        files_transferred: number_after(stdout, "Number of regular files transferred:")
            .or_else(|| number_after(stdout, "Number of files transferred:"))
            .unwrap_or(0),
    })
}

/// The files and directories rsync's `--info=del` says it deleted, relative to the
/// destination (directories end in `/`). None when a name is escaped (`\#ooo`: a control
/// character or invalid UTF-8), which the caller must treat as "unknown".
pub fn parse_deleted(stdout: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for line in stdout.split(['\r', '\n']) {
        if let Some(name) = line.strip_prefix("deleting ") {
            if name.contains("\\#") {
                return None;
            }
            out.push(name.to_string());
        }
    }
    Some(out)
}

/// The latest `--info=progress2` update: bytes so far, percent, rate as rsync prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub bytes: u64,
    pub percent: u32,
    pub rate: String,
}

/// Progress updates are separated by `\r`; the last complete one wins.
pub fn parse_progress(stdout: &str) -> Option<Progress> {
    stdout.rsplit(['\r', '\n']).find_map(|chunk| {
        let w: Vec<&str> = chunk.split_whitespace().collect();
        if w.len() < 3 || !w[1].ends_with('%') {
            return None;
        }
        let bytes = w[0].chars().filter(char::is_ascii_digit).collect::<String>().parse().ok()?;
        let percent = w[1].trim_end_matches('%').parse().ok()?;
        Some(Progress { bytes, percent, rate: w[2].to_string() })
    })
}

/// rsync's exit codes, as its manual names them.
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        4 => "requested action not supported",
        5 => "error starting client-server protocol",
        6 => "daemon unable to append to log-file",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        20 => "received SIGUSR1 or SIGINT",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        127 => "rsync not found",
        255 => "ssh failed",
        _ => "unknown rsync exit code",
    }
}

/// Exit codes after which the node holds a usable mirror: 0, and 24 (a source file vanished
/// while we read it: the node has the tree as it was a moment ago, like any local edit race).
pub fn usable(code: i32) -> bool {
    code == 0 || code == 24
}

/// The oldest local rsync sync works with: 3.1.0 brought `--info=progress2`, `--info=del` and
/// `--no-inc-recursive`, all in [`rsync_options`].
pub const MIN_LOCAL: (u32, u32) = (3, 1);

/// Why `rsync --version`'s output is not an rsync sync can use, or None. macOS ships rsync
/// 2.6.9 (up to 15.3) and then openrsync, which reports itself as "2.6.9 compatible".
pub fn version_problem(text: &str) -> Option<String> {
    if text.contains("openrsync") {
        return Some("openrsync (macOS's rsync since 15.4), which speaks rsync 2.6.9's protocol and lacks --info".into());
    }
    let version = text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == "rsync").then_some(())?;
        let v = w.skip_while(|x| *x != "version").nth(1)?.trim_start_matches('v');
        let mut n = v.split('.').map(|p| p.parse::<u32>().ok());
        Some((v.to_string(), (n.next()??, n.next().flatten().unwrap_or(0))))
    });
    match version {
        Some((v, n)) if n < MIN_LOCAL => Some(format!("rsync {v}, older than {}.{}", MIN_LOCAL.0, MIN_LOCAL.1)),
        Some(_) => None,
        None => Some(format!("not rsync (`rsync --version` printed {:?})", text.lines().next().unwrap_or("").trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_rsync_must_be_a_real_rsync_3_1_or_newer() {
        assert_eq!(version_problem("rsync  version 3.2.7  protocol version 31\nCopyright"), None);
        assert_eq!(version_problem("rsync  version v3.1.0  protocol version 31"), None);
        assert_eq!(version_problem("rsync  version 2.6.9  protocol version 29").as_deref(), Some("rsync 2.6.9, older than 3.1"));
        assert_eq!(version_problem("rsync  version 3.0.9  protocol version 30").as_deref(), Some("rsync 3.0.9, older than 3.1"));
        assert!(version_problem("openrsync: protocol version 29\nrsync version 2.6.9 compatible").unwrap().starts_with("openrsync"));
        assert!(version_problem("usage: something else").unwrap().starts_with("not rsync"));
    }

    #[test]
    fn filters_protect_our_files_before_user_rules() {
        let r = filter_rules(&[], &["*.log".into()], Some(Path::new("/p/.pytest-cloud-ignore")), false);
        assert_eq!(r[0], "- /.pytest-cloud-target");
        assert_eq!(r[1], "- /.pytest-cloud-synced");
        assert_eq!(r[2], "-p 000-pytest-cloud-editable.pth");
        assert_eq!(r[3], "- *.log");
        assert_eq!(r[4], ". /p/.pytest-cloud-ignore");
        assert!(r.contains(&"-p .git".to_string()) && r.contains(&"-p __pycache__/".to_string()));
        assert!(!r.iter().any(|x| x == "- .*" || x.contains(".venv")), "no blanket dot-file exclusion");
        assert!(!filter_rules(&[], &[], None, true).iter().any(|x| x.contains(".git")));
    }

    #[test]
    fn rsync_options_follow_the_settings() {
        let spec = RsyncSpec { rsh: "ssh -F /c -c aes128-gcm@openssh.com".into(), bwlimit_kbps: 5000, progress: false, filter_file: "/t/f".into(), timeout_s: 60 };
        let o = rsync_options(&spec);
        assert!(o.contains(&"--bwlimit=5000".into()) && o.contains(&"--delete".into()) && o.contains(&"--filter=. /t/f".into()));
        assert!(o.contains(&"--info=del".into()) && !o.iter().any(|x| x.starts_with("--info=progress")));
        let o = rsync_options(&RsyncSpec { bwlimit_kbps: 0, progress: true, ..spec });
        assert!(!o.iter().any(|x| x.starts_with("--bwlimit")));
        assert!(o.contains(&"--info=progress2".into()));
        let e = o.iter().position(|x| x == "-e").unwrap();
        assert_eq!(o[e + 1], "ssh -F /c -c aes128-gcm@openssh.com");
    }

    #[test]
    fn stats_and_progress_are_read() {
        let out = "\r     32,768   0%    0.00kB/s    0:00:00\r 20,971,520 100%   19.53MB/s    0:00:01 (xfr#2400, to-chk=0/2500)\n\n\
            Number of files: 2,500 (reg: 2,400, dir: 100)\nNumber of regular files transferred: 2,400\n\
            Total file size: 20,971,520 bytes\nTotal bytes sent: 21,123,456\nTotal bytes received: 45,678\n";
        assert_eq!(parse_stats(out), Some(Stats { bytes_sent: 21_123_456, bytes_received: 45_678, files_transferred: 2400 }));
        assert_eq!(parse_progress(out), Some(Progress { bytes: 20_971_520, percent: 100, rate: "19.53MB/s".into() }));
        assert_eq!(parse_progress("\r  1,024  5%  1.00MB/s  0:00:09"), Some(Progress { bytes: 1024, percent: 5, rate: "1.00MB/s".into() }));
        assert_eq!(parse_stats("no stats"), None);
        assert_eq!(parse_progress(""), None);
    }

    #[test]
    fn deletions_are_read_and_escaped_names_make_the_list_unknown() {
        let out = "deleting b/z.py\ndeleting b/\ndeleting a/y.py\n\nNumber of files: 4 (reg: 1, dir: 3)\n";
        assert_eq!(parse_deleted(out), Some(vec!["b/z.py".to_string(), "b/".into(), "a/y.py".into()]));
        assert_eq!(parse_deleted("deleting a/we ird\\#012name.py\n"), None);
        assert_eq!(parse_deleted("\r  1,024  5%  1.00MB/s  0:00:09\rdeleting x.py\n"), Some(vec!["x.py".to_string()]));
        assert_eq!(parse_deleted(""), Some(vec![]));
    }

    #[test]
    fn exit_codes_have_names() {
        assert_eq!(exit_meaning(23), "partial transfer due to error");
        assert_eq!(exit_meaning(255), "ssh failed");
        assert!(usable(24) && !usable(23) && !usable(255));
    }
}
