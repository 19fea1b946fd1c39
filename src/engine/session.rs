//! The launcher's engine: probe -> plan -> sync in-process (the same functions as the
//! subcommands), then the session that points pytest-xdist at the synced nodes, and the
//! controller's argv and environment. The subcommand is `src/cmd/pytest.rs`.

use super::say;
use crate::error::{Error, Exit, Outcome, Result, one_line};
use crate::project;
use crate::engine::sync::{self, SyncEvent};
use crate::schema::{self, Plan, PlannedNode, Session, SyncDoc, XdistArgs};
use crate::ssh::{self, SshSettings};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The glue loaded into the controller (and only there): see its docstring.
pub const GLUE_PY: &str = include_str!("../../share/pytest-cloud-plugin/src/pytest_cloud/glue.py");
/// The duration-aware scheduler the glue imports (written beside it as `pytest_cloud_sched`).
pub const SCHED_PY: &str = include_str!("../../share/pytest-cloud-plugin/src/pytest_cloud/sched.py");

/// sshd's default MaxSessions: sessions one shared connection may carry.
pub const SESSIONS_PER_CONNECTION: usize = 10;

/// The launcher's own options; everything else goes to pytest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudOptions {
    /// `--cloud-node` / `--cloud-nodes` values in the order given.
    pub nodes: Vec<String>,
    pub python: Option<String>,
    pub env: crate::envbuild::EnvMode,
    /// `--cloud-wheelhouse`: build nodes install from the controller's wheels, no index.
    pub wheelhouse: bool,
    pub chdir: Option<String>,
    pub virtualenv_path: Option<PathBuf>,
    pub mem_per_process_mb: Option<u64>,
    pub max_processes: Option<u32>,
    pub rsync_bandwidth_limit_kbps: Option<u64>,
    pub rsync_max_processes: Option<u32>,
    pub rsync_cipher: Option<String>,
    pub ssh_config: Option<PathBuf>,
    pub connect_timeout_s: Option<u64>,
    pub node_timeout_s: Option<u64>,
    pub develop_eggs: Vec<PathBuf>,
    pub timings: bool,
    pub prepare: bool,
    pub quiet: bool,
    pub help: bool,
}

/// Whether the user chose a distribution mode (`--dist X`, `--dist=X`, `-d`).
pub fn has_dist_choice(args: &[String]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| a == "--dist" || a.starts_with("--dist=") || a == "-d" || a.starts_with("--distload"))
}

pub fn has_option(args: &[String], name: &str) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| a == name || a.starts_with(&format!("{name}=")))
}

/// One `--tx` per worker: `ssh=<target>//ssh_config=<cfg>//python=<py>//chdir=<dir>//id=<worker>`.
/// Workers of a node share one ssh connection; past sshd's MaxSessions a node's workers are
/// spread over further connections (a config per group, differing only in ControlPath).
pub fn xdist_specs(nodes: &[PlannedNode], config_for_group: &dyn Fn(usize) -> Result<PathBuf>) -> Result<Vec<String>> {
    let mut tx = Vec::new();
    for n in nodes {
        let dest = &n.node;
        for (i, worker) in n.workers.iter().enumerate() {
            let cfg = config_for_group(i / SESSIONS_PER_CONNECTION)?;
            for (what, v) in [("remote_dir", &n.remote_dir), ("python", &n.python), ("worker", worker)] {
                if v.contains("//") || v.contains(char::is_whitespace) {
                    return Err(Error::usage(format!("{what} {v:?} of node {} cannot travel in an xdist spec (no '//' or spaces)", n.node)));
                }
            }
            tx.push(format!(
                "ssh={}//ssh_config={}//python={}//chdir={}//id={}",
                dest.ssh_target(),
                cfg.display(),
                n.python,
                n.remote_dir,
                worker
            ));
        }
    }
    Ok(tx)
}

