//! The node's copy of the virtualenv, pointed at the node's own interpreter.
//!
//! What in a venv names the controller's paths and matters at run time (seen in the layouts
//! of stdlib `venv`, `virtualenv` and `uv venv`): `pyvenv.cfg` (`home`, and `executable`,
//! `base-executable`, `base-prefix`, `base-exec-prefix`, `command`), the `bin/python*` links
//! (or copies, with `--copies`) to the base interpreter, and the shebang of every script in
//! `bin/` (`#!/abs/venv/bin/python`, or distlib's `#!/bin/sh` + `'''exec' "/abs/..."` for long
//! paths). Editable installs are redirected by [`crate::venv::EDITABLE_PTH`]; the `activate`
//! scripts name the venv's path too, but only an interactive shell sources them, so they are
//! mirrored as they are. Bytecode is not synced (each node compiles its own).
//!
//! These files, the "managed" ones, are not rsync's: it neither sends nor deletes them
//! ([`Layout::filter_rules`]), so its quick check never sees a rebased file as changed and a
//! no-change re-sync costs what it did. The node's versions are written by the sync's last
//! round trip (`src/rebase_node.sh`, shell code generated here) only when they differ from
//! what the node has: the code's digest is kept in [`STAMP`] on the node and compared by the
//! pre-flight. Every node gets the same relocatable scripts (the `#!/bin/sh` + `'''exec'`
//! trampoline that runs the `python` beside the script, as uv's `--relocatable` does), and its
//! own `pyvenv.cfg` and `bin/python*` naming only its base interpreter: nothing names the
//! node's directory, so a tree hard-linked or copied elsewhere still works. Files are written
//! new and renamed into place, never changed in place (trees may share inodes).

use crate::error::{Error, Result};
use crate::interp::Choice;
use std::path::Path;

/// At the top of the node's directory: the digest of the managed files last written there.
pub const STAMP: &str = ".pytest-cloud-rebased";

/// The node-side helpers the generated code calls.
pub const NODE_LIB: &str = include_str!("rebase_node.sh");

/// Scripts larger than this are left to rsync as they are (a console script is a few hundred
/// bytes; something this big in `bin/` is not one).
const MAX_SCRIPT_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    name: String,
    mode: u32,
    /// The relocatable form, the same on every node.
    content: String,
}

/// The managed files of the project's venv, read from the local copy (never modified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The venv, relative to the project root.
    rel: String,
    cfg: String,
    scripts: Vec<Script>,
    /// `bin/python`, `bin/python3`, `bin/python3.11`...: links (or copies) of the interpreter.
    links: Vec<String>,
}

/// `python`, `python3`, `python3.11`, `python3.13t`, `pythonw`.
fn is_python_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("python") else { return false };
    let rest = rest.strip_suffix(['t', 'd', 'w']).unwrap_or(rest);
    rest.chars().all(|c| c.is_ascii_digit() || c == '.') && !rest.starts_with('.')
}

/// A name rsync's filter rules take literally (no wildcards, no escapes, one line).
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['*', '?', '[', '\\', '\n', '\r', '/'])
}

