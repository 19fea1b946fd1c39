//! The loopback test cluster itself: `scripts/local-cluster` and `tests/common/cluster.rs`.
//! Every test starts its own cluster; they run in parallel, which also exercises the claims.

use crate::common;

use common::cluster::{Cluster, script};
use common::require::{is_root, require};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The checks only root can make (a unix user per node, deleting those users): `require`d,
/// so they fail under CI when not root and say SKIPPED elsewhere.
fn as_root(check: &str) -> bool {
    require(is_root(), "root", &format!("run the cluster tier as root (scripts/test does) to check {check}"))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Live (non-zombie) processes whose command line mentions `needle`.
fn live_processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(path.join("status"))
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn live_processes_of_user(user: &str) -> Vec<String> {
    let out = Command::new("ps")
        .args(["-u", user, "-o", "pid=,stat=,args="])
        .output()
        .unwrap();
    stdout(&out)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|s| !s.starts_with('Z'))
        })
        .map(str::to_string)
        .collect()
}

fn user_exists(user: &str) -> bool {
    Command::new("getent")
        .args(["passwd", user])
        .output()
        .unwrap()
        .status
        .success()
}

/// Column `col` of the status line for `alias`.
fn status_field(cluster: &Cluster, alias: &str, col: usize) -> String {
    let status = cluster.status();
    status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(alias))
        .and_then(|l| l.split_whitespace().nth(col).map(str::to_string))
        .unwrap_or_else(|| panic!("{alias} not in status:\n{status}"))
}

#[test]
fn help_describes_every_command() {
    let out = Command::new(script()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    for word in [
        "up N",
        "down",
        "status",
        "stop NODE",
        "start NODE",
        "kill NODE",
        "hang NAME",
        "refuse NAME",
        "connections NODE",
        "offline NODE",
        "online NODE",
    ] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
}

#[test]
fn bad_node_count_is_an_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(script())
        .arg("--dir")
        .arg(dir.path())
        .args(["up", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("node count"), "{}", stderr(&out));
    assert!(!dir.path().join("state").exists());
}

#[test]
fn nodes_look_like_separate_machines_and_take_rsync() {
    let cluster = Cluster::up(3);
    assert_eq!(cluster.aliases(), ["node1", "node2", "node3"]);

    let mut users = BTreeSet::new();
    let mut homes = BTreeSet::new();
    for alias in cluster.aliases() {
        let out = cluster.ssh(&alias, "whoami; echo \"$HOME\"; pwd");
        assert!(out.status.success(), "{alias}: {}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{alias}: {text}");
        let home = cluster.dir().join(&alias).join("home");
        assert_eq!(Path::new(lines[1]), home, "{alias} HOME");
        assert_eq!(lines[2], lines[1], "{alias} session starts in HOME");
        users.insert(lines[0].to_string());
        homes.insert(lines[1].to_string());
    }
    assert_eq!(homes.len(), 3, "HOMEs must differ: {homes:?}");
    if as_root("that every node is its own unix user") {
        assert_eq!(
            users.len(),
            3,
            "as root every node is its own user: {users:?}"
        );
    }

    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("pkg")).unwrap();
    std::fs::write(src.path().join("pkg/mod.py"), "X = 42\n").unwrap();
    let out = Command::new("rsync")
        .arg("-a")
        .arg("-e")
        .arg(format!("ssh -F {}", cluster.ssh_config().display()))
        .arg(format!("{}/", src.path().display()))
        .arg("node2:proj/")
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    let out = cluster.ssh("node2", "cat proj/pkg/mod.py");
    assert_eq!(stdout(&out), "X = 42\n", "{}", stderr(&out));
    assert!(
        !cluster.ssh("node1", "test -e proj").status.success(),
        "node1 must not see node2's files"
    );
}