/// Opens the shared connection of every connection group past the first (group 0's is the
/// one probe and sync used) before pytest starts: xdist starts all gateways at once, and the
/// gateways of a group without a master would each race to create it (an extra handshake
/// each, "ControlSocket ... already exists, disabling multiplexing"). One `ssh ... true` per
/// group, all groups at once (each has its own ControlPath, so they do not race). A group that
/// cannot be opened is left to its gateways, which then say why.
fn open_group_masters(nodes: &[PlannedNode], settings: &ssh::SshSettings, config_for_group: &dyn Fn(usize) -> Result<PathBuf>) -> Result<()> {
    if settings.control_persist_s == 0 {
        return Ok(()); // no sharing: every gateway has its own connection anyway
    }
    let mut todo = Vec::new();
    for n in nodes {
        let groups = (n.slots as usize).div_ceil(SESSIONS_PER_CONNECTION);
        for g in 1..groups {
            todo.push((n.node.clone(), config_for_group(g)?));
        }
    }
    let deadline = std::time::Duration::from_secs(settings.connect_timeout_s + 10);
    std::thread::scope(|s| {
        for (dest, cfg) in &todo {
            s.spawn(move || {
                let _ = crate::proc::Cmd::new(ssh::command_argv(cfg, dest, "true")).deadline(deadline).output();
            });
        }
    });
    Ok(())
}

/// What the launcher knows before it touches a node: checked first, so that a usage error
/// (exit 64) comes before anything starts.
pub struct LocalSetup {
    nodes: Vec<ssh::Destination>,
    root: PathBuf,
    venv: project::Venv,
    local_python: PathBuf,
    settings: SshSettings,
}

/// The nodes, the project root, its venv and the ssh settings.
pub fn local_setup(opts: &CloudOptions) -> Result<LocalSetup> {
    if opts.nodes.is_empty() {
        return Err(Error::usage("no nodes given: use --cloud-node HOST or --cloud-nodes 'H1 H2'"));
    }
    let nodes = ssh::parse_nodes(opts.nodes.iter().map(String::as_str))?;
    let root = project::project_root(None)?;
    let virtual_env = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    let venv = project::find_venv(&root, opts.virtualenv_path.as_deref(), virtual_env.as_deref())?.ok_or_else(|| {
        Error::usage(format!(
            "no virtualenv in the project root {}: pytest-cloud syncs the project's own venv to the nodes. \
             Create one (python3 -m venv .venv) or name it with --cloud-virtualenv-path",
            root.display()
        ))
    })?;
    let local_python = root.join(&venv.rel).join("bin/python");
    let mut settings = SshSettings::default();
    settings.override_with(opts.ssh_config.as_deref(), opts.connect_timeout_s, None);
    if let Some(t) = opts.node_timeout_s {
        settings.node_timeout_s = t;
    }
    Ok(LocalSetup { nodes, root, venv, local_python, settings })
}

/// probe -> plan -> sync, in-process. Returns the session that runs pytest.
pub fn prepare(opts: &CloudOptions, pytest_args: &[String]) -> Result<Session> {
    let setup = local_setup(opts)?;
    prepare_with(setup, opts, pytest_args, None)
}

