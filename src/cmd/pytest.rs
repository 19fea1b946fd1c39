//! `pytest-cloud pytest [--cloud-* options] [pytest args]`: the launcher.
//!
//! Replaces itself with the project's own pytest (`<venv>/bin/python -m pytest`) as the
//! pytest-xdist controller at once, while its own child runs probe -> plan -> sync (the same
//! functions as the subcommands) and then hands the controller one `--tx` ssh worker per
//! planned slot (the early controller, `engine::session::launch_early`; with
//! `PYTEST_CLOUD_EARLY_CONTROLLER=0` it syncs first and then execs). Every argument that is not
//! a `--cloud-*` option reaches pytest untouched, and pytest's exit code is the launcher's
//! (signals and Ctrl-C go straight to pytest, because it *is* this process).
//!
//! Output: pytest's own report. A short header (nodes, slots, dropped nodes and why) goes to
//! stderr. With `--cloud-prepare` nothing is run: a `session` document (the xdist arguments
//! and the sync document) is printed on stdout instead, which is how the pytest plugin uses
//! the binary.
//! Exit codes: pytest's (0-5) once it runs; before that 64 usage, 69 no usable node,
//! 72 missing tool, 75 a node's directory is locked.
//!
//! Example: `pytest-cloud pytest --cloud-nodes 'node1 node2' --cloud-mem-per-process 500 tests/ -k smoke`

use crate::cli::PytestArgs;
use crate::cmd::emit;
use crate::engine::session::{self, CloudOptions};
use crate::error::{Error, Outcome, Result};
use crate::options;
use crate::schema;
use std::io::Write;


/// Splits the launcher's arguments into cloud options and pytest's arguments. Both
/// `--opt=value` and `--opt value` work, as with pytest; `--` ends option scanning.
pub fn split_args(args: &[String]) -> Result<(CloudOptions, Vec<String>)> {
    let table = options::cloud_options();
    let mut o = CloudOptions::default();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            rest.extend(args[i - 1..].iter().cloned());
            break;
        }
        if !a.starts_with("--cloud-") {
            rest.push(a.clone());
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let Some(takes_value) = table.iter().find(|o| o.name == name).map(|o| o.takes_value()) else {
            return Err(Error::usage(format!("unknown option {name}; see `pytest-cloud pytest --cloud-help`")));
        };
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => {
                    let v = args.get(i).cloned().ok_or_else(|| Error::usage(format!("{name} needs a value")))?;
                    i += 1;
                    v
                }
            }
        } else {
            if inline.is_some() {
                return Err(Error::usage(format!("{name} takes no value")));
            }
            String::new()
        };
        let num = |v: &str| crate::cli::positive_u64(v).map_err(|m| Error::usage(format!("{name}: {m}")));
        match name {
            "--cloud-node" => {
                if value.trim().contains(char::is_whitespace) {
                    return Err(Error::usage(format!("invalid node: {value:?} contains spaces; use --cloud-nodes for a list")));
                }
                o.nodes.push(value)
            }
            "--cloud-nodes" => o.nodes.extend(value.split_whitespace().map(String::from)),
            "--cloud-python" => o.python = Some(crate::envbuild::python_name(&value)),
            "--cloud-env" => o.env = crate::envbuild::EnvMode::parse(value.trim()).map_err(|m| Error::usage(format!("{name} {m}")))?,
            "--cloud-chdir" => o.chdir = Some(value),
            "--cloud-virtualenv-path" => o.virtualenv_path = Some(value.into()),
            "--cloud-mem-per-process" => o.mem_per_process_mb = Some(num(&value)?),
            "--cloud-max-processes" => o.max_processes = Some(crate::cli::positive_u32(&value).map_err(|m| Error::usage(format!("{name}: {m}")))?),
            "--cloud-rsync-bandwidth-limit" => {
                o.rsync_bandwidth_limit_kbps = Some(value.trim().parse().map_err(|_| Error::usage(format!("{name}: {value:?} is not a whole number of KB/s (0 = unlimited)")))?)
            }
            "--cloud-rsync-max-processes" => o.rsync_max_processes = Some(crate::cli::positive_u32(&value).map_err(|m| Error::usage(format!("{name}: {m}")))?),
            "--cloud-rsync-cipher" => o.rsync_cipher = Some(value),
            "--cloud-ssh-config" => o.ssh_config = Some(value.into()),
            "--cloud-connect-timeout" => o.connect_timeout_s = Some(num(&value)?),
            "--cloud-node-timeout" => {
                let t = num(&value)?;
                if t < crate::ssh::MIN_NODE_TIMEOUT_S {
                    return Err(Error::usage(format!("{name}: at least {} seconds (ssh's keepalive counts whole seconds, 3 unanswered probes)", crate::ssh::MIN_NODE_TIMEOUT_S)));
                }
                o.node_timeout_s = Some(t)
            }
            "--cloud-develop-egg" => o.develop_eggs.push(value.into()),
            "--cloud-timings" => o.timings = true,
            "--cloud-wheelhouse" => o.wheelhouse = true,
            "--cloud-prepare" => o.prepare = true,
            "--cloud-quiet" => o.quiet = true,
            "--cloud-help" => o.help = true,
            _ => unreachable!("every name in options::cloud_options() is matched"),
        }
    }
    Ok((o, rest))
}

