//! Which interpreter on a node can run the project's virtualenv: the ABI decides, not the path.
//!
//! A venv made on the controller runs on another interpreter when that one has the same
//! implementation (CPython), the same major.minor, the same ABI flags (`t` free-threaded, `d`
//! debug), the same platform (OS, machine, C library family) and a C library no older than
//! the venv's installed wheels need (their `*.dist-info/WHEEL` tags, read here locally). The
//! patch version does not matter: CPython keeps its ABI within a minor version, so a cp311
//! wheel loads on every 3.11.x. The rule, with the pyenv example: share/doc/sync.md.
//!
//! The probe runs [`ABI_CODE`] with every candidate interpreter on a node (`src/probe.sh`,
//! one ssh round trip); the controller runs it with the venv's own python. Both read it into
//! a [`PythonAbi`].

use crate::error::{Error, Result};
use crate::schema::{Facts, PythonAbi, PythonInfo};
use std::path::Path;

/// Python that prints, tab-separated: version, implementation, abiflags, sys.platform,
/// machine, glibc version (`glibc 2.36`, empty elsewhere), base prefix. Run with `-I -S`: no
/// site, no imports beyond `sys` and `os`, a few milliseconds.
pub const ABI_CODE: &str = "import sys, os
try:
    libc = os.confstr('CS_GNU_LIBC_VERSION') or ''
except (AttributeError, ValueError, OSError):
    libc = ''
print('\\t'.join(['%d.%d.%d' % sys.version_info[:3], sys.implementation.name, getattr(sys, 'abiflags', ''), sys.platform, os.uname().machine, libc, sys.base_prefix]))";

/// Reads [`ABI_CODE`]'s output, split at tabs; `musl` is the node's musl
/// version when it has one (the probe asks the musl loader), used when glibc says nothing.
pub fn parse_abi(fields: &[&str], musl: Option<&str>) -> Option<(String, PythonAbi)> {
    let [version, implementation, abiflags, platform, machine, libc, prefix] = fields else { return None };
    let libc = match (libc.trim(), musl) {
        ("", Some(m)) if *platform == "linux" && !m.is_empty() => format!("musl {m}"),
        (l, _) => l.to_string(),
    };
    Some((
        version.to_string(),
        PythonAbi {
            implementation: implementation.to_string(),
            abiflags: abiflags.to_string(),
            platform: platform.to_string(),
            machine: machine.to_string(),
            libc,
            prefix: prefix.to_string(),
        },
    ))
}

/// `cpython` -> `CPython`, as people write it.
pub fn implementation_name(i: &str) -> String {
    match i {
        "cpython" => "CPython".into(),
        "pypy" => "PyPy".into(),
        "graalpy" => "GraalPy".into(),
        other => other.to_string(),
    }
}

pub fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?))
}

/// `glibc 2.36` -> (`glibc`, (2, 36)).
fn libc_parts(l: &str) -> Option<(&str, (u32, u32))> {
    let (family, v) = l.split_once(' ')?;
    Some((family, major_minor(v)?))
}

fn libc_family_word(l: &str) -> &str {
    match l.split(' ').next().unwrap_or("") {
        "glibc" => "gnu",
        "musl" => "musl",
        _ => "",
    }
}

/// One installed distribution whose wheel is not pure: its platform tags, any of which will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelNeed {
    /// `msgpack 1.1.0`.
    pub dist: String,
    pub platform_tags: Vec<String>,
}