/// [`prepare`] from a [`LocalSetup`]. `lease_pid`: the pytest that holds the run trees'
/// leases, when the caller keeps them itself (the early controller's hand-over); None: this
/// process (which becomes pytest) or, with `--cloud-prepare`, its parent, with a lease keeper
/// started here.
pub fn prepare_with(setup: LocalSetup, opts: &CloudOptions, pytest_args: &[String], lease_pid: Option<u32>) -> Result<Session> {
    let quiet = opts.quiet;
    let mut timings = std::collections::BTreeMap::new();
    let LocalSetup { nodes, root, venv, local_python, settings } = setup;
    say(quiet, format!("pytest-cloud: project {} (virtualenv {}: {})", root.display(), venv.rel.display(), venv.why));
    let mut sync_opts = sync_options(opts);
    // The run trees' leases are held by the process that lives as long as the run: pytest,
    // which is this process after exec, or the plugin's pytest that asked for a session.
    let keeper_here = lease_pid.is_none();
    let lease_pid = lease_pid.unwrap_or_else(|| if opts.prepare { std::os::unix::process::parent_id() } else { std::process::id() });
    sync_opts.lease_pid = lease_pid;
    sync_opts.lease_ttl_min = crate::engine::lease::PROCESS_TTL_MIN;
    sync_opts.venv = Some(venv.rel.to_string_lossy().into_owned());
    let pythons = probe_pythons(opts.python.as_deref(), &root.join(&venv.rel));
    // The plan's options read of the inventory only the first interpreter the probe asks for,
    // so they are known now; so is everything the sync does locally (sync::prepare: the local
    // facts, the tools, the manifest walk and, when the tree changed, GNU parallel starting),
    // which runs on its own thread while the probe waits for the nodes.
    let t = Instant::now();
    let options = crate::engine::plan::resolve_options(
        &root,
        opts.mem_per_process_mb,
        opts.max_processes,
        opts.python.clone(),
        opts.chdir.clone(),
        Some(&root.join(&venv.rel)),
        pythons.first().map(String::as_str),
    )?;
    let mut plan_ms = t.elapsed().as_millis() as u64;
    let t = Instant::now();
    let deadline = std::time::Duration::from_secs(settings.connect_timeout_s + 15);
    let source = root.display().to_string();
    let (inventory, prepared) = std::thread::scope(|s| {
        let prepared = s.spawn(|| sync::prepare(&source, &options, &settings, &nodes, &sync_opts, true));
        let inventory = crate::engine::probe::probe_nodes(&nodes, &settings, &pythons, deadline, &|_| {});
        (inventory, prepared.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    let inventory = inventory?;
    timings.insert("probe".to_string(), t.elapsed().as_millis() as u64);

    let t = Instant::now();
    let (plan, _) = crate::engine::plan::make_plan(&inventory, options, &root);
    plan_ms += t.elapsed().as_millis() as u64;
    timings.insert("plan".to_string(), plan_ms);
    if plan.nodes.is_empty() {
        crate::engine::plan::report(&plan, false);
        return Err(Error::new(Exit::NoNodes, "no node is left to run tests on"));
    }

    let t = Instant::now();
    let synced = sync_for_launcher(&plan, prepared, quiet)?;
    timings.insert("sync".to_string(), t.elapsed().as_millis() as u64);
    if keeper_here {
        start_keeper(&synced, lease_pid, opts.prepare);
    }

    let mut header = Vec::new();
    for n in &synced.nodes {
        header.push(match &n.env {
            Some(e) if e.strategy == schema::EnvStrategy::Build => build_line(&n.planned, e, &synced),
            _ => node_line(&n.planned, n.interpreter.as_ref()),
        });
    }
    for d in &synced.dropped {
        header.push(format!("{}: dropped at {} ({}: {})", d.node, d.stage, d.error_kind.as_str(), one_line(&d.message)));
    }
    for line in &header {
        say(quiet, format!("pytest-cloud: {line}"));
    }
    if synced.nodes.is_empty() {
        // sync's own rule: 75 when every node it tried was locked by another run, else 69.
        return Err(match sync::outcome(&synced) {
            Outcome::Code(c) if c == Exit::Busy.code() => Error::new(
                Exit::Busy,
                "every node's directory is locked by another run (see above); try again when it is done",
            ),
            _ => Error::new(Exit::NoNodes, "none of the given nodes can run tests (see the reasons above)"),
        });
    }
    let planned: Vec<PlannedNode> = synced.nodes.iter().map(|n| n.planned.clone()).collect();

    let group_configs = |g: usize| -> Result<PathBuf> { ssh::write_config_group(&plan.inventory.ssh, &nodes, g) };
    let tx = xdist_specs(&planned, &group_configs)?;
    open_group_masters(&planned, &plan.inventory.ssh, &group_configs)?;
    let workers = tx.len();
    let dist = if has_dist_choice(pytest_args) { String::new() } else { "load".to_string() };
    let glue_dir = write_glue()?;
    let mut env = std::collections::BTreeMap::new();
    env.insert("PYTEST_CLOUD_ROOTDIR".to_string(), root.display().to_string());
    env.insert("PYTEST_CLOUD_GLUE_DIR".to_string(), glue_dir.display().to_string());
    env.insert("PYTEST_CLOUD_NODE_TIMEOUT".to_string(), settings.node_timeout_s.to_string());
    Ok(Session {
        format_version: schema::FORMAT_VERSION,
        kind: "session".into(),
        created_by: schema::created_by(),
        rootdir: root.display().to_string(),
        python: local_python.display().to_string(),
        // Each crash (a lost node costs one per worker, and a replacement that cannot connect
        // costs more) counts against this bound; xdist stops everything when it is passed,
        // so allow a few per worker without ever looping forever (share/doc/xdist-notes.md).
        xdist: XdistArgs { tx, dist, max_worker_restart: 4 * workers },
        env,
        header,
        timings_ms: timings,
        sync: synced,
    })
}

/// What the probe looks for on the nodes: the pinned interpreter, or `python3` and the venv's
/// own base interpreter path (used as it is where a node has it; the probe adds every
/// `python3.N` on the node's PATH itself).
fn probe_pythons(pinned: Option<&str>, venv: &Path) -> Vec<String> {
    match pinned {
        Some(p) => vec![p.to_string()],
        None => {
            let mut v = vec![crate::options::DEFAULT_PYTHON.to_string()];
            if let Ok(base) = crate::venv::base_interpreter(venv) {
                if base.path != "python3" {
                    v.push(base.path);
                }
            }
            v
        }
    }
}

/// `node1: 2 slots, CPython 3.11.2 /usr/bin/python3.11 (venv made from 3.11.7); workers node1-0 node1-1`
pub fn node_line(n: &PlannedNode, interpreter: Option<&schema::NodeInterpreter>) -> String {
    let python = match interpreter {
        Some(i) => {
            let made = if !i.rebased {
                String::new()
            } else if i.version != i.venv_base_version {
                format!(" (venv made from {})", i.venv_base_version)
            } else {
                format!(" (venv made from {} {})", i.venv_base_version, i.venv_base_path)
            };
            format!(", {} {} {}{made}", i.implementation, i.version, i.path)
        }
        None => String::new(),
    };
    format!("{}: {} slots{python}; workers {}", n.node, n.slots, n.workers.join(" "))
}

/// `node1: 2 slots, env built for CPython 3.11.2 /usr/bin/python3 from uv.lock (your venv: 3.12.1); workers node1-0 node1-1`
pub fn build_line(n: &PlannedNode, e: &schema::NodeEnv, doc: &SyncDoc) -> String {
    let venv_version = doc
        .virtualenv_path
        .as_ref()
        .and_then(|v| crate::venv::base_interpreter(&Path::new(&doc.source).join(v)).ok())
        .map(|b| format!(" (your venv: {})", b.version))
        .unwrap_or_default();
    let how = match (e.built, e.wheelhouse, e.index_failed) {
        (true, true, true) => "env built from the controller's wheels (the node reaches no index)",
        (true, true, false) => "env built from the controller's wheels (no index tried)",
        (true, false, _) => "env built",
        (false, _, _) => "env (cached on the node) built",
    };
    format!(
        "{}: {} slots, {how} for CPython {} {} {}{venv_version}; workers {}",
        n.node,
        n.slots,
        e.python_version.as_deref().unwrap_or("?"),
        e.python.as_deref().unwrap_or("?"),
        crate::engine::sync::describe_source(e.source.as_deref().unwrap_or("venv")),
        n.workers.join(" ")
    )
}

fn sync_options(opts: &CloudOptions) -> crate::engine::sync::SyncOptions {
    use crate::engine::sync::SyncOptions;
    let mut sync_opts = SyncOptions { develop_eggs: opts.develop_eggs.clone(), env: opts.env, wheelhouse: opts.wheelhouse, ..SyncOptions::default() };
    if let Some(bw) = opts.rsync_bandwidth_limit_kbps {
        sync_opts.bwlimit_kbps = bw;
    }
    sync_opts.max_processes = opts.rsync_max_processes;
    if let Some(c) = &opts.rsync_cipher {
        sync_opts.cipher = match c.trim() {
            "" | "none" => None,
            c => Some(c.to_string()),
        };
    }
    sync_opts
}

fn sync_for_launcher(plan: &Plan, prepared: sync::Prepared, quiet: bool) -> Result<SyncDoc> {
    let progress = |e: &SyncEvent| match e {
        SyncEvent::Info(line) => say(quiet, format!("pytest-cloud: {line}")),
        SyncEvent::Waiting { node, holder } => say(quiet, format!("pytest-cloud: {node}: waiting for the lock held by {holder}")),
        _ => {}
    };
    sync::sync_prepared(plan, prepared, &progress)
}

/// Starts `pytest-cloud release --wait-pid PID` beside the run: it renews the run trees' leases
/// while PID (pytest) lives, then removes the trees. Started from the launcher, it keeps the
/// launcher's stdout and stderr, so whoever reads them to their end (a pipe, a test) sees the
/// nodes clean when they close; for the plugin (`--cloud-prepare`), whose pytest reads this
/// process's output, it holds none. If it cannot start, the trees are reaped by a later run
/// once PID is gone (share/doc/sync-safety.md).
fn start_keeper(sync_doc: &schema::SyncDoc, pid: u32, detached: bool) {
    use std::io::Write;
    use std::process::Stdio;
    let Ok(exe) = std::env::current_exe() else { return };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["release", "--wait-pid", &pid.to_string()]).stdin(Stdio::piped());
    if detached {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    match cmd.spawn() {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(schema::to_pretty(sync_doc).as_bytes());
            }
        }
        Err(e) => eprintln!("pytest-cloud: warning: could not start the lease keeper ({e}); the run trees are removed by a later run"),
    }
}

/// Writes the glue module into the private runtime dir (content-addressed) and returns the
/// directory to put on the controller's PYTHONPATH.
pub fn write_glue() -> Result<PathBuf> {
    let both = format!("{GLUE_PY}\0{SCHED_PY}");
    let dir = ssh::runtime_dir()?.join(format!("glue-{:016x}", ssh::fnv1a(both.as_bytes())));
    for (name, text) in [("pytest_cloud_glue.py", GLUE_PY), ("pytest_cloud_sched.py", SCHED_PY)] {
        let file = dir.join(name);
        if std::fs::read_to_string(&file).ok().as_deref() != Some(text) {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
            let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(dir.display(), e))?;
            tmp.write_all(text.as_bytes()).map_err(|e| Error::io(file.display(), e))?;
            tmp.persist(&file).map_err(|e| Error::io(file.display(), e.error))?;
        }
    }
    Ok(dir)
}

