//! Node syntax and every ssh argument pytest-cloud builds, in one place, so that a port, a
//! user, a config alias, a ControlPath or a cipher is honoured the same way by probe, sync,
//! exec and the xdist gateways.
//!
//! All ssh calls go through a generated config file (`-F`): it turns on connection sharing
//! (ControlMaster) so one node costs one handshake for a whole pipeline, gives nodes with an
//! explicit port an alias (xdist's `ssh=` spec cannot carry a port) that carries what `ssh -G
//! -p PORT host` says the user's config gives that host, and then `Include`s the
//! user's own config (`--ssh-config`, else `~/.ssh/config` and `/etc/ssh/ssh_config`, which
//! ssh skips when `-F` is given). Host-key checking is left exactly as the user's config says.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A node as the user names it: `[user@]host[:port]`, `[user@][v6addr][:port]`, or an ssh
/// config alias (which is just a host to us).
///
/// This is the one parsed form of a node: the command line parses with `parse_nodes`, a
/// document's `node` fields parse here when the document is read (serde `try_from`), and
/// the wire carries `key()`, so a bad node in a document is a schema error naming it and
/// nothing downstream parses a node string again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && !h.starts_with('-')
        && !h.starts_with('.')
        && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn valid_v6(h: &str) -> bool {
    !h.is_empty() && h.contains(':') && h.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%'))
}

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && !u.starts_with('-')
        && u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl Destination {
    /// Parses one node. The message says what was expected; the caller adds where.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        const EXPECTED: &str = "expected [user@]host[:port] or an ssh config alias \
            (letters, digits, '.', '-', '_'; IPv6 as [addr])";
        if s.is_empty() {
            return Err(format!("empty node name: {EXPECTED}"));
        }
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) => {
                if !valid_user(u) {
                    return Err(format!("bad user {u:?} in node {s:?}: {EXPECTED}"));
                }
                (Some(u.to_string()), r)
            }
            None => (None, s),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("node {s:?} opens '[' without ']': {EXPECTED}"))?;
            if !valid_v6(addr) {
                return Err(format!("bad IPv6 address {addr:?} in node {s:?}: {EXPECTED}"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| format!("node {s:?}: {EXPECTED}"))?),
            };
            (addr.to_string(), port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if !host.contains(':') && !valid_host(&host) {
            return Err(format!("bad host {host:?} in node {s:?}: {EXPECTED}"));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("bad port {p:?} in node {s:?}: expected a number from 1 to 65535")),
            },
        };
        Ok(Destination { user, host, port })
    }

    /// The de-duplication key and canonical spelling: `user@host:port` with the parts given.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// A readable label for worker ids and messages: the node as given, with characters
    /// that worker ids cannot hold replaced by `_`.
    pub fn label(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
            .collect()
    }

    /// The name ssh is given. A node with a port becomes an alias defined in the generated
    /// config, because xdist's `ssh=` spec has no place for a port.
    pub fn ssh_host(&self) -> String {
        match self.port {
            Some(p) => format!("pytest-cloud.{}.{}", self.host.replace(':', "_"), p),
            None => self.host.clone(),
        }
    }

    /// `user@host` (or the alias) as ssh and rsync take it.
    pub fn ssh_target(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.ssh_host()),
            None => self.ssh_host(),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (false, None) => write!(f, "{}", self.host),
        }
    }
}

impl TryFrom<String> for Destination {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        Destination::parse(&s)
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.key()
    }
}

/// One label per node, injective within `nodes`: each node's readable [`Destination::label`]
/// where no other node has the same, else (for the second and later of those sharing one, in
/// order) the label with `.2`, `.3`, ... appended, skipping any label another node has. So
/// `bob@h` and `bob_h` become `bob_h` and `bob_h.2`, and worker ids (`<label>-<i>`) never
/// collide. Pure and order-determined: the same nodes give the same labels.
pub fn labels(nodes: &[Destination]) -> Vec<String> {
    let bases: Vec<String> = nodes.iter().map(Destination::label).collect();
    let all: std::collections::BTreeSet<&str> = bases.iter().map(String::as_str).collect();
    let mut given: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(nodes.len());
    for base in &bases {
        let mut label = base.clone();
        let mut n = 2;
        while given.contains(&label) || (label != *base && all.contains(label.as_str())) {
            label = format!("{base}.{n}");
            n += 1;
        }
        given.insert(label.clone());
        out.push(label);
    }
    out
}

