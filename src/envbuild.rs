//! The environment a node builds for itself (`--env build`, or `auto` where the project's venv
//! cannot run on the node): what is installed there, from which source, under which cache key,
//! and the strategy each node gets. Pure functions of local files, tested without a node; the
//! node side is `src/env_node.sh`, the sync's use of it `src/engine/sync/build.rs`.
//!
//! What to install, first found wins: `uv.lock` with `pyproject.toml` (exported by the
//! controller's uv, markers kept, the project and workspace members left out), a PEP 751
//! `pylock.toml`, else every distribution installed in the controller's venv pinned
//! `name==version` (read from its `*.dist-info`; distributions installed from a local directory
//! or file cannot be pinned and are named in the header instead). The project's own editable
//! packages are not built on the node: their metadata and console scripts are copied from the
//! controller's venv, and a `.pth` of lines relative to site-packages puts the run tree's
//! sources on `sys.path`, so one cached env serves every run tree linked to it (see
//! share/doc/sync.md, "Which environment runs on a node").

use crate::error::{Error, Result};
use crate::interp::{self, Choice};
use crate::schema::{Facts, PythonAbi};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What `--env` / `--cloud-env` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvMode {
    /// Sync the venv where it fits the node, build where it does not.
    #[default]
    Auto,
    Sync,
    Build,
}

impl EnvMode {
    pub fn parse(s: &str) -> std::result::Result<EnvMode, String> {
        match s {
            "auto" => Ok(EnvMode::Auto),
            "sync" => Ok(EnvMode::Sync),
            "build" => Ok(EnvMode::Build),
            other => Err(format!("{other:?}: expected auto, sync or build")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EnvMode::Auto => "auto",
            EnvMode::Sync => "sync",
            EnvMode::Build => "build",
        }
    }
}

pub use crate::schema::EnvStrategy as Strategy;

/// The node's strategy, decided before anything is written to it. `fits` is whether the
/// venv can run there (`interp::choose`). Err: the node cannot be used (the reason).
pub fn choose_strategy(mode: EnvMode, fits: std::result::Result<(), String>) -> std::result::Result<Strategy, String> {
    match (mode, fits) {
        (EnvMode::Build, _) => Ok(Strategy::Build),
        (EnvMode::Auto, Ok(())) | (EnvMode::Sync, Ok(())) => Ok(Strategy::Sync),
        (EnvMode::Auto, Err(_)) => Ok(Strategy::Build),
        (EnvMode::Sync, Err(why)) => Err(format!("{why}; or let the node build its own env: --env build (--cloud-env build)")),
    }
}

/// The interpreter a node builds its env for: the pinned one, else the node's CPython of the
/// venv's minor version, else `python3`, else its newest CPython. Only CPython is built for
/// (the env's layout, `lib/pythonX.Y/site-packages`, is CPython's).
pub fn build_interpreter(facts: &Facts, pinned: Option<&str>, venv_version: &str) -> std::result::Result<Choice, String> {
    let usable = |name: &str| -> Option<Choice> {
        let p = facts.pythons.get(name)?;
        let abi = p.abi.clone()?;
        (abi.implementation == "cpython" && interp::major_minor(&p.version).is_some()).then(|| Choice { path: p.path.clone(), version: p.version.clone(), abi })
    };
    if let Some(name) = pinned {
        return usable(name).ok_or_else(|| format!("the node has no CPython {name} (named by --python/--cloud-python) to build an env for"));
    }
    if let Some((ma, mi)) = interp::major_minor(venv_version) {
        if let Some(c) = usable(&format!("python{ma}.{mi}")) {
            return Ok(c);
        }
    }
    if let Some(c) = usable("python3") {
        return Ok(c);
    }
    let mut all: Vec<Choice> = facts.pythons.keys().filter_map(|n| usable(n)).collect();
    all.sort_by_key(|c| interp::major_minor(&c.version));
    all.pop().ok_or_else(|| "the node has no CPython the probe could find to build an env for".to_string())
}

/// `--cloud-python 3.12` names `python3.12`; anything else is a name or a path as given.
pub fn python_name(value: &str) -> String {
    let v = value.trim();
    let mut parts = v.split('.');
    let digits = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if digits(parts.next()) && digits(parts.next()) && parts.next().is_none() { format!("python{v}") } else { v.to_string() }
}

/// Where the requirements come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    #[serde(rename = "uv.lock")]
    UvLock,
    #[serde(rename = "pylock.toml")]
    Pylock,
    /// The controller venv's installed distributions, pinned.
    #[serde(rename = "venv")]
    Venv,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::UvLock => "uv.lock",
            Source::Pylock => "pylock.toml",
            Source::Venv => "venv",
        }
    }
    /// For the header: "from uv.lock", "from your venv's pinned distributions".
    pub fn describe(self) -> &'static str {
        match self {
            Source::UvLock => "from uv.lock",
            Source::Pylock => "from pylock.toml",
            Source::Venv => "from your venv's distributions (pinned)",
        }
    }
}