/// The controller's argv: the project's python running pytest with the user's arguments and
/// the workers.
pub fn controller_argv(session: &Session, pytest_args: &[String]) -> Vec<String> {
    let mut argv = vec![session.python.clone(), "-m".into(), "pytest".into()];
    // Ours go first so that a user's `--` (everything after it positional) stays last.
    for tx in &session.xdist.tx {
        argv.push("--tx".into());
        argv.push(tx.clone());
    }
    if !session.xdist.dist.is_empty() {
        argv.push(format!("--dist={}", session.xdist.dist));
    }
    if !has_option(pytest_args, "--max-worker-restart") && !has_option(pytest_args, "--maxworkerrestart") {
        argv.push(format!("--max-worker-restart={}", session.xdist.max_worker_restart));
    }
    argv.extend(pytest_args.iter().cloned());
    argv
}

/// The controller's command: `argv` with the glue on PYTHONPATH and in PYTEST_PLUGINS and the
/// glue's settings in the environment.
fn controller_command(argv: &[String], rootdir: &str, glue_dir: &str, node_timeout: Option<&str>, dist_defaulted: bool) -> std::process::Command {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let pythonpath = match std::env::var("PYTHONPATH") {
        Ok(p) if !p.is_empty() => format!("{glue_dir}:{p}"),
        _ => glue_dir.to_string(),
    };
    let plugins = match std::env::var("PYTEST_PLUGINS") {
        Ok(p) if !p.is_empty() => format!("{p},pytest_cloud_glue"),
        _ => "pytest_cloud_glue".to_string(),
    };
    cmd.env("PYTHONPATH", pythonpath).env("PYTEST_PLUGINS", plugins).env("PYTEST_CLOUD_ROOTDIR", rootdir);
    if let Some(t) = node_timeout {
        cmd.env("PYTEST_CLOUD_NODE_TIMEOUT", t);
    }
    // `--dist load` was our default, not the user's choice: the glue may schedule by the
    // recorded durations instead (share/pytest-cloud-plugin/src/pytest_cloud/sched.py).
    cmd.env("PYTEST_CLOUD_DIST_DEFAULTED", if dist_defaulted { "1" } else { "0" });
    cmd
}