impl Layout {
    /// Reads `<root>/<rel>`: its `pyvenv.cfg`, its python links and the scripts in `bin/` whose
    /// shebang runs a virtualenv's python (this one's, the one it was copied from, or one that
    /// does not exist here). `#!/usr/bin/env python3` and binaries are left as they are.
    pub fn read(root: &Path, rel: &str) -> Result<Layout> {
        let venv = root.join(rel);
        let cfg_path = venv.join("pyvenv.cfg");
        let cfg = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(cfg_path.display(), e))?;
        let bin = venv.join("bin");
        let mut names: Vec<String> = match std::fs::read_dir(&bin) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        let mut scripts = Vec::new();
        let mut links = Vec::new();
        for name in names.into_iter().filter(|n| plain_name(n)) {
            let path = bin.join(&name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if is_python_name(&name) && (meta.file_type().is_symlink() || meta.is_file()) {
                links.push(name);
                continue;
            }
            if !meta.is_file() || meta.len() > MAX_SCRIPT_BYTES {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(text) = String::from_utf8(bytes) else { continue };
            if text.contains('\0') {
                continue;
            }
            if let Some(content) = relocatable(&text, &bin) {
                use std::os::unix::fs::PermissionsExt;
                scripts.push(Script { name, mode: meta.permissions().mode() & 0o7777, content });
            }
        }
        Ok(Layout { rel: rel.trim_end_matches('/').to_string(), cfg, scripts, links })
    }

    /// rsync filter rules (before all others) that leave the managed files, and the stamp, to
    /// the node-side code: not sent, not deleted.
    pub fn filter_rules(&self) -> Vec<String> {
        let mut v = vec![format!("- /{STAMP}")];
        if plain_name(&self.rel.replace('/', "_")) {
            v.push(format!("- /{}/pyvenv.cfg", self.rel));
            for n in self.links.iter().chain(self.scripts.iter().map(|s| &s.name)) {
                v.push(format!("- /{}/bin/{n}", self.rel));
            }
        }
        v
    }

    /// How many scripts get the relocatable shebang.
    pub fn script_count(&self) -> usize {
        self.scripts.len()
    }

    /// The shell code (to prepend to the node script) that defines `rebase_venv DIR`, which
    /// writes this node's managed files into `DIR/<venv>` and then the stamp; and the digest
    /// the stamp will hold. The same files and interpreter give the same digest.
    pub fn node_code(&self, choice: &Choice) -> (String, String) {
        let q = |s: &str| shell_words::quote(s).into_owned();
        let mut body = String::new();
        let mut put = |target: String, mode: u32, content: &str| {
            let (delim, content) = crate::remote::heredoc(content);
            body.push_str(&format!("    put_file {target} {mode:o} <<'{delim}' || return 1\n{content}{delim}\n"));
        };
        put("\"$v\"/pyvenv.cfg".into(), 0o644, &node_pyvenv_cfg(&self.cfg, choice));
        for s in &self.scripts {
            put(format!("\"$v\"/bin/{}", q(&s.name)), s.mode, &s.content);
        }
        for l in &self.links {
            body.push_str(&format!("    put_link \"$v\"/bin/{} {} || return 1\n", q(l), q(&choice.path)));
        }
        let digest = format!("{:016x}-{}", crate::ssh::fnv1a(body.as_bytes()), body.len());
        let code = format!(
            "{NODE_LIB}\nrebase_venv() {{\n    v=$1/{}\n    rm -f -- \"$1/{STAMP}\" || return 1\n{body}    printf '%s\\n' {} | put_file \"$1/{STAMP}\" 644\n}}\n",
            q(&self.rel),
            q(&digest)
        );
        (digest, code)
    }
}

/// `pyvenv.cfg` for the node: the base interpreter's keys name the node's interpreter; the
/// `command` line (the controller's venv path, informative only) is left out.
pub fn node_pyvenv_cfg(cfg: &str, choice: &Choice) -> String {
    let home = Path::new(&choice.path).parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into());
    let mut out = String::new();
    for line in cfg.lines() {
        let (key, _) = line.split_once('=').unwrap_or((line, ""));
        let k = key.trim();
        let value = match k.to_ascii_lowercase().as_str() {
            "home" => Some(home.clone()),
            "executable" | "base-executable" => Some(choice.path.clone()),
            "version" | "version_info" => Some(choice.version.clone()),
            "base-prefix" | "base-exec-prefix" if !choice.abi.prefix.is_empty() => Some(choice.abi.prefix.clone()),
            "command" => continue,
            _ => None,
        };
        match value {
            Some(v) => out.push_str(&format!("{k} = {v}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The relocatable form of a console script, or None when its shebang does not run a
/// virtualenv's python (or it is relocatable already). `bin` is the local venv's `bin/`.
pub fn relocatable(text: &str, bin: &Path) -> Option<String> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let shebang = first.strip_prefix("#!")?.trim();
    let (interp, args, body) = if shebang == "/bin/sh" && rest.starts_with("'''exec' ") {
        // distlib's form for long paths: '''exec' "/abs/python" "$0" "$@"  /  ' '''
        let (exec_line, after) = rest.split_once('\n')?;
        if exec_line.contains("$(") {
            return None;
        }
        let quoted = exec_line.strip_prefix("'''exec' ")?;
        let words = shell_words::split(quoted).ok()?;
        let (close, body) = after.split_once('\n').unwrap_or((after, ""));
        if close.trim() != "' '''" {
            return None;
        }
        (words.first()?.clone(), Vec::new(), body)
    } else {
        let mut words = shebang.split_whitespace();
        let interp = words.next()?.to_string();
        (interp, words.map(String::from).collect::<Vec<_>>(), rest)
    };
    let path = Path::new(&interp);
    let name = path.file_name()?.to_str()?;
    if !path.is_absolute() || !is_python_name(name) {
        return None;
    }
    let in_this_venv = path.parent() == Some(bin);
    let a_venvs = path.parent().and_then(Path::parent).is_some_and(|p| p.join("pyvenv.cfg").is_file());
    if !(in_this_venv || a_venvs || !path.exists()) {
        return None;
    }
    let extra: String = args.iter().map(|a| format!(" {}", shell_words::quote(a))).collect();
    Some(format!(
        "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/{}{extra} \"$0\" \"$@\"\n' '''\n{body}",
        shell_words::quote(name)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::PythonAbi;

    fn choice() -> Choice {
        Choice {
            path: "/usr/bin/python3.11".into(),
            version: "3.11.2".into(),
            abi: PythonAbi {
                implementation: "cpython".into(),
                abiflags: String::new(),
                platform: "linux".into(),
                machine: "x86_64".into(),
                libc: "glibc 2.36".into(),
                prefix: "/usr".into(),
            },
        }
    }

    #[test]
    fn shebangs_become_the_relocatable_trampoline() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join(".venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let pip = format!("#!{}/python3\n# -*- coding: utf-8 -*-\nimport sys\n", bin.display());
        let got = relocatable(&pip, &bin).unwrap();
        assert_eq!(got, "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/python3 \"$0\" \"$@\"\n' '''\n# -*- coding: utf-8 -*-\nimport sys\n");
        let long = format!("#!/bin/sh\n'''exec' \"{}/python\" \"$0\" \"$@\"\n' '''\nimport x\n", bin.display());
        assert!(relocatable(&long, &bin).unwrap().ends_with("/python \"$0\" \"$@\"\n' '''\nimport x\n"));
        assert_eq!(relocatable(&got, &bin), None, "already relocatable");
        assert_eq!(relocatable("#!/usr/bin/env python3\nprint()\n", &bin), None);
        assert_eq!(relocatable("#!/bin/bash\necho\n", &bin), None);
        assert_eq!(relocatable("#!/usr/bin/python3\nprint()\n", &bin), None, "a system interpreter that exists stays");
        assert!(relocatable("#!/gone/venv/bin/python -E\nprint()\n", &bin).unwrap().contains("/python -E \"$0\""), "a dead one is fixed");
    }

    #[test]
    fn pyvenv_cfg_names_the_node_interpreter_only() {
        let cfg = "home = /root/.pyenv/versions/3.11.7/bin\nimplementation = CPython\nversion_info = 3.11.7.final.0\n\
                   include-system-site-packages = false\nbase-prefix = /root/.pyenv/versions/3.11.7\n\
                   base-executable = /root/.pyenv/versions/3.11.7/bin/python3\ncommand = /x -m virtualenv /p/.venv\n";
        assert_eq!(
            node_pyvenv_cfg(cfg, &choice()),
            "home = /usr/bin\nimplementation = CPython\nversion_info = 3.11.2\ninclude-system-site-packages = false\n\
             base-prefix = /usr\nbase-executable = /usr/bin/python3.11\n"
        );
    }

    #[test]
    fn the_layout_leaves_managed_files_to_the_node_and_digests_what_it_writes() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join(".venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(t.path().join(".venv/pyvenv.cfg"), "home = /opt/py/bin\nversion = 3.11.7\n").unwrap();
        std::os::unix::fs::symlink("/opt/py/bin/python3", bin.join("python")).unwrap();
        std::os::unix::fs::symlink("python", bin.join("python3")).unwrap();
        std::fs::write(bin.join("mytool"), format!("#!{}/python\nimport mypkg\n", bin.display())).unwrap();
        std::fs::write(bin.join("activate"), "VIRTUAL_ENV=/x\n").unwrap();
        std::fs::write(bin.join("ruff"), b"\x7fELF\0\0").unwrap();
        let l = Layout::read(t.path(), ".venv").unwrap();
        assert_eq!(
            l.filter_rules(),
            ["- /.pytest-cloud-rebased", "- /.venv/pyvenv.cfg", "- /.venv/bin/python", "- /.venv/bin/python3", "- /.venv/bin/mytool"]
        );
        let (digest, code) = l.node_code(&choice());
        assert!(code.contains("put_link \"$v\"/bin/python3 /usr/bin/python3.11") && code.contains("home = /usr/bin\n"), "{code}");
        assert!(code.contains(&format!("printf '%s\\n' {digest} | put_file")));
        assert_eq!(l.node_code(&choice()).0, digest, "same input, same digest");
        let other = Choice { path: "/usr/local/bin/python3.11".into(), ..choice() };
        assert_ne!(l.node_code(&other).0, digest, "another interpreter, another digest");
    }
}
