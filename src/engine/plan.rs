//! The planner: how many test processes each node takes. Pure; the subcommand is
//! `src/cmd/plan.rs`.
//!
//! The algorithm is a promise (same input and options, same bytes out):
//! 1. a node the probe could not use is dropped with the probe's reason;
//! 2. `slots = min(max_processes or unlimited, cpus)`;
//! 3. with `--mem-per-process MB`: `slots = min(slots, floor(mem_available_bytes / (MB * 2^20)))`;
//! 4. a node with 0 slots is dropped (`no_slots`, with the arithmetic);
//! 5. worker ids are `<label>-<i>` for i in 0..slots, label = the node with characters other
//!    than letters, digits, `.`, `-`, `_` replaced by `_`; nodes keep the inventory's order.

use super::say;
use crate::error::{Outcome, Result, one_line};
use crate::project;
use crate::schema::{self, Dropped, ErrorKind, Facts, Inventory, NodeStatus, Plan, PlanOptions, PlannedNode, Stage};
use std::path::{Path, PathBuf};

/// The exit outcome of a stage that may drop nodes.
pub fn outcome(plan: &Plan) -> Outcome {
    if plan.nodes.is_empty() {
        Outcome::NoNodes
    } else if plan.dropped.is_empty() {
        Outcome::Complete
    } else {
        Outcome::Partial
    }
}

/// Stderr summary; with no node left, the per-node reasons.
pub fn report(plan: &Plan, quiet: bool) {
    if plan.nodes.is_empty() {
        eprintln!("pytest-cloud: error: none of the given nodes can run tests:");
        for d in &plan.dropped {
            eprintln!("  {}: {} ({})", d.node, one_line(&d.message), d.error_kind.as_str());
        }
        return;
    }
    for n in &plan.nodes {
        say(quiet, format!("{}: {} slots in {}", n.node, n.slots, n.remote_dir));
    }
    for d in &plan.dropped {
        say(quiet, format!("{}: dropped ({}: {})", d.node, d.error_kind.as_str(), one_line(&d.message)));
    }
}

/// Fills in defaults: chdir from the project root, the virtualenv by detection, the python
/// (else `first_asked`, the first interpreter the probe asks for: all the options read of an
/// inventory, so the launcher can resolve them before the probe).
pub fn resolve_options(
    root: &Path,
    mem_per_process_mb: Option<u64>,
    max_processes: Option<u32>,
    python: Option<String>,
    chdir: Option<String>,
    virtualenv_path: Option<&Path>,
    first_asked: Option<&str>,
) -> Result<PlanOptions> {
    let chdir = chdir.unwrap_or_else(|| project::default_chdir(root));
    project::validate_chdir(&chdir)?;
    let virtual_env = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    let venv = project::find_venv(root, virtualenv_path, virtual_env.as_deref())?;
    let python_pinned = python.is_some();
    let python = python
        .or_else(|| first_asked.map(String::from))
        .unwrap_or_else(|| crate::options::DEFAULT_PYTHON.into());
    Ok(PlanOptions {
        mem_per_process_mb,
        max_processes,
        python,
        python_pinned,
        chdir: chdir.trim_end_matches('/').to_string(),
        virtualenv_path: venv.map(|v| v.rel.to_string_lossy().into_owned()),
    })
}