/// The platform tags of every installed wheel that has no `any` tag, from the
/// `*.dist-info/WHEEL` files under the site-packages directories (in name order).
pub fn wheel_needs(site_dirs: &[std::path::PathBuf]) -> Vec<WheelNeed> {
    let mut out = Vec::new();
    for site in site_dirs {
        let Ok(entries) = std::fs::read_dir(site) else { continue };
        let mut infos: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".dist-info"))
            .collect();
        infos.sort();
        for info in infos {
            let Ok(text) = std::fs::read_to_string(site.join(&info).join("WHEEL")) else { continue };
            let mut tags: Vec<String> = Vec::new();
            for line in text.lines() {
                if let Some(tag) = line.strip_prefix("Tag:") {
                    // Compressed tag sets (`manylinux_2_17_x86_64.manylinux2014_x86_64`) are
                    // alternatives too.
                    if let Some(platform) = tag.trim().rsplit('-').next() {
                        tags.extend(platform.split('.').map(String::from));
                    }
                }
            }
            if tags.is_empty() || tags.iter().any(|t| t == "any") {
                continue;
            }
            tags.dedup();
            let dist = info.trim_end_matches(".dist-info").replacen('-', " ", 1);
            out.push(WheelNeed { dist, platform_tags: tags });
        }
    }
    out
}

/// What a Linux platform tag asks: the machine and the C library (family, at least version).
/// `local_libc` is the controller's, for `linux_*` wheels (built here, against it). None: not
/// a Linux tag.
fn linux_tag(tag: &str, local_libc: &str) -> Option<(String, Option<(String, (u32, u32))>)> {
    let versioned = |rest: &str, family: &str| -> Option<(String, Option<(String, (u32, u32))>)> {
        let mut it = rest.splitn(3, '_');
        let (a, b, arch) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?);
        Some((arch.to_string(), Some((family.to_string(), (a, b)))))
    };
    let legacy = |arch: &str, v: (u32, u32)| Some((arch.to_string(), Some(("glibc".to_string(), v))));
    if let Some(rest) = tag.strip_prefix("manylinux_") {
        versioned(rest, "glibc")
    } else if let Some(rest) = tag.strip_prefix("musllinux_") {
        versioned(rest, "musl")
    } else if let Some(arch) = tag.strip_prefix("manylinux1_") {
        legacy(arch, (2, 5))
    } else if let Some(arch) = tag.strip_prefix("manylinux2010_") {
        legacy(arch, (2, 12))
    } else if let Some(arch) = tag.strip_prefix("manylinux2014_") {
        legacy(arch, (2, 17))
    } else {
        // Built on the controller from source: it needs the controller's C library or newer.
        let arch = tag.strip_prefix("linux_")?;
        Some((arch.to_string(), libc_parts(local_libc).map(|(f, v)| (f.to_string(), v))))
    }
}

/// Why a platform tag does not fit an interpreter, or None when it does.
fn tag_misfit(tag: &str, abi: &PythonAbi, local_libc: &str) -> Option<String> {
    let machine = abi.machine.as_str();
    if let Some(rest) = tag.strip_prefix("macosx_") {
        // macosx_11_0_arm64: the OS version is not probed; the machine is checked.
        let arch = rest.splitn(3, '_').nth(2).unwrap_or("");
        if abi.platform != "darwin" {
            return Some(format!("{tag} is for macOS"));
        }
        let fits = arch == machine || arch == "universal2" && matches!(machine, "x86_64" | "arm64") || arch == "intel" && machine == "x86_64";
        return if fits { None } else { Some(format!("{tag} is for {arch}, the interpreter runs on {machine}")) };
    }
    let Some((arch, need)) = linux_tag(tag, local_libc) else { return Some(format!("{tag} is not for this platform")) };
    if abi.platform != "linux" {
        return Some(format!("{tag} is for Linux"));
    }
    if arch != machine {
        return Some(format!("{tag} is for {arch}, the interpreter runs on {machine}"));
    }
    if let Some((family, (a, b))) = need {
        match libc_parts(&abi.libc) {
            Some((f, (x, y))) if f == family && (x, y) >= (a, b) => {}
            Some((f, (x, y))) if f == family => return Some(format!("{tag} needs {family} {a}.{b}, the node has {f} {x}.{y}")),
            _ => {
                let have = if abi.libc.is_empty() { "an unknown C library".to_string() } else { abi.libc.clone() };
                return Some(format!("{tag} needs {family} {a}.{b}, the interpreter runs on {have}"));
            }
        }
    }
    None
}

