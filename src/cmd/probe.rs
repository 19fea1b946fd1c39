//! `pytest-cloud probe`: ask every node, concurrently and in one ssh round trip each, what it
//! can do.
//!
//! Input: nodes from `--node`/`--nodes`, and/or a document on stdin (an `inventory`, whose
//! nodes are probed again, or `{"format_version": 1, "kind": "nodes", "nodes": ["a", "b"]}`).
//! Output: an `inventory` document on stdout listing every node, reachable or not.
//! Exit codes: 0 all reachable, 1 some unreachable, 69 none reachable, 64 bad node syntax,
//! 65/66 bad or missing stdin document, 72 ssh missing.
//!
//! Example: `pytest-cloud probe --nodes 'node1 node2' --ssh-config lab.cfg | pytest-cloud plan`

use crate::cli::ProbeArgs;
use crate::cmd::{apply_ssh_args, emit, say};
use crate::engine::probe::{probe_nodes, progress_line};
use crate::error::{Error, Outcome, Result};
use crate::schema::{self, Inventory, NodeStatus};
use crate::ssh::{self, SshSettings};
use std::io::Write;
use std::time::Duration;

pub fn run(args: &ProbeArgs, out: &mut dyn Write) -> Result<Outcome> {
    let given: Vec<(bool, String)> = if args.node_order.is_empty() {
        args.node.iter().map(|n| (true, n.clone())).chain(args.nodes.iter().map(|n| (false, n.clone()))).collect()
    } else {
        args.node_order.clone()
    };
    let mut raw = Vec::new();
    for (single, value) in given {
        if single && value.trim().contains(char::is_whitespace) {
            return Err(Error::usage(format!(
                "invalid node: {value:?} contains spaces; give one node per --node, or a space-separated list with --nodes"
            )));
        }
        raw.push(value);
    }
    let mut settings = SshSettings::default();
    let mut from_inventory = Vec::new();
    if raw.is_empty() || args.stdin {
        let doc = schema::read_stdin_document("nodes or inventory")?;
        match schema::kind_of(&doc) {
            "inventory" => {
                let inv: Inventory = schema::from_value(doc, "inventory")?;
                settings = inv.ssh.clone();
                from_inventory.extend(inv.nodes.into_iter().map(|n| n.node));
            }
            "nodes" => {
                let list = doc.get("nodes").and_then(|n| n.as_array()).ok_or_else(|| {
                    Error::bad_input("the nodes document needs \"nodes\": [\"host\", ...]")
                })?;
                for n in list {
                    let s = n.as_str().ok_or_else(|| Error::bad_input(format!("node {n} is not a string")))?;
                    raw.push(s.to_string());
                }
            }
            k => return Err(Error::bad_input(format!("probe reads a nodes or inventory document, got kind {k:?}"))),
        }
    }
    let mut nodes = ssh::parse_nodes(raw.iter().map(String::as_str))?;
    // The inventory's nodes were parsed when it was read; de-duplicated like the rest.
    for d in from_inventory {
        if !nodes.contains(&d) {
            nodes.push(d);
        }
    }
    if nodes.is_empty() {
        return Err(Error::usage("no nodes given: use --node HOST or --nodes 'H1 H2' (or pipe a nodes document)"));
    }
    apply_ssh_args(&mut settings, &args.ssh);
    let deadline = Duration::from_secs(args.deadline.unwrap_or(settings.connect_timeout_s + 15));
    let quiet = args.quiet;
    let inventory = probe_nodes(&nodes, &settings, &args.python, deadline, &|r| say(quiet, progress_line(r)))?;
    emit(out, &schema::to_pretty(&inventory))?;
    let ok = inventory.nodes.iter().filter(|n| n.status == NodeStatus::Ok).count();
    say(quiet, format!("probe: {ok} of {} nodes reachable", inventory.nodes.len()));
    Ok(match ok {
        0 => Outcome::NoNodes,
        n if n == inventory.nodes.len() => Outcome::Complete,
        _ => Outcome::Partial,
    })
}

/// `--node` (true) and `--nodes` (false) values in the order they appeared, so that
/// de-duplication keeps the first one the user wrote.
pub fn nodes_in_command_line_order(m: &clap::ArgMatches) -> Vec<(bool, String)> {
    let mut v: Vec<(usize, bool, String)> = Vec::new();
    for (id, single) in [("node", true), ("nodes", false)] {
        if let (Some(idx), Some(vals)) = (m.indices_of(id), m.get_many::<String>(id)) {
            v.extend(idx.zip(vals).map(|(i, s)| (i, single, s.clone())));
        }
    }
    v.sort_by_key(|(i, _, _)| *i);
    v.into_iter().map(|(_, single, s)| (single, s)).collect()
}