#[test]
fn stop_refuses_and_start_restores() {
    let cluster = Cluster::up(2);
    cluster.stop("node1");
    let out = cluster.ssh("node1", "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );
    assert!(cluster.status().contains("dead"));
    assert!(
        cluster.ssh("node2", "true").status.success(),
        "node2 is unaffected"
    );

    cluster.start("node1");
    let out = cluster.ssh("node1", "echo back");
    assert_eq!(stdout(&out), "back\n", "{}", stderr(&out));
}

#[test]
fn kill_ends_running_sessions() {
    let cluster = Cluster::up(2);
    let before = cluster.connections("node1");
    let mut session = cluster
        .ssh_command("node1", "sleep 300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.connections("node1") == before {
        assert!(Instant::now() < deadline, "the session never authenticated");
        std::thread::sleep(Duration::from_millis(50));
    }
    let user = status_field(&cluster, "node1", 3);

    cluster.kill("node1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = session.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ssh session survived kill");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status.code(),
        Some(255),
        "the client sees the connection die"
    );
    if as_root("that no process of the stopped node's user is left") {
        assert_eq!(live_processes_of_user(&user), Vec::<String>::new());
    }
    assert!(
        live_processes_mentioning("sleep 300")
            .iter()
            .all(|p| !p.contains(&user))
    );
    let out = cluster.ssh("node1", "true");
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );
    assert!(
        cluster.ssh("node2", "true").status.success(),
        "node2 is unaffected"
    );

    cluster.start("node1");
    assert!(cluster.ssh("node1", "true").status.success());
}

#[test]
fn hang_times_out_and_refuse_is_refused() {
    let cluster = Cluster::up(1);
    cluster.hang("slow", 30);
    cluster.refuse("gone");

    let started = Instant::now();
    let out = Command::new("ssh")
        .arg("-F")
        .arg(cluster.ssh_config())
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=2",
            "slow",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "took {took:?}"
    );

    let out = cluster.ssh("gone", "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        stderr(&out)
    );
    assert!(cluster.status().contains("hang alive"));
}

