//! What the controller supplies for a node-built environment (src/envsupply.rs, issue 16): the
//! uv binary for a node's platform and a wheelhouse for a node with no index, each used on a
//! real node. These tests download from PyPI on the controller (the cluster tier may); the
//! node they install on is offline.

use crate::common;

use common::cluster::Cluster;
use pytest_cloud::envsupply::{self, NodeTarget};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The uv these tests fetch with: `PYTEST_CLOUD_UV` (scripts/test exports the one it
/// installs into target/tools-venv), else that venv's, else what pytest-cloud would find.
/// None (a skip) only outside CI.
fn controller_uv() -> Option<PathBuf> {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools-venv/bin/uv");
    let found = std::env::var_os("PYTEST_CLOUD_UV")
        .map(PathBuf::from)
        .or_else(|| tools.is_file().then_some(tools))
        .or_else(|| envsupply::controller_uv().ok());
    if !crate::common::require::require(
        found.is_some(),
        "uv on the controller ($PYTEST_CLOUD_UV, target/tools-venv/bin/uv or PATH)",
        "scripts/install-deps installs it into target/tools-venv (or pip install uv, or set PYTEST_CLOUD_UV)",
    ) {
        return None;
    }
    found
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node's /usr/bin/python3 as the probe sees it.
fn node_target(cluster: &Cluster, alias: &str) -> NodeTarget {
    let cmd = format!("/usr/bin/python3 -I -S -c {}", shell_words::quote(pytest_cloud::interp::ABI_CODE));
    let text = ok(cluster.ssh(alias, &cmd), "the ABI probe");
    let fields: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
    let (version, abi) = pytest_cloud::interp::parse_abi(&fields, None).unwrap_or_else(|| panic!("ABI facts: {text:?}"));
    NodeTarget::from_abi(&version, &abi)
}

fn copy_to(cluster: &Cluster, alias: &str, src: &Path, dest: &str) {
    let out = Command::new("rsync")
        .args(["-a", "-e"])
        .arg(format!("ssh -F {}", cluster.ssh_config().display()))
        .arg(src)
        .arg(format!("{alias}:{dest}"))
        .output()
        .unwrap();
    ok(out, &format!("rsync {} to {alias}", src.display()));
}

#[test]
fn the_uv_supplied_for_a_nodes_platform_runs_there() {
    let Some(uv) = controller_uv() else { return };
    let version = envsupply::uv_version(&uv).unwrap();
    let cluster = Cluster::up(1);
    let target = node_target(&cluster, "node1");
    let cache = tempfile::tempdir().unwrap();
    let got = envsupply::uv_for_in(cache.path(), &uv, &version, &target).unwrap_or_else(|e| panic!("uv_for {target:?}: {}", e.message));
    assert_eq!(got.version, version, "the controller's own version");
    assert!(got.path.starts_with(cache.path().join("uv").join(&version)), "{}", got.path.display());
    assert_eq!(envsupply::sha256_file(&got.path).unwrap(), got.sha256);
    let leftovers: Vec<_> = std::fs::read_dir(got.path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "only uv and uv.sha256 stay, no temporary directory: {leftovers:?}");
    copy_to(&cluster, "node1", &got.path, "uv");
    let banner = ok(cluster.ssh("node1", "./uv --version"), "uv --version on node1");
    assert_eq!(envsupply::parse_uv_version(&banner).as_deref(), Some(version.as_str()), "{banner}");
    // Cached: a second call needs no uv to fetch with.
    let again = envsupply::uv_for_in(cache.path(), Path::new("/nonexistent/uv"), &version, &target).unwrap();
    assert_eq!(again, got);
}

#[test]
fn a_wheelhouse_installs_on_an_offline_node_and_names_what_has_no_wheel() {
    let Some(uv) = controller_uv() else { return };
    let version = envsupply::uv_version(&uv).unwrap();
    let cluster = Cluster::up(1);
    let target = node_target(&cluster, "node1");
    assert_eq!(target.python_minor().unwrap(), "3.11", "the nodes run Debian 12's Python 3.11: {target:?}");
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // msgpack: a C extension (a cp311 manylinux wheel); iniconfig: pure; colorama: only on
    // Windows (its marker is false for the node, so it is neither fetched nor missing);
    // PyYAML 5.4.1 has no cp311 wheel at all (its newest wheels are cp39), only an sdist.
    let reqs = work.path().join("requirements.txt");
    std::fs::write(
        &reqs,
        "msgpack==1.1.0\niniconfig==2.0.0\ncolorama==0.4.6 ; sys_platform == \"win32\"\nPyYAML==5.4.1\n",
    )
    .unwrap();
    let wh = envsupply::wheelhouse_in(cache.path(), &uv, &reqs, &target).unwrap_or_else(|e| panic!("wheelhouse: {}", e.message));
    eprintln!("wheelhouse: {wh:?}");
    assert_eq!(wh.missing.len(), 1, "{:?}", wh.missing);
    let (name, why) = &wh.missing[0];
    assert_eq!(name, "PyYAML");
    assert!(why.contains("PyYAML==5.4.1") && why.contains("CPython 3.11") && why.contains("x86_64"), "{why}");
    assert_eq!(wh.files.len(), 2, "{:?}", wh.files);
    assert!(wh.files.iter().any(|f| f.starts_with("msgpack-1.1.0-cp311-cp311-manylinux")), "{:?}", wh.files);
    assert!(wh.files.iter().any(|f| f.starts_with("iniconfig-2.0.0-")), "{:?}", wh.files);
    assert!(!wh.files.iter().any(|f| f.to_lowercase().starts_with("colorama")), "{:?}", wh.files);
    let mut fetched = wh.fetched.clone();
    fetched.sort();
    assert_eq!(fetched, wh.files);
    assert!(wh.dir.starts_with(cache.path().join("wheelhouse")) && wh.dir.ends_with(target.key().unwrap()));

    // A pin whose wheel does not have the hash the file lists is missing too, never fetched.
    let hashed = work.path().join("hashed.txt");
    std::fs::write(&hashed, format!("six==1.16.0 --hash=sha256:{}\n", "0".repeat(64))).unwrap();
    let bad = envsupply::wheelhouse_in(cache.path(), &uv, &hashed, &target).unwrap();
    assert_eq!(bad.missing.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(), ["six"], "{bad:?}");
    assert!(bad.missing[0].1.to_lowercase().contains("hash"), "{bad:?}");
    assert!(bad.files.is_empty() && !std::fs::read_dir(&bad.dir).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("six")), "{bad:?}");

    // Reused: a second call downloads nothing and gives the same wheels (PyYAML, missing,
    // is asked for again: a wheel may have been uploaded since).
    let again = envsupply::wheelhouse_in(cache.path(), &uv, &reqs, &target).unwrap();
    assert!(again.fetched.is_empty(), "{:?}", again.fetched);
    assert_eq!((again.files.clone(), again.dir.clone(), again.missing.len()), (wh.files.clone(), wh.dir.clone(), 1));
    // With every pin cached it starts no process at all (markers included): a uv that does
    // not exist will do.
    let node_reqs = "msgpack==1.1.0\niniconfig==2.0.0\ncolorama==0.4.6 ; sys_platform == \"win32\"\n";
    let cached_reqs = work.path().join("cached.txt");
    std::fs::write(&cached_reqs, node_reqs).unwrap();
    let cached = envsupply::wheelhouse_in(cache.path(), Path::new("/nonexistent/uv"), &cached_reqs, &target)
        .unwrap_or_else(|e| panic!("a fully cached call needed a process: {}", e.message));
    assert_eq!((cached.files.clone(), cached.fetched.len(), cached.missing.len()), (wh.files.clone(), 0, 0));

    // The node: no network but loopback, a uv for its platform, the wheels and the pins.
    let node_uv = envsupply::uv_for_in(cache.path(), &uv, &version, &target).unwrap();
    let send = work.path().join("send");
    std::fs::create_dir_all(send.join("wheels")).unwrap();
    for f in &wh.files {
        std::fs::copy(wh.dir.join(f), send.join("wheels").join(f)).unwrap();
    }
    std::fs::copy(&node_uv.path, send.join("uv")).unwrap();
    std::fs::write(send.join("requirements.txt"), node_reqs).unwrap();
    cluster.offline("node1");
    let cut = cluster.ssh("node1", "python3 -c 'import socket; socket.create_connection((\"pypi.org\", 443), 5)'");
    assert!(!cut.status.success(), "node1 must be offline for this test");
    copy_to(&cluster, "node1", &send, "");
    let install = "cd send && UV_NO_CONFIG=1 ./uv venv -q --python /usr/bin/python3 env \
        && UV_NO_CONFIG=1 ./uv pip install -q --python env/bin/python --no-index --find-links wheels -r requirements.txt \
        && env/bin/python -c 'import msgpack, msgpack._cmsgpack, iniconfig; print(msgpack.unpackb(msgpack.packb([1, 2])), msgpack.version)'";
    let printed = ok(cluster.ssh("node1", install), "the offline install on node1");
    assert_eq!(printed.trim(), "[1, 2] (1, 1, 0)", "msgpack's C extension runs on the node");
    let listed = ok(cluster.ssh("node1", "send/env/bin/python -m pip --version >/dev/null 2>&1; UV_NO_CONFIG=1 send/uv pip list --python send/env/bin/python"), "uv pip list");
    assert!(!listed.to_lowercase().contains("colorama"), "{listed}");
}

/// The binary format and machine of an executable: ("ELF", e_machine) or ("Mach-O", cputype).
fn executable_kind(path: &Path) -> (&'static str, u32) {
    let b = std::fs::read(path).unwrap();
    match &b[..4] {
        [0x7f, b'E', b'L', b'F'] => ("ELF", u16::from_le_bytes([b[18], b[19]]) as u32),
        [0xcf, 0xfa, 0xed, 0xfe] => ("Mach-O", u32::from_le_bytes([b[4], b[5], b[6], b[7]])),
        other => panic!("{}: not an executable ({other:?})", path.display()),
    }
}

#[test]
fn uv_for_another_platform_is_that_platforms_binary() {
    // In the cluster tier for its downloads (no node is needed): a macOS laptop driving Linux
    // nodes is this in reverse, the same code.
    let Some(uv) = controller_uv() else { return };
    let version = envsupply::uv_version(&uv).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let target = |os: &str, machine: &str, libc: &str| NodeTarget {
        implementation: "cpython".into(),
        version: "3.12.1".into(),
        abiflags: String::new(),
        os: os.into(),
        machine: machine.into(),
        libc: libc.into(),
    };
    const EM_X86_64: u32 = 62;
    const EM_AARCH64: u32 = 183;
    const CPU_TYPE_ARM64: u32 = 0x0100_000c;
    for (t, want) in [
        (target("darwin", "arm64", ""), ("Mach-O", CPU_TYPE_ARM64)),
        (target("linux", "aarch64", "glibc 2.36"), ("ELF", EM_AARCH64)),
        (target("linux", "x86_64", "musl 1.2.4"), ("ELF", EM_X86_64)),
    ] {
        let got = envsupply::uv_for_in(cache.path(), &uv, &version, &t).unwrap_or_else(|e| panic!("uv_for {t:?}: {}", e.message));
        assert_eq!(executable_kind(&got.path), want, "{t:?}: {}", got.path.display());
        assert!(got.path.to_string_lossy().contains(&t.uv_platform().unwrap()), "{}", got.path.display());
    }
}

#[test]
fn two_runs_fetching_the_same_uv_at_once_both_get_the_whole_binary() {
    let Some(uv) = controller_uv() else { return };
    let version = envsupply::uv_version(&uv).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let t = NodeTarget {
        implementation: "cpython".into(),
        version: "3.11.2".into(),
        abiflags: String::new(),
        os: "linux".into(),
        machine: "x86_64".into(),
        libc: "glibc 2.36".into(),
    };
    let got: Vec<envsupply::LocalUv> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2).map(|_| s.spawn(|| envsupply::uv_for_in(cache.path(), &uv, &version, &t))).collect();
        runs.into_iter().map(|r| r.join().unwrap().unwrap_or_else(|e| panic!("{}", e.message))).collect()
    });
    assert_eq!(got[0], got[1]);
    assert_eq!(envsupply::sha256_file(&got[0].path).unwrap(), got[0].sha256, "the file in place is whole");
    let names: Vec<String> =
        std::fs::read_dir(got[0].path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["uv", "uv.sha256"], "no temporary file is left");
}

