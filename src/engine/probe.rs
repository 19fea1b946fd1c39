//! The probe: ask every node, concurrently and in one ssh round trip each (`src/probe.sh`),
//! what it can do, and read its answer into `Facts`. The subcommand is `src/cmd/probe.rs`.

use crate::error::{Result, one_line};
use crate::proc::Status;
use crate::remote;
use crate::schema::{self, ErrorKind, Facts, Inventory, NodeReport, NodeStatus, PythonInfo};
use crate::ssh::{self, Destination, SshSettings};
use std::collections::BTreeMap;
use std::time::Duration;

pub fn progress_line(r: &NodeReport) -> String {
    match (&r.facts, r.status) {
        (Some(f), NodeStatus::Ok) => format!(
            "{}: ok ({} cpus, {} MiB available, {})",
            r.node,
            f.cpus,
            f.mem_available_bytes >> 20,
            if f.pythons.is_empty() {
                "no python".to_string()
            } else {
                f.pythons.iter().map(|(n, p)| format!("{n} {}", p.version)).collect::<Vec<_>>().join(", ")
            }
        ),
        _ => format!(
            "{}: unreachable ({}: {})",
            r.node,
            r.error_kind.map(|k| k.as_str()).unwrap_or_default(),
            one_line(r.message.as_deref().unwrap_or(""))
        ),
    }
}

/// Probes all nodes concurrently; one thread per node (they wait on the network, not the
/// CPU), results in the order the nodes were given.
pub fn probe_nodes(
    nodes: &[Destination],
    settings: &SshSettings,
    pythons: &[String],
    deadline: Duration,
    progress: &(dyn Fn(&NodeReport) + Sync),
) -> Result<Inventory> {
    let config = ssh::write_config(settings, nodes)?;
    let pool = super::node_pool(nodes.len())?;
    let reports: Vec<Result<NodeReport>> = pool.install(|| {
        use rayon::prelude::*;
        nodes
            .par_iter()
            .map(|d| {
                let r = probe_one(&config, d, pythons, deadline)?;
                progress(&r);
                Ok(r)
            })
            .collect()
    });
    let nodes = reports.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Inventory {
        format_version: schema::FORMAT_VERSION,
        kind: "inventory".into(),
        created_by: schema::created_by(),
        ssh: settings.clone(),
        pythons_asked: pythons.to_vec(),
        nodes,
    })
}

fn probe_one(config: &std::path::Path, d: &Destination, pythons: &[String], deadline: Duration) -> Result<NodeReport> {
    let mut words = vec![crate::interp::ABI_CODE];
    words.extend(pythons.iter().map(String::as_str));
    let out = remote::run(config, d, "", remote::PROBE_SCRIPT, &words, deadline)?.out;
    let ms = out.elapsed.as_millis() as u64;
    let error = |kind: ErrorKind, message: String| NodeReport {
        node: d.clone(),
        status: NodeStatus::Error,
        error_kind: Some(kind),
        message: Some(message),
        facts: None,
        elapsed_ms: ms,
    };
    let stderr = out.stderr_trimmed();
    match out.status {
        Status::TimedOut => {
            let what = format!("no answer within the {}s probe deadline; ssh was killed", deadline.as_secs());
            return Ok(error(ErrorKind::Timeout, remote::with_output(&what, &out)));
        }
        Status::Exited(255) => return Ok(error(remote::classify_ssh_error(&stderr), stderr)),
        _ => {}
    }
    let text = out.stdout_str();
    if !text.contains("pytest_cloud_probe_end=1") {
        let msg = format!("the probe script did not finish (exit {}): {}", out.status.shell_code(), stderr);
        return Ok(error(ErrorKind::ProbeFailed, msg));
    }
    match parse_facts(&text) {
        Err((kind, msg)) => Ok(error(kind, msg)),
        Ok(facts) => {
            // The python3.N the probe finds on its own are candidates for a venv's rebase; a
            // node without any interpreter asked for is still reported as such.
            if !pythons.iter().any(|p| facts.pythons.contains_key(p)) {
                let msg = format!("none of the interpreters {} was found on the node", pythons.join(", "));
                let mut r = error(ErrorKind::NoPython, msg);
                r.facts = Some(facts);
                return Ok(r);
            }
            Ok(NodeReport { node: d.clone(), status: NodeStatus::Ok, error_kind: None, message: None, facts: Some(facts), elapsed_ms: ms })
        }
    }
}

