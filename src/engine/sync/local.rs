//! What a sync checks on this machine before any node is touched: the source, the chdir, the
//! filters, the cipher (`ssh -Q cipher`), the virtualenv and its editable installs, develop
//! eggs, and that rsync and GNU parallel are here.

use super::SyncOptions;
use crate::error::{Error, Result};
use crate::proc::Cmd;
use crate::schema::PlanOptions;
use crate::engine::lease;
use crate::{project, rsync, venv};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The local facts a sync needs, checked before any node is touched.
pub(super) struct Local {
    pub(super) root: PathBuf,
    /// The interpreter name the user pinned (`--python`), which the venv must run on.
    pub(super) pinned_python: Option<String>,
    pub(super) venv: Option<LocalVenv>,
    /// Project-relative sys.path entries for the node's `.pth` ("" = root).
    pub(super) editable: Vec<String>,
    pub(super) holder: String,
    pub(super) hostname: String,
    /// This run's tree name on every node, and its lease line.
    pub(super) run_id: String,
    pub(super) lease: String,
    /// What nodes that build their own env install, read when the first one needs it.
    pub(super) env_spec: std::sync::OnceLock<std::result::Result<super::build::EnvSpec, String>>,
    /// The node locks this run holds now, which the heartbeat renews (src/engine/sync/beat.rs).
    pub(super) held: super::beat::Held,
}

pub(super) struct LocalVenv {
    pub(super) rel: String,
    pub(super) base: venv::BaseInterpreter,
    /// What an interpreter on a node must offer to run it, and the files the node writes.
    pub(super) needs: crate::interp::VenvNeeds,
    pub(super) layout: crate::rebase::Layout,
    /// The `.pth` path relative to the project root.
    pub(super) pth: Option<String>,
}


/// The project root a sync mirrors: `--source`, else the plan's `source`.
pub(super) fn source_root(source: &str, opts: &SyncOptions, info: &mut dyn FnMut(String)) -> Result<PathBuf> {
    match &opts.source {
        Some(s) => {
            let r = project::project_root(Some(s))?;
            info(format!("sync: source {} (--source)", r.display()));
            Ok(r)
        }
        None => {
            let r = PathBuf::from(source);
            if !r.is_absolute() || !r.is_dir() {
                return Err(Error::bad_input(format!(
                    "the plan's source {source:?} is not a directory here; run sync on the machine that made the plan, or pass --source DIR"
                )));
            }
            info(format!("sync: source {} (the plan's project root)", r.display()));
            Ok(r)
        }
    }
}