/// The requirements a node installs, in `requirements.txt` syntax (markers kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    pub source: Source,
    pub lines: Vec<String>,
    /// Distributions that could not be pinned, with why (said once in the header).
    pub skipped: Vec<String>,
}

/// The requirements for the project at `root` with its venv's site-packages `site_dirs`.
/// `uv` runs `uv export` for a `uv.lock` (None: no uv here, which is then the error).
pub fn requirements(root: &Path, site_dirs: &[PathBuf], uv: Option<&Path>) -> Result<Requirements> {
    if root.join("uv.lock").is_file() && root.join("pyproject.toml").is_file() {
        let uv = uv.ok_or_else(|| {
            Error::new(crate::error::Exit::MissingTool, 
                "the project has a uv.lock, which the controller's uv exports for the nodes, but no uv was found here \
                 (PATH, beside the venv's python, $PYTEST_CLOUD_UV); install it: python3 -m pip install uv",
            )
        })?;
        let out = crate::proc::Cmd::new([
            uv.as_os_str(),
            "export".as_ref(),
            "--frozen".as_ref(),
            "--no-header".as_ref(),
            "--no-emit-project".as_ref(),
            "--no-emit-workspace".as_ref(),
            "--no-hashes".as_ref(),
            "--no-config".as_ref(),
        ])
        .dir(root)
        .env("UV_NO_CONFIG", "1")
        .deadline(std::time::Duration::from_secs(60))
        .checked()?;
        let (lines, skipped) = exported_lines(&out.stdout_str());
        return Ok(Requirements { source: Source::UvLock, lines, skipped });
    }
    let pylock = root.join("pylock.toml");
    if pylock.is_file() {
        let text = std::fs::read_to_string(&pylock).map_err(|e| Error::io(pylock.display(), e))?;
        let (lines, skipped) = parse_pylock(&text).map_err(|e| Error::bad_input(format!("{}: {e}", pylock.display())))?;
        return Ok(Requirements { source: Source::Pylock, lines, skipped });
    }
    let (lines, skipped) = venv_pins(site_dirs);
    Ok(Requirements { source: Source::Venv, lines, skipped })
}

/// `uv export`'s lines, without comments and without local paths (editables and path
/// dependencies, which come from the synced sources instead).
pub fn exported_lines(text: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut skipped = Vec::new();
    for l in text.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with("-e ") || l.starts_with('.') || l.starts_with('/') {
            skipped.push(format!("{l} (a local path)"));
            continue;
        }
        lines.push(l.to_string());
    }
    (lines, skipped)
}