/// Collects `--node` and `--nodes` values (and nodes from a document), de-duplicated
/// first-seen by the full `user@host:port`, so one host under two users is two nodes.
pub fn parse_nodes<'a>(singles: impl IntoIterator<Item = &'a str>) -> Result<Vec<Destination>> {
    let mut out: Vec<Destination> = Vec::new();
    for raw in singles {
        for word in raw.split_whitespace() {
            let d = Destination::parse(word).map_err(|m| Error::usage(format!("invalid node: {m}")))?;
            if !out.contains(&d) {
                out.push(d);
            }
        }
        if raw.trim().is_empty() {
            return Err(Error::usage(
                "invalid node: empty node name: expected [user@]host[:port] or an ssh config alias",
            ));
        }
    }
    Ok(out)
}

/// The ssh settings that every stage shares. Carried forward in every document so a saved
/// document restarts the pipeline with the same ssh behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshSettings {
    /// The user's ssh config (`--ssh-config`); none means ssh's defaults
    /// (`~/.ssh/config`, `/etc/ssh/ssh_config`).
    pub config_file: Option<PathBuf>,
    /// ssh's ConnectTimeout: TCP connect plus banner exchange.
    pub connect_timeout_s: u64,
    /// How long a shared connection outlives its last user; 0 turns sharing off.
    pub control_persist_s: u64,
    /// A node that answers nothing for this long is lost: the shared connection's ssh
    /// keepalive (`ServerAliveInterval` x (`ServerAliveCountMax` + 1), see `keepalive`) gives
    /// up and closes every session on it. This is what notices a frozen node or one off
    /// the network; a killed one is noticed at once (its TCP connection closes).
    #[serde(default = "default_node_timeout_s")]
    pub node_timeout_s: u64,
}

/// The default lost-node bound (share/doc/faults.md).
pub const DEFAULT_NODE_TIMEOUT_S: u64 = 12;
/// ssh's keepalive counts whole seconds and we allow 3 unanswered probes.
pub const MIN_NODE_TIMEOUT_S: u64 = 4;

fn default_node_timeout_s() -> u64 {
    DEFAULT_NODE_TIMEOUT_S
}

/// ssh's keepalive for a node timeout: (ServerAliveInterval, ServerAliveCountMax). ssh
/// sends a probe after each interval without data from the server and disconnects at the
/// (CountMax + 1)-th unanswered one, so it gives up within interval x (count + 1) <= the
/// timeout (measured: share/doc/faults.md).
pub fn keepalive(node_timeout_s: u64) -> (u64, u64) {
    const COUNT_MAX: u64 = 3;
    ((node_timeout_s / (COUNT_MAX + 1)).max(1), COUNT_MAX)
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            config_file: None,
            connect_timeout_s: crate::options::DEFAULT_CONNECT_TIMEOUT_S,
            control_persist_s: crate::options::DEFAULT_CONTROL_PERSIST_S,
            node_timeout_s: DEFAULT_NODE_TIMEOUT_S,
        }
    }
}

impl SshSettings {
    /// Applies what the user gave on the command line over settings read from a document:
    /// the one place that decides how overrides combine (the config path made absolute, so a
    /// saved document works from any directory).
    pub fn override_with(&mut self, config_file: Option<&Path>, connect_timeout_s: Option<u64>, control_persist_s: Option<u64>) {
        if let Some(c) = config_file {
            self.config_file = Some(std::path::absolute(c).unwrap_or_else(|_| c.to_path_buf()));
        }
        if let Some(t) = connect_timeout_s {
            self.connect_timeout_s = t;
        }
        if let Some(p) = control_persist_s {
            self.control_persist_s = p;
        }
    }
}