pub fn exec_pytest(session: &Session, opts: &CloudOptions, pytest_args: &[String]) -> Result<Outcome> {
    use std::os::unix::process::CommandExt;
    let argv = controller_argv(session, pytest_args);
    let mut cmd = controller_command(
        &argv,
        &session.rootdir,
        &session.env["PYTEST_CLOUD_GLUE_DIR"],
        session.env.get("PYTEST_CLOUD_NODE_TIMEOUT").map(String::as_str),
        !session.xdist.dist.is_empty(),
    );
    if opts.timings {
        let mut phases: std::collections::BTreeMap<String, u64> = session.timings_ms.clone();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        phases.insert("exec_at_ms".into(), now_ms);
        cmd.env("PYTEST_CLOUD_TIMINGS", serde_json::to_string(&phases).unwrap_or_default());
    }
    // exec: from here pytest is this process; its exit code and signals are ours.
    let err = cmd.exec();
    Err(Error::new(
        if err.kind() == std::io::ErrorKind::NotFound { Exit::MissingTool } else { Exit::Io },
        format!("could not start the project's pytest `{}`: {err}", argv[0]),
    ))
}

/// The early controller (share/doc/performance.md): the Unix socket on which the launcher's
/// own child hands the synced nodes to the pytest that started while they were synced, and
/// that child's process group (the glue passes a SIGINT meant for the launcher on to it).
pub const HANDOVER_ENV: &str = "PYTEST_CLOUD_HANDOVER";
pub const HANDOVER_PGID_ENV: &str = "PYTEST_CLOUD_HANDOVER_PGID";
/// Set on that child: the pid of the pytest it prepares the nodes for.
pub const PREPARE_FOR_ENV: &str = "PYTEST_CLOUD_PREPARE_FOR";
/// `0` turns the early controller off (probe, plan and sync first, then exec, as before):
/// for A/B measurements and as a way out.
pub const EARLY_CONTROLLER_ENV: &str = "PYTEST_CLOUD_EARLY_CONTROLLER";