/// Reads the probe script's key=value lines. Pure, for tests.
pub fn parse_facts(text: &str) -> std::result::Result<Facts, (ErrorKind, String)> {
    let mut kv: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            kv.entry(k.trim()).or_default().push(v.trim_end());
        }
    }
    let one = |k: &str| kv.get(k).and_then(|v| v.first().copied()).unwrap_or("");
    let os = one("os").to_string();
    if os != "Linux" && os != "Darwin" {
        return Err((ErrorKind::UnsupportedOs, format!("unsupported operating system {os:?}: pytest-cloud probes Linux and macOS nodes")));
    }
    let num = |k: &str| one(k).trim().parse::<u64>().ok();
    let online = num("cpus").filter(|&c| c > 0).ok_or_else(|| (ErrorKind::ProbeFailed, "the node did not report its CPU count".to_string()))?;
    let mut cpus = online;
    for q in kv.get("cgroup_cpu_max").into_iter().flatten() {
        let mut it = q.split_whitespace();
        if let (Some(quota), Some(period)) = (it.next(), it.next()) {
            if let (Ok(quota), Ok(period)) = (quota.parse::<i64>(), period.parse::<i64>()) {
                if quota > 0 && period > 0 {
                    // A quota of 1.5 CPUs allows one full process; never below 1.
                    cpus = cpus.min(((quota / period) as u64).max(1));
                }
            }
        }
    }
    let mem_total = num("mem_total_kb").map(|k| k * 1024).ok_or_else(|| (ErrorKind::ProbeFailed, "the node did not report its memory".to_string()))?;
    let mut avail = match num("mem_available_kb") {
        Some(k) => k * 1024,
        None => kv
            .get("mem_pages")
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some(it.next()?.parse::<u64>().ok()? * it.next()?.parse::<u64>().ok()?)
            })
            .sum(),
    };
    for m in kv.get("cgroup_memory_max").into_iter().flatten() {
        if let Ok(limit) = m.trim().parse::<u64>() {
            avail = avail.min(limit);
        }
    }
    let mut pythons = BTreeMap::new();
    let musl = kv.get("musl").and_then(|v| v.first().copied()).map(str::trim);
    for p in kv.get("python").into_iter().flatten() {
        let parts: Vec<&str> = p.split('\t').collect();
        // name, path, then ABI_CODE's fields (version first); older probes sent the version only.
        match parts[..] {
            [name, path, version] => {
                pythons.insert(name.to_string(), PythonInfo { path: path.into(), version: version.into(), abi: None });
            }
            [name, path, ..] => {
                if let Some((version, abi)) = crate::interp::parse_abi(&parts[2..], musl) {
                    pythons.insert(name.to_string(), PythonInfo { path: path.into(), version, abi: Some(abi) });
                }
            }
            _ => {}
        }
    }
    Ok(Facts {
        os,
        arch: one("arch").into(),
        hostname: one("hostname").into(),
        user: one("user").into(),
        home: one("home").into(),
        cpus: cpus.min(u32::MAX as u64) as u32,
        mem_total_bytes: mem_total,
        mem_available_bytes: avail,
        rsync_version: kv.get("rsync").and_then(|v| v.first()).filter(|s| !s.is_empty()).map(|s| s.to_string()),
        pythons,
        uv: kv
            .get("uv")
            .into_iter()
            .flatten()
            .filter_map(|l| {
                let (path, words) = l.split_once('\t')?;
                Some(crate::schema::UvInfo { path: path.to_string(), version: crate::envbuild::uv_version(words)? })
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX: &str = "pytest_cloud_probe=1\nos=Linux\narch=x86_64\nhostname=h\nuser=u\nhome=/home/u\ncpus=8\n\
        mem_total_kb=16000000\nmem_available_kb=8000000\ncgroup_memory_max=max\ncgroup_cpu_max=max 100000\n\
        rsync=3.2.7\npython=python3\t/usr/bin/python3\t3.11.2\tcpython\t\tlinux\tx86_64\tglibc 2.36\t/usr\npytest_cloud_probe_end=1\n";

    #[test]
    fn parses_linux_facts() {
        let f = parse_facts(LINUX).unwrap();
        assert_eq!((f.cpus, f.mem_total_bytes, f.mem_available_bytes), (8, 16_000_000 * 1024, 8_000_000 * 1024));
        assert_eq!(f.rsync_version.as_deref(), Some("3.2.7"));
        let p = &f.pythons["python3"];
        assert_eq!((p.path.as_str(), p.version.as_str()), ("/usr/bin/python3", "3.11.2"));
        let abi = p.abi.as_ref().unwrap();
        assert_eq!((abi.implementation.as_str(), abi.abiflags.as_str(), abi.machine.as_str(), abi.libc.as_str()), ("cpython", "", "x86_64", "glibc 2.36"));
        let old = parse_facts(&LINUX.replace("3.11.2\tcpython\t\tlinux\tx86_64\tglibc 2.36\t/usr", "3.11.2")).unwrap();
        assert_eq!(old.pythons["python3"].abi, None, "an older probe's line still reads");
        assert_eq!(f.home, "/home/u");
    }

    #[test]
    fn cgroup_limits_lower_cpus_and_memory() {
        let t = LINUX.replace("cgroup_cpu_max=max 100000", "cgroup_cpu_max=250000 100000\ncgroup_cpu_max=max 100000")
            .replace("cgroup_memory_max=max", "cgroup_memory_max=1073741824");
        let f = parse_facts(&t).unwrap();
        assert_eq!(f.cpus, 2);
        assert_eq!(f.mem_available_bytes, 1 << 30);
        let tiny = LINUX.replace("cgroup_cpu_max=max 100000", "cgroup_cpu_max=50000 100000");
        assert_eq!(parse_facts(&tiny).unwrap().cpus, 1, "a fractional quota still allows one process");
    }

    #[test]
    fn missing_rsync_and_unknown_os() {
        let f = parse_facts(&LINUX.replace("rsync=3.2.7\n", "")).unwrap();
        assert_eq!(f.rsync_version, None);
        let e = parse_facts(&LINUX.replace("os=Linux", "os=SunOS")).unwrap_err();
        assert_eq!(e.0, ErrorKind::UnsupportedOs);
        assert!(e.1.contains("SunOS"));
        assert_eq!(parse_facts(&LINUX.replace("cpus=8\n", "")).unwrap_err().0, ErrorKind::ProbeFailed);
    }

    #[test]
    fn darwin_memory_from_pages() {
        let t = "os=Darwin\narch=arm64\ncpus=10\nmem_total_kb=16777216\nmem_pages=1000 16384\nmem_pages=500 16384\n";
        let f = parse_facts(t).unwrap();
        assert_eq!(f.mem_available_bytes, 1500 * 16384);
    }

    #[test]
    fn ssh_errors_are_classified() {
        let cases = [
            ("ssh: connect to host 127.0.0.9 port 22: Connection refused", ErrorKind::Refused),
            ("Connection timed out during banner exchange", ErrorKind::Timeout),
            ("bob@h: Permission denied (publickey).", ErrorKind::Auth),
            ("Host key verification failed.", ErrorKind::HostKey),
            ("ssh: Could not resolve hostname nope: Name or service not known", ErrorKind::Dns),
            ("ssh: connect to host 10.1.1.1 port 22: No route to host", ErrorKind::Unreachable),
            ("kex_exchange_identification: read: Connection reset by peer", ErrorKind::Ssh),
        ];
        for (msg, kind) in cases {
            assert_eq!(crate::remote::classify_ssh_error(msg), kind, "{msg}");
        }
    }
}