#[test]
fn connections_count_one_per_ssh() {
    let cluster = Cluster::up(2);
    let (a, b) = (cluster.connections("node1"), cluster.connections("node2"));
    assert_eq!((a, b), (1, 1), "up checks each node with one login");
    for _ in 0..3 {
        assert!(cluster.ssh("node1", "true").status.success());
    }
    assert_eq!(cluster.connections("node1"), a + 3);
    assert_eq!(cluster.connections("node2"), b);
    // Multiplexed sessions over one master are one authentication.
    let control = cluster.dir().join("cm-%C");
    let mux = |cmd: &str| {
        Command::new("ssh")
            .arg("-F")
            .arg(cluster.ssh_config())
            .arg("-o")
            .arg(format!("ControlPath={}", control.display()))
            .args([
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPersist=10",
                "-o",
                "BatchMode=yes",
                "node2",
                cmd,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    for _ in 0..3 {
        assert!(mux("true").success());
    }
    assert_eq!(cluster.connections("node2"), b + 1);
    let _ = mux_exit(&cluster, &control);
}

fn mux_exit(cluster: &Cluster, control: &Path) -> std::process::ExitStatus {
    Command::new("ssh")
        .arg("-F")
        .arg(cluster.ssh_config())
        .arg("-o")
        .arg(format!("ControlPath={}", control.display()))
        .args(["-O", "exit", "node2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

#[test]
fn down_leaves_nothing_behind() {
    let mut cluster = Cluster::up(2);
    cluster.hang("slow", 60);
    let dir = cluster.dir().to_path_buf();
    let dir_text = format!("{}/", dir.display());
    let claim = std::fs::read_to_string(dir.join("claim"))
        .unwrap()
        .trim()
        .to_string();
    let users: Vec<String> = cluster
        .aliases()
        .iter()
        .map(|a| status_field(&cluster, a, 3))
        .collect();
    let mut session = cluster
        .ssh_command("node1", "sleep 300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while cluster.connections("node1") < 2 {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        live_processes_mentioning(&dir_text).len() >= 3,
        "2 sshds and a listener"
    );

    cluster.down();
    cluster.down(); // idempotent
    let out = Command::new(script())
        .arg("--dir")
        .arg(&dir)
        .arg("down")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "down on a removed DIR: {}",
        stderr(&out)
    );

    assert_eq!(live_processes_mentioning(&dir_text), Vec::<String>::new());
    assert!(!dir.exists(), "DIR removed");
    let owner = std::fs::read_to_string(format!("/tmp/pytest-cloud-clusters/{claim}/owner"));
    assert!(
        owner.map_or(true, |o| o.trim() != dir.to_string_lossy()),
        "claim {claim} released"
    );
    if as_root("that down deletes the node users") {
        for user in &users {
            assert!(!user_exists(user), "user {user} deleted");
        }
    }
    let status = session.wait().unwrap();
    assert_eq!(status.code(), Some(255), "the open session was ended");
}

/// `down` collects every node's processes from one process table (scripts/local-cluster
/// `all_nodes_pids`); a frozen node's sshd and its stopped session must be among them.
#[test]
fn down_ends_frozen_and_unfrozen_nodes_alike() {
    let mut cluster = Cluster::up(3);
    let dir_text = format!("{}/", cluster.dir().display());
    let mut sessions: Vec<_> = ["node1", "node3"]
        .iter()
        .map(|n| {
            let before = cluster.connections(n);
            let child = cluster
                .ssh_command(n, "sleep 300")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            while cluster.connections(n) == before {
                std::thread::sleep(Duration::from_millis(50));
            }
            child
        })
        .collect();
    let users: Vec<String> = cluster.aliases().iter().map(|a| status_field(&cluster, a, 3)).collect();
    cluster.freeze("node1");
    let status = cluster.status();
    assert!(status.lines().any(|l| l.starts_with("node1 ") && l.ends_with("frozen")), "{status}");
    cluster.down();
    assert_eq!(live_processes_mentioning(&dir_text), Vec::<String>::new());
    if is_root() {
        for user in &users {
            assert_eq!(live_processes_of_user(user), Vec::<String>::new(), "{user}");
            assert!(!user_exists(user), "user {user} deleted");
        }
    }
    for s in &mut sessions {
        assert_eq!(s.wait().unwrap().code(), Some(255), "the open session was ended");
    }
}

#[test]
fn two_clusters_at_once_do_not_collide() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Cluster::up(2));
        let b = s.spawn(|| Cluster::up(2));
        (a.join().unwrap(), b.join().unwrap())
    });
    let claim = |c: &Cluster| std::fs::read_to_string(c.dir().join("claim")).unwrap();
    assert_ne!(claim(&a), claim(&b));
    let addr_a = status_field(&a, "node1", 1);
    let addr_b = status_field(&b, "node1", 1);
    assert_ne!(addr_a, addr_b);
    assert!(addr_a.starts_with("127.77.") && addr_b.starts_with("127.77."));
    let home = |c: &Cluster| stdout(&c.ssh("node1", "echo $HOME"));
    assert_eq!(
        home(&a).trim(),
        a.dir().join("node1/home").to_string_lossy()
    );
    assert_eq!(
        home(&b).trim(),
        b.dir().join("node1/home").to_string_lossy()
    );
    if as_root("that two clusters' nodes are different users") {
        assert_ne!(status_field(&a, "node1", 3), status_field(&b, "node1", 3));
    }
    // Stopping a node of one cluster leaves the other alone.
    a.stop("node1");
    assert!(b.ssh("node1", "true").status.success());
}

/// An unprivileged user created for the test, removed on drop.
struct TestUser {
    name: String,
    _home: tempfile::TempDir,
}

impl TestUser {
    fn create() -> TestUser {
        let home = tempfile::Builder::new()
            .prefix("pcc-user-")
            .tempdir()
            .unwrap();
        let name = format!("pcct{}", std::process::id());
        let out = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", "-p", "*", "-d"])
            .arg(home.path())
            .arg(&name)
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd: {}", stderr(&out));
        let user = TestUser { name, _home: home };
        let out = Command::new("chown")
            .arg(&user.name)
            .arg(user._home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "chown: {}", stderr(&out));
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg("-f").arg(&self.name).output();
    }
}

#[test]
fn non_root_mode_runs_every_node_as_the_caller() {
    // Making the unprivileged user to run the script as needs root.
    if !as_root("the non-root mode as an unprivileged user") {
        return;
    }
    let user = TestUser::create();
    let mut cluster = Cluster::up_as(2, &user.name);
    for alias in cluster.aliases() {
        let out = cluster.ssh(&alias, "whoami; echo \"$HOME\"; pwd");
        assert!(out.status.success(), "{alias}: {}", stderr(&out));
        let home = cluster
            .dir()
            .join(&alias)
            .join("home")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            stdout(&out),
            format!("{}\n{home}\n{home}\n", user.name),
            "{alias}"
        );
        assert_eq!(stderr(&out), "", "{alias}: a clean session");
    }
    assert_eq!(status_field(&cluster, "node1", 2), "2222");

    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), "hello\n").unwrap();
    let out = Command::new("rsync")
        .arg("-a")
        .arg("-e")
        .arg(format!("ssh -F {}", cluster.ssh_config().display()))
        .arg(format!("{}/", src.path().display()))
        .arg("node2:dest/")
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(cluster.dir().join("node2/home/dest/a.txt")).unwrap(),
        "hello\n"
    );

    let before = cluster.connections("node1");
    let mut session = cluster
        .ssh_command("node1", "sleep 300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while cluster.connections("node1") == before {
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.kill("node1");
    assert_eq!(session.wait().unwrap().code(), Some(255));
    assert!(
        cluster.ssh("node2", "true").status.success(),
        "node2 is unaffected"
    );

    cluster.hang("slow", 20);
    let dir_text = format!("{}/", cluster.dir().display());
    cluster.down();
    assert_eq!(live_processes_mentioning(&dir_text), Vec::<String>::new());
    assert_eq!(live_processes_of_user(&user.name), Vec::<String>::new());
}