/// The rest of the local facts for a sync of `root` (from [`source_root`]) with the plan's
/// options: all of it known before any node answers, so the launcher gathers it while the probe
/// runs (super::Prepared). What it would tell the user goes to `info`.
pub(super) fn local_facts(root: PathBuf, options: &PlanOptions, opts: &SyncOptions, info: &mut dyn FnMut(String)) -> Result<Local> {
    // The chdir decides what `--delete` may touch: re-check what the document says.
    project::validate_chdir(&options.chdir)
        .map_err(|e| Error::bad_input(format!("the plan's chdir is refused: {}", e.message)))?;
    for e in &opts.excludes {
        if e.contains(['\n', '\r']) || e.trim().is_empty() {
            return Err(Error::usage(format!("--exclude {e:?}: a pattern is one non-empty line")));
        }
    }
    if let Some(c) = &opts.cipher {
        if !c.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '@' | '.' | '-' | '_' | ',')) {
            return Err(Error::usage(format!("--rsync-cipher {c:?}: not a cipher name (see `ssh -Q cipher`)")));
        }
        // Caught here, a typo costs one message instead of one failed rsync per node.
        if let Ok(out) = Cmd::new(["ssh", "-Q", "cipher"]).deadline(Duration::from_secs(5)).output() {
            let known: Vec<String> = out.stdout_str().lines().map(|l| l.trim().to_string()).collect();
            if out.status.success() && !known.is_empty() && !known.iter().any(|k| k == c) {
                return Err(Error::usage(format!(
                    "--rsync-cipher {c:?}: this ssh does not know it (`ssh -Q cipher` lists {}); use --rsync-cipher none for ssh's choice",
                    known.join(", ")
                )));
            }
        }
    }

    let venv = match &options.virtualenv_path {
        None => {
            info(format!("sync: no virtualenv in the project; the nodes run {}", options.python));
            None
        }
        Some(rel) => {
            let rel_path = project::relative_inside(&root, Path::new(rel)).filter(|r| r == Path::new(rel)).ok_or_else(|| {
                Error::bad_input(format!("the plan's virtualenv_path {rel:?} is not a directory inside {}", root.display()))
            })?;
            let abs = root.join(&rel_path);
            if !abs.join("pyvenv.cfg").is_file() {
                return Err(Error::bad_input(format!("the plan names the virtualenv {rel}, but {} has no pyvenv.cfg", abs.display())));
            }
            let base = venv::base_interpreter(&abs)?;
            let site = venv::site_packages(&abs);
            let needs = crate::interp::VenvNeeds::read(&abs, &base, &site.iter().map(|s| abs.join(s)).collect::<Vec<_>>())?;
            let layout = crate::rebase::Layout::read(&root, rel)?;

            info(format!(
                "sync: virtualenv {rel} synced with the project (made from Python {} at {}; a node runs it on that one or on a compatible interpreter: {})",
                base.version,
                base.path,
                needs.describe()
            ));
            let pth = site.first().map(|s| format!("{rel}/{}/{}", s.display(), venv::EDITABLE_PTH));
            Some((LocalVenv { rel: rel.clone(), base, needs, layout, pth }, abs, site))
        }
    };

    let mut editable: Vec<String> = Vec::new();
    let mut push = |rel: &Path| {
        let s = rel.to_string_lossy().trim_end_matches('/').to_string();
        if !editable.contains(&s) {
            editable.push(s);
        }
    };
    if let Some((v, abs, site)) = &venv {
        for s in site {
            for target in venv::editable_targets(&abs.join(s)) {
                match venv::inside_or_root(&root, &target) {
                    Some(rel) if rel.starts_with(&v.rel) => {}
                    Some(rel) => push(&rel),
                    None => info(format!(
                        "sync: warning: the editable install at {} is outside the project root, so the nodes cannot import it from a synced copy",
                        target.display()
                    )),
                }
            }
        }
    }
    let mut eggs: Vec<(PathBuf, String)> =
        opts.develop_eggs.iter().map(|p| (p.clone(), format!("--develop-egg {}", p.display()))).collect();
    eggs.extend(venv::ini_develop_eggs(&root).into_iter().map(|p| (root.join(&p), format!("ini cloud_develop_eggs {p}"))));
    for (path, what) in &eggs {
        if venv.is_none() {
            return Err(Error::usage(format!("{what}: develop eggs are installed into the project's virtualenv, and the plan has none")));
        }
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        let rel = venv::inside_or_root(&root, &abs)
            .filter(|_| abs.is_dir())
            .ok_or_else(|| Error::usage(format!("{what}: must be a directory inside the project root {}", root.display())))?;
        push(&venv::develop_egg_import_root(&root, &rel));
    }
    if !editable.is_empty() {
        let shown: Vec<String> = editable.iter().map(|e| if e.is_empty() { ".".to_string() } else { e.clone() }).collect();
        info(format!("sync: nodes import editable sources from their synced copy of: {}", shown.join(", ")));
    }
    if root.join(rsync::IGNORE_FILE).is_file() {
        info(format!("sync: filter rules from {}", rsync::IGNORE_FILE));
    }
    let hostname = local_hostname();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let run_id = lease::new_run_id();
    // The lock's holder line: unique to this run (its run id), and naming host, boot and pid
    // for the one "holder is gone" rule (crate::machine::holder_gone_here), and how long the
    // lock lasts without its heartbeat (src/engine/sync/beat.rs).
    let user = project::local_user();
    let holder = no_controls(&format!(
        "pytest-cloud run={run_id} host={hostname} boot={} pid={} ttl_min={} user={} started_unix={started} source={}",
        crate::machine::boot_id(),
        std::process::id(),
        super::beat::LOCK_TTL_MIN,
        user,
        root.display()
    ));
    let lease = lease::lease_line(&run_id, &hostname, opts.lease_pid, opts.lease_ttl_min, &user, &root);
    let pinned_python = options.python_pinned.then(|| options.python.clone());
    Ok(Local { root, pinned_python, venv: venv.map(|v| v.0), editable, holder, hostname, run_id, lease, env_spec: std::sync::OnceLock::new(), held: Default::default() })
}

pub(super) fn no_controls(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

pub(super) fn local_hostname() -> String {
    crate::machine::hostname()
}

/// rsync 3.1+ and GNU parallel must be here before any node is touched (exit 72 otherwise,
/// naming what is there instead: macOS ships rsync 2.6.9 or openrsync, and no GNU parallel).
/// Asked once per process (`rsync --version` and, unless remembered, `parallel --version`):
/// the launcher's preparation and every fan-out started later share the answer.
pub(super) fn check_local_tools() -> Result<()> {
    static ANSWER: std::sync::OnceLock<std::result::Result<(), (crate::error::Exit, String)>> = std::sync::OnceLock::new();
    ANSWER.get_or_init(|| ask_local_tools().map_err(|e| (e.exit, e.message))).clone().map_err(|(exit, message)| Error::new(exit, message))
}

fn ask_local_tools() -> Result<()> {
    let out = Cmd::new(["rsync", "--version"]).deadline(Duration::from_secs(30)).output()?;
    let text = format!("{}{}", out.stdout_str(), String::from_utf8_lossy(&out.stderr));
    if let Some(problem) = rsync::version_problem(&text) {
        let at = crate::proc::on_path("rsync").map(|p| p.display().to_string()).unwrap_or_else(|| "on PATH".into());
        let (a, b) = rsync::MIN_LOCAL;
        return Err(Error::new(
            crate::error::Exit::MissingTool,
            format!(
                "`rsync` at {at} is {problem}; pytest-cloud needs rsync {a}.{b} or newer (for --info=progress2 and --no-inc-recursive). macOS: brew install rsync, then put Homebrew's bin (/opt/homebrew/bin or /usr/local/bin) before /usr/bin on PATH; Debian: apt-get install rsync."
            ),
        ));
    }
    crate::parallel::check_installed()
}
