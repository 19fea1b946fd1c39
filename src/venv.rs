//! What a synced virtualenv needs on a node, read from the local copy: the base interpreter it
//! was made from (a venv is not relocatable: `bin/python` links to it and `pyvenv.cfg` names
//! it), and the local absolute paths its editable installs point at, which must be redirected
//! to the node's copy of the project.
//!
//! The redirect is one `.pth` file, [`EDITABLE_PTH`], written into the synced venv's
//! site-packages on each node. `site` reads `.pth` files in name order and appends each
//! existing directory to `sys.path`, so the node's source directories come before the entries
//! of the `__editable__*` files (whose local paths do not exist on the node, or, when they
//! do, come later). Neither pip, a build backend nor an index is needed on the node.

use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// The `.pth` pytest-cloud writes into the node's site-packages. `0` sorts before `_` and
/// letters, so its entries come first.
pub const EDITABLE_PTH: &str = "000-pytest-cloud-editable.pth";

/// The keys of `pyvenv.cfg` we use. `venv` writes `home`, `version`, `executable`;
/// `virtualenv` writes `home`, `version_info`, `base-executable`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PyvenvCfg {
    pub home: Option<String>,
    pub version: Option<String>,
    pub executable: Option<String>,
}

pub fn parse_pyvenv_cfg(text: &str) -> PyvenvCfg {
    let mut cfg = PyvenvCfg::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let (k, v) = (k.trim(), v.trim().to_string());
        match k {
            "home" => cfg.home = Some(v),
            "version" | "version_info" => cfg.version = Some(v),
            "executable" | "base-executable" => {
                cfg.executable.get_or_insert(v);
            }
            _ => {}
        }
    }
    cfg
}

/// `3.11.2`, `3.11.2.final.0` -> `3.11.2`; None when it does not start with three numbers.
pub fn major_minor_patch(v: &str) -> Option<String> {
    let parts: Vec<&str> = v.trim().split('.').take(3).collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        Some(parts.join("."))
    } else {
        None
    }
}

/// The interpreter a synced venv runs on a node, and the version it must have there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseInterpreter {
    /// Absolute path that must exist on the node.
    pub path: String,
    /// major.minor.patch.
    pub version: String,
    /// Where the path was read, for messages.
    pub from: String,
}

/// Reads `<venv>/pyvenv.cfg` and follows `<venv>/bin/python`'s symlinks to the first path
/// outside the venv: that is what runs on the node. A venv made with `--copies` has no such
/// link; then `pyvenv.cfg`'s `executable` (or `home`/python3) names it.
pub fn base_interpreter(venv: &Path) -> Result<BaseInterpreter> {
    let cfg_path = venv.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(cfg_path.display(), e))?;
    let cfg = parse_pyvenv_cfg(&text);
    let (path, from) = match link_out_of(venv, &venv.join("bin/python")) {
        Some(p) => (p, "bin/python links to it".to_string()),
        None => match (&cfg.executable, &cfg.home) {
            (Some(e), _) => (PathBuf::from(e), "pyvenv.cfg executable".to_string()),
            (None, Some(h)) => (Path::new(h).join("python3"), "pyvenv.cfg home".to_string()),
            (None, None) => {
                return Err(Error::bad_input(format!(
                    "{}: names no base interpreter (no home or executable key) and bin/python is not a link; \
                     is it a virtualenv?",
                    cfg_path.display()
                )));
            }
        },
    };
    let version = match cfg.version.as_deref().and_then(major_minor_patch) {
        Some(v) => v,
        // Older virtualenvs write no version: ask the local interpreter itself.
        None => {
            let cmd = crate::proc::Cmd::new([path.as_os_str(), "-c".as_ref(), VERSION_CODE.as_ref()]);
            let out = cmd.checked().map_err(|e| {
                Error::bad_input(format!("{} names no version, and asking the interpreter failed: {}", cfg_path.display(), e.message))
            })?;
            major_minor_patch(&out.stdout_str()).ok_or_else(|| {
                Error::bad_input(format!("{} printed no version", path.display()))
            })?
        }
    };
    Ok(BaseInterpreter { path: path.display().to_string(), version, from })
}

/// Python code printing major.minor.patch, for local and remote checks.
pub const VERSION_CODE: &str = "import sys; print('%d.%d.%d' % sys.version_info[:3])";

/// Follows symlinks from `link` while they stay inside `venv`; returns the first target
/// outside it (absolute, lexically normalised), or None when the chain ends inside.
fn link_out_of(venv: &Path, link: &Path) -> Option<PathBuf> {
    let mut cur = link.to_path_buf();
    for _ in 0..40 {
        let target = std::fs::read_link(&cur).ok()?;
        let next = normalize(&cur.parent()?.join(target));
        if !next.starts_with(venv) {
            return Some(next);
        }
        cur = next;
    }
    None
}