/// A PEP 751 lock's packages as pinned requirements with their markers. Packages from a
/// local directory or archive are left out (named in the second list).
pub fn parse_pylock(text: &str) -> std::result::Result<(Vec<String>, Vec<String>), String> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| format!("not TOML: {}", e.message()))?;
    let version = doc.get("lock-version").and_then(|v| v.as_str()).ok_or("no lock-version (is it a PEP 751 lock?)")?;
    if !version.starts_with("1.") && version != "1" {
        return Err(format!("lock-version {version}: only 1.x is understood"));
    }
    let packages = doc.get("packages").and_then(|v| v.as_array()).ok_or("no [[packages]]")?;
    let mut lines = Vec::new();
    let mut skipped = Vec::new();
    for p in packages {
        let t = p.as_table().ok_or("a [[packages]] entry is not a table")?;
        let name = t.get("name").and_then(|v| v.as_str()).ok_or("a package without a name")?;
        let marker = t.get("marker").and_then(|v| v.as_str()).map(|m| format!(" ; {m}")).unwrap_or_default();
        if t.contains_key("directory") || t.contains_key("archive") {
            skipped.push(format!("{name} (a local directory or archive)"));
            continue;
        }
        if let Some(vcs) = t.get("vcs").and_then(|v| v.as_table()) {
            let url = vcs.get("url").and_then(|v| v.as_str()).unwrap_or("");
            let commit = vcs.get("commit-id").and_then(|v| v.as_str()).unwrap_or("");
            let kind = vcs.get("type").and_then(|v| v.as_str()).unwrap_or("git");
            lines.push(format!("{name} @ {kind}+{url}@{commit}{marker}"));
            continue;
        }
        let v = t.get("version").and_then(|v| v.as_str()).ok_or_else(|| format!("package {name} has no version"))?;
        lines.push(format!("{name}=={v}{marker}"));
    }
    Ok((lines, skipped))
}

/// One installed distribution of the controller's venv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dist {
    pub name: String,
    pub version: String,
    pub dist_info: PathBuf,
    /// `direct_url.json`: `None` from an index; else what it says.
    pub direct: Option<Direct>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direct {
    /// `dir_info`: a local directory; `editable` as it says.
    Dir { path: PathBuf, editable: bool },
    /// `vcs_info`: `git+URL@COMMIT`.
    Vcs(String),
    /// Any other URL (an archive).
    Url(String),
}

/// `Name: x` and `Version: y` from a METADATA file's headers.
fn metadata_name_version(text: &str) -> Option<(String, String)> {
    let mut name = None;
    let mut version = None;
    for l in text.lines() {
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("Name:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("Version:") {
            version = Some(v.trim().to_string());
        }
    }
    Some((name?, version?))
}

fn read_direct(dist_info: &Path) -> Option<Direct> {
    let text = std::fs::read_to_string(dist_info.join("direct_url.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v.get("url").and_then(|u| u.as_str()).unwrap_or("").to_string();
    if let Some(d) = v.get("dir_info") {
        let editable = d.get("editable").and_then(|e| e.as_bool()).unwrap_or(false);
        let path = url.strip_prefix("file://").map(|p| PathBuf::from(percent_decode(p))).unwrap_or_default();
        return Some(Direct::Dir { path, editable });
    }
    if let Some(vcs) = v.get("vcs_info") {
        let kind = vcs.get("vcs").and_then(|s| s.as_str()).unwrap_or("git");
        let commit = vcs.get("commit_id").and_then(|s| s.as_str()).unwrap_or("");
        return Some(Direct::Vcs(format!("{kind}+{url}@{commit}")));
    }
    Some(Direct::Url(url))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The distributions installed in these site-packages directories, by name.
pub fn installed(site_dirs: &[PathBuf]) -> Vec<Dist> {
    let mut out: Vec<Dist> = Vec::new();
    for site in site_dirs {
        let Ok(entries) = std::fs::read_dir(site) else { continue };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "dist-info") && p.is_dir()).collect();
        dirs.sort();
        for d in dirs {
            let Ok(meta) = std::fs::read_to_string(d.join("METADATA")) else { continue };
            let Some((name, version)) = metadata_name_version(&meta) else { continue };
            if out.iter().any(|o| normalize(&o.name) == normalize(&name)) {
                continue;
            }
            out.push(Dist { name, version, direct: read_direct(&d), dist_info: d });
        }
    }
    out.sort_by_key(|d| normalize(&d.name));
    out
}

/// PEP 503's normalized name.
pub fn normalize(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !s.ends_with('-') {
                s.push('-');
            }
        } else {
            s.push(c.to_ascii_lowercase());
        }
    }
    s
}