/// What the project's virtualenv needs of the interpreter it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenvNeeds {
    /// The controller's base interpreter: path (as the venv names it) and version.
    pub base_path: String,
    pub base_version: String,
    /// Its ABI, from running the venv's python here.
    pub abi: PythonAbi,
    pub wheels: Vec<WheelNeed>,
}

impl VenvNeeds {
    /// Learns the ABI by running the venv's own interpreter (a few milliseconds).
    pub fn read(venv: &Path, base: &crate::venv::BaseInterpreter, site_dirs: &[std::path::PathBuf]) -> Result<VenvNeeds> {
        let py = venv.join("bin/python");
        let out = crate::proc::Cmd::new([py.as_os_str(), "-I".as_ref(), "-S".as_ref(), "-c".as_ref(), ABI_CODE.as_ref()])
            .deadline(std::time::Duration::from_secs(30))
            .checked()
            .map_err(|e| Error::bad_input(format!("the virtualenv's {} does not run here: {}", py.display(), e.message)))?;
        let text = out.stdout_str();
        let fields: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
        let (version, abi) = parse_abi(&fields, local_musl().as_deref())
            .ok_or_else(|| Error::bad_input(format!("{} printed no interpreter facts: {text:?}", py.display())))?;
        if major_minor(&version) != major_minor(&base.version) {
            return Err(Error::bad_input(format!(
                "{}/pyvenv.cfg says Python {}, but its bin/python is {version}; recreate the virtualenv",
                venv.display(),
                base.version
            )));
        }
        Ok(VenvNeeds { base_path: base.path.clone(), base_version: base.version.clone(), abi, wheels: wheel_needs(site_dirs) })
    }

    /// `CPython 3.12, cp312, x86_64 linux-gnu` (and the C library its wheels need).
    pub fn describe(&self) -> String {
        let (ma, mi) = major_minor(&self.base_version).unwrap_or((0, 0));
        let tag = match self.abi.implementation.as_str() {
            "cpython" => format!("cp{ma}{mi}{}", self.abi.abiflags),
            other => format!("{other}{ma}{mi}{}", self.abi.abiflags),
        };
        let mut s = format!(
            "{} {ma}.{mi}, {tag}, {} {}",
            implementation_name(&self.abi.implementation),
            self.abi.machine,
            platform_words(&self.abi)
        );
        if let Some((dist, need)) = self.strictest_libc() {
            s.push_str(&format!(", {need} or newer (for {dist})"));
        }
        s
    }

    /// The newest C library some installed wheel needs at least, for the venv's own C library
    /// family and machine: (dist, `glibc 2.28`).
    fn strictest_libc(&self) -> Option<(String, String)> {
        let family = libc_parts(&self.abi.libc).map(|(f, _)| f)?;
        let mut best: Option<(String, (u32, u32))> = None;
        for w in &self.wheels {
            // The least a wheel asks among its alternatives that suit this machine.
            let least = w
                .platform_tags
                .iter()
                .filter_map(|t| linux_tag(t, &self.abi.libc))
                .filter(|(arch, _)| *arch == self.abi.machine)
                .filter_map(|(_, need)| need.filter(|(f, _)| f == family).map(|(_, v)| v))
                .min();
            if let Some(v) = least {
                if best.as_ref().is_none_or(|b| v > b.1) {
                    best = Some((w.dist.clone(), v));
                }
            }
        }
        best.map(|(d, (a, b))| (d, format!("{family} {a}.{b}")))
    }

