//! The local side: who we are, where the project root is (pytest's rootdir rules), which
//! virtualenv belongs to it, and which remote directories are safe to sync into.

use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// The local uid, from the kernel (getuid) rather than `$USER` (which may be unset).
pub fn local_uid() -> u32 {
    crate::machine::uid()
}

/// The local user name for the uid (`id -un` consults NSS, unlike reading /etc/passwd),
/// asked once per process (the default chdir, the lock's holder line and the lease line all
/// name it).
pub fn local_user() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        crate::proc::Cmd::new(["id", "-un"])
            .checked()
            .ok()
            .map(|o| o.stdout_str().trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("uid{}", local_uid()))
    })
    .clone()
}

/// pytest's rootdir rules, simplified to what decides the directory to sync: the nearest
/// ancestor of `start` holding pytest.ini, .pytest.ini, pyproject.toml with a
/// `[tool.pytest...]` table, tox.ini with `[pytest]`, or setup.cfg with `[tool:pytest]`;
/// else `start` itself.
pub fn find_rootdir(start: &Path) -> PathBuf {
    for dir in start.ancestors() {
        if is_rootdir(dir) {
            return dir.to_path_buf();
        }
    }
    start.to_path_buf()
}

fn file_has(path: &Path, needle: impl Fn(&str) -> bool) -> bool {
    std::fs::read_to_string(path).map(|t| t.lines().any(|l| needle(l.trim()))).unwrap_or(false)
}