/// The venv's distributions pinned `name==version` (a VCS one as `name @ url`); the ones
/// installed from a local directory or file are left out, named in the second list
/// (editable ones are the project's own: [`editable_overlay`] handles those).
pub fn venv_pins(site_dirs: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut skipped = Vec::new();
    for d in installed(site_dirs) {
        match &d.direct {
            None => lines.push(format!("{}=={}", d.name, d.version)),
            Some(Direct::Vcs(url)) => lines.push(format!("{} @ {url}", d.name)),
            Some(Direct::Dir { editable: true, .. }) => {}
            Some(Direct::Dir { path, .. }) => skipped.push(format!("{} {} (installed from the directory {})", d.name, d.version, path.display())),
            Some(Direct::Url(u)) if u.starts_with("file:") => skipped.push(format!("{} {} (installed from the file {u})", d.name, d.version)),
            Some(Direct::Url(u)) => lines.push(format!("{} @ {u}", d.name)),
        }
    }
    (lines, skipped)
}

/// A file the node writes into its env: path relative to the env, mode, content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    pub rel: String,
    pub mode: u32,
    pub content: String,
}

/// The metadata of the project's editable distributions (so `importlib.metadata` and entry
/// points see them, as locally), their console scripts (run the `python` beside them, as the
/// path they were called by says: through the run tree's link, not the cache's path), and the
/// `.pth` of `pth_lines`; for an env whose site-packages is `site_rel` (`lib/python3.11/site-packages`).
pub fn editable_overlay(dists: &[Dist], site_rel: &str, pth_lines: &[String]) -> Vec<EnvFile> {
    let mut files = Vec::new();
    for d in dists {
        if !matches!(d.direct, Some(Direct::Dir { editable: true, .. })) {
            continue;
        }
        let Some(dir_name) = d.dist_info.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        for f in ["METADATA", "entry_points.txt", "top_level.txt"] {
            if let Ok(content) = std::fs::read_to_string(d.dist_info.join(f)) {
                files.push(EnvFile { rel: format!("{site_rel}/{dir_name}/{f}"), mode: 0o644, content });
            }
        }
        files.push(EnvFile { rel: format!("{site_rel}/{dir_name}/INSTALLER"), mode: 0o644, content: "pytest-cloud\n".into() });
        if let Ok(eps) = std::fs::read_to_string(d.dist_info.join("entry_points.txt")) {
            for (name, target) in console_scripts(&eps) {
                if let Some(content) = console_script(&target) {
                    files.push(EnvFile { rel: format!("bin/{name}"), mode: 0o755, content });
                }
            }
        }
    }
    if !pth_lines.is_empty() {
        files.push(EnvFile { rel: format!("{site_rel}/{}", crate::venv::EDITABLE_PTH), mode: 0o644, content: pth_lines.join("\n") + "\n" });
    }
    files
}

/// `[console_scripts]` and `[gui_scripts]` of an `entry_points.txt`: (name, `module:attr`).
pub fn console_scripts(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut on = false;
    for l in text.lines().map(str::trim) {
        if l.starts_with('[') {
            on = l == "[console_scripts]" || l == "[gui_scripts]";
            continue;
        }
        if !on || l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some((name, target)) = l.split_once('=') {
            let name = name.trim();
            // Extras (`mod:f [x]`) do not change what runs.
            let target = target.split('[').next().unwrap_or("").trim();
            if !name.is_empty() && !name.contains(['/', '\\']) && !target.is_empty() {
                out.push((name.to_string(), target.to_string()));
            }
        }
    }
    out
}