    /// Why `abi` (at `version`) cannot run this venv, or None when it can.
    pub fn misfit(&self, version: &str, abi: &PythonAbi) -> Option<String> {
        let want = &self.abi;
        if abi.implementation != want.implementation {
            return Some(format!("{}, not {}", implementation_name(&abi.implementation), implementation_name(&want.implementation)));
        }
        if major_minor(version) != major_minor(&self.base_version) {
            let (a, b) = major_minor(&self.base_version).unwrap_or((0, 0));
            return Some(format!("another minor version (the venv's site-packages are for {a}.{b})"));
        }
        if abi.abiflags != want.abiflags {
            let say = |f: &str| if f.is_empty() { "none".to_string() } else { format!("{f:?}") };
            return Some(format!("ABI flags {} (the venv's are {})", say(&abi.abiflags), say(&want.abiflags)));
        }
        if abi.platform != want.platform || abi.machine != want.machine {
            return Some(format!("runs on {} {}", abi.machine, platform_words(abi)));
        }
        if abi.platform == "linux" && libc_family_word(&abi.libc) != libc_family_word(&want.libc) {
            let have = if abi.libc.is_empty() { "an unknown C library" } else { abi.libc.as_str() };
            return Some(format!("runs on {have}, the venv was made on {}", want.libc));
        }
        for w in &self.wheels {
            let reasons: Vec<String> = w.platform_tags.iter().filter_map(|t| tag_misfit(t, abi, &want.libc)).collect();
            if reasons.len() == w.platform_tags.len() {
                return Some(format!("{} is installed from a wheel it cannot load: {}", w.dist, reasons.join("; ")));
            }
        }
        None
    }
}

fn platform_words(abi: &PythonAbi) -> String {
    match abi.platform.as_str() {
        "linux" => match libc_family_word(&abi.libc) {
            "" => "linux".into(),
            f => format!("linux-{f}"),
        },
        other => other.to_string(),
    }
}

/// The controller's musl version, when this is a musl system (for [`parse_abi`]).
fn local_musl() -> Option<String> {
    let entries = std::fs::read_dir("/lib").ok()?;
    let loader = entries.flatten().map(|e| e.path()).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ld-musl-") && n.ends_with(".so.1"))
    })?;
    let out = crate::proc::Cmd::new([loader.as_os_str()]).output().ok()?;
    let text = format!("{}{}", out.stdout_str(), out.stderr_trimmed());
    text.lines().find_map(|l| l.strip_prefix("Version ").map(|v| v.trim().to_string()))
}

/// The interpreter a node runs the venv on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub path: String,
    pub version: String,
    pub abi: PythonAbi,
}

