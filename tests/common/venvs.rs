//! Virtualenvs made from an interpreter the node users cannot reach at that path (issue 9),
//! and a project that uses one: an editable src package with a console script, and msgpack,
//! whose C extension comes from a cp3X manylinux wheel from PyPI.
//!
//! Each template venv is built once per machine under CARGO_TARGET_TMPDIR (the first test
//! binary that needs it builds it; the others wait for it) and copied into each project.
//! Its base is root's pyenv 3.11.7 (under /root, mode 0700) when present; on a machine without
//! pyenv (CI on a fresh Debian 12), the system's /usr/bin/python3 seen through a symlink in a
//! root-only (0700) directory: the venv's `home` and `bin/python` then name a path the node
//! users cannot reach either, which is the case the rebase exists for.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Held while a template (or the copied 3.12) is made in this process.
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// An interpreter to make venvs from, and its version.
#[derive(Debug, Clone)]
pub struct Base {
    pub python: PathBuf,
    pub version: String,
}

fn version_of(python: &Path) -> String {
    run(Command::new(python).args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])).trim().to_string()
}

/// CPython 3.11 at a path only root can reach: pyenv's 3.11.7, else /usr/bin/python3 through
/// a 0700 directory.
pub fn hidden_base_311() -> Base {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let pyenv = PathBuf::from(home).join(".pyenv/versions/3.11.7/bin/python3");
    if pyenv.exists() {
        return Base { version: version_of(&pyenv), python: pyenv };
    }
    eprintln!("venvs: no pyenv 3.11.7 here; using /usr/bin/python3 through a root-only directory instead");
    let dir = tmp().join("hidden-base");
    let python = dir.join("bin/python3");
    if !python.exists() {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let link = dir.join(format!("bin/python3.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink("/usr/bin/python3", &link).unwrap();
        let _ = std::fs::rename(&link, &python);
    }
    set_mode(&dir, 0o700);
    Base { version: version_of(&python), python }
}

/// A CPython 3.12 to make a venv from: pyenv's (`~/.pyenv/versions/3.12.*`, 3.12.1 on this
/// machine image), under root's 0700 home, so the node users cannot run it (a python3.12 on
/// PATH would not do: the nodes would find it). Debian 12 ships no CPython but 3.11, and no
/// registry reachable here (PyPI, crates.io, Debian) carries a CPython 3.12 build (PyPI's
/// pbs-installer and uv download theirs from elsewhere), so where pyenv has none the caller
/// cannot run its check: it goes through `require` with the two texts below.
pub fn python_312() -> Option<Base> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut found: Vec<PathBuf> = std::fs::read_dir(PathBuf::from(home).join(".pyenv/versions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("3.12."))
        .map(|e| e.path().join("bin/python3"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    let p = found.into_iter().next()?;
    Some(Base { version: version_of(&p), python: p })
}

pub const PYTHON_312_MISSING: &str = "a CPython 3.12 interpreter (looked for ~/.pyenv/versions/3.12.*/bin/python3)";
pub const PYTHON_312_HOW: &str = "install one with pyenv (`pyenv install 3.12.1`, as the user that runs the tests; it builds from python.org's source); Debian 12 ships only 3.11 and no reachable registry has a CPython 3.12 build";

/// A venv made from `base` with `packages` from PyPI, built once (keyed by name and version).
pub fn template(name: &str, base: &Base, packages: &[&str]) -> PathBuf {
    let key = format!("venv-{name}-v1-py{}", base.version);
    let dir = tmp().join(&key);
    // The tests of one binary run on threads of one process: one builds, the others wait (the
    // staging name is per process, so two threads building it at once broke each other's venv).
    let _one_builder = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if dir.join("ready").exists() {
        return dir;
    }
    let staging = tmp().join(format!("{key}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new(&base.python).args(["-m", "venv"]).arg(&staging));
    run(Command::new(staging.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary", "msgpack"])
        .args(packages));
    std::fs::write(staging.join("ready"), "").unwrap();
    if std::fs::rename(&staging, &dir).is_err() {
        // Another test binary won the race; use its copy.
        let _ = std::fs::remove_dir_all(&staging);
    }
    dir
}

/// The packages of the rebase project's venv.
pub const PACKAGES: &[&str] = &["pytest>=8,<10", "pytest-xdist>=3.6,<3.9", "msgpack>=1.0", "setuptools>=64", "wheel"];

/// The node-side checks of issue 9, as a test file. `test_fails` fails on purpose, so that
/// outcomes and the exit code (1) are compared too.
pub const NODE_TESTS: &str = r#"import os
import subprocess
import sys
from pathlib import Path

import msgpack
import clipkg


def test_the_c_extension_is_loaded():
    from msgpack import _cmsgpack
    assert msgpack.Packer is _cmsgpack.Packer, "msgpack fell back to pure Python"
    assert msgpack.unpackb(msgpack.packb({"a": [1, 2]})) == {"a": [1, 2]}


def test_the_console_script_runs():
    tool = Path(sys.executable).parent / "mytool"
    out = subprocess.run([str(tool), "hello"], capture_output=True, text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, "mytool says hello from " + clipkg.__file__ + "\n", "")


def test_sys_executable_runs_the_venv():
    code = "import sys, msgpack, clipkg; print(sys.prefix == sys.base_prefix, clipkg.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False " + clipkg.__file__ + "\n"


def test_imports_the_editable_source_of_this_tree():
    assert Path(clipkg.__file__).resolve() == (Path(__file__).parent.parent / "src/clipkg/__init__.py").resolve()


def test_fails():
    assert clipkg.answer() == 41
"#;

/// A project with an editable src package `clipkg` (console script `mytool`) and msgpack, in
/// a copy of the template venv at `.venv`.
pub struct RebaseProject {
    pub dir: tempfile::TempDir,
}

impl RebaseProject {
    pub fn new(template: &Path) -> RebaseProject {
        let dir = tempfile::Builder::new().prefix("pc-rebase-proj-").tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let root = dir.path();
        let write = |rel: &str, content: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        };
        write(
            "pyproject.toml",
            "[build-system]\nrequires = [\"setuptools>=64\"]\nbuild-backend = \"setuptools.build_meta\"\n\
             [project]\nname = \"clipkg\"\nversion = \"0.1\"\ndependencies = [\"msgpack\"]\n\
             [project.scripts]\nmytool = \"clipkg.cli:main\"\n[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\n",
        );
        write("src/clipkg/__init__.py", "def answer():\n    return 42\n");
        write("src/clipkg/cli.py", "import sys\n\nimport clipkg\n\n\ndef main():\n    print('mytool says', sys.argv[1], 'from', clipkg.__file__)\n");
        write("tests/test_node.py", NODE_TESTS);
        run(Command::new("cp").arg("-a").arg(template).arg(root.join(".venv")));
        std::fs::remove_file(root.join(".venv/ready")).unwrap();
        own_shebangs(&root.join(".venv"));
        run(Command::new(root.join(".venv/bin/python"))
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-build-isolation", "--no-deps", "-e", "."])
            .current_dir(root));
        RebaseProject { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn python(&self) -> PathBuf {
        self.root().join(".venv/bin/python")
    }
}

/// A copied venv's scripts still run the template's python (or the path it was built at):
/// point them at this copy's, as a venv made here would have them.
fn own_shebangs(venv: &Path) {
    let bin = venv.join("bin");
    for e in std::fs::read_dir(&bin).unwrap().flatten() {
        let path = e.path();
        if std::fs::symlink_metadata(&path).map(|m| !m.is_file()).unwrap_or(true) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Some((first, rest)) = text.split_once('\n') else { continue };
        let Some(interp) = first.strip_prefix("#!") else { continue };
        let interp = Path::new(interp.trim());
        if interp.parent().and_then(Path::file_name).is_some_and(|n| n == "bin") && interp.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python")) {
            let own = bin.join(interp.file_name().unwrap());
            std::fs::write(&path, format!("#!{}\n{rest}", own.display())).unwrap();
        }
    }
}

/// uv from PyPI for the controller (a fresh Debian machine has none), installed once into a
/// venv of its own; the tests hand it to pytest-cloud as `$PYTEST_CLOUD_UV`.
pub fn uv() -> PathBuf {
    let base = Base { python: PathBuf::from("/usr/bin/python3"), version: version_of(Path::new("/usr/bin/python3")) };
    template("uv", &base, &["uv>=0.5"]).join("bin/uv")
}

/// pyenv's CPython 3.12 ([`python_312`]) copied to /tmp/pcm312/p (its RUNPATH, which names pyenv's lib/,
/// rewritten to the copy's), so that a node user can be given access to it: the base of a
/// venv that one node can take and another cannot. Made once per machine.
pub fn copied_312() -> Option<Base> {
    let src = python_312()?;
    let top = PathBuf::from("/tmp/pcm312");
    let python = top.join("p/bin/python3.12");
    let _one_builder = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if !top.join("ready").exists() {
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir_all(&top).unwrap();
        let prefix = src.python.parent().unwrap().parent().unwrap();
        run(Command::new("cp").arg("-a").arg(prefix).arg(top.join("p")));
        let old = format!("{}/lib", prefix.display());
        let new = format!("{}/p/lib", top.display());
        assert!(new.len() <= old.len(), "{new} must not be longer than {old}");
        let mut bytes = std::fs::read(&python).unwrap();
        let needle = format!("{old}\0").into_bytes();
        let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("the RUNPATH of pyenv's python3.12");
        let mut repl = new.into_bytes();
        repl.resize(needle.len(), 0);
        bytes[at..at + needle.len()].copy_from_slice(&repl);
        std::fs::write(&python, bytes).unwrap();
        std::fs::write(top.join("ready"), "").unwrap();
    }
    Some(Base { version: version_of(&python), python })
}
