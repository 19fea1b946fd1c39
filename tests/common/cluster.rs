//! Real sshd nodes on loopback for integration tests, driven through `scripts/local-cluster`.
//!
//! `Cluster::up(3)` gives three nodes `node1..node3`, each its own sshd on its own
//! 127.77.C.I address (and, as root, its own unix user), reachable with
//! `ssh -F cluster.ssh_config() node2 ...`. Clusters claim distinct indexes, so tests running in
//! parallel threads each get their own. Dropping the cluster runs `local-cluster down`.
//! `Cluster::shared()` is the one cluster the tests that leave nodes untouched share.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The script, found from the crate root so tests work from any working directory.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-cluster")
}

pub struct Cluster {
    dir: tempfile::TempDir,
    /// Non-root mode: every script call runs as this user (through `runuser`).
    run_as: Option<String>,
    down: bool,
}

impl Cluster {
    /// Start `n` nodes in a fresh temporary directory; panics with the script's stderr on failure.
    pub fn up(n: usize) -> Cluster {
        Self::start_cluster(n, None)
    }

    /// Start `n` nodes with the script running as the unprivileged `user` (its non-root mode:
    /// every node runs as that user, sessions start in the node's own home). Needs root to switch
    /// user; the temporary directory is handed to `user`.
    pub fn up_as(n: usize, user: &str) -> Cluster {
        Self::start_cluster(n, Some(user.to_string()))
    }

    /// One 4-node cluster shared by every test of this binary that leaves the nodes as it
    /// found them: it works in its own directories (its own `--chdir`), stops or kills no
    /// node, counts no connections and looks at no node user's processes. Started by the
    /// first test that asks; a statics' destructor never runs, so a watcher process takes it
    /// down (and removes its directory) once this test binary has exited, however it ended.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut c = Cluster::up(4);
            use std::os::unix::process::CommandExt;
            Command::new("sh")
                .args(["-c", "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; \"$2\" --dir \"$3\" down >/dev/null 2>&1; rm -rf -- \"$3\""])
                .arg("pytest-cloud-shared-cluster-reaper")
                .arg(std::process::id().to_string())
                .arg(script())
                .arg(c.dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: a Ctrl-C of the test run must not end it first.
                .process_group(0)
                .spawn()
                .expect("start the shared cluster's watcher");
            // The watcher owns the teardown now.
            c.down = true;
            c
        })
    }

    fn start_cluster(n: usize, run_as: Option<String>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("pcc-cluster-")
            .tempdir()
            .expect("create a temporary directory for the cluster");
        if let Some(user) = &run_as {
            let out = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(
                out.status.success(),
                "chown {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cluster = Cluster {
            dir,
            run_as,
            down: false,
        };
        let out = cluster.script_output(&["up", &n.to_string()]);
        if !out.status.success() {
            // `up` tears a partial cluster down itself; nothing left for Drop to do.
            cluster.down = true;
            panic!(
                "local-cluster up {n} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.dir().join("ssh_config")
    }

    /// The node aliases, `node1..nodeN`, as listed in `DIR/nodes`.
    pub fn aliases(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir().join("nodes"))
            .expect("read DIR/nodes")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Stop the node's sshd: new connections are refused, open sessions stay.
    pub fn stop(&self, alias: &str) {
        self.script(&["stop", alias]);
    }

    /// Start the node's sshd again and wait until it accepts ssh (one authentication).
    pub fn start(&self, alias: &str) {
        self.script(&["start", alias]);
    }

    /// Kill the node's sshd and every session on it, as if the machine died.
    pub fn kill(&self, alias: &str) {
        self.script(&["kill", alias]);
    }

    /// SIGSTOP the node's sshd, its sessions and its user's processes: a hung machine whose
    /// TCP connections stay open (the kernel still ACKs). `thaw` resumes them; `down` does too.
    pub fn freeze(&self, alias: &str) {
        self.script(&["freeze", alias]);
    }

    pub fn thaw(&self, alias: &str) {
        self.script(&["thaw", alias]);
    }

    /// Drop every packet to and from the node's address (iptables; root only): off the network.
    pub fn unplug(&self, alias: &str) {
        self.script(&["unplug", alias]);
    }

    pub fn plug(&self, alias: &str) {
        self.script(&["plug", alias]);
    }

    /// The node's unix user reaches nothing but loopback (iptables owner rules; root only):
    /// a machine with no route to the internet (no index), still reachable over ssh.
    pub fn offline(&self, alias: &str) {
        self.script(&["offline", alias]);
    }

    pub fn online(&self, alias: &str) {
        self.script(&["online", alias]);
    }

    /// Add alias `name` that accepts TCP but never sends an ssh banner, for `secs` seconds.
    pub fn hang(&self, name: &str, secs: u64) {
        self.script(&["hang", name, "--seconds", &secs.to_string()]);
    }

    /// Add alias `name` whose address has nothing listening.
    pub fn refuse(&self, name: &str) {
        self.script(&["refuse", name]);
    }

    /// Publickey authentications the node's sshd has logged so far (`up` and `start` make one).
    pub fn connections(&self, alias: &str) -> usize {
        let out = self.script(&["connections", alias]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("local-cluster connections {alias} printed {text:?}"))
    }

    /// The `status` table: alias, address, port, user, pid, state.
    pub fn status(&self) -> String {
        String::from_utf8_lossy(&self.script(&["status"]).stdout).into_owned()
    }

    /// `ssh -F DIR/ssh_config -o BatchMode=yes -o ConnectTimeout=5 ALIAS CMD`, ready to run or spawn.
    pub fn ssh_command(&self, alias: &str, cmd: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(self.ssh_config())
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", alias, cmd])
            .stdin(Stdio::null());
        c
    }

    /// Run `cmd` on the node; the Output is returned whatever its status.
    pub fn ssh(&self, alias: &str, cmd: &str) -> Output {
        self.ssh_command(alias, cmd).output().expect("run ssh")
    }

    /// Stop everything now (Drop does the same); idempotent.
    pub fn down(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        self.script(&["down"]);
    }

    /// Run the script with `--dir DIR ARGS`; panics with its stderr if it fails.
    pub fn script(&self, args: &[&str]) -> Output {
        let out = self.script_output(args);
        assert!(
            out.status.success(),
            "local-cluster {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run the script with `--dir DIR ARGS` and return its output whatever the status.
    pub fn script_output(&self, args: &[&str]) -> Output {
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(script());
                c
            }
            None => Command::new(script()),
        };
        cmd.arg("--dir")
            .arg(self.dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        // Never panic in drop (we may already be unwinding from a failed assertion).
        match self.script_output(&["down"]) {
            out if out.status.success() => {}
            out => eprintln!(
                "local-cluster down failed for {} ({}):\n{}",
                self.dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}