/// Picks the node's interpreter for the venv: the pinned one (`pinned`: the user named it) or
/// else, in this order, the venv's own base path (asked by that path, or found there under a
/// name), `python3.X` (the venv's minor), `python3`,
/// then any other probed name; the first that fits. Err: why none does, naming what the venv
/// needs and each candidate with the reason it does not fit.
pub fn choose(needs: &VenvNeeds, facts: &Facts, pinned: Option<&str>) -> std::result::Result<Choice, String> {
    let (ma, mi) = major_minor(&needs.base_version).unwrap_or((0, 0));
    let mut order: Vec<(&String, &PythonInfo)> = Vec::new();
    let mut push = |name: &str| {
        if let Some((n, p)) = facts.pythons.get_key_value(name) {
            if !order.iter().any(|(_, q)| q.path == p.path) {
                order.push((n, p));
            }
        }
    };
    match pinned {
        Some(name) => push(name),
        None => {
            push(&needs.base_path);
            // A name found at the base's very path (`python3` at /usr/bin/python3).
            if let Some(name) = facts.pythons.iter().find(|(_, p)| p.path == needs.base_path).map(|(n, _)| n.clone()) {
                push(&name);
            }
            push(&format!("python{ma}.{mi}"));
            push("python3");
            for name in facts.pythons.keys() {
                push(name);
            }
        }
    }
    let mut why = Vec::new();
    for (name, p) in &order {
        match &p.abi {
            None => why.push(format!("{} ({name}, {}): the probe said nothing of its ABI (a probe older than this pytest-cloud?)", p.path, p.version)),
            Some(abi) => match needs.misfit(&p.version, abi) {
                None => return Ok(Choice { path: p.path.clone(), version: p.version.clone(), abi: abi.clone() }),
                Some(reason) => why.push(format!("{} ({} {}): {reason}", p.path, implementation_name(&abi.implementation), p.version)),
            },
        }
    }
    let what = match pinned {
        Some(name) if order.is_empty() => format!("the node has no {name} (named by --python/--cloud-python)"),
        Some(_) => format!("the interpreter named by --python/--cloud-python does not fit: {}", why.join("; ")),
        None if order.is_empty() => "the node has no Python interpreter the probe could find".to_string(),
        None => format!("none of the node's interpreters fits: {}", why.join("; ")),
    };
    Err(format!(
        "the virtualenv needs {} (it was made from {} {}); {what}",
        needs.describe(),
        needs.base_path,
        needs.base_version
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn abi(version_libc: &str) -> PythonAbi {
        PythonAbi {
            implementation: "cpython".into(),
            abiflags: String::new(),
            platform: "linux".into(),
            machine: "x86_64".into(),
            libc: version_libc.into(),
            prefix: "/usr".into(),
        }
    }

    fn needs(version: &str, wheels: Vec<WheelNeed>) -> VenvNeeds {
        VenvNeeds { base_path: "/root/.pyenv/versions/3.11.7/bin/python3".into(), base_version: version.into(), abi: abi("glibc 2.36"), wheels }
    }

    fn facts(pythons: &[(&str, &str, &str, Option<PythonAbi>)]) -> Facts {
        Facts {
            pythons: pythons
                .iter()
                .map(|(n, p, v, a)| (n.to_string(), PythonInfo { path: p.to_string(), version: v.to_string(), abi: a.clone() }))
                .collect::<BTreeMap<_, _>>(),
            ..Facts::example()
        }
    }

    #[test]
    fn the_abi_line_is_read_with_musl_from_the_loader() {
        let f = ["3.11.2", "cpython", "", "linux", "x86_64", "glibc 2.36", "/usr"];
        let (v, a) = parse_abi(&f, None).unwrap();
        assert_eq!((v.as_str(), a.libc.as_str(), a.prefix.as_str()), ("3.11.2", "glibc 2.36", "/usr"));
        let m = ["3.12.1", "cpython", "t", "linux", "aarch64", "", "/usr/local"];
        assert_eq!(parse_abi(&m, Some("1.2.4")).unwrap().1.libc, "musl 1.2.4");
        assert_eq!(parse_abi(&m[..6], None), None);
    }

    #[test]
    fn another_patch_version_fits_another_minor_or_abi_does_not() {
        let n = needs("3.11.7", vec![]);
        assert_eq!(n.misfit("3.11.2", &abi("glibc 2.36")), None);
        assert!(n.misfit("3.12.1", &abi("glibc 2.36")).unwrap().contains("another minor version"));
        let ft = PythonAbi { abiflags: "t".into(), ..abi("glibc 2.36") };
        assert!(n.misfit("3.11.2", &ft).unwrap().contains("ABI flags \"t\""));
        let pypy = PythonAbi { implementation: "pypy".into(), ..abi("glibc 2.36") };
        assert!(n.misfit("3.11.2", &pypy).unwrap().contains("PyPy, not CPython"));
        let arm = PythonAbi { machine: "aarch64".into(), ..abi("glibc 2.36") };
        assert!(n.misfit("3.11.2", &arm).unwrap().contains("aarch64 linux-gnu"));
        assert!(n.misfit("3.11.2", &abi("musl 1.2.4")).unwrap().contains("musl 1.2.4"));
    }

    #[test]
    fn wheels_need_a_new_enough_libc_for_one_of_their_tags() {
        let msgpack = WheelNeed {
            dist: "msgpack 1.1.0".into(),
            platform_tags: vec!["manylinux_2_17_x86_64".into(), "manylinux2014_x86_64".into(), "manylinux_2_28_x86_64".into()],
        };
        let strict = WheelNeed { dist: "fast 2".into(), platform_tags: vec!["manylinux_2_34_x86_64".into()] };
        let n = needs("3.11.7", vec![msgpack.clone()]);
        assert_eq!(n.misfit("3.11.2", &abi("glibc 2.17")), None, "any one tag will do");
        let why = n.misfit("3.11.2", &abi("glibc 2.12")).unwrap();
        assert!(why.contains("msgpack 1.1.0") && why.contains("needs glibc 2.17, the node has glibc 2.12"), "{why}");
        let n = needs("3.11.7", vec![msgpack, strict]);
        assert!(n.misfit("3.11.2", &abi("glibc 2.31")).unwrap().contains("fast 2"));
        assert_eq!(n.describe(), "CPython 3.11, cp311, x86_64 linux-gnu, glibc 2.34 or newer (for fast 2)");
        let local = WheelNeed { dist: "built 1".into(), platform_tags: vec!["linux_x86_64".into()] };
        let n = needs("3.11.7", vec![local]);
        assert!(n.misfit("3.11.2", &abi("glibc 2.31")).is_some(), "built here: the controller's glibc 2.36 or newer");
        assert_eq!(n.misfit("3.11.2", &abi("glibc 2.36")), None);
    }

    #[test]
    fn the_choice_prefers_the_base_then_python3_x_then_python3_and_explains_a_miss() {
        let n = needs("3.11.7", vec![]);
        let f = facts(&[
            ("python3", "/usr/bin/python3", "3.11.2", Some(abi("glibc 2.36"))),
            ("python3.11", "/usr/local/bin/python3.11", "3.11.9", Some(abi("glibc 2.36"))),
        ]);
        assert_eq!(choose(&n, &f, None).unwrap().path, "/usr/local/bin/python3.11");
        assert_eq!(choose(&n, &f, Some("python3")).unwrap().path, "/usr/bin/python3", "pinned");
        let with_base = facts(&[
            ("python3", "/usr/bin/python3", "3.11.2", Some(abi("glibc 2.36"))),
            ("/root/.pyenv/versions/3.11.7/bin/python3", "/root/.pyenv/versions/3.11.7/bin/python3", "3.11.7", Some(abi("glibc 2.36"))),
        ]);
        assert_eq!(choose(&n, &with_base, None).unwrap().version, "3.11.7", "the venv's own base first");
        let n_sys = VenvNeeds { base_path: "/usr/bin/python3".into(), ..n.clone() };
        assert_eq!(choose(&n_sys, &f, None).unwrap().path, "/usr/bin/python3", "found at the base's path under a name");

        let n12 = VenvNeeds { base_version: "3.12.1".into(), base_path: "/root/.pyenv/versions/3.12.1/bin/python3".into(), ..n.clone() };
        let e = choose(&n12, &f, None).unwrap_err();
        assert!(e.starts_with("the virtualenv needs CPython 3.12, cp312, x86_64 linux-gnu"), "{e}");
        assert!(e.contains("/usr/bin/python3 (CPython 3.11.2): another minor version") && e.contains("/usr/local/bin/python3.11 (CPython 3.11.9)"), "{e}");
        assert!(choose(&n12, &f, Some("python3.12")).unwrap_err().contains("the node has no python3.12"));
        let old = facts(&[("python3", "/usr/bin/python3", "3.11.2", None)]);
        assert!(choose(&n, &old, None).unwrap_err().contains("said nothing of its ABI"));
    }

    #[test]
    fn wheel_tags_are_read_from_dist_info() {
        let t = tempfile::tempdir().unwrap();
        let w = |name: &str, tags: &str| {
            std::fs::create_dir_all(t.path().join(name)).unwrap();
            std::fs::write(t.path().join(name).join("WHEEL"), format!("Wheel-Version: 1.0\nRoot-Is-Purelib: false\n{tags}")).unwrap();
        };
        w("msgpack-1.1.0.dist-info", "Tag: cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64\n");
        w("pytest-9.0.0.dist-info", "Tag: py3-none-any\n");
        let got = wheel_needs(&[t.path().to_path_buf()]);
        assert_eq!(got, vec![WheelNeed { dist: "msgpack 1.1.0".into(), platform_tags: vec!["manylinux_2_17_x86_64".into(), "manylinux2014_x86_64".into()] }]);
    }
}
