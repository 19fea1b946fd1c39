//! The manifest digest of a project tree: one string that changes whenever anything rsync
//! would send changes (a file's path, type, size, mtime, mode, a symlink's target), computed
//! here by walking the tree (about 1,500 `lstat`s for a project with its venv: milliseconds).
//! The sync's fast path (src/engine/sync/fast.rs) compares it with the digest the node kept
//! from its last complete sync; equal means a no-change re-sync needs no rsync at all.
//!
//! The walk applies the same filter rules rsync gets ([`crate::rsync::filter_rules`], the
//! ignore file included) but only as far as they can be read with certainty: a path is left
//! out only when the first rule that can decide it is an exclude it definitely matches and
//! every rule before it definitely does not match. A rule this module does not understand
//! (a dir-merge `:`, a clear `!`, modifiers, character classes, escapes) makes every later
//! decision "included". So the digest covers a superset of what rsync sends: a change rsync
//! would carry always changes it; a change rsync would not carry may change it too, which only
//! costs a full sync. Pure apart from reading the tree; tested on temporary trees.

use std::hash::Hasher;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Changes when the walk or the record format changes, so an old node digest never matches.
const FORMAT: &str = "pytest-cloud-manifest-1";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters but `/`.
    Star,
    /// `**`: anything, `/` included.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    toks: Vec<Tok>,
    /// `/pat`: from the transfer's root.
    anchored: bool,
    /// `pat/`: directories only.
    dir_only: bool,
    /// Has a `/` or `**`: matched against the path, else against the last component.
    full_path: bool,
    /// `pat/***`: the directory and everything in it.
    and_below: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Known { include: bool, pattern: Pattern },
    /// Something whose effect is not certain here: everything it might decide is included.
    Unknown,
}

/// Parses one filter line (merge-file syntax, as in the `--filter=. FILE` rsync gets).
/// None: a line that is no rule (blank, comment). `depth` bounds nested merge files.
fn parse_line(line: &str, depth: usize, rules: &mut Vec<Rule>, hashed: &mut dyn FnMut(&[u8])) {
    if line.trim().is_empty() || line.starts_with('#') || line.starts_with(';') {
        return;
    }
    let (word, rest) = match line.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (line, ""),
    };
    let include = match word {
        "-" | "-p" | "exclude" | "exclude,p" => false,
        "+" | "include" => true,
        "." | "merge" if depth < 4 && !rest.is_empty() => {
            let path = Path::new(rest);
            match std::fs::read(path) {
                Ok(bytes) => {
                    hashed(&bytes);
                    for l in String::from_utf8_lossy(&bytes).lines() {
                        parse_line(l, depth + 1, rules, hashed);
                    }
                }
                // rsync would fail on a missing merge file; a sync that fails is no fast path.
                Err(_) => rules.push(Rule::Unknown),
            }
            return;
        }
        _ => {
            rules.push(Rule::Unknown);
            return;
        }
    };
    match parse_pattern(rest) {
        Some(pattern) => rules.push(Rule::Known { include, pattern }),
        None => rules.push(Rule::Unknown),
    }
}

fn parse_pattern(p: &str) -> Option<Pattern> {
    if p.is_empty() || p.contains(['[', '\\']) {
        return None;
    }
    let mut s = p;
    let and_below = s.ends_with("/***");
    if and_below {
        s = &s[..s.len() - 4];
    }
    let dir_only = !and_below && s.ends_with('/');
    let s = s.trim_end_matches('/');
    let anchored = s.starts_with('/');
    let s = s.trim_start_matches('/');
    if s.is_empty() || s.contains("***") {
        return None;
    }
    let full_path = anchored || s.contains('/') || s.contains("**") || and_below;
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' if b.get(i + 1) == Some(&b'*') => {
                toks.push(Tok::Any);
                i += 2;
            }
            b'*' => {
                toks.push(Tok::Star);
                i += 1;
            }
            b'?' => {
                toks.push(Tok::One);
                i += 1;
            }
            c => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    Some(Pattern { toks, anchored, dir_only, full_path, and_below })
}

