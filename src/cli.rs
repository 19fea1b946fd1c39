//! Command-line types (clap derive). Nothing outside `main.rs` and `src/cmd/` reads these, so
//! planning, schema and argv building stay usable from the launcher without clap.

use crate::options;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pytest-cloud",
    version,
    about = "Distributed test planner and runner for pytest: probe ssh nodes, plan workers, sync the project, run the suite.",
    long_about = "Distributed test planner and runner for pytest.\n\n\
        Each subcommand reads and writes JSON, so they pipe together:\n\n  \
        pytest-cloud probe --nodes 'node1 node2' | pytest-cloud plan --mem-per-process 500 \\\n    \
        | pytest-cloud sync | pytest-cloud exec -- python -m pytest -q\n\n\
        or run the whole thing as a py.test launcher:\n\n  \
        pytest-cloud pytest --cloud-nodes 'node1 node2' tests/ -k smoke\n\n\
        stdout carries data only; progress goes to stderr. Exit codes: 0 ok, 1 partial (some nodes \
        dropped or jobs failed), 64 usage, 65 bad input document, 66 no input, 69 no usable node, \
        72 missing tool, 74 I/O, 75 locked, 130 interrupted; the launcher passes pytest's code through."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe nodes over ssh, concurrently: CPUs, memory, Python, rsync. Writes an inventory.
    #[command(after_help = "Example:\n  pytest-cloud probe --nodes 'node1 bob@node2:2222' --ssh-config ~/.ssh/lab > inventory.json")]
    Probe(ProbeArgs),
    /// Plan test processes per node from an inventory on stdin. Writes a plan.
    #[command(after_help = "Example:\n  pytest-cloud probe --node node1 | pytest-cloud plan --mem-per-process 500 --explain")]
    Plan(PlanArgs),
    /// Rsync the project root (virtualenv included) to every planned node. Writes a sync document.
    #[command(after_help = "Example:\n  pytest-cloud probe --node node1 | pytest-cloud plan | pytest-cloud sync --source .")]
    Sync(SyncArgs),
    /// Run a command on every synced node or slot. Writes JSON Lines.
    #[command(after_help = "Example:\n  pytest-cloud sync < plan.json | pytest-cloud exec --per slot -- sh -c 'echo {node} {slot}/{slots}'")]
    Exec(ExecArgs),
    /// Remove the run trees a sync document holds on its nodes, with their leases.
    #[command(after_help = "Example:\n  pytest-cloud sync < plan.json > synced.json && pytest-cloud exec < synced.json -- make check && pytest-cloud release < synced.json")]
    Release(ReleaseArgs),
    /// Run pytest with its workers on the nodes: probe, plan, sync, then pytest-xdist.
    #[command(disable_help_flag = true, after_help = "Example:\n  pytest-cloud pytest --cloud-nodes 'node1 node2' --cloud-mem-per-process 500 tests/ -k smoke")]
    Pytest(PytestArgs),
    /// Print a shell completion script (generated from these very definitions) on stdout.
    #[command(after_help = "Examples:\n  \
        pytest-cloud completions bash > ~/.local/share/bash-completion/completions/pytest-cloud\n  \
        pytest-cloud completions zsh > ~/.zfunc/_pytest-cloud   # with fpath+=(~/.zfunc) in ~/.zshrc\n  \
        pytest-cloud completions fish > ~/.config/fish/completions/pytest-cloud.fish")]
    Completions(CompletionsArgs),
    /// Print the launcher's option table: the pytest plugin's copy is made from it (scripts/gen-share).
    #[command(hide = true, after_help = "Example:\n  pytest-cloud options --json | jq -r '.[].name'")]
    Options(OptionsArgs),
    /// Write the man pages (roff) into a directory; used by scripts/gen-share.
    #[command(hide = true, after_help = "Example:\n  pytest-cloud man share/man/man1 && man -l share/man/man1/pytest-cloud-plan.1")]
    Man(ManArgs),
}