/// Removes `.` and resolves `..` lexically (symlinks are not resolved on purpose: the node has
/// its own).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The venv's site-packages directories (relative to the venv), `lib/python*/site-packages`.
pub fn site_packages(venv: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else { return out };
    let mut names: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("python")).collect();
    names.sort();
    for n in names {
        let rel = Path::new("lib").join(n).join("site-packages");
        if venv.join(&rel).is_dir() {
            out.push(rel);
        }
    }
    out
}

/// Local paths the venv's editable installs point at: path lines of `.pth` files, the
/// package paths in setuptools' `__editable___*_finder.py` (their parent directory is the
/// `sys.path` entry) and `*.egg-link` files. In name order, de-duplicated.
pub fn editable_targets(site: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let Ok(entries) = std::fs::read_dir(site) else { return out };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == EDITABLE_PTH {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let found: Vec<PathBuf> = if name.ends_with(".pth") {
            pth_paths(&text)
        } else if name.starts_with("__editable__") && name.ends_with("_finder.py") {
            finder_paths(&text)
        } else if name.ends_with(".egg-link") {
            text.lines().next().map(str::trim).filter(|l| l.starts_with('/')).map(PathBuf::from).into_iter().collect()
        } else {
            continue;
        };
        for p in found {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Absolute directory lines of a `.pth` file (`import` lines and comments are code, not paths).
pub fn pth_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// The parents of the absolute paths quoted in a setuptools editable finder
/// (`MAPPING = {'pkg': '/src/pkg'}`, `NAMESPACES = {'ns': ['/src/ns']}`).
pub fn finder_paths(text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("MAPPING") || l.starts_with("NAMESPACES")) {
        for (i, part) in line.split(['\'', '"']).enumerate() {
            // Odd pieces are inside quotes.
            if i % 2 == 1 && part.starts_with('/') {
                if let Some(parent) = Path::new(part).parent() {
                    let p = parent.to_path_buf();
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// `p` relative to `root` when inside it or equal to it (`""`), after resolving symlinks.
pub fn inside_or_root(root: &Path, p: &Path) -> Option<PathBuf> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let abs = if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
    let abs = std::fs::canonicalize(&abs).unwrap_or(abs);
    abs.strip_prefix(&root).ok().map(Path::to_path_buf)
}

/// Where a develop egg's modules are imported from: `<egg>/src` for a src layout (a `src`
/// directory that is not itself a package), else the egg directory.
pub fn develop_egg_import_root(root: &Path, egg_rel: &Path) -> PathBuf {
    let src = root.join(egg_rel).join("src");
    if src.is_dir() && !src.join("__init__.py").exists() {
        egg_rel.join("src")
    } else {
        egg_rel.to_path_buf()
    }
}

/// `cloud_develop_eggs` from the project's pytest configuration (the file pytest itself would
/// read at the root): whitespace-separated paths relative to the project root.
pub fn ini_develop_eggs(root: &Path) -> Vec<String> {
    let read = |name: &str| std::fs::read_to_string(root.join(name)).ok();
    for (file, section) in [("pytest.ini", "[pytest]"), (".pytest.ini", "[pytest]")] {
        if let Some(t) = read(file) {
            return ini_value(&t, section, "cloud_develop_eggs");
        }
    }
    if let Some(options) = crate::project::pyproject_pytest_options(root) {
        return toml_words(options.get("cloud_develop_eggs"));
    }
    for (file, section) in [("tox.ini", "[pytest]"), ("setup.cfg", "[tool:pytest]")] {
        if let Some(t) = read(file) {
            if t.lines().any(|l| l.trim() == section) {
                return ini_value(&t, section, "cloud_develop_eggs");
            }
        }
    }
    Vec::new()
}

/// An ini key's value with its indented continuation lines, split on whitespace.
pub fn ini_value(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut in_section = false;
    let mut collecting = false;
    let mut words = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t == section;
            collecting = false;
            continue;
        }
        if !in_section {
            continue;
        }
        let continuation = line.starts_with([' ', '\t']) && !t.is_empty();
        if collecting && continuation {
            if !t.starts_with(['#', ';']) {
                words.extend(t.split_whitespace().map(String::from));
            }
            continue;
        }
        collecting = false;
        if let Some((k, v)) = t.split_once(['=', ':']) {
            if k.trim() == key {
                words.extend(v.split_whitespace().map(String::from));
                collecting = true;
            }
        }
    }
    words
}

/// An ini option's TOML value as pytest reads it: a string is split on whitespace, an array
/// gives its strings; anything else (absent, a number) gives nothing.
pub fn toml_words(value: Option<&toml::Value>) -> Vec<String> {
    match value {
        Some(toml::Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_venv_and_virtualenv_cfg() {
        let venv = parse_pyvenv_cfg("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\nexecutable = /usr/bin/python3.11\ncommand = /usr/bin/python3 -m venv /p/.venv\n");
        assert_eq!(venv, PyvenvCfg { home: Some("/usr/bin".into()), version: Some("3.11.2".into()), executable: Some("/usr/bin/python3.11".into()) });
        let ve = parse_pyvenv_cfg("home = /opt/py/bin\nimplementation = CPython\nversion_info = 3.12.1.final.0\nvirtualenv = 20.25.0\nbase-executable = /opt/py/bin/python3.12\n");
        assert_eq!(ve.version.as_deref().and_then(major_minor_patch).as_deref(), Some("3.12.1"));
        assert_eq!(ve.executable.as_deref(), Some("/opt/py/bin/python3.12"));
        assert_eq!(major_minor_patch("3.11"), None);
    }

    #[test]
    fn base_interpreter_is_where_the_link_leaves_the_venv() {
        let t = tempfile::tempdir().unwrap();
        let venv = t.path().join(".venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\nversion = 3.11.2\nexecutable = /usr/bin/python3.11\n").unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3", venv.join("bin/python3")).unwrap();
        std::os::unix::fs::symlink("python3", venv.join("bin/python")).unwrap();
        let b = base_interpreter(&venv).unwrap();
        assert_eq!((b.path.as_str(), b.version.as_str()), ("/usr/bin/python3", "3.11.2"));
        std::fs::remove_file(venv.join("bin/python")).unwrap();
        std::fs::write(venv.join("bin/python"), "copied binary").unwrap();
        assert_eq!(base_interpreter(&venv).unwrap().path, "/usr/bin/python3.11");
    }

    #[test]
    fn editable_paths_from_pth_and_finder() {
        assert_eq!(pth_paths("/p/src\nimport x; x.install()\n# c\n\n/q\n"), [PathBuf::from("/p/src"), PathBuf::from("/q")]);
        let finder = "import sys\nMAPPING: dict[str, str] = {'mypkg': '/p/src/mypkg', 'other': \"/p/lib/other.py\"}\nNAMESPACES: dict[str, list[str]] = {'ns': ['/p/ns_src/ns']}\nPATH_PLACEHOLDER = '__editable__'\n";
        assert_eq!(finder_paths(finder), [PathBuf::from("/p/src"), PathBuf::from("/p/lib"), PathBuf::from("/p/ns_src")]);
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("__editable__.a-1.pth"), "/p/src\n").unwrap();
        std::fs::write(t.path().join("__editable___b_1_finder.py"), finder).unwrap();
        std::fs::write(t.path().join("distutils-precedence.pth"), "import os; var = 'SETUPTOOLS_USE_DISTUTILS'\n").unwrap();
        std::fs::write(t.path().join(EDITABLE_PTH), "/node/only\n").unwrap();
        std::fs::write(t.path().join("c.egg-link"), "/p/c\n.\n").unwrap();
        let got = editable_targets(t.path());
        assert_eq!(got, ["/p/src", "/p/lib", "/p/ns_src", "/p/c"].map(PathBuf::from));
    }

    #[test]
    fn develop_eggs_from_each_config_file() {
        let ini = "[pytest]\naddopts = -q\ncloud_develop_eggs = libs/a\n    libs/b libs/c\n  # comment\nother = 1\n";
        assert_eq!(ini_value(ini, "[pytest]", "cloud_develop_eggs"), ["libs/a", "libs/b", "libs/c"]);
        assert!(ini_value("[tox]\ncloud_develop_eggs = x\n", "[pytest]", "cloud_develop_eggs").is_empty());
        let t = tempfile::tempdir().unwrap();
        let eggs_from = |text: &str| {
            std::fs::write(t.path().join("pyproject.toml"), text).unwrap();
            ini_develop_eggs(t.path())
        };
        assert_eq!(eggs_from("[project]\nname='x'\n[tool.pytest.ini_options]\ncloud_develop_eggs = [\n  \"libs/a\",\n  'libs/b', # a comment ]\n]\n"), ["libs/a", "libs/b"]);
        assert_eq!(eggs_from("[tool.pytest.ini_options]\ncloud_develop_eggs = \"a b\"\n"), ["a", "b"]);
        // What line matching got wrong: a dotted key, and the table's name inside a string.
        assert_eq!(eggs_from("tool.pytest.ini_options.cloud_develop_eggs = [\"d\"]\n"), ["d"]);
        assert!(eggs_from("[project]\ndescription = \"\"\"\n[tool.pytest.ini_options]\ncloud_develop_eggs = 'x'\n\"\"\"\n").is_empty());
        std::fs::remove_file(t.path().join("pyproject.toml")).unwrap();
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("setup.cfg"), "[tool:pytest]\ncloud_develop_eggs = e\n").unwrap();
        assert_eq!(ini_develop_eggs(t.path()), ["e"]);
        std::fs::write(t.path().join("pytest.ini"), "[pytest]\n").unwrap();
        assert!(ini_develop_eggs(t.path()).is_empty(), "pytest.ini wins, as in pytest");
    }

    #[test]
    fn src_layout_eggs_import_from_src() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/src/pkg")).unwrap();
        std::fs::create_dir_all(t.path().join("b/b")).unwrap();
        assert_eq!(develop_egg_import_root(t.path(), Path::new("a")), PathBuf::from("a/src"));
        assert_eq!(develop_egg_import_root(t.path(), Path::new("b")), PathBuf::from("b"));
    }
}