fn glob(t: &[Tok], s: &[u8]) -> bool {
    match t.first() {
        None => s.is_empty(),
        Some(Tok::Lit(c)) => s.first() == Some(c) && glob(&t[1..], &s[1..]),
        Some(Tok::One) => s.first().is_some_and(|&c| c != b'/') && glob(&t[1..], &s[1..]),
        Some(Tok::Star) => {
            for k in 0..=s.len() {
                if glob(&t[1..], &s[k..]) {
                    return true;
                }
                if k < s.len() && s[k] == b'/' {
                    break;
                }
            }
            false
        }
        Some(Tok::Any) => (0..=s.len()).any(|k| glob(&t[1..], &s[k..])),
    }
}

impl Pattern {
    /// Whether the pattern matches `path` (relative to the root, no leading `/`).
    fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        let here = |p: &[u8]| -> bool {
            if self.and_below {
                // `dir/***`: dir itself, or any path below it.
                (0..=p.len()).any(|k| (k == p.len() || p[k] == b'/') && glob(&self.toks, &p[..k]))
            } else {
                glob(&self.toks, p)
            }
        };
        if !self.full_path {
            let last = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
            return here(last);
        }
        if self.anchored {
            return here(path);
        }
        // Unanchored with a slash: the path's tail, starting at a component boundary.
        here(path) || path.iter().enumerate().any(|(k, &c)| c == b'/' && here(&path[k + 1..]))
    }
}

/// Whether rsync certainly leaves `path` out (the first deciding rule is an exclude).
fn excluded(rules: &[Rule], path: &[u8], is_dir: bool) -> bool {
    for r in rules {
        match r {
            Rule::Unknown => return false,
            Rule::Known { include, pattern } if pattern.matches(path, is_dir) => return !include,
            Rule::Known { .. } => {}
        }
    }
    false
}

/// Two independent 64-bit hashes over the same bytes: FNV-1a and std's SipHash (fixed keys;
/// should a Rust release change it, old node digests just stop matching: a full sync).
struct Digest {
    fnv: u64,
    sip: std::hash::DefaultHasher,
    entries: u64,
}

impl Digest {
    fn new() -> Digest {
        Digest { fnv: 0xcbf29ce484222325, sip: std::hash::DefaultHasher::new(), entries: 0 }
    }
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.fnv ^= *x as u64;
            self.fnv = self.fnv.wrapping_mul(0x100000001b3);
        }
        self.sip.write(b);
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.sip.write_u8(0xff);
        self.fnv ^= 0xff;
        self.fnv = self.fnv.wrapping_mul(0x100000001b3);
    }
    fn finish(self) -> String {
        format!("m1-{:016x}{:016x}-{}", self.fnv, self.sip.finish(), self.entries)
    }
}

/// pytest's cache at the project root: rewritten by every run (`cache/nodeids`, the recorded
/// durations), so it is not in the digest; the fast path writes it into the run's tree instead.
pub const PYTEST_CACHE: &str = ".pytest_cache";

/// Past this, the cache is left in the digest (a full sync carries it).
const MAX_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// One entry of [`PYTEST_CACHE`] as it would arrive, relative to the project root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEntry {
    Dir(String),
    File(String, String),
}

/// What the fast path needs: the digest of everything rsync would send but the cache, and
/// the cache as it would arrive: Some(entries) to mirror (empty: there is none, so a copy
/// there goes); None: leave it to the digest or to the filters (it is excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: String,
    pub cache: Option<Vec<CacheEntry>>,
}

/// The entries of the cache directory `dir` (relative path `rel`) that rsync would send, when
/// every one is text that can travel in a shell word (UTF-8, no NUL) and all fit the bound.
fn read_cache(dir: &Path, rel: &str, rules: &[Rule]) -> Option<Vec<CacheEntry>> {
    let mut out = vec![CacheEntry::Dir(rel.to_string())];
    let mut bytes = 0;
    let mut stack = vec![(dir.to_path_buf(), rel.to_string())];
    while let Some((d, r)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&d).ok()?.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let path = d.join(&name);
            let rel = format!("{r}/{}", name.to_str()?);
            let ft = std::fs::symlink_metadata(&path).ok()?.file_type();
            if excluded(rules, rel.as_bytes(), ft.is_dir()) {
                continue;
            }
            if ft.is_dir() {
                out.push(CacheEntry::Dir(rel.clone()));
                stack.push((path, rel));
            } else if ft.is_file() {
                let text = String::from_utf8(std::fs::read(&path).ok()?).ok()?;
                bytes += text.len();
                if text.contains('\0') || bytes > MAX_CACHE_BYTES {
                    return None;
                }
                out.push(CacheEntry::File(rel, text));
            } else {
                return None;
            }
        }
    }
    Some(out)
}