/// A console script that runs the `python` beside the path it was called by (`dirname "$0"`,
/// not its real path: in a run tree `<venv>` links to the cached env, and the interpreter
/// must see the run tree's path to import the run tree's sources).
pub fn console_script(target: &str) -> Option<String> {
    let (module, attr) = target.split_once(':')?;
    let (module, attr) = (module.trim(), attr.trim());
    let ok = |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'));
    if !ok(module) || !ok(attr) {
        return None;
    }
    let first = attr.split('.').next()?;
    Some(format!(
        "#!/bin/sh\n'''exec' \"$(dirname -- \"$0\")\"/python \"$0\" \"$@\"\n' '''\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {module} import {first}\nif __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    sys.exit({attr}())\n"
    ))
}

/// The cache key of a node's env: what is installed (requirements and the files written
/// into it), the interpreter (path, version, ABI, platform) and the uv that builds it.
pub fn env_key(req: &Requirements, files: &[EnvFile], python: &Choice, uv_version: &str) -> String {
    let mut h = Sha256::new();
    let mut put = |k: &str, v: &str| {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.len().to_le_bytes());
        h.update(v.as_bytes());
    };
    put("pytest-cloud env", "1");
    put("source", req.source.as_str());
    for l in &req.lines {
        put("req", l);
    }
    for f in files {
        put("file", &f.rel);
        put("mode", &format!("{:o}", f.mode));
        put("content", &f.content);
    }
    let PythonAbi { implementation, abiflags, platform, machine, libc, prefix } = &python.abi;
    for (k, v) in [("py", &python.path), ("ver", &python.version), ("impl", implementation), ("flags", abiflags), ("plat", platform), ("mach", machine), ("libc", libc), ("prefix", prefix)] {
        put(k, v);
    }
    put("uv", uv_version);
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// `lib/python3.11/site-packages` for a CPython at `version`.
pub fn site_rel(version: &str) -> String {
    let (ma, mi) = interp::major_minor(version).unwrap_or((3, 0));
    format!("lib/python{ma}.{mi}/site-packages")
}


/// `uv 0.13.9 (x86_64-unknown-linux-gnu)` -> `0.13.9`.
pub fn uv_version(text: &str) -> Option<String> {
    let v = text.split_whitespace().nth(1)?;
    parse_version3(v)?;
    Some(v.to_string())
}

pub fn parse_version3(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split(['.', '+', '-']).map(|p| p.parse::<u32>());
    Some((it.next()?.ok()?, it.next()?.ok()?, it.next().and_then(|r| r.ok()).unwrap_or(0)))
}

pub fn new_enough(version: &str) -> bool {
    // The controller's own minimum (the first uv that installs a pylock.toml).
    parse_version3(version).is_some_and(|v| v >= crate::envsupply::MIN_UV)
}

