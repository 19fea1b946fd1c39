//! The options and defaults, in one place. The defaults below are what clap shows and applies
//! (`src/cli.rs`), what the engines start from (`SyncOptions::default`, `SshSettings::default`)
//! and what [`cloud_options`] prints. [`cloud_options`] is the launcher's `--cloud-*` table:
//! its parser and `--cloud-help` (`src/cmd/pytest.rs`), its man page (`src/cmd/man.rs`) and the
//! pytest plugin (`share/pytest-cloud-plugin/src/pytest_cloud/options.py`, generated from
//! `pytest-cloud options --plugin-module` by `scripts/gen-share`) all read it; `tests/generated.rs`
//! fails while the plugin's copy is stale and `tests/docs.rs` while the README's table differs.

use serde::Serialize;

/// The interpreter the probe looks for on the nodes.
pub const DEFAULT_PYTHON: &str = "python3";
/// KiB/s per rsync process; 0 = unlimited.
pub const DEFAULT_RSYNC_BANDWIDTH_LIMIT_KBPS: u64 = 5000;
/// The ssh cipher rsync's ssh asks for (cheap on CPUs with AES instructions).
pub const DEFAULT_RSYNC_CIPHER: &str = "aes128-gcm@openssh.com";
/// ssh's ConnectTimeout.
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;
/// How long a node's shared ssh connection stays open after use.
pub const DEFAULT_CONTROL_PERSIST_S: u64 = 300;
/// How long sync waits for another run's lock on a node's directory.
pub const DEFAULT_LOCK_WAIT_S: u64 = 60;
/// A node lock older than this is taken over where its holder line names no `ttl_min` (a
/// pytest-cloud without the lock heartbeat, src/engine/sync/beat.rs).
pub const DEFAULT_LOCK_STALE_S: u64 = 3600;
/// Bytes of each exec job's stdout and stderr kept in its record.
pub const DEFAULT_TAIL_BYTES: u64 = 4096;

/// What a `--cloud-*` option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One node, or (for `--cloud-nodes`) a space-separated list; repeatable, in order.
    Nodes,
    Text,
    Path,
    /// A whole number.
    Integer,
    /// Repeatable path.
    Paths,
    /// No value.
    Flag,
}

/// One `--cloud-*` option of the launcher (and of the plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudOption {
    pub name: &'static str,
    pub kind: Kind,
    /// The value's name in help; None for a flag.
    pub metavar: Option<&'static str>,
    pub help: &'static str,
    /// Shown as `[default: ...]`.
    pub default: Option<String>,
    /// The pytest plugin registers it on `py.test` (develop eggs come from its ini option
    /// there; `--cloud-prepare` is how the plugin calls the binary).
    pub plugin: bool,
}

impl CloudOption {
    pub fn takes_value(&self) -> bool {
        self.kind != Kind::Flag
    }

    /// The help with its default, as `--cloud-help`, the man page and the plugin show it.
    pub fn help_line(&self) -> String {
        match &self.default {
            Some(d) => format!("{} [default: {d}]", self.help),
            None => self.help.to_string(),
        }
    }
}