/// The digest of what rsync would send from `root` under `rules` (rsync filter lines, in
/// order; a `. FILE` rule's file is read and hashed), mixed with `context` (anything else that
/// decides what the node ends up with: rsync options, the node's managed files...). None when
/// the root cannot be read.
pub fn digest(root: &Path, rules: &[String], context: &[&str]) -> Option<String> {
    manifest(root, rules, context, false).map(|m| m.digest)
}

/// [`digest`], with pytest's cache at the root taken out of it and read instead when
/// `cache_apart` (and it can be: see [`read_cache`]).
pub fn manifest(root: &Path, rules: &[String], context: &[&str], cache_apart: bool) -> Option<Manifest> {
    let mut cache = None;
    let mut d = Digest::new();
    d.bytes(FORMAT.as_bytes());
    for c in context {
        d.bytes(c.as_bytes());
    }
    let mut parsed = Vec::new();
    for r in rules {
        d.bytes(r.as_bytes());
        let mut merged: Vec<Vec<u8>> = Vec::new();
        parse_line(r, 0, &mut parsed, &mut |b| merged.push(b.to_vec()));
        for m in merged {
            d.bytes(&m);
        }
    }
    let meta = std::fs::symlink_metadata(root).ok()?;
    record(&mut d, b".", &meta, root);
    let mut stack = vec![root.to_path_buf()];
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    while let Some(dir) = stack.pop() {
        let rel_dir = dir.strip_prefix(root).ok()?.as_os_str().as_bytes().to_vec();
        names.clear();
        match std::fs::read_dir(&dir) {
            Ok(entries) => names.extend(entries.flatten().map(|e| e.file_name())),
            Err(e) => {
                // rsync would complain (exit 23); the digest records that it could not look.
                d.bytes(&rel_dir);
                d.bytes(format!("unreadable {:?}", e.kind()).as_bytes());
                continue;
            }
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in &names {
            let mut rel = rel_dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let path = dir.join(name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                d.bytes(&rel);
                d.bytes(b"vanished");
                continue;
            };
            let is_dir = meta.file_type().is_dir();
            if excluded(&parsed, &rel, is_dir) {
                continue;
            }
            if cache_apart && is_dir && rel == PYTEST_CACHE.as_bytes() {
                if let Some(entries) = read_cache(&path, PYTEST_CACHE, &parsed) {
                    cache = Some(entries);
                    continue;
                }
            }
            record(&mut d, &rel, &meta, &path);
            if is_dir {
                subdirs.push(path);
            }
        }
        // Depth first, in name order (a stack: pushed in reverse).
        stack.extend(subdirs.into_iter().rev());
    }
    if cache_apart && cache.is_none() && std::fs::symlink_metadata(root.join(PYTEST_CACHE)).is_err() && !excluded(&parsed, PYTEST_CACHE.as_bytes(), true) {
        cache = Some(Vec::new());
    }
    d.bytes(format!("cache apart: {}", cache.is_some()).as_bytes());
    Some(Manifest { digest: d.finish(), cache })
}

fn record(d: &mut Digest, rel: &[u8], meta: &std::fs::Metadata, path: &Path) {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "d"
    } else if ft.is_symlink() {
        "l"
    } else if ft.is_file() {
        "f"
    } else {
        "o"
    };
    d.entries += 1;
    d.bytes(rel);
    let size = if ft.is_file() { meta.len() } else { 0 };
    d.bytes(format!("{kind} {:o} {size} {} {}", meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec()).as_bytes());
    if ft.is_symlink() {
        if let Ok(t) = std::fs::read_link(path) {
            d.bytes(t.as_os_str().as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rules(lines: &[&str]) -> Vec<Rule> {
        let mut v = Vec::new();
        for l in lines {
            parse_line(l, 0, &mut v, &mut |_| {});
        }
        v
    }

    #[test]
    fn patterns_match_as_rsync_documents_them() {
        let r = rules(&["- *.log", "-p __pycache__/", "- /.pytest-cloud-target", "- /.venv/bin/python", "- build/tmp", "-p .git", "- data/***"]);
        let ex = |p: &str, d: bool| excluded(&r, p.as_bytes(), d);
        assert!(ex("debug.log", false) && ex("a/b/debug.log", false));
        assert!(ex("src/__pycache__", true) && !ex("src/__pycache__", false), "a trailing / is directories only");
        assert!(ex(".pytest-cloud-target", false) && !ex("sub/.pytest-cloud-target", false), "anchored");
        assert!(ex(".venv/bin/python", false) && !ex("x/.venv/bin/python", false) && !ex(".venv/bin/python3", false));
        assert!(ex("build/tmp", true) && ex("x/build/tmp", false) && !ex("xbuild/tmp", false), "unanchored: at a component boundary");
        assert!(ex(".git", true) && ex("sub/.git", false));
        assert!(ex("data", true) && ex("data/a/b", false) && !ex("database", false));
        assert!(!ex("src/mod.py", false) && !ex("log", false));
        // `*` stays inside a component, `**` does not.
        let r2 = rules(&["- a/*/c", "- x/**/z"]);
        assert!(excluded(&r2, b"a/b/c", false) && !excluded(&r2, b"a/b/b/c", false));
        assert!(excluded(&r2, b"x/1/2/z", false) && excluded(&r2, b"x/1/z", false));
    }

    #[test]
    fn the_first_matching_rule_wins_and_an_unknown_rule_includes_everything_after_it() {
        let r = rules(&["+ keep.log", "- *.log"]);
        assert!(!excluded(&r, b"keep.log", false) && excluded(&r, b"other.log", false));
        for unknown in [": .rsync-filter", "! ", "-/ x", "- [ab].log", "- a\\*b", "R x", "-C"] {
            let r = rules(&[unknown, "- *.log"]);
            assert!(!excluded(&r, b"x.log", false), "after {unknown:?} nothing is certain");
        }
        // Comments and blank lines are no rules.
        assert_eq!(rules(&["# c", "; c", "  "]), vec![]);
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("src/pkg/__pycache__")).unwrap();
        fs::write(t.path().join("src/pkg/a.py"), "A = 1\n").unwrap();
        fs::write(t.path().join("src/pkg/__pycache__/a.cpython-311.pyc"), "x").unwrap();
        fs::write(t.path().join("debug.log"), "log").unwrap();
        std::os::unix::fs::symlink("src", t.path().join("link")).unwrap();
        t
    }

    fn set_mtime(p: &Path, secs: i64) {
        let f = fs::File::options().write(true).open(p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)).unwrap();
    }

    #[test]
    fn every_change_rsync_would_send_changes_the_digest_and_excluded_ones_do_not() {
        let t = tree();
        let root = t.path();
        let rules: Vec<String> = ["-p __pycache__/", "- *.log"].map(String::from).to_vec();
        let d0 = digest(root, &rules, &["ctx"]).unwrap();
        assert_eq!(digest(root, &rules, &["ctx"]).unwrap(), d0, "the same tree, the same digest");
        assert_ne!(digest(root, &rules, &["other"]).unwrap(), d0, "the context counts");
        // Excluded: bytecode and logs.
        fs::write(root.join("src/pkg/__pycache__/a.cpython-311.pyc"), "yy").unwrap();
        fs::write(root.join("debug.log"), "more log").unwrap();
        assert_eq!(digest(root, &rules, &["ctx"]).unwrap(), d0);
        let mut seen = vec![d0.clone()];
        let mut changed = |what: &str| {
            let d = digest(root, &rules, &["ctx"]).unwrap();
            assert!(!seen.contains(&d), "{what} did not change the digest");
            seen.push(d);
        };
        set_mtime(&root.join("src/pkg/a.py"), 1_000_000);
        changed("an mtime");
        fs::write(root.join("src/pkg/a.py"), "A = 22\n").unwrap();
        set_mtime(&root.join("src/pkg/a.py"), 1_000_000);
        changed("a size (same mtime)");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("src/pkg/a.py"), fs::Permissions::from_mode(0o600)).unwrap();
        changed("a mode");
        fs::write(root.join("src/pkg/b.py"), "").unwrap();
        changed("a new file");
        fs::remove_file(root.join("src/pkg/b.py")).unwrap();
        // The directory's mtime moved too, so this is a new digest, not the one before.
        changed("a deleted file");
        fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("src/pkg", root.join("link")).unwrap();
        changed("a symlink's target");
        let fewer: Vec<String> = vec!["-p __pycache__/".into()];
        assert_ne!(digest(root, &fewer, &["ctx"]), digest(root, &rules, &["ctx"]), "a changed exclude counts");
    }

    #[test]
    fn pytests_cache_can_be_kept_apart_from_the_digest_and_is_read_as_it_would_arrive() {
        let t = tree();
        let root = t.path();
        fs::create_dir_all(root.join(".pytest_cache/v/cache")).unwrap();
        fs::write(root.join(".pytest_cache/v/cache/nodeids"), "[\n  \"t.py::a\"\n]").unwrap();
        fs::write(root.join(".pytest_cache/x.log"), "excluded").unwrap();
        let rules: Vec<String> = vec!["- *.log".into()];
        let m = manifest(root, &rules, &[], true).unwrap();
        assert_eq!(
            m.cache.unwrap(),
            vec![
                CacheEntry::Dir(".pytest_cache".into()),
                CacheEntry::Dir(".pytest_cache/v".into()),
                CacheEntry::Dir(".pytest_cache/v/cache".into()),
                CacheEntry::File(".pytest_cache/v/cache/nodeids".into(), "[\n  \"t.py::a\"\n]".into()),
            ]
        );
        let whole = digest(root, &rules, &[]).unwrap();
        fs::write(root.join(".pytest_cache/v/cache/nodeids"), "[]").unwrap();
        assert_eq!(manifest(root, &rules, &[], true).unwrap().digest, m.digest, "a run's cache write is not a change");
        assert_ne!(digest(root, &rules, &[]).unwrap(), whole, "but it is for the whole tree");
        // Binary content cannot travel as a shell word: then the cache is in the digest.
        fs::write(root.join(".pytest_cache/v/cache/bin"), b"\0\x01").unwrap();
        let m2 = manifest(root, &rules, &[], true).unwrap();
        assert!(m2.cache.is_none() && m2.digest != m.digest);
        fs::remove_dir_all(root.join(".pytest_cache")).unwrap();
        assert_eq!(manifest(root, &rules, &[], true).unwrap().cache, Some(vec![]), "none: a copy on the node goes");
        let excluding: Vec<String> = vec!["- .pytest_cache/".into()];
        assert_eq!(manifest(root, &excluding, &[], true).unwrap().cache, None, "excluded: left alone");
    }

    #[test]
    fn a_merge_files_rules_apply_and_its_content_counts() {
        let t = tree();
        let root = t.path();
        let ignore = root.join(".pytest-cloud-ignore");
        fs::write(&ignore, "- *.log\n").unwrap();
        let rules = vec![format!(". {}", ignore.display())];
        let d0 = digest(root, &rules, &[]).unwrap();
        fs::write(root.join("debug.log"), "changed log").unwrap();
        assert_eq!(digest(root, &rules, &[]).unwrap(), d0, "excluded by the merge file");
        fs::write(&ignore, "- *.txt\n").unwrap();
        set_mtime(&ignore, 5);
        let d1 = digest(root, &rules, &[]).unwrap();
        assert_ne!(d1, d0);
        let gone = vec![". /nonexistent/ignore".to_string()];
        assert!(digest(root, &gone, &[]).is_some(), "a missing merge file makes the rules unknown, not the digest");
    }
}