/// Refuses pytest arguments that would take the workers out of the plan's hands.
pub fn check_pytest_args(args: &[String]) -> Result<()> {
    for a in args.iter().take_while(|a| *a != "--") {
        let name = a.split_once('=').map(|(n, _)| n).unwrap_or(a);
        let bad = matches!(name, "-n" | "--numprocesses" | "--tx" | "--px" | "--rsyncdir")
            || (a.starts_with("-n") && a.len() > 2 && a[2..].chars().all(|c| c.is_ascii_digit()))
            || a == "-nauto";
        if bad {
            return Err(Error::usage(format!(
                "{a}: pytest-cloud decides the workers from the plan; drop this option \
                 (use --cloud-max-processes or --cloud-mem-per-process to size them)"
            )));
        }
    }
    Ok(())
}

pub fn run(args: &PytestArgs, out: &mut dyn Write) -> Result<Outcome> {
    let (opts, pytest_args) = split_args(&args.rest)?;
    // Ctrl-C during probe/sync lets sync give its node locks back; once pytest is exec'd,
    // signals are pytest's own again (exec resets handled signals to their defaults).
    crate::interrupt::install();
    if opts.help || pytest_args.is_empty() && opts.nodes.is_empty() || pytest_args == ["--help"] || pytest_args == ["-h"] {
        emit(out, &help_text())?;
        return Ok(Outcome::Complete);
    }
    check_pytest_args(&pytest_args)?;
    if let Some(pid) = std::env::var(session::PREPARE_FOR_ENV).ok().and_then(|p| p.parse::<u32>().ok()) {
        return prepare_for_pytest(&opts, &pytest_args, pid);
    }
    if !opts.prepare && session::early_controller_enabled() {
        return session::launch_early(&opts, &args.rest, &pytest_args);
    }
    let session = session::prepare(&opts, &pytest_args)?;
    if opts.prepare {
        emit(out, &schema::to_pretty(&session))?;
        return Ok(Outcome::Complete);
    }
    session::exec_pytest(&session, &opts, &pytest_args)
}