pub fn early_controller_enabled() -> bool {
    std::env::var(EARLY_CONTROLLER_ENV).map(|v| v.trim() != "0").unwrap_or(true)
}

/// The launcher with the early controller: checks what it can locally, starts its own child
/// (`pytest-cloud pytest` again, with [`PREPARE_FOR_ENV`]) to probe, plan and sync, and
/// replaces itself with pytest at once, so the interpreter, the imports, the plugins and the
/// conftests load while the nodes are synced. The glue waits for the child's hand-over before
/// pytest's main starts (`pytest_cmdline_main`): the `--tx` specs, or the exit code the child
/// ended with (64, 69, 75, 130...), with which pytest then exits without a word. pytest keeps
/// the launcher's pid, so its exit code and signals are the user's as before.
pub fn launch_early(opts: &CloudOptions, launcher_args: &[String], pytest_args: &[String]) -> Result<Outcome> {
    use std::os::unix::process::CommandExt;
    let setup = local_setup(opts)?;
    let venv_dir = setup.root.join(&setup.venv.rel);
    if !crate::venv::site_packages(&venv_dir).iter().any(|s| venv_dir.join(s).join("pytest/__init__.py").is_file()) {
        // An early pytest would only say it is missing, before the nodes say what they have to
        // say (a lock, no usable node): probe, plan and sync first, as without it.
        let session = prepare_with(setup, opts, pytest_args, None)?;
        return exec_pytest(&session, opts, pytest_args);
    }
    let glue_dir = write_glue()?;
    let socket = ssh::runtime_dir()?.join(format!("handover-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(|e| Error::io(format!("binding {}", socket.display()), e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the pytest-cloud binary", e))?;
    // Its own process group: a terminal's Ctrl-C reaches pytest, and the glue passes it on to
    // this group exactly once (so does a SIGINT sent to the launcher's pid alone).
    let child = std::process::Command::new(exe)
        .arg("pytest")
        .args(launcher_args)
        .env(PREPARE_FOR_ENV, std::process::id().to_string())
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("starting the launcher's preparation", e))?;
    let mut argv = vec![setup.local_python.display().to_string(), "-m".into(), "pytest".into()];
    let dist_defaulted = !has_dist_choice(pytest_args);
    if dist_defaulted {
        argv.push("--dist=load".into());
    }
    argv.extend(pytest_args.iter().cloned());
    let node_timeout = setup.settings.node_timeout_s.to_string();
    let mut cmd = controller_command(&argv, &setup.root.display().to_string(), &glue_dir.display().to_string(), Some(&node_timeout), dist_defaulted);
    cmd.env(HANDOVER_ENV, &socket).env(HANDOVER_PGID_ENV, child.id().to_string());
    if opts.timings {
        // The launcher's phases come with the hand-over.
        cmd.env("PYTEST_CLOUD_TIMINGS", "{}");
    }
    // exec: from here pytest is this process; its exit code and signals are ours. Should it
    // fail, the child sees its parent gone and gives the nodes back.
    let err = cmd.exec();
    Err(Error::new(
        if err.kind() == std::io::ErrorKind::NotFound { Exit::MissingTool } else { Exit::Io },
        format!("could not start the project's pytest `{}`: {err}", argv[0]),
    ))
}

