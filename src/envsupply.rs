//! What the controller supplies for an environment a node builds itself (issue 16): the
//! controller's own uv ([`controller_uv`]), the uv binary for a node's platform ([`uv_for`]),
//! and a wheelhouse of a node's wheels ([`wheelhouse`]) so that a node with no index installs
//! with `uv pip install --no-index --find-links DIR -r requirements.txt`.
//!
//! Everything is fetched by the controller's own uv (and, for the wheelhouse, by pip run
//! through that uv): no HTTP client of ours. The user's uv and pip configuration files are not
//! read (`--no-config`, `pip --isolated`): they must not change what a node gets. Downloads
//! land in the controller's cache ([`cache_root`]: `$PYTEST_CLOUD_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/pytest-cloud`, else `~/.cache/pytest-cloud`), once per (uv version,
//! platform) and per target: a second call fetches nothing. Every file a concurrent run could
//! read is written under a temporary name and renamed into place, so no run ever sees half a
//! file.

use crate::error::{Error, Exit, Result};
use crate::proc::Cmd;
use crate::schema::PythonAbi;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The oldest uv the controller works with: 0.6.15 is the first uv that installs a PEP 751
/// `pylock.toml` (`uv pip install -r pylock.toml`), one of the sources a node-built env is
/// made from; the `--python-platform` targets used here (`x86_64-manylinux_2_28` ...) and
/// `uv pip compile --generate-hashes --no-deps` are older than that.
pub const MIN_UV: (u32, u32, u32) = (0, 6, 15);

/// The pip that downloads wheelhouses, pinned so that every controller picks wheels by the
/// same rules. uv has no `pip download` (astral-sh/uv#3163), and pip's `download
/// --only-binary=:all: --platform --python-version --implementation --abi` is exactly "the
/// wheels that install on that interpreter, fetched here": the honest tool for a wheelhouse.
pub const PIP_FOR_DOWNLOADS: &str = "pip==26.3";

/// The macOS version a macOS node is assumed to run, for wheel tags: the probe does not read
/// it, and 13.0 is also uv's default target for `--python-platform *-apple-darwin`.
pub const MACOS_ASSUMED: (u32, u32) = (13, 0);

/// Long enough for a slow index; a hung one must not hang the run.
const FETCH_DEADLINE: Duration = Duration::from_secs(600);

/// A node's interpreter, as far as choosing wheels and a uv binary for it goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeTarget {
    /// `sys.implementation.name`: `cpython`, `pypy`.
    pub implementation: String,
    /// `3.11.2`.
    pub version: String,
    /// `""`, `t` (free-threaded), `d` (debug).
    pub abiflags: String,
    /// `linux`, `darwin`.
    pub os: String,
    /// `x86_64`, `aarch64` (Linux), `arm64` (macOS).
    pub machine: String,
    /// `glibc 2.36`, `musl 1.2.4`, or `""` (macOS, or unknown).
    pub libc: String,
}

impl NodeTarget {
    /// From the probe's facts of one interpreter: its version and [`PythonAbi`].
    pub fn from_abi(version: &str, abi: &PythonAbi) -> NodeTarget {
        NodeTarget {
            implementation: abi.implementation.clone(),
            version: version.to_string(),
            abiflags: abi.abiflags.clone(),
            os: abi.platform.clone(),
            machine: abi.machine.clone(),
            libc: abi.libc.clone(),
        }
    }