/// ssh behaviour shared by every stage.
#[derive(Debug, Clone, Args)]
pub struct SshArgs {
    /// ssh config file used for every ssh call (as `ssh -F`); default: ssh's own
    /// (~/.ssh/config and /etc/ssh/ssh_config).
    #[arg(long, value_name = "FILE", env = "PYTEST_CLOUD_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,
    /// ssh ConnectTimeout in seconds (TCP connect and banner).
    #[arg(long, value_name = "SECS", value_parser = positive_u64)]
    pub connect_timeout: Option<u64>,
    /// Keep each node's shared ssh connection open this long after use; 0 = no sharing.
    #[arg(long, value_name = "SECS")]
    pub control_persist: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Node to probe: [user@]host[:port] or an ssh config alias. Repeatable.
    #[arg(long = "node", value_name = "NODE")]
    pub node: Vec<String>,
    /// Space-separated nodes. Repeatable.
    #[arg(long = "nodes", value_name = "'N1 N2 ...'")]
    pub nodes: Vec<String>,
    /// `--node` and `--nodes` values interleaved as they were given (filled in by main).
    #[arg(skip)]
    pub node_order: Vec<(bool, String)>,
    /// Also read nodes from a document on stdin (an inventory or {"kind":"nodes"}); implied
    /// when no --node/--nodes is given.
    #[arg(long)]
    pub stdin: bool,
    /// Python interpreter name or path to look for on each node (every python3.N on its PATH
    /// is reported too, as a candidate for running a virtualenv). Repeatable.
    #[arg(long = "python", value_name = "NAME", default_value = options::DEFAULT_PYTHON)]
    pub python: Vec<String>,
    /// Give up on a node after this many seconds in all (its ssh is killed).
    #[arg(long, value_name = "SECS", value_parser = positive_u64)]
    pub deadline: Option<u64>,
    #[command(flatten)]
    pub ssh: SshArgs,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Memory one test process needs, in MiB; caps slots at floor(available / this).
    #[arg(long, value_name = "MB", value_parser = positive_u64)]
    pub mem_per_process: Option<u64>,
    /// At most this many processes per node.
    #[arg(long, value_name = "N", value_parser = positive_u32)]
    pub max_processes: Option<u32>,
    /// Interpreter on the nodes (a name or an absolute path): the one to run without a
    /// virtualenv; with one, the one it must run on [default: the first compatible of the
    /// venv's own base, python3.X, python3, other python3.N].
    #[arg(long, value_name = "NAME")]
    pub python: Option<String>,
    /// Directory on each node, relative to the remote home
    /// [default: pytest_<local user>_<project root name>].
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<String>,
    /// The project's virtualenv, inside the project root [default: detected].
    #[arg(long, value_name = "PATH")]
    pub virtualenv_path: Option<PathBuf>,
    /// Project root [default: pytest's rootdir of the current directory].
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Print the arithmetic per node on stderr.
    #[arg(long)]
    pub explain: bool,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Project root to sync [default: the plan's source].
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Bandwidth limit per rsync process in KB/s; 0 = unlimited.
    #[arg(long, value_name = "KBPS", default_value_t = options::DEFAULT_RSYNC_BANDWIDTH_LIMIT_KBPS)]
    pub rsync_bandwidth_limit: u64,
    /// At most this many rsync processes at once [default: all nodes at once].
    #[arg(long, value_name = "N", value_parser = positive_u32)]
    pub rsync_max_processes: Option<u32>,
    /// ssh cipher for rsync; "" or "none" leaves the choice to ssh.
    #[arg(long, value_name = "CIPHER", default_value = options::DEFAULT_RSYNC_CIPHER)]
    pub rsync_cipher: String,
    /// Do not sync files matching this rsync pattern (also kept on the nodes). Repeatable.
    /// More rules, in rsync filter syntax, go in .pytest-cloud-ignore at the project root.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Sync .git directories too (excluded by default).
    #[arg(long)]
    pub include_git: bool,
    /// A package directory inside the project whose sources the nodes import from their
    /// synced copy (like `pip install -e`, with no pip or index on the node). Repeatable;
    /// adds to ini `cloud_develop_eggs`.
    #[arg(long = "develop-egg", value_name = "PATH")]
    pub develop_egg: Vec<PathBuf>,
    /// How each node gets its environment: sync (the venv travels with the project), build
    /// (the node builds one with uv for its own Python, cached there), auto (sync where the
    /// venv fits the node, build where it does not).
    #[arg(long, value_name = "auto|sync|build", default_value = "auto", value_parser = crate::envbuild::EnvMode::parse)]
    pub env: crate::envbuild::EnvMode,
    /// Build nodes install with no index: the controller fetches the wheels for each build
    /// node's platform and Python and sends them (nodes without internet). Without it, the
    /// wheelhouse is used only after a node's index cannot be reached.
    #[arg(long)]
    pub wheelhouse: bool,
    /// Wait this long for another run's lock on a node's directory before dropping the node.
    #[arg(long, value_name = "SECS", default_value_t = options::DEFAULT_LOCK_WAIT_S)]
    pub lock_wait: u64,
    /// Keep this run's tree on the nodes this long after the sync (and after each exec that
    /// uses it) before a later run may remove it; `pytest-cloud release` removes it at once.
    #[arg(long, value_name = "MINUTES", default_value_t = 30, value_parser = positive_u64)]
    pub keep_minutes: u64,
    #[command(flatten)]
    pub ssh: SshArgs,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// First keep the leases renewed while process PID lives (what the launcher runs beside
    /// pytest), then release.
    #[arg(long, value_name = "PID")]
    pub wait_pid: Option<u32>,
    /// No report on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// One job per node, or one per slot (worker) of each node.
    #[arg(long, value_enum, default_value_t = ExecPer::Node)]
    pub per: ExecPer,
    /// Jobs running at once [default: all of them].
    #[arg(long, value_name = "N", value_parser = positive_u32)]
    pub jobs: Option<u32>,
    /// Kill a job after this many seconds on its node; it is reported with `"timed_out": true`.
    #[arg(long, value_name = "SECS", value_parser = positive_u64)]
    pub timeout: Option<u64>,
    /// Bytes of each job's stdout and stderr kept in its record (the last ones).
    #[arg(long, value_name = "N", default_value_t = options::DEFAULT_TAIL_BYTES)]
    pub tail_bytes: u64,
    /// Save each job's full stdout and stderr as DIR/<job>/stdout and DIR/<job>/stderr
    /// (their paths are in the records).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub ssh: SshArgs,
    /// No progress on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// The command to run, after `--`, as words: each reaches the node as one word.
    /// {node} {slot} {slots} {worker} {dir} {python} are replaced per job.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// How `exec` splits the work into jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecPer {
    /// One job per node.
    Node,
    /// One job per slot: `slots` jobs on each node.
    Slot,
}

#[derive(Debug, Clone, Args)]
pub struct PytestArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

pub fn positive_u64(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 && n <= u64::MAX as i128 => Ok(n as u64),
        Ok(_) => Err(format!("{s:?} must be a whole number of 1 or more (omit the option for no limit)")),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

pub fn positive_u32(s: &str) -> Result<u32, String> {
    let n = positive_u64(s)?;
    u32::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

// ---- completions and man (packaging) ----

/// Shells `pytest-cloud completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// Shell to write the completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Debug, Clone, Args)]
pub struct OptionsArgs {
    /// The table as JSON (the default).
    #[arg(long, conflicts_with = "plugin_module")]
    pub json: bool,
    /// The table as the plugin's generated module (share/pytest-cloud-plugin/src/pytest_cloud/options.py).
    #[arg(long)]
    pub plugin_module: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Directory to write pytest-cloud.1 and pytest-cloud-<subcommand>.1 into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}
