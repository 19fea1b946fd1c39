//! The test venv, built once per machine (and per Python version and pins) under
//! CARGO_TARGET_TMPDIR and copied into each test project: Debian's python3 (node users cannot
//! reach a pyenv under /root) with pytest, pytest-xdist, pytest-reportlog (for `--report-log` checks) and wheel from PyPI, so that a project's
//! own package installs in editable mode with no index (`pip install --no-index -e .`).
//! Building it costs ~30 s of pip; a copy costs a fraction of a second.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const PYTHON: &str = "/usr/bin/python3";
pub const PINS: [&str; 4] = ["pytest>=8,<10", "pytest-xdist>=3.6,<3.9", "pytest-reportlog>=1,<2", "wheel"];

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn base_python_version() -> String {
    let out = run(Command::new(PYTHON).args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The template venv (made once; another test binary racing to make it is fine).
pub fn template() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let key = format!("test-venv-v2-py{}-{:016x}", base_python_version(), fnv1a(PINS.join(" ").as_bytes()));
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(&key);
        if dir.join("ready").exists() {
            return dir;
        }
        let tmp = base.join(format!("{key}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        run(Command::new(PYTHON).args(["-m", "venv"]).arg(&tmp));
        run(Command::new(tmp.join("bin/python")).args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]).args(PINS));
        std::fs::write(tmp.join("ready"), "").unwrap();
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

/// A copy of the template at `dest` (a venv directory to be), its scripts pointed at the
/// copy's own interpreter (their `#!` lines named the template's).
pub fn copy_to(dest: &Path) {
    run(Command::new("cp").arg("-a").arg(template()).arg(dest));
    std::fs::remove_file(dest.join("ready")).unwrap();
    // The template was made under a temporary name and renamed, so its scripts' `#!` lines
    // name that path: whatever they name, point them at the copy's interpreter.
    let new = format!("#!{}/bin/python", dest.display());
    for entry in std::fs::read_dir(dest.join("bin")).unwrap().flatten() {
        let p = entry.path();
        if p.is_symlink() || !p.is_file() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else { continue };
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        if first.starts_with("#!/") && first.contains("/bin/python") {
            std::fs::write(&p, format!("{new}\n{rest}")).unwrap();
        }
    }
}

/// `pip install -e .` of the project at `root` into its copied venv, without an index.
pub fn install_editable(root: &Path, venv: &Path) {
    run(Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-build-isolation", "--no-deps", "-e", "."])
        .current_dir(root));
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}