    fn major_minor(&self) -> Result<(u32, u32)> {
        let mut it = self.version.split('.');
        let mut num = || it.next().and_then(|s| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok());
        match (num(), num()) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::bad_input(format!("interpreter version {:?} is not MAJOR.MINOR[.PATCH]", self.version))),
        }
    }

    /// `3.11`.
    pub fn python_minor(&self) -> Result<String> {
        let (a, b) = self.major_minor()?;
        Ok(format!("{a}.{b}"))
    }

    /// The machine as wheel tags and uv's target triples spell it on this OS: Linux says
    /// `aarch64`, macOS `arm64`, whatever `uname -m` printed.
    fn machine(&self) -> &str {
        match (self.os.as_str(), self.machine.as_str()) {
            ("linux", "arm64") => "aarch64",
            ("darwin", "aarch64") => "arm64",
            ("linux" | "darwin", "amd64") => "x86_64",
            (_, m) => m,
        }
    }

    /// `glibc 2.36` -> (`glibc`, 2, 36).
    fn libc(&self) -> Option<(&str, u32, u32)> {
        let (family, v) = self.libc.split_once(' ')?;
        let mut it = v.split('.');
        Some((family, it.next()?.parse().ok()?, it.next().unwrap_or("0").parse().ok()?))
    }

    fn unsupported(&self, why: &str) -> Error {
        Error::new(Exit::Partial, format!("no uv target for {}: {why}", self.describe()))
    }

    /// uv's `--python-platform` name for this node: `x86_64-manylinux_2_36`,
    /// `aarch64-unknown-linux-musl`, `aarch64-apple-darwin`. A glibc newer than the newest
    /// target uv knows maps to that one (a newer glibc runs older manylinux wheels); one
    /// between two targets maps to the older.
    pub fn uv_platform(&self) -> Result<String> {
        let machine = self.machine();
        match self.os.as_str() {
            "darwin" => match machine {
                "arm64" => Ok("aarch64-apple-darwin".into()),
                "x86_64" => Ok("x86_64-apple-darwin".into()),
                m => Err(self.unsupported(&format!("uv has no macOS target for {m}"))),
            },
            "linux" => {
                if !matches!(machine, "x86_64" | "aarch64") {
                    return Err(self.unsupported(&format!("uv's --python-platform has no Linux target for {machine}")));
                }
                match self.libc() {
                    Some(("musl", _, _)) => Ok(format!("{machine}-unknown-linux-musl")),
                    Some(("glibc", 2, minor)) => {
                        // The manylinux_2_X targets of uv 0.13 (`uv help pip install`).
                        const KNOWN: [u32; 12] = [17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40];
                        let fit = KNOWN.iter().rev().find(|k| **k <= minor).ok_or_else(|| {
                            self.unsupported("glibc older than 2.17 (manylinux2014), the oldest uv builds for")
                        })?;
                        Ok(format!("{machine}-manylinux_2_{fit}"))
                    }
                    _ => Err(self.unsupported("the node's C library is unknown (neither glibc nor musl was found)")),
                }
            }
            os => Err(self.unsupported(&format!("uv has no target for {os:?} here"))),
        }
    }

    /// pip's `--platform` tags a wheel for this node may carry, most specific first.
    pub fn pip_platforms(&self) -> Result<Vec<String>> {
        let m = self.machine().to_string();
        let mut tags = Vec::new();
        match self.os.as_str() {
            "linux" => match self.libc() {
                Some(("glibc", 2, minor)) => {
                    for y in (5..=minor).rev() {
                        tags.push(format!("manylinux_2_{y}_{m}"));
                        // The legacy aliases (PEP 599, 571, 513).
                        match y {
                            17 => tags.push(format!("manylinux2014_{m}")),
                            12 => tags.push(format!("manylinux2010_{m}")),
                            5 => tags.push(format!("manylinux1_{m}")),
                            _ => {}
                        }
                    }
                }
                Some(("musl", 1, minor)) => {
                    for y in (1..=minor).rev() {
                        tags.push(format!("musllinux_1_{y}_{m}"));
                    }
                }
                _ => return Err(Error::new(Exit::Partial, format!("no wheel platform for {}: its C library is unknown", self.describe()))),
            },
            "darwin" => {
                let arches: &[&str] = match m.as_str() {
                    "arm64" => &["arm64", "universal2"],
                    "x86_64" => &["x86_64", "universal2", "intel", "universal"],
                    other => return Err(Error::new(Exit::Partial, format!("no macOS wheel platform for {other}"))),
                };
                let (major, _) = MACOS_ASSUMED;
                let mut versions: Vec<(u32, u32)> = (11..=major).rev().map(|v| (v, 0)).collect();
                if m == "x86_64" {
                    versions.extend((0..=16).rev().map(|v| (10, v)));
                }
                for (a, b) in versions {
                    for arch in arches {
                        // universal2 exists from 10.9 on; arm64 from 11.0 on.
                        tags.push(format!("macosx_{a}_{b}_{arch}"));
                    }
                }
            }
            os => return Err(Error::new(Exit::Partial, format!("no wheel platform for the OS {os:?}"))),
        }
        Ok(tags)
    }

    /// Whether a wheel's platform tag is one of [`pip_platforms`](Self::pip_platforms) (or,
    /// on macOS, any macOS version for this machine: the node's version is not known).
    pub fn fits_platform_tag(&self, tag: &str) -> bool {
        if self.os == "darwin" {
            let arches: &[&str] = if self.machine() == "arm64" { &["arm64", "universal2"] } else { &["x86_64", "universal2", "intel", "universal"] };
            return tag.strip_prefix("macosx_").and_then(|r| r.splitn(3, '_').nth(2)).is_some_and(|a| arches.contains(&a));
        }
        self.pip_platforms().is_ok_and(|p| p.iter().any(|t| t == tag))
    }

    /// pip's `--implementation` and `--abi` values: which compiled wheels load here. A
    /// free-threaded or debug build takes only wheels built for it (no abi3).
    pub fn pip_abis(&self) -> Result<(String, Vec<String>)> {
        let (a, b) = self.major_minor()?;
        Ok(match self.implementation.as_str() {
            "cpython" if self.abiflags.is_empty() => ("cp".into(), vec![format!("cp{a}{b}"), "abi3".into(), "none".into()]),
            "cpython" => ("cp".into(), vec![format!("cp{a}{b}{}", self.abiflags), "none".into()]),
            // PyPy's ABI tag (pypy310_pp73) names its own version, which the probe does not
            // read: pure wheels only, a compiled one is reported missing.
            "pypy" => ("pp".into(), vec!["none".into()]),
            _ => ("py".into(), vec!["none".into()]),
        })
    }

    /// The wheelhouse directory's name for this target: what decides which wheels fit.
    /// `cp311-linux-x86_64-glibc_2.36`, `cp313t-darwin-arm64`. The patch version is left
    /// out: CPython keeps its ABI within a minor version.
    pub fn key(&self) -> Result<String> {
        let (a, b) = self.major_minor()?;
        let imp = match self.implementation.as_str() {
            "cpython" => "cp",
            "pypy" => "pp",
            other => other,
        };
        let mut k = format!("{imp}{a}{b}{}-{}-{}", self.abiflags, self.os, self.machine());
        if !self.libc.is_empty() {
            k.push('-');
            k.push_str(&self.libc.replace(' ', "_"));
        }
        Ok(k.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect())
    }

    /// `CPython 3.11.2 on linux x86_64 (glibc 2.36)`, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {}{} on {} {}",
            crate::interp::implementation_name(&self.implementation),
            self.version,
            self.abiflags,
            self.os,
            self.machine
        );
        if !self.libc.is_empty() {
            s.push_str(&format!(" ({})", self.libc));
        }
        s
    }

    /// The values PEP 508 markers are evaluated with for this node (the rest are the
    /// controller's, which no lock file's markers use in practice).
    fn marker_env(&self) -> serde_json::Value {
        let full = &self.version;
        let minor = self.python_minor().unwrap_or_default();
        let (system, platform_impl) = (
            match self.os.as_str() {
                "linux" => "Linux",
                "darwin" => "Darwin",
                o => o,
            },
            crate::interp::implementation_name(&self.implementation),
        );
        serde_json::json!({
            "os_name": "posix",
            "sys_platform": self.os,
            "platform_machine": self.machine,
            "platform_system": system,
            "platform_python_implementation": platform_impl,
            "implementation_name": self.implementation,
            "implementation_version": full,
            "python_version": minor,
            "python_full_version": full,
        })
    }
}

/// A uv binary for a node's platform, in the controller's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUv {
    pub path: PathBuf,
    /// `0.13.9`.
    pub version: String,
    /// The binary's SHA-256, lowercase hex: what the node checks its copy against.
    pub sha256: String,
}

/// Wheels for one target, in the controller's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wheelhouse {
    /// The target's directory: `--find-links` for the node. It may hold wheels of earlier
    /// requirement sets too; [`files`](Self::files) are the ones this set needs.
    pub dir: PathBuf,
    /// Requirements with no fitting wheel: (package, why), the why naming the version and
    /// the target.
    pub missing: Vec<(String, String)>,
    /// The wheel file names in `dir` this requirement set installs, sorted.
    pub files: Vec<String>,
    /// The wheel files this call downloaded (empty when everything was cached).
    pub fetched: Vec<String>,
}

/// Where pytest-cloud keeps what it downloads on the controller.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("PYTEST_CLOUD_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).filter(|d| d.is_absolute()) {
        return Ok(d.join("pytest-cloud"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/pytest-cloud")),
        None => Err(Error::new(Exit::Io, "no cache directory: HOME is not set (set PYTEST_CLOUD_CACHE_DIR or XDG_CACHE_HOME)")),
    }
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split(['.', '-', '+']);
    let mut num = || it.next().and_then(|s| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok());
    Some((num()?, num()?, num().unwrap_or(0)))
}

/// `uv --version`'s version: `uv 0.13.9 (x86_64-unknown-linux-gnu)` -> `0.13.9`.
pub fn parse_uv_version(out: &str) -> Option<String> {
    let mut words = out.split_whitespace();
    (words.next()? == "uv").then_some(())?;
    let v = words.next()?;
    parse_version(v).map(|_| v.to_string())
}