#[test]
fn a_wheelhouse_for_another_platform_holds_that_platforms_wheels() {
    // A Linux controller and a macOS arm64 node with CPython 3.12 (a macOS laptop driving
    // Linux nodes is the same code the other way round).
    let Some(uv) = controller_uv() else { return };
    let cache = tempfile::tempdir().unwrap();
    let reqs = cache.path().join("requirements.txt");
    std::fs::write(&reqs, "msgpack==1.1.0\niniconfig==2.0.0\n").unwrap();
    let mac = NodeTarget {
        implementation: "cpython".into(),
        version: "3.12.1".into(),
        abiflags: String::new(),
        os: "darwin".into(),
        machine: "arm64".into(),
        libc: String::new(),
    };
    let wh = envsupply::wheelhouse_in(cache.path(), &uv, &reqs, &mac).unwrap_or_else(|e| panic!("{}", e.message));
    assert!(wh.missing.is_empty(), "{:?}", wh.missing);
    let msgpack = wh.files.iter().find(|f| f.starts_with("msgpack-")).unwrap_or_else(|| panic!("{:?}", wh.files));
    assert!(msgpack.contains("-cp312-cp312-macosx_") && (msgpack.contains("arm64") || msgpack.contains("universal2")), "{msgpack}");
    assert!(wh.dir.ends_with("cp312-darwin-arm64"), "{}", wh.dir.display());
}
