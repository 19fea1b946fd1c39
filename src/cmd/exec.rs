//! `pytest-cloud exec`: run a command on every synced node, or on every slot of every node,
//! through GNU parallel over ssh, and report each job as a JSON Lines record.
//!
//! Input: a `sync` document on stdin (or a `plan`, or a `session`, which carries a sync). Each of
//! its `nodes` (`node`, `slots`, `workers`, `remote_dir`, `python`) gets one job (`--per node`,
//! the default) or `slots` jobs (`--per slot`); ssh settings come from the carried inventory
//! (`plan.inventory.ssh`), overridden by `--ssh-config`, `--connect-timeout`, `--control-persist`.
//!
//! The command comes after `--` as words. In every word `{node}`, `{dir}` (the node's
//! `remote_dir`), `{python}`, `{slots}` (the node's slot count) and, with `--per slot`, `{slot}`
//! (0-based) and `{worker}` (the worker id) are replaced; any other `{...}` stays as written.
//! Each word reaches the node as one word (quoted with `ssh::remote_quote`); for shell syntax,
//! write `sh -c '...'`. The job runs in `remote_dir` with `PYTEST_CLOUD_NODE`,
//! `PYTEST_CLOUD_SLOTS` and, per slot, `PYTEST_CLOUD_SLOT` and `PYTEST_CLOUD_WORKER` set (by
//! `env NAME=value ...` in the remote command).
//!
//! Output (stdout, JSON Lines, one object a line, flushed as each job ends; full description in
//! share/doc/schema.md#exec):
//! ```text
//! {"type":"job","data":{"job":1,"node":"node1","slot":0,"worker":"node1-0","command":["sh","-c","echo node1 0"],
//!   "exit_code":0,"signal":null,"timed_out":false,"error":null,"duration_ms":41,
//!   "stdout_tail":"node1 0\n","stderr_tail":"","stdout_bytes":8,"stderr_bytes":0,"stdout_path":null,"stderr_path":null}}
//! {"type":"summary","data":{"jobs":1,"succeeded":1,"failed":0,"timed_out":0,"elapsed_ms":350}}
//! ```
//! (each record is one line; wrapped here). The summary is always the last line once jobs have
//! been started, whatever happened to them. A job succeeded when `exit_code` is 0 and `error` is
//! null. `signal` is set (and `exit_code` null) when the command died of a signal, as the node's
//! shell reports it (status 128+n). `error` says what went wrong around the command: `ssh failed:
//! ...` (ssh exited 255: it could not connect, or the connection broke), a missing `remote_dir`,
//! a timeout.
//!
//! Exit codes: 0 every job succeeded; 1 some job failed (its record says how); 64 no command
//! after `--`, `{slot}`/`{worker}` without `--per slot`, or a bad option; 65/66 bad or missing
//! stdin document; 69 the document has no node; 72 `ssh` missing, or `parallel` missing or not GNU parallel; 74 the output
//! or runtime directory cannot be written; 130 interrupted (Ctrl-C: the records so far and the
//! summary are written). Nothing is written on stdout for 64 to 74.
//!
//! Example:
//! `pytest-cloud sync < plan.json | pytest-cloud exec --per slot -- sh -c 'echo {node} {slot}/{slots}' | jq -c .data`

use crate::cli::{ExecArgs, ExecPer};
use crate::cmd::apply_ssh_args;
use crate::engine::exec::{self, ExecOptions, Per};
use crate::engine::lease;
use crate::error::{Error, Exit, Outcome, Result};
use crate::schema;
use std::io::Write;

pub fn run(args: &ExecArgs, out: &mut dyn Write) -> Result<Outcome> {
    if args.command.is_empty() {
        return Err(Error::usage(
            "no command given: put it after `--`, e.g. `pytest-cloud exec --per slot -- sh -c 'echo {node} {slot}'`",
        ));
    }
    let per = match args.per {
        ExecPer::Node => Per::Node,
        ExecPer::Slot => Per::Slot,
    };
    exec::check_placeholders(&args.command, per)?;
    let doc = schema::read_stdin_document("sync or plan")?;
    let (lease_config, held) = held_leases(&doc)?;
    let (nodes, mut settings) = exec::read_nodes(doc)?;
    if nodes.is_empty() {
        return Err(Error::new(
            Exit::NoNodes,
            "the document has no node to run on (every node was dropped; its \"dropped\" list says why)",
        ));
    }
    apply_ssh_args(&mut settings, &args.ssh);
    // Ctrl-C: parallel stops the jobs, and every job still gets its record and the summary
    // is still written last (then exit 130); a second Ctrl-C exits at once.
    crate::interrupt::install();
    let opts = ExecOptions {
        per,
        command: args.command.clone(),
        jobs: args.jobs,
        timeout_s: args.timeout,
        tail_bytes: args.tail_bytes,
        output_dir: args.output_dir.clone(),
        quiet: args.quiet,
    };
    // The run trees stay reserved while the jobs run (and the sync's --keep-minutes after).
    let (summary, _) = lease::renewing(&lease_config, &held, args.quiet, || exec::run(&nodes, &settings, &opts, out));
    let summary = summary?;
    Ok(if summary.failed == 0 { Outcome::Complete } else { Outcome::Partial })
}

/// The run trees a sync document (or a session's) holds, to renew while the jobs run.
fn held_leases(doc: &serde_json::Value) -> Result<(std::path::PathBuf, Vec<lease::Held>)> {
    let sync = match schema::kind_of(doc) {
        "sync" => doc,
        "session" => match doc.get("sync") {
            Some(s) => s,
            None => return Ok(Default::default()),
        },
        _ => return Ok(Default::default()),
    };
    let sync: schema::SyncDoc = schema::from_value(sync.clone(), "sync")?;
    lease::held_in(&sync)
}