/// The version of the uv at `uv`, refusing one older than [`MIN_UV`] (exit 72).
pub fn uv_version(uv: &Path) -> Result<String> {
    let cmd = Cmd::new([uv.as_os_str(), "--version".as_ref()]).env("UV_NO_CONFIG", "1").deadline(Duration::from_secs(30));
    let out = cmd.output().map_err(|e| {
        Error::new(Exit::MissingTool, format!("uv at {} does not run: {} Install it with `pip install uv`.", uv.display(), e.message))
    })?;
    let text = out.stdout_str();
    let version = parse_uv_version(&text).filter(|_| out.status.success()).ok_or_else(|| {
        Error::new(Exit::MissingTool, format!("{} is not uv: `--version` printed {:?} ({})", uv.display(), text.trim(), cmd.failure_message(&out)))
    })?;
    let (a, b, c) = MIN_UV;
    if parse_version(&version).is_some_and(|v| v < MIN_UV) {
        return Err(Error::new(
            Exit::MissingTool,
            format!(
                "uv {version} at {} is older than {a}.{b}.{c}, the first that installs a pylock.toml; upgrade it (`pip install -U uv`) or point PYTEST_CLOUD_UV at a newer one",
                uv.display()
            ),
        ));
    }
    Ok(version)
}

/// The controller's uv: `$PYTEST_CLOUD_UV`, else the `uv` beside the active virtualenv's
/// python (`$VIRTUAL_ENV/bin/uv`) or beside this binary (a `pip install uv` into the venv
/// pytest-cloud lives in), else `uv` on PATH. Missing or too old: exit 72 with how to get it.
pub fn controller_uv() -> Result<PathBuf> {
    find_uv(
        std::env::var_os("PYTEST_CLOUD_UV").map(PathBuf::from),
        std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
        std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)),
        crate::proc::on_path("uv"),
    )
}

/// [`controller_uv`]'s rule, with what it reads from the process given.
fn find_uv(env_uv: Option<PathBuf>, venv: Option<PathBuf>, exe_dir: Option<PathBuf>, on_path: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = env_uv.filter(|p| !p.as_os_str().is_empty()) {
        uv_version(&p).map_err(|e| Error::new(e.exit, format!("PYTEST_CLOUD_UV: {}", e.message)))?;
        return Ok(p);
    }
    let mut looked: Vec<String> = Vec::new();
    let beside = [venv.filter(|v| !v.as_os_str().is_empty()).map(|v| v.join("bin/uv")), exe_dir.map(|d| d.join("uv"))];
    for c in beside.into_iter().flatten() {
        if c.is_file() {
            uv_version(&c)?;
            return Ok(c);
        }
        looked.push(c.display().to_string());
    }
    if let Some(p) = on_path {
        uv_version(&p)?;
        return Ok(p);
    }
    looked.push("PATH".into());
    Err(Error::new(
        Exit::MissingTool,
        format!(
            "uv: not found (looked at $PYTEST_CLOUD_UV, {}). A node-built environment needs uv {}.{}.{} or newer on this machine: `pip install uv` (into the project's virtualenv or anywhere on PATH), or set PYTEST_CLOUD_UV.",
            looked.join(", "),
            MIN_UV.0,
            MIN_UV.1,
            MIN_UV.2
        ),
    ))
}

/// Lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Device, inode, size and change time of a file: what any change to it changes.
fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!("{} {} {} {}.{:09}", m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
}

/// A wheel RECORD's hash form: URL-safe base64 without padding (PEP 376/427), of hex input.
fn record_hash(hex: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: Vec<u8> = (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(format!("creating a file in {}", dir.display()), e))?;
    std::fs::write(tmp.path(), bytes).map_err(|e| Error::io(format!("writing {}", tmp.path().display()), e))?;
    tmp.persist(path).map_err(|e| Error::io(format!("writing {}", path.display()), e.error))?;
    Ok(())
}

fn mkdirs(d: &Path) -> Result<()> {
    std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))
}

/// The uv binary for `target`'s platform, of the controller's own uv version.
pub fn uv_for(target: &NodeTarget) -> Result<LocalUv> {
    let uv = controller_uv()?;
    let version = uv_version(&uv)?;
    uv_for_in(&cache_root()?, &uv, &version, target)
}