/// The `[tool.pytest]` table of DIR's pyproject.toml (pytest 9's native options, or the
/// `ini_options` table inside it), parsed as TOML; None when the file is missing, is not
/// valid TOML (pytest itself would refuse it), or has no such table.
pub fn pyproject_pytest(dir: &Path) -> Option<toml::Table> {
    let text = std::fs::read_to_string(dir.join("pyproject.toml")).ok()?;
    let mut doc: toml::Table = text.parse().ok()?;
    match doc.remove("tool")? {
        toml::Value::Table(mut tool) => match tool.remove("pytest")? {
            toml::Value::Table(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// The table pytest reads its ini-style options from in DIR's pyproject.toml:
/// `[tool.pytest.ini_options]`.
pub fn pyproject_pytest_options(dir: &Path) -> Option<toml::Table> {
    match pyproject_pytest(dir)?.remove("ini_options")? {
        toml::Value::Table(t) => Some(t),
        _ => None,
    }
}

fn is_rootdir(dir: &Path) -> bool {
    dir.join("pytest.ini").is_file()
        || dir.join(".pytest.ini").is_file()
        || pyproject_pytest(dir).is_some()
        || file_has(&dir.join("tox.ini"), |l| l == "[pytest]")
        || file_has(&dir.join("setup.cfg"), |l| l == "[tool:pytest]")
}

/// The project root: `--source` if given (must be a directory), else the rootdir of the cwd.
pub fn project_root(source: Option<&Path>) -> Result<PathBuf> {
    match source {
        Some(s) => {
            let abs = std::fs::canonicalize(s)
                .map_err(|e| Error::usage(format!("--source {}: {e}", s.display())))?;
            if !abs.is_dir() {
                return Err(Error::usage(format!("--source {}: not a directory", s.display())));
            }
            Ok(abs)
        }
        None => {
            let cwd = std::env::current_dir().map_err(|e| Error::io("current directory", e))?;
            let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
            Ok(find_rootdir(&cwd))
        }
    }
}

/// How the project's virtualenv was found, said to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venv {
    /// Relative to the project root.
    pub rel: PathBuf,
    pub why: &'static str,
}

/// Finds the project's virtualenv: the explicit path; else `$VIRTUAL_ENV` when it lies inside
/// the project; else `.venv` or `venv` with a `pyvenv.cfg` at the root. None when there is none.
pub fn find_venv(root: &Path, explicit: Option<&Path>, virtual_env: Option<&Path>) -> Result<Option<Venv>> {
    if let Some(p) = explicit {
        let rel = relative_inside(root, p).ok_or_else(|| {
            Error::usage(format!(
                "--virtualenv-path {}: must be inside the project root {}",
                p.display(),
                root.display()
            ))
        })?;
        if !root.join(&rel).join("pyvenv.cfg").is_file() {
            return Err(Error::usage(format!(
                "--virtualenv-path {}: no pyvenv.cfg there, so it is not a virtualenv",
                p.display()
            )));
        }
        return Ok(Some(Venv { rel, why: "--virtualenv-path" }));
    }
    if let Some(ve) = virtual_env {
        if let Some(rel) = relative_inside(root, ve) {
            if root.join(&rel).join("pyvenv.cfg").is_file() {
                return Ok(Some(Venv { rel, why: "$VIRTUAL_ENV" }));
            }
        }
    }
    for name in [".venv", "venv"] {
        if root.join(name).join("pyvenv.cfg").is_file() {
            return Ok(Some(Venv { rel: PathBuf::from(name), why: "found at the project root" }));
        }
    }
    Ok(None)
}

/// `p` relative to `root` if it lies strictly inside it (after resolving), else None.
pub fn relative_inside(root: &Path, p: &Path) -> Option<PathBuf> {
    let abs = if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
    let abs = std::fs::canonicalize(&abs).unwrap_or(abs);
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let rel = abs.strip_prefix(&root).ok()?.to_path_buf();
    if rel.as_os_str().is_empty() { None } else { Some(rel) }
}

/// The default remote directory name: `pytest_<local user>_<basename of project root>`.
pub fn default_chdir(root: &Path) -> String {
    let base = root.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
    };
    format!("pytest_{}_{}", clean(&local_user()), clean(&base))
}

/// Refuses a remote directory that a later `rsync --delete` could turn into data loss: it must
/// be a plain relative path strictly below the remote home, made of safe characters (they also
/// travel inside xdist's `//`-separated spec).
pub fn validate_chdir(chdir: &str) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::usage(format!(
            "--chdir {chdir:?}: {why}. It is the directory on each node that pytest-cloud creates and \
             mirrors the project into (orphans deleted), so it must be a new directory below the remote home, \
             e.g. pytest_me_project"
        )))
    };
    if chdir.trim().is_empty() {
        return refuse("empty");
    }
    if chdir.starts_with('/') {
        return refuse("absolute paths are refused (it is relative to the remote home)");
    }
    if chdir.starts_with('~') {
        return refuse("'~' is refused (it is already relative to the remote home)");
    }
    if chdir.contains("//") {
        return refuse("'//' is refused");
    }
    if !chdir.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '+' | '@')) {
        return refuse("only letters, digits and . - _ + @ / are allowed");
    }
    let mut depth = 0usize;
    for comp in Path::new(chdir).components() {
        match comp {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => return refuse("'..' is refused"),
            _ => return refuse("must be a relative path"),
        }
    }
    if depth == 0 {
        return refuse("it resolves to the remote home itself");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chdir_that_could_destroy_data_is_refused() {
        for bad in ["", " ", ".", "./", "..", "../x", "a/../../b", "~", "~/x", "/", "/tmp/x", "a b", "a;b", "x//y", "$HOME"] {
            let err = validate_chdir(bad).expect_err(bad);
            assert_eq!(err.exit, crate::error::Exit::Usage);
            assert!(err.message.contains("--chdir"), "{}", err.message);
        }
        for good in ["pytest_me_proj", "work/pytest_x", "a.b-c_d+e@f"] {
            validate_chdir(good).expect(good);
        }
    }

    #[test]
    fn rootdir_is_the_nearest_ini_holder() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("proj");
        std::fs::create_dir_all(root.join("tests/sub")).unwrap();
        std::fs::write(root.join("pyproject.toml"), "[project]\nname='x'\n[tool.pytest.ini_options]\n").unwrap();
        assert_eq!(find_rootdir(&root.join("tests/sub")), root);
        // A pyproject.toml is read as TOML: the table named only inside a string does not count.
        std::fs::write(root.join("tests/sub/pyproject.toml"), "[project]\nname='y'\ndescription = '''\n[tool.pytest.ini_options]\n'''\n").unwrap();
        assert_eq!(find_rootdir(&root.join("tests/sub")), root, "a string that holds the table's name");
        std::fs::write(root.join("tests/sub/pyproject.toml"), "[tool.pytest]\naddopts = ['-q']\n").unwrap();
        assert_eq!(find_rootdir(&root.join("tests/sub")), root.join("tests/sub"), "pytest 9's [tool.pytest]");
        std::fs::remove_file(root.join("tests/sub/pyproject.toml")).unwrap();
        std::fs::write(root.join("tests/tox.ini"), "[tox]\n").unwrap();
        assert_eq!(find_rootdir(&root.join("tests/sub")), root, "tox.ini without [pytest] does not count");
        std::fs::write(root.join("tests/pytest.ini"), "[pytest]\n").unwrap();
        assert_eq!(find_rootdir(&root.join("tests/sub")), root.join("tests"));
    }

    #[test]
    fn venv_detection_order() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        assert_eq!(find_venv(&root, None, None).unwrap(), None);
        for v in ["venv", ".venv", "envs/e"] {
            std::fs::create_dir_all(root.join(v)).unwrap();
            std::fs::write(root.join(v).join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        }
        assert_eq!(find_venv(&root, None, None).unwrap().unwrap().rel, PathBuf::from(".venv"));
        let ve = root.join("envs/e");
        let found = find_venv(&root, None, Some(&ve)).unwrap().unwrap();
        assert_eq!((found.rel, found.why), (PathBuf::from("envs/e"), "$VIRTUAL_ENV"));
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(find_venv(&root, None, Some(outside.path())).unwrap().unwrap().rel, PathBuf::from(".venv"));
        assert!(find_venv(&root, Some(outside.path()), None).is_err());
        assert!(find_venv(&root, Some(Path::new("nope")), None).is_err());
        assert_eq!(find_venv(&root, Some(Path::new("venv")), None).unwrap().unwrap().rel, PathBuf::from("venv"));
    }
}