/// A directory private to this local user for sockets and generated config files.
pub fn runtime_dir() -> Result<PathBuf> {
    // ControlPath must stay under the 104-108 byte socket path limit, so a short base.
    let base = std::env::var_os("PYTEST_CLOUD_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/pytest-cloud-{}", crate::project::local_uid())));
    if !base.exists() {
        std::fs::create_dir_all(&base).map_err(|e| Error::io(format!("creating {}", base.display()), e))?;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(&base).map_err(|e| Error::io(base.display(), e))?;
    if !meta.is_dir() || meta.uid() != crate::project::local_uid() {
        return Err(Error::new(
            crate::error::Exit::Io,
            format!(
                "{} is not a directory owned by this user; refusing to keep ssh sockets there \
                 (set PYTEST_CLOUD_RUNTIME_DIR to a private directory)",
                base.display()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(base.display(), e))?;
    }
    Ok(base)
}

/// The text of the generated ssh config for these settings and nodes, without asking ssh
/// about nodes with a port (their alias then has only HostName and Port). Pure, for tests.
pub fn config_text(settings: &SshSettings, nodes: &[Destination], control_dir: &Path) -> String {
    config_text_resolved(settings, nodes, control_dir, 0, &Resolved::new())
}

/// What `ssh -G` said a node given with a port gets from the user's config, as `ssh -p PORT
/// [user@]host` would: (ssh_config keyword, value) pairs of [`RESOLVED_KEYS`].
pub type Resolved = std::collections::BTreeMap<Destination, Vec<(String, String)>>;

/// The options of a node's own `Host` block that its alias carries: who and where the node
/// is, how to authenticate and through what, and which host keys it checks. Not options
/// whose written-out default differs from leaving them unset (HostKeyAlgorithms: ssh orders
/// the default by the known host keys), nor those our `Host *` sets.
pub const RESOLVED_KEYS: &[&str] = &[
    "hostname",
    "user",
    "port",
    "identityfile",
    "certificatefile",
    "identitiesonly",
    "identityagent",
    "proxyjump",
    "proxycommand",
    "hostkeyalias",
    "userknownhostsfile",
    "globalknownhostsfile",
    "stricthostkeychecking",
];

/// Asks `ssh -G` (no connection is made) what each node with a port gets from the user's
/// config as `ssh -p PORT [user@]host`. A node ssh cannot answer for is left out (its alias
/// then has HostName and Port only, and ssh's own call names the problem).
pub fn resolve_port_nodes(settings: &SshSettings, nodes: &[Destination]) -> Resolved {
    let mut out = Resolved::new();
    for d in nodes {
        let Some(port) = d.port else { continue };
        if out.contains_key(d) {
            continue;
        }
        let mut argv = vec!["ssh".to_string(), "-G".into()];
        if let Some(f) = &settings.config_file {
            argv.extend(["-F".into(), absolute(f).display().to_string()]);
        }
        let target = match &d.user {
            Some(u) => format!("{u}@{}", d.host),
            None => d.host.clone(),
        };
        argv.extend(["-p".into(), port.to_string(), "--".into(), target]);
        let Ok(said) = crate::proc::Cmd::new(argv).deadline(std::time::Duration::from_secs(10)).output() else { continue };
        if !said.status.success() {
            continue;
        }
        let pairs: Vec<(String, String)> = said
            .stdout_str()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, v)| RESOLVED_KEYS.contains(k) && !v.is_empty() && !v.contains(['\n', '\r']))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.insert(d.clone(), pairs);
    }
    out
}

/// A `Host` block line for a resolved option: a path is quoted (it may hold spaces); a
/// command or a list of files is written as ssh printed it.
fn resolved_line(key: &str, value: &str) -> String {
    match key {
        "identityfile" | "certificatefile" | "identityagent" => format!("  {key} \"{value}\"\n"),
        _ => format!("  {key} {value}\n"),
    }
}