/// [`uv_for`] with the cache, the fetching uv and the version to fetch given: the cached
/// binary `CACHE/uv/VERSION/PLATFORM/uv` when its SHA-256 is the one recorded beside it,
/// else fetched now. The fetch: `uv pip compile --generate-hashes` reads the release's file
/// hashes from the index, `uv pip install --require-hashes --target` downloads the wheel for
/// that platform and checks it against them, and the `bin/uv` it unpacked is checked against
/// the wheel's RECORD before it is renamed into place.
pub fn uv_for_in(cache: &Path, uv: &Path, version: &str, target: &NodeTarget) -> Result<LocalUv> {
    let platform = target.uv_platform()?;
    if parse_version(version).is_none() || version.contains(['/', ' ']) {
        return Err(Error::usage(format!("uv version {version:?} is not a version number")));
    }
    let dir = cache.join("uv").join(version).join(&platform);
    let bin = dir.join("uv");
    let sum_file = dir.join("uv.sha256");
    if let (true, Ok(recorded)) = (bin.is_file(), std::fs::read_to_string(&sum_file)) {
        let mut lines = recorded.lines();
        let (sum, seen) = (lines.next().unwrap_or("").trim().to_string(), lines.next().map(str::trim));
        // Hashing 28 MB on every run costs more than the rest of the check: a binary whose
        // identity (inode, size, change time) is the one recorded when it was last hashed is
        // the same file; any rewrite, replacement or chmod changes it, and then it is hashed.
        if seen.is_some() && seen == file_identity(&bin).as_deref() {
            return Ok(LocalUv { path: bin, version: version.to_string(), sha256: sum });
        }
        let actual = sha256_file(&bin)?;
        if actual == sum {
            if let Some(id) = file_identity(&bin) {
                let _ = write_atomic(&sum_file, format!("{actual}\n{id}\n").as_bytes());
            }
            return Ok(LocalUv { path: bin, version: version.to_string(), sha256: actual });
        }
    }
    mkdirs(&dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&dir)
        .map_err(|e| Error::io(format!("creating a directory in {}", dir.display()), e))?;
    let python = target.python_minor().unwrap_or_else(|_| "3.12".into());
    let compile = Cmd::new([
        uv.as_os_str().to_owned(),
        "pip".into(),
        "compile".into(),
        "--no-config".into(),
        "--quiet".into(),
        "--generate-hashes".into(),
        "--no-header".into(),
        "--no-annotate".into(),
        "--no-deps".into(),
        "--python-platform".into(),
        platform.clone().into(),
        "--python-version".into(),
        python.clone().into(),
        "-".into(),
    ])
    .stdin(format!("uv=={version}\n"))
    .env("UV_NO_CONFIG", "1")
    // In our temporary directory: a project's `.python-version` or `uv.toml` in the
    // caller's working directory must not choose the interpreter or the index.
    .dir(tmp.path())
    .deadline(FETCH_DEADLINE);
    let out = compile.output()?;
    if !out.status.success() {
        return Err(Error::new(Exit::Partial, format!("uv {version} for {platform} ({}): {}", target.describe(), compile.failure_message(&out))));
    }
    let req = tmp.path().join("uv-requirements.txt");
    std::fs::write(&req, out.stdout).map_err(|e| Error::io(format!("writing {}", req.display()), e))?;
    let into = tmp.path().join("t");
    let install = Cmd::new([
        uv.as_os_str().to_owned(),
        "pip".into(),
        "install".into(),
        "--no-config".into(),
        "--quiet".into(),
        "--target".into(),
        into.clone().into(),
        "--python-platform".into(),
        platform.clone().into(),
        "--python-version".into(),
        python.into(),
        "--no-deps".into(),
        "--only-binary".into(),
        ":all:".into(),
        "--require-hashes".into(),
        // A copy, not a hard link into uv's own cache: ours is renamed and chmod-ed.
        "--link-mode".into(),
        "copy".into(),
        "-r".into(),
        req.into(),
    ])
    .env("UV_NO_CONFIG", "1")
    // In our temporary directory: a project's `.python-version` or `uv.toml` in the
    // caller's working directory must not choose the interpreter or the index.
    .dir(tmp.path())
    .deadline(FETCH_DEADLINE);
    let out = install.output()?;
    if !out.status.success() {
        return Err(Error::new(Exit::Partial, format!("uv {version} for {platform} ({}): {}", target.describe(), install.failure_message(&out))));
    }
    // The wheel uv chose must be for the node's platform: its WHEEL tags say so.
    let wheel_path = into.join(format!("uv-{version}.dist-info/WHEEL"));
    let wheel = std::fs::read_to_string(&wheel_path).map_err(|e| Error::io(format!("reading {}", wheel_path.display()), e))?;
    let tags: Vec<&str> = wheel.lines().filter_map(|l| l.strip_prefix("Tag:")).flat_map(|t| t.trim().rsplit('-').next().unwrap_or("").split('.')).collect();
    if !tags.iter().any(|t| target.fits_platform_tag(t)) {
        return Err(Error::new(
            Exit::Partial,
            format!("uv {version} for {platform}: the wheel uv chose is tagged {} and does not fit {}; nothing was cached", tags.join("."), target.describe()),
        ));
    }
    let record_path = into.join(format!("uv-{version}.dist-info/RECORD"));
    let record = std::fs::read_to_string(&record_path).map_err(|e| Error::io(format!("reading {}", record_path.display()), e))?;
    let want = record
        .lines()
        .find_map(|l| l.strip_prefix("bin/uv,sha256="))
        .and_then(|rest| rest.split(',').next())
        .ok_or_else(|| Error::new(Exit::Partial, format!("the uv {version} wheel for {platform} has no bin/uv in its RECORD")))?;
    let unpacked = into.join("bin/uv");
    let actual = sha256_file(&unpacked)?;
    if record_hash(&actual) != want {
        return Err(Error::new(
            Exit::Partial,
            format!("the uv {version} binary for {platform} does not match its wheel's RECORD (sha256 {actual}); nothing was cached"),
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&unpacked, std::fs::Permissions::from_mode(0o755)).map_err(|e| Error::io(unpacked.display(), e))?;
    // The hash first: a reader that sees the new hash with an old binary refetches, never
    // trusts a mismatch.
    write_atomic(&sum_file, format!("{actual}\n").as_bytes())?;
    std::fs::rename(&unpacked, &bin).map_err(|e| Error::io(format!("moving the uv binary to {}", bin.display()), e))?;
    if let Some(id) = file_identity(&bin) {
        write_atomic(&sum_file, format!("{actual}\n{id}\n").as_bytes())?;
    }
    Ok(LocalUv { path: bin, version: version.to_string(), sha256: actual })
}

/// One requirement of a requirements file, pinned to one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// As written (`PyYAML`, `msgpack[extra]` -> `msgpack`).
    pub name: String,
    pub version: String,
    /// The PEP 508 marker after `;`, if any.
    pub marker: Option<String>,
    /// `--hash=sha256:HEX` values (lowercase hex).
    pub hashes: Vec<String>,
}

impl Pin {
    /// `name==version`, the line pip is given.
    pub fn spec(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// PEP 503's normal form, with `_` as wheel file names spell it.
fn normal_name(n: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in n.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('_');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// `1.1.0` and `1.1` are the same release (PEP 440): trailing zero parts off.
fn normal_version(v: &str) -> String {
    let v = v.trim().to_ascii_lowercase();
    let mut parts: Vec<&str> = v.split('.').collect();
    while parts.len() > 1 && parts.last() == Some(&"0") {
        parts.pop();
    }
    parts.join(".")
}

/// The pinned requirements of a requirements file, and the lines that are not a pin, each
/// with why: (text, why). Continuation lines (`\`) are joined, comments dropped; options
/// (`-e`, `--index-url`, `--find-links`...) are not requirements of the wheelhouse and are
/// skipped: an editable project is installed from the synced sources.
pub fn read_pins(text: &str) -> (Vec<Pin>, Vec<(String, String)>) {
    let mut pins = Vec::new();
    let mut refused = Vec::new();
    let mut logical = String::new();
    let mut lines: Vec<String> = Vec::new();
    for raw in text.lines() {
        let line = match raw.find(" #").or_else(|| raw.trim_start().starts_with('#').then_some(0)) {
            Some(i) => &raw[..i],
            None => raw,
        };
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        lines.push(std::mem::take(&mut logical));
    }
    lines.push(logical);
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('-') {
            let opt = line.split([' ', '=']).next().unwrap_or("");
            if matches!(opt, "-r" | "--requirement" | "-c" | "--constraint") {
                refused.push((line.to_string(), "a nested requirements file is not followed: pass one flat file".to_string()));
            }
            continue;
        }
        let mut hashes = Vec::new();
        let mut words = Vec::new();
        for w in line.split_whitespace() {
            match w.strip_prefix("--hash=").or_else(|| w.strip_prefix("--hash:")) {
                Some(h) => {
                    if let Some(hex) = h.strip_prefix("sha256:") {
                        hashes.push(hex.to_ascii_lowercase());
                    }
                }
                None => words.push(w),
            }
        }
        let req = words.join(" ");
        let (spec, marker) = match req.split_once(';') {
            Some((s, m)) => (s.trim().to_string(), Some(m.trim().to_string()).filter(|m| !m.is_empty())),
            None => (req.trim().to_string(), None),
        };
        let name_end = spec.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))).unwrap_or(spec.len());
        let name = spec[..name_end].to_string();
        let mut rest = spec[name_end..].trim_start();
        if rest.starts_with('[') {
            rest = rest.find(']').map(|i| rest[i + 1..].trim_start()).unwrap_or("");
        }
        let version = rest.strip_prefix("===").or_else(|| rest.strip_prefix("==")).map(str::trim);
        match version {
            Some(v) if !name.is_empty() && !v.is_empty() && !v.contains(['*', ',', ' ', '@']) => {
                pins.push(Pin { name, version: v.to_string(), marker, hashes })
            }
            _ if rest.starts_with('@') || spec.contains("://") => {
                refused.push((if name.is_empty() { spec.clone() } else { name }, "a direct reference (URL or path), not a version from an index".to_string()))
            }
            _ => refused.push((if name.is_empty() { spec.clone() } else { name }, format!("not pinned to one version (`{spec}`); the wheelhouse takes name==version lines"))),
        }
    }
    (pins, refused)
}