#[test]
fn failed_up_names_the_node_shows_its_log_and_cleans_up() {
    // Something on the wildcard address takes the port from every loopback address.
    let blocker = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = blocker.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(script())
        .arg("--dir")
        .arg(dir.path())
        .args(["--port", &port, "up", "2"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("node1 (127.77.") && err.contains("node2 (127.77."),
        "{err}"
    );
    assert!(
        err.contains("Address already in use"),
        "the sshd log tail: {err}"
    );
    assert!(!dir.path().exists(), "a failed up removes its DIR");
    assert_eq!(
        live_processes_mentioning(&format!("{}/", dir.path().display())),
        Vec::<String>::new()
    );
}

/// What `python3 -c` prints on the node when it tries a TCP connection to `host`:`port`
/// (`connected`, or the exception's class name).
fn node_connect(cluster: &Cluster, alias: &str, host: &str, port: u16) -> String {
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(({host:?}, {port}), 5).close()\n    print('connected')\nexcept Exception as e:\n    print(type(e).__name__, e)"
    );
    let out = cluster.ssh(alias, &format!("python3 -c {}", shell_words::quote(&code)));
    assert!(out.status.success(), "ssh {alias} failed: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn offline_cuts_the_node_user_off_all_but_loopback_and_online_restores_it() {
    // `iptables -S OUTPUT` needs root and a kernel that takes netfilter rules (`-V` needs neither).
    if !require(
        is_root() && common::require::runs("iptables", &["-S", "OUTPUT"]),
        "root with a working iptables (`iptables -S OUTPUT` failed)",
        "run as root; scripts/install-deps installs iptables (apt-get install iptables)",
    ) {
        return;
    }
    // An address of PyPI resolved here (the controller is online), so the node's try is a
    // TCP connection, not only a name lookup that may fail for its own reasons.
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&("pypi.org", 443))
        .expect("resolve pypi.org on the controller (the cluster tier uses PyPI)")
        .find(|a| a.is_ipv4())
        .expect("an IPv4 address of pypi.org")
        .ip()
        .to_string();
    let cluster = Cluster::up(2);
    assert_eq!(node_connect(&cluster, "node1", &addr, 443), "connected", "node1 reaches PyPI before offline");
    cluster.offline("node1");
    let status = cluster.status();
    assert!(status.lines().any(|l| l.starts_with("node1 ") && l.ends_with("offline")), "status shows it:\n{status}");
    assert!(!status.lines().any(|l| l.starts_with("node2 ") && l.contains("offline")), "{status}");
    let cut = node_connect(&cluster, "node1", &addr, 443);
    assert!(cut.starts_with("ConnectionRefusedError"), "offline: a TCP connection is reset at once, got {cut:?}");
    let by_name = node_connect(&cluster, "node1", "pypi.org", 443);
    assert_ne!(by_name, "connected", "offline: pypi.org by name is unreachable too");
    // Loopback stays: ssh (this very call), and the node's own connection to another node's sshd.
    let other = status_field(&cluster, "node2", 1);
    assert_eq!(node_connect(&cluster, "node1", &other, 22), "connected", "offline keeps loopback");
    // Only node1's user is cut off.
    assert_eq!(node_connect(&cluster, "node2", &addr, 443), "connected", "node2 is not offline");
    cluster.online("node1");
    assert_eq!(node_connect(&cluster, "node1", &addr, 443), "connected", "online restores the network");
    let tag = format!("pcc-cluster-{}-node1-offline", std::fs::read_to_string(cluster.dir().join("claim")).unwrap().trim());
    cluster.offline("node1");
    let rules = || String::from_utf8_lossy(&Command::new("iptables").args(["-S", "OUTPUT"]).output().unwrap().stdout).into_owned();
    assert!(rules().contains(&tag), "offline adds tagged rules: {}", rules());
    let mut cluster = cluster;
    cluster.down();
    assert!(!rules().contains(&tag), "down removes offline's rules: {}", rules());
}
