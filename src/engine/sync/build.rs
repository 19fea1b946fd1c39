//! Sync's part of a node-built env (`src/envbuild.rs`, `src/env_node.sh`): each node's
//! strategy chosen before anything is written (`choose`, from the pre-flight), the env's key
//! checked in the pre-flight's round trip (`preflight_prelude`), the build when the node does
//! not have it (`ensure_env`, while rsync sends the sources, which leave the venv at home for
//! such a node), and the link `<base>/<venv> -> <env>` made by `finish` (`finish_prelude`),
//! which every run tree then copies as a link.

use super::SyncOptions;
use super::local::Local;
use super::node::NodeRun;
use crate::envbuild::{self, EnvFile, Requirements, Strategy};
use crate::interp::Choice;
use crate::proc::Cmd;
use crate::schema::{ErrorKind, NodeEnv};
use crate::{remote, ssh};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The node-side script of a build.
pub const ENV_SCRIPT: &str = include_str!("../../env_node.sh");

/// An env no pre-flight has found for this long (7 days) is removed when the node builds a new
/// one. A run touches its env's marker in every pre-flight, and no run lasts a week.
const PRUNE_AFTER_MIN: u64 = 7 * 24 * 60;

/// How long a run waits for another run building the same env.
const BUILD_WAIT_S: u64 = 900;

/// What every build node installs, read once per sync (only when some node builds).
pub(super) struct EnvSpec {
    req: Requirements,
    dists: Vec<envbuild::Dist>,
}

use crate::envsupply::LocalUv;

/// The uv a build node uses.
#[derive(Debug, Clone)]
pub(super) enum UvUse {
    /// The node's own (new enough), or one sent by an earlier run (checked then).
    Node { path: String, version: String },
    /// Sent now: the controller's binary for the node's platform, to `path.part`.
    Send { local: LocalUv, path: String },
}

impl UvUse {
    fn version(&self) -> &str {
        match self {
            UvUse::Node { version, .. } => version,
            UvUse::Send { local, .. } => &local.version,
        }
    }
    fn path(&self) -> &str {
        match self {
            UvUse::Node { path, .. } | UvUse::Send { path, .. } => path,
        }
    }
}

/// A build node's env.
pub(super) struct NodeBuild {
    python: Choice,
    key: String,
    envs: String,
    env_dir: String,
    venv_rel: String,
    site_rel: String,
    files: Vec<EnvFile>,
    /// The requirements file's text.
    requirements: String,
    uv: UvUse,
    /// The pre-flight found it complete.
    ready: bool,
    built: bool,
    /// This run's lease on the node (`<base>.pytest-cloud-runs/<run id>.lease`), recorded
    /// beside the env as `<key>.users/<run id>`: pruning never removes an env whose user
    /// holds a live lease.
    lease: String,
    run_id: String,
    /// Built from the controller's wheels (asked for, or the node reached no index).
    wheelhouse: bool,
    /// An install from the node's index was tried and failed for want of a network.
    index_failed: bool,
    build_ms: Option<u64>,
}

/// The uv binary for the node's interpreter's platform, from the controller (envsupply:
/// downloaded once from PyPI, cached, hash-checked).
fn supplied_uv(python: &Choice) -> std::result::Result<LocalUv, String> {
    let target = crate::envsupply::NodeTarget::from_abi(&python.version, &python.abi);
    crate::envsupply::uv_for(&target).map_err(|e| {
        let (a, b, c) = crate::envsupply::MIN_UV;
        format!("the node has no uv {a}.{b}.{c} or newer, and the controller could not supply one for {}: {}", target.describe(), e.message)
    })
}