/// `<name>-<version>-...whl` -> (normal name, normal version).
fn wheel_name_version(file: &str) -> Option<(String, String)> {
    let stem = file.strip_suffix(".whl")?;
    let mut it = stem.split('-');
    Some((normal_name(it.next()?), normal_version(it.next()?)))
}

/// Runs pip (pinned, [`PIP_FOR_DOWNLOADS`]) or its Python through the controller's uv, in a
/// throwaway environment uv caches: `uv run --no-project --isolated --with pip==X -- python
/// ARGS`. The user's uv config is not read; pip is run `--isolated` by the callers.
fn python_with_pip(uv: &Path, args: Vec<std::ffi::OsString>) -> Cmd {
    let mut argv: Vec<std::ffi::OsString> = vec![
        uv.as_os_str().to_owned(),
        "run".into(),
        "--no-config".into(),
        "--no-project".into(),
        "--isolated".into(),
        "--quiet".into(),
        "--with".into(),
        PIP_FOR_DOWNLOADS.into(),
        "--".into(),
        "python".into(),
    ];
    argv.extend(args);
    Cmd::new(argv).env("UV_NO_CONFIG", "1").env("PIP_CONFIG_FILE", "/dev/null").deadline(FETCH_DEADLINE)
}

/// Evaluates PEP 508 markers for `target` with pip's own `packaging`: one bool per marker.
const MARKER_CODE: &str = "import json, sys
from pip._vendor.packaging.markers import Marker
doc = json.load(sys.stdin)
print(json.dumps([Marker(m).evaluate(doc['env']) for m in doc['markers']]))";

fn markers_hold(cache_dir: &Path, uv: &Path, target: &NodeTarget, markers: &[String]) -> Result<Vec<bool>> {
    // Cached per marker text: a second call starts no process.
    let dir = cache_dir.join(".markers");
    let file = |m: &str| dir.join(format!("{:016x}", crate::ssh::fnv1a(m.as_bytes())));
    let mut out: Vec<Option<bool>> = markers
        .iter()
        .map(|m| std::fs::read_to_string(file(m)).ok().and_then(|s| s.split_once('\n').filter(|(t, _)| *t == m).map(|(_, v)| v.trim() == "true")))
        .collect();
    let todo: Vec<String> = markers.iter().zip(&out).filter(|(_, o)| o.is_none()).map(|(m, _)| m.clone()).collect();
    if todo.is_empty() {
        return Ok(out.into_iter().map(|o| o.unwrap_or(true)).collect());
    }
    let doc = serde_json::json!({"env": target.marker_env(), "markers": todo});
    mkdirs(&dir)?;
    // Run in the cache: a `.python-version` in the caller's project must not pick the Python.
    let cmd = python_with_pip(uv, vec!["-I".into(), "-c".into(), MARKER_CODE.into()]).stdin(doc.to_string()).dir(&dir);
    let res = cmd.output()?;
    if !res.status.success() {
        return Err(Error::new(Exit::BadInput, format!("evaluating the requirements' markers: {}", cmd.failure_message(&res))));
    }
    let verdicts: Vec<bool> = serde_json::from_slice(&res.stdout)
        .map_err(|e| Error::internal(format!("the marker evaluation printed {:?}: {e}", res.stdout_str())))?;
    let mut it = verdicts.into_iter();
    for (m, o) in markers.iter().zip(out.iter_mut()) {
        if o.is_none() {
            let v = it.next().unwrap_or(true);
            let _ = write_atomic(&file(m), format!("{m}\n{v}\n").as_bytes());
            *o = Some(v);
        }
    }
    Ok(out.into_iter().map(|o| o.unwrap_or(true)).collect())
}

/// The wheels for `target` of every pin in the requirements file, downloaded into the
/// controller's cache ([`wheelhouse_in`]).
pub fn wheelhouse(requirements: &Path, target: &NodeTarget) -> Result<Wheelhouse> {
    wheelhouse_in(&cache_root()?, &controller_uv()?, requirements, target)
}