/// The package uv names in a failed install ("Because foo==1.2 has no wheels with a matching
/// Python ABI tag", "No solution found ... Because there is no version of foo==9"), if any.
pub fn failing_package(uv_stderr: &str) -> Option<String> {
    for marker in ["there is no version of ", "Because ", "Failed to build `", "Failed to download `", "Failed to prepare distributions: Failed to fetch wheel: "] {
        if let Some(i) = uv_stderr.find(marker) {
            let rest = &uv_stderr[i + marker.len()..];
            let word: String = rest
                .trim_start_matches(['`', '\''])
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '<' | '>' | '!' | '~' | '@'))
                .collect();
            let word = word.trim_end_matches('.').to_string();
            if !word.is_empty() && word != "the" && word != "you" && word != "there" {
                return Some(word);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::PythonInfo;
    use std::collections::BTreeMap;

    fn abi() -> PythonAbi {
        PythonAbi { implementation: "cpython".into(), abiflags: String::new(), platform: "linux".into(), machine: "x86_64".into(), libc: "glibc 2.36".into(), prefix: "/usr".into() }
    }

    fn facts(pythons: &[(&str, &str, &str)]) -> Facts {
        Facts {
            pythons: pythons.iter().map(|(n, p, v)| (n.to_string(), PythonInfo { path: p.to_string(), version: v.to_string(), abi: Some(abi()) })).collect::<BTreeMap<_, _>>(),
            ..Facts::example()
        }
    }

    #[test]
    fn auto_syncs_where_the_venv_fits_and_builds_where_it_does_not() {
        assert_eq!(choose_strategy(EnvMode::Auto, Ok(())), Ok(Strategy::Sync));
        assert_eq!(choose_strategy(EnvMode::Auto, Err("3.11 only".into())), Ok(Strategy::Build));
        assert_eq!(choose_strategy(EnvMode::Build, Ok(())), Ok(Strategy::Build));
        let e = choose_strategy(EnvMode::Sync, Err("the virtualenv needs CPython 3.12".into())).unwrap_err();
        assert!(e.starts_with("the virtualenv needs CPython 3.12") && e.contains("--env build"), "{e}");
        assert_eq!(EnvMode::parse("build"), Ok(EnvMode::Build));
        assert!(EnvMode::parse("pip").is_err());
    }

    #[test]
    fn the_build_interpreter_is_the_pinned_one_else_the_venvs_minor_else_python3() {
        let f = facts(&[("python3", "/usr/bin/python3", "3.11.2"), ("python3.13", "/usr/local/bin/python3.13", "3.13.0")]);
        assert_eq!(build_interpreter(&f, None, "3.12.1").unwrap().path, "/usr/bin/python3");
        assert_eq!(build_interpreter(&f, None, "3.13.1").unwrap().path, "/usr/local/bin/python3.13");
        assert_eq!(build_interpreter(&f, Some("python3.13"), "3.12.1").unwrap().version, "3.13.0");
        assert!(build_interpreter(&f, Some("python3.12"), "3.12.1").unwrap_err().contains("no CPython python3.12"));
        let only = facts(&[("python3.10", "/opt/py310", "3.10.4"), ("python3.9", "/opt/py39", "3.9.1")]);
        assert_eq!(build_interpreter(&only, None, "3.12.1").unwrap().path, "/opt/py310", "the newest");
        let mut pypy = facts(&[("python3", "/usr/bin/pypy3", "3.10.0")]);
        pypy.pythons.get_mut("python3").unwrap().abi.as_mut().unwrap().implementation = "pypy".into();
        assert!(build_interpreter(&pypy, None, "3.12.1").is_err());
    }

    #[test]
    fn a_bare_version_names_its_interpreter() {
        assert_eq!(python_name("3.12"), "python3.12");
        assert_eq!(python_name("python3.11"), "python3.11");
        assert_eq!(python_name("/opt/py/bin/python3"), "/opt/py/bin/python3");
        assert_eq!(python_name("3"), "3");
        assert_eq!(python_name("3.12.1"), "3.12.1");
    }

    #[test]
    fn a_pep751_lock_gives_pins_with_markers_and_names_what_it_leaves_out() {
        let text = r#"
lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.9"

[[packages]]
name = "msgpack"
version = "1.1.0"
marker = "python_version >= '3.8'"
wheels = [{ url = "https://files.pythonhosted.org/x.whl", hashes = { sha256 = "ab" } }]

[[packages]]
name = "pytest"
version = "8.3.4"
index = "https://pypi.org/simple"

[[packages]]
name = "myproj"
directory = { path = ".", editable = true }

[[packages]]
name = "dep"
vcs = { type = "git", url = "https://example.org/dep.git", commit-id = "abc123" }
"#;
        let (lines, skipped) = parse_pylock(text).unwrap();
        assert_eq!(lines, ["msgpack==1.1.0 ; python_version >= '3.8'", "pytest==8.3.4", "dep @ git+https://example.org/dep.git@abc123"]);
        assert_eq!(skipped, ["myproj (a local directory or archive)"]);
        assert!(parse_pylock("lock-version = \"2.0\"\n").unwrap_err().contains("only 1.x"));
        assert!(parse_pylock("[[packages]]\nname = \"x\"\nversion = \"1\"\n").unwrap_err().contains("lock-version"));
        assert!(parse_pylock("lock-version = \"1.0\"\n[[packages]]\nname = \"x\"\n").unwrap_err().contains("x has no version"));
        assert!(parse_pylock("not = [toml").unwrap_err().starts_with("not TOML"));
    }

    #[test]
    fn uv_exports_keep_markers_and_drop_local_paths() {
        let text = "# This file was autogenerated by uv\nmsgpack==1.1.0\n    # via clipkg\n-e ./libs/a\ntomli==2.0.1 ; python_full_version < '3.11'\n./wheels/x.whl\n";
        let (lines, skipped) = exported_lines(text);
        assert_eq!(lines, ["msgpack==1.1.0", "tomli==2.0.1 ; python_full_version < '3.11'"]);
        assert_eq!(skipped.len(), 2);
    }

    fn dist(site: &Path, dir: &str, name: &str, version: &str, direct: Option<&str>, extra: &[(&str, &str)]) {
        let d = site.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("METADATA"), format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: not-a-header\n")).unwrap();
        if let Some(j) = direct {
            std::fs::write(d.join("direct_url.json"), j).unwrap();
        }
        for (f, c) in extra {
            std::fs::write(d.join(f), c).unwrap();
        }
    }

    #[test]
    fn the_venvs_distributions_are_pinned_from_dist_info_and_editables_become_an_overlay() {
        let t = tempfile::tempdir().unwrap();
        let site = t.path().join("lib/python3.12/site-packages");
        dist(&site, "msgpack-1.1.0.dist-info", "msgpack", "1.1.0", None, &[]);
        dist(&site, "Pytest_Xdist-3.8.0.dist-info", "pytest-xdist", "3.8.0", None, &[]);
        dist(&site, "clipkg-0.1.dist-info", "clipkg", "0.1", Some(r#"{"url": "file:///home/me/proj%20x", "dir_info": {"editable": true}}"#), &[("entry_points.txt", "[console_scripts]\nmytool = clipkg.cli:main\n[pytest11]\nx = clipkg.plug\n")]);
        dist(&site, "localwheel-2.dist-info", "localwheel", "2", Some(r#"{"url": "file:///tmp/localwheel-2-py3-none-any.whl", "archive_info": {}}"#), &[]);
        dist(&site, "vcsdep-0.3.dist-info", "vcsdep", "0.3", Some(r#"{"url": "https://g.example/v.git", "vcs_info": {"vcs": "git", "commit_id": "deadbeef"}}"#), &[]);
        let sites = vec![site.clone()];
        let (pins, skipped) = venv_pins(&sites);
        assert_eq!(pins, ["msgpack==1.1.0", "pytest-xdist==3.8.0", "vcsdep @ git+https://g.example/v.git@deadbeef"]);
        assert_eq!(skipped, ["localwheel 2 (installed from the file file:///tmp/localwheel-2-py3-none-any.whl)"]);
        let all = installed(&sites);
        let clip = all.iter().find(|d| d.name == "clipkg").unwrap();
        assert_eq!(clip.direct, Some(Direct::Dir { path: "/home/me/proj x".into(), editable: true }));

        let files = editable_overlay(&all, "lib/python3.11/site-packages", &["../../../../src".into()]);
        let rels: Vec<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "lib/python3.11/site-packages/clipkg-0.1.dist-info/METADATA",
                "lib/python3.11/site-packages/clipkg-0.1.dist-info/entry_points.txt",
                "lib/python3.11/site-packages/clipkg-0.1.dist-info/INSTALLER",
                "bin/mytool",
                "lib/python3.11/site-packages/000-pytest-cloud-editable.pth",
            ]
        );
        let script = &files[3];
        assert_eq!(script.mode, 0o755);
        assert!(script.content.starts_with("#!/bin/sh\n'''exec' \"$(dirname -- \"$0\")\"/python \"$0\" \"$@\"\n' '''\n"), "{}", script.content);
        assert!(script.content.contains("from clipkg.cli import main\n") && script.content.contains("sys.exit(main())"));
        assert_eq!(files[4].content, "../../../../src\n");
    }

    #[test]
    fn console_scripts_are_read_from_their_sections_only() {
        let eps = "[console_scripts]\na = m:f\nb = m.sub:Cls.run [extra]\n\n[pytest11]\nc = m:g\n[gui_scripts]\nd=m:h\n";
        assert_eq!(console_scripts(eps), [("a".into(), "m:f".into()), ("b".into(), "m.sub:Cls.run".into()), ("d".into(), "m:h".into())]);
        assert!(console_script("m.sub:Cls.run").unwrap().contains("from m.sub import Cls\n") );
        assert_eq!(console_script("m:f; rm -rf /"), None);
        assert_eq!(console_script("nomodule"), None);
    }

    #[test]
    fn the_key_changes_with_what_is_installed_the_interpreter_and_uv_and_only_then() {
        let req = Requirements { source: Source::Venv, lines: vec!["msgpack==1.1.0".into()], skipped: vec![] };
        let py = Choice { path: "/usr/bin/python3".into(), version: "3.11.2".into(), abi: abi() };
        let files = vec![EnvFile { rel: "bin/t".into(), mode: 0o755, content: "x".into() }];
        let k = env_key(&req, &files, &py, "0.13.9");
        assert_eq!(k.len(), 32);
        assert_eq!(k, env_key(&req.clone(), &files.clone(), &py.clone(), "0.13.9"), "same inputs, same key");
        let mut other = Vec::new();
        let req2 = Requirements { lines: vec!["msgpack==1.1.1".into()], ..req.clone() };
        other.push(env_key(&req2, &files, &py, "0.13.9"));
        other.push(env_key(&Requirements { source: Source::Pylock, ..req.clone() }, &files, &py, "0.13.9"));
        other.push(env_key(&req, &[], &py, "0.13.9"));
        other.push(env_key(&req, &files, &Choice { version: "3.11.4".into(), ..py.clone() }, "0.13.9"));
        other.push(env_key(&req, &files, &Choice { abi: PythonAbi { machine: "aarch64".into(), ..abi() }, ..py.clone() }, "0.13.9"));
        other.push(env_key(&req, &files, &py, "0.14.0"));
        for o in &other {
            assert_ne!(o, &k);
        }
        // Requirement lines are not split ambiguously: ["ab", "c"] differs from ["a", "bc"].
        let ab = Requirements { lines: vec!["ab".into(), "c".into()], ..req.clone() };
        let bc = Requirements { lines: vec!["a".into(), "bc".into()], ..req.clone() };
        assert_ne!(env_key(&ab, &[], &py, "1"), env_key(&bc, &[], &py, "1"));
    }

    #[test]
    fn uv_versions_and_failures_are_read_from_its_words() {
        assert_eq!(uv_version("uv 0.13.9 (x86_64-unknown-linux-gnu)\n").as_deref(), Some("0.13.9"));
        assert_eq!(uv_version("uv 0.4.30\n").as_deref(), Some("0.4.30"));
        assert!(!new_enough("0.4.30") && !new_enough("0.6.14") && new_enough("0.6.15") && new_enough("0.13.9"));
        assert_eq!(uv_version("bash: uv: not found"), None);
        let e = "  × No solution found when resolving dependencies:\n  ╰─▶ Because nowheel==1.0 has no wheels with a matching Python ABI tag (e.g., `cp311`), we can conclude that nowheel==1.0 cannot be used.\n";
        assert_eq!(failing_package(e).as_deref(), Some("nowheel==1.0"));
        assert_eq!(failing_package("Because there is no version of msgpack==99.0 and you require msgpack==99.0").as_deref(), Some("msgpack==99.0"));
        assert_eq!(failing_package("error: Failed to build `broken==0.1`\n  Caused by: ...").as_deref(), Some("broken==0.1"));
        assert_eq!(failing_package("error: something else"), None);
    }
}
