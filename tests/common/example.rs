//! The example project (share/example) copied into a world-searchable temp dir, with a copy of
//! the test venv (`common::venv`: Debian's python3, pytest and pytest-xdist from PyPI, built
//! once) and the package installed into it in editable mode.
#![allow(dead_code)]

use super::venv;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Example {
    pub dir: tempfile::TempDir,
    /// The project's folder inside `dir` ("" = `dir` itself).
    name: String,
}

impl Example {
    pub fn new() -> Example {
        Self::make("")
    }

    /// The example in a folder with this name (inside a fresh temporary directory), so two
    /// checkouts of "one project" can have the same basename.
    pub fn named(name: &str) -> Example {
        Self::make(name)
    }

    fn make(name: &str) -> Example {
        let dir = tempfile::Builder::new().prefix("pc-example-").tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let root = if name.is_empty() { dir.path().to_path_buf() } else { dir.path().join(name) };
        std::fs::create_dir_all(&root).unwrap();
        set_mode(&root, 0o755);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("share/example");
        run(Command::new("cp").arg("-r").arg(format!("{}/.", src.display())).arg(&root));
        venv::copy_to(&root.join(".venv"));
        venv::install_editable(&root, &root.join(".venv"));
        Example { dir, name: name.to_string() }
    }

    pub fn root(&self) -> PathBuf {
        if self.name.is_empty() { self.dir.path().to_path_buf() } else { self.dir.path().join(&self.name) }
    }

    pub fn python(&self) -> PathBuf {
        self.root().join(".venv/bin/python")
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?} failed: {}{}", cmd, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