/// [`wheelhouse`] with the cache and the uv given. `CACHE/wheelhouse/<target key>/` holds the
/// wheels and, in `.pins/`, which wheel each pin got; a pin found there (and, when the file
/// lists hashes, whose wheel has one of them) is not fetched again. The rest are fetched in
/// one `pip download --only-binary=:all: --no-deps` for the target's platform tags,
/// implementation and ABI; a pin pip finds no wheel for is taken out with pip's reason and the
/// others fetched again (pip stops at the first it cannot satisfy). pip checks each file
/// against the index's hash (and against the file's `--hash` values, with
/// `--require-hashes`); the wheels land in a temporary directory and are renamed into place.
pub fn wheelhouse_in(cache: &Path, uv: &Path, requirements: &Path, target: &NodeTarget) -> Result<Wheelhouse> {
    let text = std::fs::read_to_string(requirements).map_err(|e| Error::io(format!("reading {}", requirements.display()), e))?;
    let (pins, refused) = read_pins(&text);
    let dir = cache.join("wheelhouse").join(target.key()?);
    mkdirs(&dir.join(".pins"))?;
    let what = target.describe();
    let mut missing: Vec<(String, String)> =
        refused.into_iter().map(|(n, why)| (n.clone(), format!("{n}: {why} (for {what})"))).collect();

    let markers: Vec<String> = pins.iter().filter_map(|p| p.marker.clone()).collect();
    let holds = if markers.is_empty() { Vec::new() } else { markers_hold(&dir, uv, target, &markers)? };
    let mut holds = holds.into_iter();
    let pins: Vec<Pin> = pins.into_iter().filter(|p| p.marker.is_none() || holds.next().unwrap_or(true)).collect();

    let pin_file = |p: &Pin| dir.join(".pins").join(format!("{}=={}", normal_name(&p.name), normal_version(&p.version)));
    let cached = |p: &Pin| -> Option<String> {
        let f = std::fs::read_to_string(pin_file(p)).ok()?;
        let f = f.trim().to_string();
        let path = dir.join(&f);
        if !path.is_file() {
            return None;
        }
        if !p.hashes.is_empty() && !sha256_file(&path).is_ok_and(|h| p.hashes.contains(&h)) {
            return None;
        }
        Some(f)
    };
    let mut files: Vec<String> = Vec::new();
    let mut todo: Vec<Pin> = Vec::new();
    for p in pins {
        match cached(&p) {
            Some(f) => files.push(f),
            None => todo.push(p),
        }
    }
    let mut fetched = Vec::new();
    // Moves the wheels pip left in `tmp` for `batch` into place and records each pin's.
    let mut take = |tmp: &Path, batch: &[Pin], missing: &mut Vec<(String, String)>| -> Result<()> {
        let names: Vec<String> =
            std::fs::read_dir(tmp).map_err(|e| Error::io(tmp.display(), e))?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        for p in batch {
            let want = (normal_name(&p.name), normal_version(&p.version));
            let Some(f) = names.iter().find(|f| wheel_name_version(f).as_ref() == Some(&want)).cloned() else {
                missing.push((p.name.clone(), format!("{}: pip reported success but left no wheel of it (for {what})", p.spec())));
                continue;
            };
            let hash = sha256_file(&tmp.join(&f))?;
            if !p.hashes.is_empty() && !p.hashes.contains(&hash) {
                missing.push((p.name.clone(), format!("{}: the wheel {f} has sha256 {hash}, which the requirements file does not list", p.spec())));
                continue;
            }
            std::fs::rename(tmp.join(&f), dir.join(&f)).map_err(|e| Error::io(format!("moving {f} into {}", dir.display()), e))?;
            write_atomic(&pin_file(p), format!("{f}\n").as_bytes())?;
            fetched.push(f.clone());
            files.push(f);
        }
        Ok(())
    };
    let fetch_dir = || {
        tempfile::Builder::new().prefix(".fetch-").tempdir_in(&dir).map_err(|e| Error::io(format!("creating a directory in {}", dir.display()), e))
    };
    // pip's --require-hashes is all or nothing per run: pins with hashes and pins without go
    // in separate runs.
    let (hashed, plain): (Vec<Pin>, Vec<Pin>) = todo.into_iter().partition(|p| !p.hashes.is_empty());
    for mut batch in [hashed, plain] {
        while !batch.is_empty() {
            let tmp = fetch_dir()?;
            match pip_download(uv, target, &batch, tmp.path())? {
                Ok(()) => {
                    take(tmp.path(), &batch, &mut missing)?;
                    batch.clear();
                }
                Err((culprit, why)) => match culprit.and_then(|c| batch.iter().position(|p| normal_name(&p.name) == normal_name(&c))) {
                    // pip stops at the first pin it cannot satisfy: that one out, the rest again.
                    Some(i) => {
                        let p = batch.remove(i);
                        missing.push((p.name.clone(), no_wheel(&p, &what, &why)));
                    }
                    // Not one pip named (a hash mismatch, the index unreachable): each pin on
                    // its own, so a failure takes only itself out.
                    None => {
                        for p in std::mem::take(&mut batch) {
                            let one = std::slice::from_ref(&p);
                            let t = fetch_dir()?;
                            match pip_download(uv, target, one, t.path())? {
                                Ok(()) => take(t.path(), one, &mut missing)?,
                                Err((Some(_), why)) => missing.push((p.name.clone(), no_wheel(&p, &what, &why))),
                                Err((None, why)) => missing.push((p.name.clone(), format!("{}: could not be fetched for {what}: {why}", p.spec()))),
                            }
                        }
                    }
                },
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(Wheelhouse { dir, missing, files, fetched })
}

fn no_wheel(p: &Pin, what: &str, why: &str) -> String {
    format!(
        "{}: no wheel for {what} ({why}); pin a version that has a wheel for it, or let the node reach an index that can build it",
        p.spec()
    )
}

/// One `pip download` of `pins` into `dest`. Ok(Err((package pip named, pip's reason))) when
/// pip found no fitting wheel (or failed otherwise); Err only when pip could not be started.
#[allow(clippy::type_complexity)]
fn pip_download(uv: &Path, target: &NodeTarget, pins: &[Pin], dest: &Path) -> Result<std::result::Result<(), (Option<String>, String)>> {
    let req = dest.join("requirements.txt");
    let mut body = String::new();
    for p in pins {
        body.push_str(&p.spec());
        for h in &p.hashes {
            body.push_str(&format!(" --hash=sha256:{h}"));
        }
        body.push('\n');
    }
    std::fs::write(&req, body).map_err(|e| Error::io(format!("writing {}", req.display()), e))?;
    let (implementation, abis) = target.pip_abis()?;
    let mut args: Vec<std::ffi::OsString> = vec![
        "-I".into(),
        "-m".into(),
        "pip".into(),
        "download".into(),
        // No config file, no PIP_* variable (this very machine sets PIP_FIND_LINKS): the
        // index and the rules are pip's defaults.
        "--isolated".into(),
        "--disable-pip-version-check".into(),
        "--no-input".into(),
        "--progress-bar".into(),
        "off".into(),
        "--no-deps".into(),
        "--only-binary=:all:".into(),
        "--implementation".into(),
        implementation.into(),
        "--python-version".into(),
        target.python_minor()?.into(),
    ];
    for a in abis {
        args.extend(["--abi".into(), a.into()]);
    }
    for p in target.pip_platforms()? {
        args.extend(["--platform".into(), p.into()]);
    }
    if pins.iter().all(|p| !p.hashes.is_empty()) {
        args.push("--require-hashes".into());
    }
    args.extend(["-d".into(), dest.as_os_str().to_owned(), "-r".into(), req.into_os_string()]);
    // Run in dest: pip must not pick up a project's files from the working directory.
    let cmd = python_with_pip(uv, args).dir(dest);
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let culprit = err.lines().find_map(|l| {
        let rest = l.split_once("No matching distribution found for ")?.1;
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))).unwrap_or(rest.len());
        Some(rest[..name_end].to_string())
    });
    let why: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .map(|l| l.trim_start_matches("ERROR:").trim())
        .filter(|l| !l.starts_with("Ignored the following"))
        .collect();
    let why = if why.is_empty() { cmd.failure_message(&out) } else { why.join("; ") };
    Ok(Err((culprit, why)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(os: &str, machine: &str, libc: &str) -> NodeTarget {
        NodeTarget {
            implementation: "cpython".into(),
            version: "3.11.2".into(),
            abiflags: String::new(),
            os: os.into(),
            machine: machine.into(),
            libc: libc.into(),
        }
    }

    #[test]
    fn from_abi_takes_the_probes_facts() {
        let abi = PythonAbi {
            implementation: "cpython".into(),
            abiflags: "t".into(),
            platform: "linux".into(),
            machine: "aarch64".into(),
            libc: "musl 1.2.4".into(),
            prefix: "/usr".into(),
        };
        let n = NodeTarget::from_abi("3.13.1", &abi);
        assert_eq!(
            n,
            NodeTarget {
                implementation: "cpython".into(),
                version: "3.13.1".into(),
                abiflags: "t".into(),
                os: "linux".into(),
                machine: "aarch64".into(),
                libc: "musl 1.2.4".into()
            }
        );
        assert_eq!(n.key().unwrap(), "cp313t-linux-aarch64-musl_1.2.4");
    }

    #[test]
    fn uv_platform_names_each_supported_node() {
        let cases = [
            (t("linux", "x86_64", "glibc 2.36"), "x86_64-manylinux_2_36"),
            (t("linux", "x86_64", "glibc 2.41"), "x86_64-manylinux_2_40"),
            (t("linux", "x86_64", "glibc 2.30"), "x86_64-manylinux_2_28"),
            (t("linux", "aarch64", "glibc 2.17"), "aarch64-manylinux_2_17"),
            (t("linux", "arm64", "glibc 2.27"), "aarch64-manylinux_2_17"),
            (t("linux", "x86_64", "musl 1.2.4"), "x86_64-unknown-linux-musl"),
            (t("linux", "aarch64", "musl 1.1"), "aarch64-unknown-linux-musl"),
            (t("darwin", "arm64", ""), "aarch64-apple-darwin"),
            (t("darwin", "x86_64", ""), "x86_64-apple-darwin"),
        ];
        for (target, want) in cases {
            assert_eq!(target.uv_platform().unwrap(), want, "{target:?}");
        }
    }

    #[test]
    fn uv_platform_refuses_what_uv_has_no_target_for() {
        for (target, why) in [
            (t("linux", "x86_64", "glibc 2.12"), "older than 2.17"),
            (t("linux", "x86_64", ""), "C library is unknown"),
            (t("linux", "s390x", "glibc 2.36"), "no Linux target for s390x"),
            (t("freebsd", "amd64", ""), "\"freebsd\""),
        ] {
            let e = target.uv_platform().unwrap_err();
            assert!(e.message.contains(why) && e.message.contains("3.11.2"), "{target:?}: {}", e.message);
        }
    }

    #[test]
    fn pip_platforms_go_from_the_nodes_libc_down() {
        let tags = t("linux", "x86_64", "glibc 2.36").pip_platforms().unwrap();
        assert_eq!(tags[0], "manylinux_2_36_x86_64");
        assert!(tags.contains(&"manylinux2014_x86_64".to_string()) && tags.contains(&"manylinux1_x86_64".to_string()));
        assert!(!tags.iter().any(|t| t.contains("2_37") || t.contains("musl")), "{tags:?}");
        let idx = |s: &str| tags.iter().position(|t| t == s).unwrap();
        assert!(idx("manylinux_2_28_x86_64") < idx("manylinux_2_17_x86_64"));
        let musl = t("linux", "aarch64", "musl 1.2.4").pip_platforms().unwrap();
        assert_eq!(musl, ["musllinux_1_2_aarch64", "musllinux_1_1_aarch64"]);
        let mac = t("darwin", "arm64", "").pip_platforms().unwrap();
        assert_eq!(mac[0], "macosx_13_0_arm64");
        assert!(mac.contains(&"macosx_11_0_universal2".to_string()) && !mac.iter().any(|t| t.contains("x86_64") || t.starts_with("macosx_14")));
        let mac_intel = t("darwin", "x86_64", "").pip_platforms().unwrap();
        assert!(mac_intel.contains(&"macosx_10_9_x86_64".to_string()));
        assert!(t("linux", "x86_64", "").pip_platforms().is_err());
    }

    #[test]
    fn a_wheels_platform_tag_fits_or_not() {
        let linux = t("linux", "x86_64", "glibc 2.36");
        assert!(linux.fits_platform_tag("manylinux_2_17_x86_64") && linux.fits_platform_tag("manylinux2014_x86_64"));
        assert!(!linux.fits_platform_tag("manylinux_2_39_x86_64"), "newer than the node's glibc");
        assert!(!linux.fits_platform_tag("manylinux_2_17_aarch64") && !linux.fits_platform_tag("musllinux_1_1_x86_64"));
        let mac = t("darwin", "arm64", "");
        assert!(mac.fits_platform_tag("macosx_11_0_arm64") && mac.fits_platform_tag("macosx_10_9_universal2"));
        assert!(!mac.fits_platform_tag("macosx_10_12_x86_64") && !mac.fits_platform_tag("manylinux_2_17_x86_64"));
    }

    #[test]
    fn pip_abis_follow_the_build() {
        assert_eq!(t("linux", "x86_64", "glibc 2.36").pip_abis().unwrap(), ("cp".to_string(), vec!["cp311".into(), "abi3".into(), "none".into()]));
        let mut ft = t("linux", "x86_64", "glibc 2.36");
        ft.version = "3.13.0".into();
        ft.abiflags = "t".into();
        assert_eq!(ft.pip_abis().unwrap().1, ["cp313t", "none"], "a free-threaded build loads no abi3 wheel");
        let mut pypy = t("linux", "x86_64", "glibc 2.36");
        pypy.implementation = "pypy".into();
        assert_eq!(pypy.pip_abis().unwrap(), ("pp".to_string(), vec!["none".into()]));
    }

    #[test]
    fn cache_key_separates_what_decides_the_wheels_and_nothing_else() {
        let a = t("linux", "x86_64", "glibc 2.36");
        assert_eq!(a.key().unwrap(), "cp311-linux-x86_64-glibc_2.36");
        let mut patch = a.clone();
        patch.version = "3.11.9".into();
        assert_eq!(patch.key().unwrap(), a.key().unwrap(), "the patch version does not change which wheels fit");
        let mut others = vec![t("linux", "aarch64", "glibc 2.36"), t("linux", "x86_64", "glibc 2.28"), t("linux", "x86_64", "musl 1.2.4"), t("darwin", "arm64", "")];
        let mut minor = a.clone();
        minor.version = "3.12.1".into();
        let mut debug = a.clone();
        debug.abiflags = "d".into();
        others.extend([minor, debug]);
        let mut keys: Vec<String> = others.iter().map(|o| o.key().unwrap()).collect();
        keys.push(a.key().unwrap());
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{keys:?}");
        assert_eq!(t("darwin", "aarch64", "").key().unwrap(), "cp311-darwin-arm64", "one machine, one spelling");
        let mut odd = a.clone();
        odd.libc = "glibc 2.36/../x".into();
        assert!(!odd.key().unwrap().contains('/'), "a key is one path component");
    }

    #[test]
    fn uv_version_is_read_from_its_banner() {
        assert_eq!(parse_uv_version("uv 0.13.9 (x86_64-unknown-linux-gnu)\n").as_deref(), Some("0.13.9"));
        assert_eq!(parse_uv_version("uv 0.4.0 (a1b2c3d 2024-08-20)").as_deref(), Some("0.4.0"));
        assert_eq!(parse_uv_version("rsync  version 3.2.7").as_deref(), None);
        assert!(parse_version("0.6.14").unwrap() < MIN_UV && parse_version("0.13.9").unwrap() > MIN_UV);
    }

    fn fake_uv(dir: &Path, banner: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("uv");
        std::fs::write(&p, format!("#!/bin/sh\necho '{banner}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn controller_uv_looks_at_the_variable_then_beside_the_venv_and_the_binary_then_path() {
        // Fake uvs (shell scripts printing a banner): which one is found is the point, and an
        // old uv cannot be installed here on demand.
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir(a.path().join("bin")).unwrap();
        let in_venv = fake_uv(&a.path().join("bin"), "uv 0.13.9 (x86_64-unknown-linux-gnu)");
        let beside_exe = fake_uv(b.path(), "uv 0.7.0");
        let on_path = fake_uv(c.path(), "uv 0.8.0");
        let some = |p: &Path| Some(p.to_path_buf());
        assert_eq!(find_uv(some(&on_path), some(a.path()), some(b.path()), None).unwrap(), on_path, "the variable wins");
        assert_eq!(find_uv(None, some(a.path()), some(b.path()), some(&on_path)).unwrap(), in_venv);
        assert_eq!(find_uv(None, None, some(b.path()), some(&on_path)).unwrap(), beside_exe);
        assert_eq!(find_uv(None, Some(PathBuf::new()), some(c.path().join("nothing").as_path()), some(&on_path)).unwrap(), on_path);
        let e = find_uv(None, None, some(c.path().join("nothing").as_path()), None).unwrap_err();
        assert_eq!(e.exit, Exit::MissingTool);
        assert!(e.message.contains("pip install uv") && e.message.contains("0.6.15") && e.message.contains("PATH"), "{}", e.message);
        let e = find_uv(Some(c.path().join("missing-uv")), None, None, some(&on_path)).unwrap_err();
        assert!(e.exit == Exit::MissingTool && e.message.starts_with("PYTEST_CLOUD_UV: "), "a set variable is not silently passed over: {}", e.message);
    }

    #[test]
    fn a_uv_older_than_the_minimum_or_not_uv_is_refused_with_exit_72() {
        let d = tempfile::tempdir().unwrap();
        let old = fake_uv(d.path(), "uv 0.6.14 (a1b2c3d 2025-04-16)");
        let e = uv_version(&old).unwrap_err();
        assert_eq!(e.exit, Exit::MissingTool);
        assert!(e.message.contains("0.6.14") && e.message.contains("older than 0.6.15") && e.message.contains("pip install -U uv"), "{}", e.message);
        let other = fake_uv(d.path(), "rsync  version 3.2.7");
        let e = uv_version(&other).unwrap_err();
        assert!(e.exit == Exit::MissingTool && e.message.contains("is not uv"), "{}", e.message);
        assert_eq!(uv_version(&fake_uv(d.path(), "uv 0.6.15")).unwrap(), "0.6.15");
    }

    #[test]
    fn record_hash_is_urlsafe_base64_without_padding() {
        // sha256 of the empty string, as a wheel RECORD writes it.
        assert_eq!(
            record_hash("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn pins_are_read_with_markers_hashes_and_continuations() {
        let text = "# a comment\n\
            msgpack==1.1.0 \\\n    --hash=sha256:ABCD \\\n    --hash=sha256:ef01\n\
            PyYAML==5.4.1 ; python_version < \"3.12\"  # why\n\
            -e file:///src/project\n\
            --index-url https://example.invalid/simple\n\
            requests[socks]==2.32.3\n\
            loose>=1.0\n\
            direct @ https://example.invalid/d.whl\n\
            -r other.txt\n";
        let (pins, refused) = read_pins(text);
        assert_eq!(
            pins,
            vec![
                Pin { name: "msgpack".into(), version: "1.1.0".into(), marker: None, hashes: vec!["abcd".into(), "ef01".into()] },
                Pin { name: "PyYAML".into(), version: "5.4.1".into(), marker: Some("python_version < \"3.12\"".into()), hashes: vec![] },
                Pin { name: "requests".into(), version: "2.32.3".into(), marker: None, hashes: vec![] },
            ]
        );
        let names: Vec<&str> = refused.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["loose", "direct", "-r other.txt"]);
        assert!(refused[0].1.contains("not pinned"), "{refused:?}");
    }

    #[test]
    fn wheel_files_match_their_pins_by_normal_name_and_version() {
        assert_eq!(wheel_name_version("PyYAML-6.0.1-cp311-cp311-manylinux_2_17_x86_64.whl"), Some(("pyyaml".into(), "6.0.1".into())));
        assert_eq!(normal_name("zope.interface"), "zope_interface");
        assert_eq!(normal_name("Foo--Bar"), "foo_bar");
        assert_eq!(normal_version("1.1.0"), normal_version("1.1"));
        assert_ne!(normal_version("1.10"), normal_version("1.1"));
    }

    #[test]
    fn cache_root_prefers_our_variable_then_xdg_then_home() {
        // Read-only check of the rule with this process's environment (no set_var: tests
        // run on threads).
        let root = cache_root().unwrap();
        match (std::env::var_os("PYTEST_CLOUD_CACHE_DIR"), std::env::var_os("XDG_CACHE_HOME")) {
            (Some(d), _) if !d.is_empty() => assert_eq!(root, PathBuf::from(d)),
            (_, Some(x)) if Path::new(&x).is_absolute() => assert_eq!(root, Path::new(&x).join("pytest-cloud")),
            _ => assert!(root.ends_with(".cache/pytest-cloud"), "{}", root.display()),
        }
    }

    #[test]
    fn a_cached_uv_whose_hash_matches_is_used_without_fetching() {
        let cache = tempfile::tempdir().unwrap();
        let target = t("linux", "x86_64", "glibc 2.36");
        let dir = cache.path().join("uv/0.13.9/x86_64-manylinux_2_36");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("uv"), b"not really uv").unwrap();
        let sum = sha256_file(&dir.join("uv")).unwrap();
        std::fs::write(dir.join("uv.sha256"), format!("{sum}\n")).unwrap();
        // A fetching uv that does not exist: only the cache can answer.
        let got = uv_for_in(cache.path(), Path::new("/nonexistent/uv"), "0.13.9", &target).unwrap();
        assert_eq!(got, LocalUv { path: dir.join("uv"), version: "0.13.9".into(), sha256: sum });
        let recorded = std::fs::read_to_string(dir.join("uv.sha256")).unwrap();
        assert_eq!(recorded.lines().count(), 2, "the verified file's identity is recorded: {recorded:?}");
        assert_eq!(uv_for_in(cache.path(), Path::new("/nonexistent/uv"), "0.13.9", &target).unwrap(), got, "and then trusted");
        // A binary changed behind our back (even to the same size) is not trusted: it is
        // hashed, found wrong and fetched again (here that fails: there is no uv to fetch with).
        std::fs::write(dir.join("uv"), b"not really UV").unwrap();
        let err = uv_for_in(cache.path(), Path::new("/nonexistent/uv"), "0.13.9", &target).unwrap_err();
        assert_eq!(err.exit, Exit::MissingTool, "{}", err.message);
    }
}