fn spec(local: &Local) -> std::result::Result<&EnvSpec, String> {
    local
        .env_spec
        .get_or_init(|| {
            let v = local.venv.as_ref().ok_or("the project has no virtualenv to build an env from")?;
            let abs = local.root.join(&v.rel);
            let sites: Vec<PathBuf> = crate::venv::site_packages(&abs).into_iter().map(|s| abs.join(s)).collect();
            let uv = crate::envsupply::controller_uv().ok();
            let req = envbuild::requirements(&local.root, &sites, uv.as_deref()).map_err(|e| e.message)?;
            Ok(EnvSpec { req, dists: envbuild::installed(&sites) })
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// The node's strategy and the interpreter the pre-flight checks: (path, version), empty
/// without a venv. Err: the node is dropped, with why.
pub(super) fn choose(r: &mut NodeRun, local: &Local, opts: &SyncOptions) -> std::result::Result<(String, String), (ErrorKind, String)> {
    let fits = match super::rebase::choose_interpreter(r, local) {
        Ok(None) => return Ok((String::new(), String::new())),
        Ok(Some(c)) => Ok(c),
        Err(why) => Err(why),
    };
    let why_not = fits.as_ref().err().cloned();
    match envbuild::choose_strategy(opts.env, fits.as_ref().map(|_| ()).map_err(|e| e.clone())) {
        Err(msg) => return Err((ErrorKind::PythonMismatch, msg)),
        Ok(Strategy::Sync) => {
            let c = fits.expect("sync is chosen only where the venv fits");
            return Ok((c.path, c.version));
        }
        Ok(Strategy::Build) => r.interpreter = None,
    }
    let fail = |e: String| {
        let also = why_not.as_ref().map(|w| format!(" (the venv cannot travel there: {w})")).unwrap_or_default();
        (ErrorKind::EnvBuildFailed, format!("{e}{also}"))
    };
    let v = local.venv.as_ref().ok_or_else(|| fail("no virtualenv".into()))?;
    // No interpreter to build for is the same fault as none to take the venv: python_mismatch.
    let python = envbuild::build_interpreter(&r.facts, local.pinned_python.as_deref(), &v.base.version).map_err(|e| (ErrorKind::PythonMismatch, fail(e).1))?;
    let spec = spec(local).map_err(fail)?;
    let own = r.facts.uv.iter().filter(|u| envbuild::new_enough(&u.version)).max_by_key(|u| envbuild::parse_version3(&u.version));
    let uv = match own {
        Some(u) => UvUse::Node { path: u.path.clone(), version: u.version.clone() },
        None => {
            let l = supplied_uv(&python).map_err(fail)?;
            let path = format!("{}/.cache/pytest-cloud/bin/uv-{}", r.facts.home, l.version);
            UvUse::Send { local: l, path }
        }
    };
    let site_rel = envbuild::site_rel(&python.version);
    let pth = format!("{}/{site_rel}/{}", v.rel, crate::venv::EDITABLE_PTH);
    let files = envbuild::editable_overlay(&spec.dists, &site_rel, &super::node::pth_lines(&pth, &local.editable));
    let key = envbuild::env_key(&spec.req, &files, &python, uv.version());
    let envs = format!("{}/.cache/pytest-cloud/envs", r.facts.home);
    let (path, version) = (python.path.clone(), python.version.clone());
    r.build = Some(NodeBuild {
        env_dir: format!("{envs}/{key}"),
        envs,
        key,
        python,
        venv_rel: v.rel.clone(),
        site_rel,
        files,
        lease: format!("{}/{}.lease", crate::engine::lease::runs_dir(&r.planned.remote_dir), local.run_id),
        run_id: local.run_id.clone(),
        requirements: spec.req.lines.join("\n"),
        uv,
        ready: false,
        built: false,
        wheelhouse: false,
        index_failed: false,
        build_ms: None,
    });
    Ok((path, version))
}

/// Shell code for the pre-flight: `env_preflight` says whether the node has the env (and
/// renews its age and records this run's lease as a user of it, both of which pruning
/// reads). Empty for a node that syncs its venv.
pub(super) fn preflight_prelude(r: &NodeRun) -> String {
    let Some(b) = &r.build else { return String::new() };
    let q = |s: &str| shell_words::quote(s).into_owned();
    let m = q(&format!("{}/.pytest-cloud-env", b.env_dir));
    let users = q(&format!("{}.users", b.env_dir));
    let rec = q(&format!("{}.users/{}", b.env_dir, b.run_id));
    format!(
        "env_preflight() {{\n    if [ -f {m} ]; then touch -c {m}; mkdir -p {users} 2>/dev/null && printf '%s\\n' {lease} >{rec}; echo env=ready; else echo env=missing; fi\n}}\n",
        lease = q(&b.lease)
    )
}

pub(super) fn read_preflight(r: &mut NodeRun, reply: &remote::Reply) {
    if let Some(b) = &mut r.build {
        b.ready = reply.get("env") == Some("ready");
    }
}

/// rsync's extra filter for this node: a build node's venv stays at home (and its link on the
/// node is left alone).
pub(super) fn excludes_venv(r: &NodeRun) -> bool {
    r.build.is_some()
}

/// Builds the node's env unless the pre-flight found it: sends uv first when the node has
/// none, then one round trip (`env_node.sh build`). A failure drops the node only.
pub(super) fn ensure_env(r: &mut NodeRun, config: &Path, local: &Local, opts: &SyncOptions) {
    let Some(b) = &r.build else { return };
    if b.ready || !r.alive() {
        return;
    }
    let started = Instant::now();
    let mut uvsha = String::new();
    let uvpart = match &b.uv {
        UvUse::Send { path, .. } => format!("{path}.part-{}", local.run_id),
        UvUse::Node { .. } => String::new(),
    };
    if let UvUse::Send { local, path } = &b.uv {
        let rsh = ssh::rsync_rsh(config, opts.cipher.as_deref());
        let dir = Path::new(path).parent().map(|p| p.display().to_string()).unwrap_or_default();
        let mkdir = format!("mkdir -p {} && rsync", shell_words::quote(&dir));
        let out = Cmd::new([
            "rsync".to_string(),
            "-t".into(),
            "-e".into(),
            rsh,
            format!("--rsync-path={mkdir}"),
            local.path.display().to_string(),
            format!("{}:{uvpart}", r.dest.ssh_target()),
        ])
        .deadline(Duration::from_secs(600))
        .output();
        match out {
            Ok(o) if o.status.success() => uvsha = local.sha256.clone(),
            Ok(o) => return r.drop_with(ErrorKind::EnvBuildFailed, format!("could not send uv {} to the node: {}", local.version, o.stderr_trimmed())),
            Err(e) => return r.drop_with(ErrorKind::EnvBuildFailed, format!("could not send uv to the node: {}", e.message)),
        }
    }
    let mut links = String::new();
    if opts.wheelhouse {
        // Asked for: no index is ever tried, the controller's wheels are the only source.
        match send_wheelhouse(r, config, opts) {
            Ok(dir) => links = dir,
            Err(why) => return r.drop_with(ErrorKind::EnvBuildFailed, why),
        }
    }
    loop {
        let b = r.build.as_ref().expect("checked above");
        let prelude = build_prelude(b);
        let wait = BUILD_WAIT_S.to_string();
        let prune = PRUNE_AFTER_MIN.to_string();
        let words = ["build", &b.envs, &b.key, &b.python.path, b.uv.path(), &uvpart, &uvsha, &wait, &links, &prune, &b.run_id, &b.lease];
        let reply = remote::run(config, &r.dest, &prelude, ENV_SCRIPT, &words, Duration::from_secs(BUILD_WAIT_S + 1800));
        let reply = match reply {
            Ok(x) => x,
            Err(e) => return r.drop_with(ErrorKind::EnvBuildFailed, e.message),
        };
        if let Some((kind, msg)) = reply.failure("env_node_end") {
            let kind = if kind == ErrorKind::SyncFailed { ErrorKind::EnvBuildFailed } else { kind };
            return r.drop_with(kind, format!("building the env: {msg}"));
        }
        if let Some(e) = reply.get("error") {
            return r.drop_with(ErrorKind::EnvBuildFailed, e.to_string());
        }
        // uv sent once is installed: a second round trip finds it in place.
        uvsha.clear();
        // The last word counts: `env=building` comes first when this run builds.
        match reply.kv.iter().rev().find(|(k, _)| k == "env").map(|(_, v)| v.as_str()) {
            Some("ready") => return,
            Some("built") => {
                let b = r.build.as_mut().expect("checked above");
                b.built = true;
                b.build_ms = Some(started.elapsed().as_millis() as u64);
                b.wheelhouse = !links.is_empty();
                return;
            }
            _ => {}
        }
        let headline: Vec<&str> = reply.kv.iter().filter(|(k, _)| k == "env_error").map(|(_, v)| v.as_str()).collect();
        let tail: Vec<&str> = reply.kv.iter().filter(|(k, _)| k == "env_message").map(|(_, v)| v.as_str()).collect();
        // What is shown: uv's headline when it gave one, else the end of its output.
        let msg: Vec<&str> = if headline.is_empty() { tail.clone() } else { headline.clone() };
        let text = format!("{}\n{}", headline.join("\n"), tail.join("\n"));
        if links.is_empty() && no_index(&text) {
            // The node cannot reach its index: the controller fetches the wheels for it.
            if let Some(b) = r.build.as_mut() {
                b.index_failed = true;
            }
            match send_wheelhouse(r, config, opts) {
                Ok(dir) => {
                    links = dir;
                    continue;
                }
                Err(why) => return r.drop_with(ErrorKind::EnvBuildFailed, why),
            }
        }
        let b = r.build.as_ref().expect("checked above");
        let what = envbuild::failing_package(&text).map(|p| format!("{p} cannot be installed there")).unwrap_or_else(|| "uv could not install the requirements".into());
        let tail: Vec<&str> = msg.iter().rev().take(6).rev().copied().collect();
        let msg = format!(
            "{what} (the node's CPython {} {}, {}){}: {}. The other nodes go on; give the package a wheel for that platform (or an sdist that builds there), pin a version that has one, or leave the node out",
            b.python.version,
            b.python.path,
            platform_words(&b.python),
            match (links.is_empty(), opts.wheelhouse) {
                (true, _) => "",
                (false, true) => ", from the controller's wheelhouse (--wheelhouse)",
                (false, false) => ", from the controller's wheelhouse (the node reaches no index)",
            },
            tail.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
        );
        return r.drop_with(ErrorKind::EnvBuildFailed, msg);
    }
}

fn platform_words(c: &Choice) -> String {
    let abi = &c.abi;
    if abi.libc.is_empty() { format!("{} {}", abi.machine, abi.platform) } else { format!("{} {} {}", abi.machine, abi.platform, abi.libc) }
}

/// uv's words for an index it could not reach (no network, no DNS, refused, reset).
pub fn no_index(uv_stderr: &str) -> bool {
    ["error sending request", "client error (Connect)", "dns error", "failed to lookup address", "Connection refused", "Connection reset", "Network is unreachable", "operation timed out"]
        .iter()
        .any(|w| uv_stderr.contains(w))
}

/// The wheels of the node's requirements for its Python and platform (envsupply's
/// wheelhouse, cached on the controller), sent to `~/.cache/pytest-cloud/wheels/<target>/`;
/// the directory for `--find-links`. Err names the packages that have no fitting wheel.
fn send_wheelhouse(r: &NodeRun, config: &Path, opts: &SyncOptions) -> std::result::Result<String, String> {
    let b = r.build.as_ref().expect("a build node");
    let target = crate::envsupply::NodeTarget::from_abi(&b.python.version, &b.python.abi);
    let tmp = tempfile::NamedTempFile::new().map_err(|e| format!("a temporary requirements file: {e}"))?;
    std::fs::write(tmp.path(), format!("{}\n", b.requirements)).map_err(|e| format!("writing {}: {e}", tmp.path().display()))?;
    let wh = crate::envsupply::wheelhouse(tmp.path(), &target)
        .map_err(|e| format!("the node reaches no package index, and the controller could not fetch the wheels for it: {}", e.message))?;
    if !wh.missing.is_empty() {
        let list: Vec<String> = wh.missing.iter().map(|(p, why)| format!("{p} ({why})")).collect();
        return Err(format!(
            "the node reaches no package index, and these have no wheel for {}: {}. The other nodes go on; pin versions that have wheels for it, or give the node an index",
            target.describe(),
            list.join("; ")
        ));
    }
    let key = target.key().map_err(|e| e.message)?;
    let dir = format!("{}/.cache/pytest-cloud/wheels/{key}", r.facts.home);
    let mut argv = vec![
        "rsync".to_string(),
        "-t".into(),
        "-e".into(),
        ssh::rsync_rsh(config, opts.cipher.as_deref()),
        format!("--rsync-path=mkdir -p {} && rsync", shell_words::quote(&dir)),
    ];
    argv.extend(wh.files.iter().map(|f| wh.dir.join(f).display().to_string()));
    argv.push(format!("{}:{dir}/", r.dest.ssh_target()));
    if !wh.files.is_empty() {
        let out = Cmd::new(argv).deadline(Duration::from_secs(1800)).output().map_err(|e| e.message)?;
        if !out.status.success() {
            return Err(format!("could not send the wheelhouse to the node: {}", out.stderr_trimmed()));
        }
    }
    Ok(dir)
}

/// `env_requirements` and `env_overlay DIR` for the build script, with put_file.
fn build_prelude(b: &NodeBuild) -> String {
    let (d, c) = crate::remote::heredoc(&b.requirements);
    let mut s = format!("{}\nenv_requirements() {{\n    cat <<'{d}'\n{c}{d}\n}}\nenv_overlay() {{\n", crate::rebase::NODE_LIB);
    for f in &b.files {
        let dir = Path::new(&f.rel).parent().map(|p| p.display().to_string()).unwrap_or_default();
        if !dir.is_empty() {
            s.push_str(&format!("    mkdir -p -- \"$1\"/{} || return 1\n", shell_words::quote(&dir)));
        }
        let (d, c) = crate::remote::heredoc(&f.content);
        s.push_str(&format!("    put_file \"$1\"/{} {:o} <<'{d}' || return 1\n{c}{d}\n", shell_words::quote(&f.rel), f.mode));
    }
    s.push_str("    return 0\n}\n");
    s
}

/// For `finish`: the `.pth` and interpreter paths (relative to the tree) a build node checks,
/// and the shell code that links `<base>/<venv>` to the env (`env_attach DIR`).
pub(super) fn finish_parts(r: &NodeRun) -> Option<(String, String, String)> {
    let b = r.build.as_ref()?;
    let pth = format!("{}/{}/{}", b.venv_rel, b.site_rel, crate::venv::EDITABLE_PTH);
    let python = format!("{}/bin/python", b.venv_rel);
    let q = |s: &str| shell_words::quote(s).into_owned();
    let code = format!(
        "env_attach() {{\n    _v=\"$1\"/{rel}\n    [ -L \"$_v\" ] && [ \"$(readlink -- \"$_v\")\" = {env} ] && return 0\n    rm -rf -- \"$_v\" \"$1/{stamp}\" || return 1\n    mkdir -p -- \"$(dirname -- \"$_v\")\" && ln -s -- {env} \"$_v\"\n}}\n",
        rel = q(&b.venv_rel),
        env = q(&b.env_dir),
        stamp = crate::rebase::STAMP,
    );
    Some((pth, python, code))
}

/// The sync document's account of the node's env.
pub(super) fn node_env(r: &NodeRun, local: &Local) -> Option<NodeEnv> {
    local.venv.as_ref()?;
    let Some(b) = &r.build else {
        return Some(NodeEnv {
            strategy: Strategy::Sync,
            key: None,
            source: None,
            path: None,
            python: None,
            python_version: None,
            uv: None,
            uv_version: None,
            built: false,
            wheelhouse: false,
            index_failed: false,
            build_ms: None,
            skipped: Vec::new(),
        });
    };
    let spec = local.env_spec.get().and_then(|s| s.as_ref().ok());
    Some(NodeEnv {
        strategy: Strategy::Build,
        key: Some(b.key.clone()),
        source: spec.map(|s| s.req.source.as_str().to_string()),
        path: Some(b.env_dir.clone()),
        python: Some(b.python.path.clone()),
        python_version: Some(b.python.version.clone()),
        uv: Some(match b.uv {
            UvUse::Node { .. } => "node".into(),
            UvUse::Send { .. } => "supplied".into(),
        }),
        uv_version: Some(b.uv.version().to_string()),
        built: b.built,
        wheelhouse: b.wheelhouse,
        index_failed: b.index_failed,
        build_ms: b.build_ms,
        skipped: spec.map(|s| s.req.skipped.clone()).unwrap_or_default(),
    })
}

/// For the header: `from uv.lock`.
pub fn describe_source(source: &str) -> &'static str {
    match source {
        "uv.lock" => envbuild::Source::UvLock.describe(),
        "pylock.toml" => envbuild::Source::Pylock.describe(),
        _ => envbuild::Source::Venv.describe(),
    }
}
