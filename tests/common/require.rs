//! The one rule for a test whose real check needs something this machine may lack (a shell,
//! iptables, a second interpreter, root, the wheel): it never passes without that check.
//!
//! - With `CI` set (`CI=true`, as .ci/run runs scripts/test), a missing prerequisite FAILS the
//!   test, naming what is missing and how to install it: CI must never turn green by skipping.
//! - Elsewhere (a laptop `cargo test`) the test prints a loud `SKIPPED` line on stderr (past
//!   libtest's capture, so a plain `cargo test` shows it) and ends; the line says the check did
//!   not run.
//!
//! Every such site calls [`require`]; grep for it to see what the suite can skip.

// Each test binary that includes this file uses only some of it.
#![allow(dead_code)]

/// Whether the test may go on: `true` when `present`; otherwise fails the test under CI, and
/// elsewhere prints `SKIPPED <test>: <what> is missing (<how>)` and returns `false`.
///
/// `what` names the prerequisite ("zsh", "root", "$PYTEST_CLOUD_WHEEL"); `how` says how to get
/// it ("scripts/install-deps installs it", "run scripts/test").
#[track_caller]
pub fn require(present: bool, what: &str, how: &str) -> bool {
    if present {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("this test").to_string();
    if in_ci() {
        panic!("{test} cannot run its check: {what} is missing; {how}. Under CI a missing prerequisite fails the test (it never skips)");
    }
    // Straight to the process's stderr: libtest captures only the print macros, so this line
    // shows in a plain `cargo test` too, not only with --nocapture.
    let line = format!("\n*** SKIPPED {test}: {what} is missing; {how}. Its check did NOT run (under CI=true this fails) ***\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}

/// `CI` set to anything but empty, `0` or `false` (CI=true from .ci/run, CI=1 elsewhere).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// Whether `program` can be started at all (found on PATH and executable): `program args`
/// exits 0.
pub fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether this process runs as root (`id -u`, as the tests did before this module).
pub fn is_root() -> bool {
    let out = std::process::Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Whether `PYTEST_CLOUD_BLESS` asks the golden tests to rewrite their expected files instead
/// of comparing (such a run checks nothing); refused under CI, where it would pass vacuously.
pub fn bless() -> bool {
    let asked = std::env::var_os("PYTEST_CLOUD_BLESS").is_some();
    assert!(!(asked && in_ci()), "PYTEST_CLOUD_BLESS is set under CI: the golden tests would rewrite their files instead of checking them; unset it");
    asked
}