/// The launcher's `--cloud-*` options, in the order `--cloud-help` lists them.
pub fn cloud_options() -> Vec<CloudOption> {
    let o = |name, kind, metavar, help, default: Option<String>, plugin| CloudOption { name, kind, metavar, help, default, plugin };
    let given = |s: &str| Some(s.to_string());
    vec![
        o("--cloud-node", Kind::Nodes, Some("NODE"), "node to run tests on: [user@]host[:port] or an ssh alias; repeatable", None, true),
        o("--cloud-nodes", Kind::Nodes, Some("'NODE NODE ...'"), "space-separated nodes; repeatable", None, true),
        o("--cloud-python", Kind::Text, Some("NAME"), "interpreter on the nodes (name, absolute path, or a version: 3.12 = python3.12) the venv must run on, or a node-built env is made for; unset: the first compatible of the venv's own base, python3.X, python3", given(DEFAULT_PYTHON), true),
        o("--cloud-env", Kind::Text, Some("auto|sync|build"), "how each node gets its environment: sync (your venv travels), build (the node builds one with uv for its own Python), auto (sync where the venv fits the node, build where it does not)", given("auto"), true),
        o("--cloud-wheelhouse", Kind::Flag, None, "build nodes install with no index: the controller fetches the wheels for each node's platform and Python and sends them (for nodes without internet; without it, only after a node's index cannot be reached)", None, true),
        o("--cloud-chdir", Kind::Text, Some("DIR"), "directory on the nodes, relative to the remote home", given("pytest_<user>_<project>"), true),
        o("--cloud-virtualenv-path", Kind::Path, Some("PATH"), "the project's virtualenv, inside the project", given("$VIRTUAL_ENV, .venv, venv"), true),
        o("--cloud-mem-per-process", Kind::Integer, Some("MB"), "MiB one test process needs; caps processes per node", None, true),
        o("--cloud-max-processes", Kind::Integer, Some("N"), "at most this many processes per node", None, true),
        o("--cloud-rsync-bandwidth-limit", Kind::Integer, Some("KBPS"), "KB/s per rsync process, 0 = unlimited", Some(DEFAULT_RSYNC_BANDWIDTH_LIMIT_KBPS.to_string()), true),
        o("--cloud-rsync-max-processes", Kind::Integer, Some("N"), "rsync processes at once", given("all nodes"), true),
        o("--cloud-rsync-cipher", Kind::Text, Some("CIPHER"), "ssh cipher for rsync", given(DEFAULT_RSYNC_CIPHER), true),
        o("--cloud-ssh-config", Kind::Path, Some("FILE"), "ssh config file for every ssh call", given("ssh's own"), true),
        o("--cloud-connect-timeout", Kind::Integer, Some("SECS"), "ssh ConnectTimeout in seconds", Some(DEFAULT_CONNECT_TIMEOUT_S.to_string()), true),
        o("--cloud-node-timeout", Kind::Integer, Some("SECS"), "a node that answers nothing for this many seconds is lost and its tests run on the others (at least 4)", Some(crate::ssh::DEFAULT_NODE_TIMEOUT_S.to_string()), true),
        o("--cloud-develop-egg", Kind::Paths, Some("DIR"), "package directory inside the project to install in develop mode on the nodes; repeatable", None, false),
        o("--cloud-timings", Kind::Flag, None, "print how long each phase took (probe, plan, sync, worker start, tests, teardown) as one JSON line on stderr", None, true),
        o("--cloud-prepare", Kind::Flag, None, "probe, plan and sync, then print a session document instead of running pytest", None, false),
        o("--cloud-quiet", Kind::Flag, None, "no header or progress on stderr", None, false),
        o("--cloud-help", Kind::Flag, None, "this help", None, false),
    ]
}

/// The table as JSON (`pytest-cloud options --json`).
pub fn to_json() -> String {
    let mut s = serde_json::to_string_pretty(&cloud_options()).expect("the table serializes");
    s.push('\n');
    s
}

/// The plugin's copy of the table, a Python module (`pytest-cloud options --plugin-module`),
/// so the plugin registers the options whether or not the binary is installed.
pub fn plugin_module() -> String {
    let json = serde_json::to_string_pretty(&cloud_options()).expect("the table serializes");
    assert!(!json.contains("'''"), "the table must not contain ''' (it is put in a Python string)");
    format!(
        "# Generated by `pytest-cloud options --plugin-module` (scripts/gen-share) from the binary's\n\
         # option table, src/options.rs. Do not edit: tests/generated.rs fails while it is stale.\n\
         \"\"\"The launcher's --cloud-* options: name, kind, metavar, help, default, plugin.\"\"\"\n\n\
         import json\n\n\
         OPTIONS = json.loads(r'''{json}''')\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_cloud_options_and_values_have_a_metavar() {
        let all = cloud_options();
        for (i, o) in all.iter().enumerate() {
            assert!(o.name.starts_with("--cloud-"), "{}", o.name);
            assert!(!all[..i].iter().any(|p| p.name == o.name), "{} twice", o.name);
            assert_eq!(o.metavar.is_some(), o.takes_value(), "{}", o.name);
        }
        let bw = all.iter().find(|o| o.name == "--cloud-rsync-bandwidth-limit").unwrap();
        assert_eq!(bw.help_line(), "KB/s per rsync process, 0 = unlimited [default: 5000]");
    }

    #[test]
    fn the_plugin_module_carries_the_table_as_json() {
        let m = plugin_module();
        let json = &m[m.find("r'''").unwrap() + 4..m.rfind("'''").unwrap()];
        let back: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, serde_json::to_value(cloud_options()).unwrap());
    }
}