/// The config for connection group `group`: group 0 is the normal one; group g > 0 differs
/// only in its ControlPath, giving a node's workers past sshd's MaxSessions their own
/// shared connection. A node with a port is an alias (xdist's `ssh=` spec has no place for a
/// port) whose block carries what `resolved` says `ssh -p PORT host` would use from the
/// user's config, so the user's `Host host` block (User, IdentityFile, ProxyJump, HostName)
/// still applies to it.
pub fn config_text_resolved(settings: &SshSettings, nodes: &[Destination], control_dir: &Path, group: usize, resolved: &Resolved) -> String {
    let mut s = String::from("# Generated by pytest-cloud for one run; safe to delete.\n");
    // The first value obtained for an option wins, so our lines come before the user's.
    let mut seen = std::collections::BTreeSet::new();
    for d in nodes {
        let Some(p) = d.port else { continue };
        // One block per alias: nodes that differ only in their user share it (the user they
        // give on the command line wins over the block's).
        if !seen.insert(d.ssh_host()) {
            continue;
        }
        match resolved.get(d) {
            Some(pairs) if !pairs.is_empty() => {
                s.push_str(&format!("Host {}\n", d.ssh_host()));
                for (k, v) in pairs {
                    s.push_str(&resolved_line(k, v));
                }
            }
            _ => s.push_str(&format!("Host {}\n  HostName {}\n  Port {}\n", d.ssh_host(), d.host, p)),
        }
    }
    s.push_str("Host *\n");
    s.push_str("  BatchMode yes\n");
    s.push_str(&format!("  ConnectTimeout {}\n", settings.connect_timeout_s));
    let (interval, count) = keepalive(settings.node_timeout_s);
    s.push_str(&format!("  ServerAliveInterval {interval}\n  ServerAliveCountMax {count}\n"));
    if settings.control_persist_s > 0 {
        s.push_str("  ControlMaster auto\n");
        // A persisted master keeps the keepalive it was started with: name the socket after
        // it, so a run with another --node-timeout gets a master that honours it.
        let suffix = if group == 0 { String::new() } else { format!("-g{group}") };
        s.push_str(&format!("  ControlPath {}/cm-%C-k{interval}{suffix}\n", control_dir.display()));
        s.push_str(&format!("  ControlPersist {}\n", settings.control_persist_s));
    } else {
        s.push_str("  ControlMaster no\n  ControlPath none\n");
    }
    let includes: Vec<PathBuf> = match &settings.config_file {
        Some(f) => vec![absolute(f)],
        None => {
            let mut v = Vec::new();
            if let Some(home) = std::env::var_os("HOME") {
                v.push(Path::new(&home).join(".ssh/config"));
            }
            v.push(PathBuf::from("/etc/ssh/ssh_config"));
            v
        }
    };
    for inc in includes {
        // Include of a missing file is not an error for ssh; quote for spaces.
        s.push_str(&format!("Include \"{}\"\n", inc.display()));
    }
    s
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Writes the generated config (content-addressed, atomically) and returns its path.
pub fn write_config(settings: &SshSettings, nodes: &[Destination]) -> Result<PathBuf> {
    write_config_group(settings, nodes, 0)
}

/// Like `write_config`, for connection group `group` (see `config_text_resolved`).
pub fn write_config_group(settings: &SshSettings, nodes: &[Destination], group: usize) -> Result<PathBuf> {
    if let Some(f) = &settings.config_file {
        if !f.is_file() {
            return Err(Error::usage(format!("--ssh-config {}: no such file", f.display())));
        }
    }
    let dir = runtime_dir()?;
    let text = config_text_resolved(settings, nodes, &dir, group, &resolve_port_nodes(settings, nodes));
    let path = dir.join(format!("ssh_config-{:016x}", fnv1a(text.as_bytes())));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(dir.display(), e))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|e| Error::io(path.display(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(path.display(), e.error))?;
    }
    Ok(path)
}

/// A small stable hash for file names (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The ssh argv that runs `remote_command` (already quoted for a POSIX shell) on a node.
pub fn command_argv(config: &Path, dest: &Destination, remote_command: &str) -> Vec<String> {
    let mut v = vec!["ssh".to_string()];
    v.extend(base_options(config));
    v.push("--".into());
    v.push(dest.ssh_target());
    v.push(remote_command.to_string());
    v
}

/// Options shared by every ssh call (also rsync's `-e` and the xdist gateways' config).
pub fn base_options(config: &Path) -> Vec<String> {
    vec!["-F".into(), config.display().to_string()]
}

/// The `-e` value for rsync: ssh with our config and, when given, a cipher.
pub fn rsync_rsh(config: &Path, cipher: Option<&str>) -> String {
    let mut v = vec!["ssh".to_string()];
    v.extend(base_options(config));
    if let Some(c) = cipher {
        v.push("-c".into());
        v.push(c.into());
    }
    shell_words::join(v)
}

/// Quotes words for the remote POSIX shell that sshd starts.
pub fn remote_quote<S: AsRef<str>>(words: &[S]) -> String {
    shell_words::join(words.iter().map(|w| w.as_ref()))
}