/// The launcher's own child under the early controller ([`session::launch_early`]): probe,
/// plan and sync for the pytest `pid` (the launcher, exec'd), hand it the workers on the
/// socket that is this process's stdin, then keep the run trees' leases until it exits (its
/// end of that connection closing says so at once) and remove the trees (what
/// `release --wait-pid` does otherwise). On an error it says why on
/// stderr and hands over the exit code instead. If pytest goes first (its own usage error,
/// `--version`, a signal), the sync stops as on Ctrl-C, giving the locks back, without a word.
fn prepare_for_pytest(opts: &session::CloudOptions, pytest_args: &[String], pid: u32) -> Result<Outcome> {
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| Error::io("the hand-over socket", e))?;
    let listener = UnixListener::from(fd);
    let socket = listener.local_addr().ok().and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf));
    let gone = Arc::new(AtomicBool::new(false));
    let handed = Arc::new(AtomicBool::new(false));
    {
        let (gone, handed, socket) = (gone.clone(), handed.clone(), socket.clone());
        // pytest is our parent: its end (before the hand-over) stops the preparation.
        let watch = crate::machine::ExitWatch::of_parent(pid);
        std::thread::spawn(move || {
            watch.wait(None);
            if handed.load(Ordering::SeqCst) {
                return;
            }
            gone.store(true, Ordering::SeqCst);
            crate::interrupt::request();
            // Wakes the accept below, should it be waiting for a pytest that is gone.
            if let Some(s) = &socket {
                let _ = UnixStream::connect(s);
            }
        });
    }
    let prepared = session::local_setup(opts).and_then(|s| session::prepare_with(s, opts, pytest_args, Some(pid)));
    let stream = loop {
        match listener.accept() {
            _ if gone.load(Ordering::SeqCst) => break None,
            Ok((s, _)) => break Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break None,
        }
    };
    handed.store(true, Ordering::SeqCst);
    if let Some(s) = &socket {
        let _ = std::fs::remove_file(s);
    }
    // Only our side is shut: the glue keeps its end open while pytest lives, so its EOF
    // tells the keeper below at once that pytest has ended.
    let send = |text: String| {
        if let Some(mut s) = stream.as_ref() {
            let _ = s.write_all(text.as_bytes());
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    };
    match prepared {
        Ok(session) => {
            send(session::handover_document(&session));
            crate::cmd::release::keep_and_release(&session.sync, Some(pid), stream.as_ref(), opts.quiet)
        }
        Err(e) => {
            // A Ctrl-C reaches our local helpers too (a python asked about the venv, killed by
            // it): whatever step it cut short, the run was interrupted.
            let e = if crate::interrupt::requested() && e.exit != crate::error::Exit::Interrupted {
                Error::new(crate::error::Exit::Interrupted, format!("interrupted ({})", crate::error::one_line(&e.message)))
            } else {
                e
            };
            // Said before the hand-over, so the message is out before pytest exits with its code.
            if !gone.load(Ordering::SeqCst) {
                eprintln!("pytest-cloud: error: {}", e.message);
            }
            send(session::handover_exit(e.exit.code()));
            Ok(Outcome::Complete)
        }
    }
}

/// `--cloud-help`, written like any output (a closed pipe, `| head`, is not an error).
fn help_text() -> String {
    let mut t = String::from("Usage: pytest-cloud pytest [--cloud-* options] [pytest arguments]\n\n");
    t.push_str("Runs pytest with pytest-xdist workers on the given ssh nodes. Cloud options:\n");
    for o in options::cloud_options() {
        let n = if o.takes_value() { format!("{}=VALUE", o.name) } else { o.name.to_string() };
        t.push_str(&format!("  {n:<36} {}\n", o.help_line()));
    }
    t.push_str("\nEverything else goes to pytest unchanged. Example:\n  pytest-cloud pytest --cloud-nodes 'node1 node2' --cloud-mem-per-process 500 tests/ -k smoke\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cloud_options_in_both_forms_and_the_rest_untouched() {
        let (o, rest) = split_args(&s(&[
            "tests/", "--cloud-node=a", "-k", "x or y", "--cloud-nodes", "b c", "--cloud-mem-per-process", "100",
            "--cloud-rsync-bandwidth-limit=0", "--cloud-timings", "-x", "--", "--cloud-node=z",
        ]))
        .unwrap();
        assert_eq!(o.nodes, ["a", "b", "c"]);
        assert_eq!(o.mem_per_process_mb, Some(100));
        assert_eq!(o.rsync_bandwidth_limit_kbps, Some(0));
        assert!(o.timings);
        assert_eq!(rest, s(&["tests/", "-k", "x or y", "-x", "--", "--cloud-node=z"]));
        let (o, _) = split_args(&s(&["--cloud-python", "3.12", "--cloud-env=build"])).unwrap();
        assert_eq!((o.python.as_deref(), o.env), (Some("python3.12"), crate::envbuild::EnvMode::Build), "a version names python3.12");
        assert!(split_args(&s(&["--cloud-env", "pip"])).is_err());
    }

    #[test]
    fn bad_cloud_options_are_usage_errors() {
        for bad in [&["--cloud-nodez=a"][..], &["--cloud-node"], &["--cloud-mem-per-process=0"], &["--cloud-max-processes=-1"], &["--cloud-timings=yes"], &["--cloud-node", "a b"]] {
            assert_eq!(split_args(&s(bad)).unwrap_err().exit, Exit::Usage, "{bad:?}");
        }
    }

    #[test]
    fn worker_options_that_fight_the_plan_are_refused() {
        for bad in ["-n", "-n4", "--numprocesses=3", "--tx=popen", "-nauto"] {
            assert!(check_pytest_args(&s(&[bad])).is_err(), "{bad}");
        }
        assert!(check_pytest_args(&s(&["-k", "n4", "--", "-n4"])).is_ok());
    }
}