/// The hand-over the glue reads: the workers, or the exit code to leave with.
pub fn handover_document(session: &Session) -> String {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    serde_json::json!({
        "kind": "handover",
        "tx": session.xdist.tx,
        "max_worker_restart": session.xdist.max_worker_restart,
        "timings_ms": session.timings_ms,
        "handed_over_at_ms": now_ms,
    })
    .to_string()
}

pub fn handover_exit(code: i32) -> String {
    serde_json::json!({ "kind": "handover", "exit": code }).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_header_names_each_nodes_interpreter_and_the_venvs_base_when_they_differ() {
        let n = PlannedNode { node: crate::ssh::Destination::parse("node1").unwrap(), slots: 2, workers: vec!["node1-0".into(), "node1-1".into()], remote_dir: "/h/pc".into(), python: "/h/pc/.venv/bin/python".into() };
        let mut i = schema::NodeInterpreter {
            implementation: "CPython".into(),
            version: "3.11.2".into(),
            path: "/usr/bin/python3.11".into(),
            venv_base_path: "/root/.pyenv/versions/3.11.7/bin/python3".into(),
            venv_base_version: "3.11.7".into(),
            rebased: true,
        };
        assert_eq!(super::node_line(&n, Some(&i)), "node1: 2 slots, CPython 3.11.2 /usr/bin/python3.11 (venv made from 3.11.7); workers node1-0 node1-1");
        i.venv_base_version = "3.11.2".into();
        assert!(super::node_line(&n, Some(&i)).contains("(venv made from 3.11.2 /root/.pyenv/versions/3.11.7/bin/python3)"));
        i.rebased = false;
        assert_eq!(super::node_line(&n, Some(&i)), "node1: 2 slots, CPython 3.11.2 /usr/bin/python3.11; workers node1-0 node1-1");
        assert_eq!(super::node_line(&n, None), "node1: 2 slots; workers node1-0 node1-1");
    }

    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn dist_defaults_to_load_unless_chosen() {
        assert!(!has_dist_choice(&s(&["-k", "x"])));
        assert!(has_dist_choice(&s(&["--dist", "loadscope"])));
        assert!(has_dist_choice(&s(&["--dist=worksteal"])));
    }

    #[test]
    fn specs_group_workers_by_max_sessions() {
        let node = PlannedNode {
            node: ssh::Destination::parse("bob@h:2200").unwrap(),
            slots: 12,
            workers: (0..12).map(|i| format!("bob_h_2200-{i}")).collect(),
            remote_dir: "/home/bob/pc".into(),
            python: "/home/bob/pc/.venv/bin/python".into(),
        };
        let tx = xdist_specs(&[node], &|g| Ok(PathBuf::from(format!("/r/cfg-{g}")))).unwrap();
        assert_eq!(tx.len(), 12);
        assert_eq!(tx[0], "ssh=bob@pytest-cloud.h.2200//ssh_config=/r/cfg-0//python=/home/bob/pc/.venv/bin/python//chdir=/home/bob/pc//id=bob_h_2200-0");
        assert!(tx[9].contains("cfg-0") && tx[10].contains("cfg-1"));
    }

    #[test]
    fn controller_argv_keeps_user_args_last() {
        let session = Session {
            format_version: 1,
            kind: "session".into(),
            created_by: String::new(),
            rootdir: "/p".into(),
            python: "/p/.venv/bin/python".into(),
            xdist: XdistArgs { tx: vec!["ssh=a".into()], dist: "load".into(), max_worker_restart: 2 },
            env: Default::default(),
            header: vec![],
            timings_ms: Default::default(),
            sync: serde_json::from_value(serde_json::json!({
                "format_version": 1, "kind": "sync", "created_by": "", "source": "/p", "virtualenv_path": null,
                "editable_paths": [], "nodes": [], "dropped": [], "total_slots": 0,
                "plan": {"format_version": 1, "kind": "plan", "created_by": "", "source": "/p", "total_slots": 0,
                    "options": {"mem_per_process_mb": null, "max_processes": null, "python": "python3", "chdir": "pc", "virtualenv_path": null},
                    "nodes": [], "dropped": [],
                    "inventory": {"format_version": 1, "kind": "inventory", "created_by": "", "pythons_asked": [], "nodes": [],
                        "ssh": {"config_file": null, "connect_timeout_s": 5, "control_persist_s": 0}}}
            }))
            .unwrap(),
        };
        let argv = controller_argv(&session, &s(&["tests", "--", "x"]));
        assert_eq!(argv, s(&["/p/.venv/bin/python", "-m", "pytest", "--tx", "ssh=a", "--dist=load", "--max-worker-restart=2", "tests", "--", "x"]));
        let argv = controller_argv(&session, &s(&["--max-worker-restart=0"]));
        assert!(!argv.contains(&"--max-worker-restart=2".to_string()));
    }
}