/// Whether the shared connection (ControlMaster) to a node is gone, asked with `ssh -O
/// check`, as the glue's `_NodeFaults` does: `Some(ssh's words)` when it is gone, `None` when
/// it is up or there is none to ask (`ControlPath none`, `--control-persist 0`). After a
/// job's ssh exits 255, a gone master means the node was lost (its keepalive gave up, or the
/// connection broke), not a failure of that one session.
pub fn master_gone(config: &Path, dest: &Destination) -> Option<String> {
    let mut argv = vec!["ssh".to_string()];
    argv.extend(base_options(config));
    argv.extend(["-O".to_string(), "check".to_string(), "--".to_string(), dest.ssh_target()]);
    let out = crate::proc::Cmd::new(argv).deadline(std::time::Duration::from_secs(10)).output().ok()?;
    if out.status.success() {
        return None;
    }
    let words = out.stderr_trimmed();
    if words.contains("No ControlPath specified") || words.contains("ControlPath none") {
        return None;
    }
    Some(if words.is_empty() { "its shared ssh connection is gone".into() } else { words })
}

/// Closes the shared connection to a node (best effort), e.g. after a run that should not
/// leave a master behind.
pub fn close_master(config: &Path, dest: &Destination) {
    let mut argv = vec!["ssh".to_string()];
    argv.extend(base_options(config));
    argv.extend(["-O".to_string(), "exit".to_string(), dest.ssh_target()]);
    let _ = crate::proc::Cmd::new(argv).deadline(std::time::Duration::from_secs(5)).output();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Destination {
        Destination::parse(s).unwrap()
    }

    #[test]
    fn parses_user_host_port() {
        assert_eq!(d("node1"), Destination { user: None, host: "node1".into(), port: None });
        assert_eq!(
            d("bob@10.0.0.1:2222"),
            Destination { user: Some("bob".into()), host: "10.0.0.1".into(), port: Some(2222) }
        );
        assert_eq!(d("[::1]:22").host, "::1");
        assert_eq!(d("a@[fe80::1]").to_string(), "a@[fe80::1]");
        assert_eq!(d("bob@h:22").to_string(), "bob@h:22");
    }

    #[test]
    fn refuses_bad_nodes_with_a_reason() {
        for bad in ["", "a;rm -rf /", "a b", "-oProxyCommand=x", "h:0", "h:65536", "h:x", "@h", "a@", "h$(id)", "[zz]", "[::1", "h:", ".h"] {
            let err = Destination::parse(bad).expect_err(bad);
            assert!(err.contains("expected") || err.contains("port"), "{bad}: {err}");
        }
    }

    #[test]
    fn dedupes_first_seen_by_full_key() {
        let nodes = parse_nodes(["a b", "a", "bob@a", "a:22", "b"]).unwrap();
        let keys: Vec<String> = nodes.iter().map(|n| n.key()).collect();
        assert_eq!(keys, ["a", "b", "bob@a", "a:22"]);
    }

    #[test]
    fn empty_nodes_value_is_a_usage_error() {
        assert!(parse_nodes(["  "]).is_err());
    }

    #[test]
    fn config_puts_ours_first_then_includes_the_users() {
        let s = SshSettings { config_file: Some("/x/cfg".into()), connect_timeout_s: 7, control_persist_s: 60, node_timeout_s: 12 };
        let text = config_text(&s, &[d("n"), d("u@h:2200")], Path::new("/run/pc"));
        let host = text.find("Host pytest-cloud.h.2200").unwrap();
        let star = text.find("Host *").unwrap();
        let inc = text.find("Include \"/x/cfg\"").unwrap();
        assert!(host < star && star < inc, "{text}");
        assert!(text.contains("ConnectTimeout 7") && text.contains("ControlPath /run/pc/cm-%C-k3\n"), "{text}");
        assert!(text.contains("ServerAliveInterval 3\n  ServerAliveCountMax 3\n"), "{text}");
        assert!(!text.contains("StrictHostKeyChecking"), "host-key checking is the user's");
        assert_eq!(d("u@h:2200").ssh_target(), "u@pytest-cloud.h.2200");
    }

    /// What `ssh -G` says it would use for `args` (with the generated config written to a
    /// file): the keys that say who and where a node is.
    fn effective(config: &Path, args: &[&str]) -> Vec<String> {
        let out = std::process::Command::new("ssh").arg("-G").arg("-F").arg(config).args(args).output().expect("ssh (OpenSSH's client) runs");
        assert!(out.status.success(), "ssh -G {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let keys = ["user ", "hostname ", "port ", "identityfile ", "proxyjump ", "proxycommand "];
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| keys.iter().any(|k| l.starts_with(k))).map(String::from).collect()
    }

    /// A node given as `host:port` gets what `ssh -p PORT host` would get from the user's own
    /// config (`Host host`: User, IdentityFile, ProxyJump, even its HostName), checked with
    /// ssh -G; a node without a port is unchanged.
    #[test]
    fn a_node_with_a_port_keeps_the_users_host_block() {
        let t = tempfile::tempdir().unwrap();
        let user = t.path().join("user config");
        std::fs::write(
            &user,
            "Host realh\n  User bob\n  IdentityFile \"/keys/id bob\"\n  ProxyJump jumpy\n  HostName 10.1.2.3\n\
             Host viaproxy\n  ProxyCommand nc -X connect %h %p\nHost *\n  User alice\n",
        )
        .unwrap();
        let settings = SshSettings { config_file: Some(user.clone()), ..Default::default() };
        let nodes = [d("realh:2200"), d("carol@viaproxy:2201"), d("realh")];
        let text = config_text_resolved(&settings, &nodes, t.path(), 0, &resolve_port_nodes(&settings, &nodes));
        let generated = t.path().join("generated");
        std::fs::write(&generated, &text).unwrap();
        let user_s = user.display().to_string();
        for (node, plain) in [
            (&nodes[0], vec!["-p", "2200", "realh"]),
            (&nodes[1], vec!["-p", "2201", "carol@viaproxy"]),
            (&nodes[2], vec!["realh"]),
        ] {
            let mut plain_args = vec!["-F", user_s.as_str()];
            plain_args.extend(plain.iter().copied());
            let plain_said = std::process::Command::new("ssh").arg("-G").args(&plain_args).output().unwrap();
            let keys = ["user ", "hostname ", "port ", "identityfile ", "proxyjump ", "proxycommand "];
            let want: Vec<String> = String::from_utf8_lossy(&plain_said.stdout).lines().filter(|l| keys.iter().any(|k| l.starts_with(k))).map(String::from).collect();
            assert_eq!(effective(&generated, &[&node.ssh_target()]), want, "{node}: as `ssh {}`\n{text}", plain.join(" "));
        }
        assert!(effective(&generated, &[&nodes[0].ssh_target()]).contains(&"user bob".to_string()), "{text}");
    }

    #[test]
    fn keepalive_gives_up_within_the_node_timeout() {
        for t in MIN_NODE_TIMEOUT_S..100 {
            let (interval, count) = keepalive(t);
            assert!(interval >= 1 && count >= 1);
            assert!(interval * (count + 1) <= t, "{t}: {interval} x ({count} + 1)");
        }
        assert_eq!(keepalive(DEFAULT_NODE_TIMEOUT_S), (3, 3));
    }

    #[test]
    fn old_documents_without_a_node_timeout_get_the_default() {
        let s: SshSettings = serde_json::from_str(r#"{"config_file": null, "connect_timeout_s": 5, "control_persist_s": 300}"#).unwrap();
        assert_eq!(s.node_timeout_s, DEFAULT_NODE_TIMEOUT_S);
    }

    #[test]
    fn no_sharing_when_persist_is_zero() {
        let s = SshSettings { control_persist_s: 0, ..Default::default() };
        let text = config_text(&s, &[], Path::new("/r"));
        assert!(text.contains("ControlMaster no"));
    }

    #[test]
    fn remote_words_are_quoted() {
        assert_eq!(remote_quote(&["sh", "-c", "a b; c"]), "sh -c 'a b; c'");
    }

    #[test]
    fn labels_are_unique_within_the_nodes_and_readable_where_they_can_be() {
        let nodes: Vec<Destination> = ["bob@h", "bob_h", "node1", "bob_h.2", "bob@h:22", "bob_h_22"].map(d).to_vec();
        assert_eq!(labels(&nodes), ["bob_h", "bob_h.3", "node1", "bob_h.2", "bob_h_22", "bob_h_22.2"]);
        assert_eq!(labels(&nodes), labels(&nodes.clone()), "pure");
        assert_eq!(labels(&[d("a"), d("b")]), ["a", "b"]);
    }

    #[test]
    fn labels_are_id_safe() {
        assert_eq!(d("bob@h:22").label(), "bob_h_22");
        assert_eq!(d("node1").label(), "node1");
    }
}