/// The planning algorithm (see the module doc). Pure: returns the plan and the explanation.
pub fn make_plan(inventory: &Inventory, options: PlanOptions, root: &Path) -> (Plan, Vec<String>) {
    let mut nodes = Vec::new();
    let mut dropped = Vec::new();
    let mut explain = Vec::new();
    // Labels over the whole inventory, so a node's worker ids do not depend on which others
    // were dropped.
    let labels = crate::ssh::labels(&inventory.nodes.iter().map(|r| r.node.clone()).collect::<Vec<_>>());
    for (report, label) in inventory.nodes.iter().zip(&labels) {
        let drop = |kind: ErrorKind, message: String| Dropped { node: report.node.clone(), stage: Stage::Probe, error_kind: kind, message };
        let facts = match (&report.facts, report.status) {
            (Some(f), NodeStatus::Ok) => f,
            _ => {
                let kind = report.error_kind.unwrap_or(ErrorKind::ProbeFailed);
                let msg = report.message.clone().unwrap_or_else(|| "the probe failed".into());
                explain.push(format!("{}: dropped by the probe ({}): {}", report.node, kind.as_str(), one_line(&msg)));
                dropped.push(drop(kind, msg));
                continue;
            }
        };
        let (slots, arithmetic) = slots_for(facts, options.max_processes, options.mem_per_process_mb);
        explain.push(format!("{}: {arithmetic}", report.node));
        if slots == 0 {
            dropped.push(Dropped { stage: Stage::Plan, ..drop(ErrorKind::NoSlots, arithmetic) });
            continue;
        }
        let remote_dir = format!("{}/{}", facts.home.trim_end_matches('/'), options.chdir);
        let python = match &options.virtualenv_path {
            Some(v) => format!("{remote_dir}/{v}/bin/python"),
            None => match facts.pythons.get(&options.python) {
                Some(p) => p.path.clone(),
                None => {
                    let msg = format!("the project has no virtualenv and {} was not found on the node (probe it with --python {})", options.python, options.python);
                    dropped.push(Dropped { stage: Stage::Plan, ..drop(ErrorKind::NoPython, msg) });
                    continue;
                }
            },
        };
        nodes.push(PlannedNode {
            node: report.node.clone(),
            slots,
            workers: (0..slots).map(|i| format!("{label}-{i}")).collect(),
            remote_dir,
            python,
        });
    }
    let plan = Plan {
        format_version: schema::FORMAT_VERSION,
        kind: "plan".into(),
        created_by: schema::created_by(),
        total_slots: nodes.iter().map(|n| n.slots).sum(),
        options,
        source: root.display().to_string(),
        nodes,
        dropped,
        inventory: inventory.clone(),
    };
    (plan, explain)
}

/// Slots for one node and the arithmetic behind it, in words.
pub fn slots_for(f: &Facts, max_processes: Option<u32>, mem_per_process_mb: Option<u64>) -> (u32, String) {
    let mut slots = f.cpus;
    let mut why = match max_processes {
        Some(m) => {
            slots = slots.min(m);
            format!("min(max-processes {m}, cpus {}) = {slots}", f.cpus)
        }
        None => format!("cpus {} = {slots}", f.cpus),
    };
    if let Some(mb) = mem_per_process_mb {
        let by_mem = f.mem_available_bytes / (mb.saturating_mul(1 << 20));
        let before = slots;
        slots = slots.min(by_mem.min(u32::MAX as u64) as u32);
        why.push_str(&format!(
            "; floor({} MiB available / {mb} MiB per process) = {by_mem}; min({before}, {by_mem}) = {slots}",
            f.mem_available_bytes >> 20
        ));
    }
    why.push_str(&format!(" -> {slots} slots"));
    (slots, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn facts(cpus: u32, avail_mib: u64) -> Facts {
        Facts {
            cpus,
            mem_total_bytes: avail_mib << 21,
            mem_available_bytes: avail_mib << 20,
            pythons: BTreeMap::from([("python3".into(), schema::PythonInfo { path: "/usr/bin/python3".into(), version: "3.11.2".into(), abi: None })]),
            ..Facts::example()
        }
    }

    #[test]
    fn slots_follow_the_formula() {
        assert_eq!(slots_for(&facts(8, 4000), None, None).0, 8);
        assert_eq!(slots_for(&facts(8, 4000), Some(3), None).0, 3);
        assert_eq!(slots_for(&facts(2, 4000), Some(3), None).0, 2);
        assert_eq!(slots_for(&facts(8, 4000), None, Some(1000)).0, 4);
        assert_eq!(slots_for(&facts(8, 4000), Some(2), Some(1000)).0, 2);
        assert_eq!(slots_for(&facts(8, 999), None, Some(1000)).0, 0);
        let (_, why) = slots_for(&facts(8, 4000), Some(6), Some(1000));
        assert_eq!(why, "min(max-processes 6, cpus 8) = 6; floor(4000 MiB available / 1000 MiB per process) = 4; min(6, 4) = 4 -> 4 slots");
    }
}
