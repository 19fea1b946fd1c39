//! `pytest-cloud plan`: decide how many test processes each node takes.
//!
//! Input: an `inventory` on stdin (or a later document carrying one). Output: a `plan`.
//! Exit codes: 0 every node planned, 1 some dropped, 69 none left, 64 bad option,
//! 65/66 bad or missing stdin document.
//!
//! The algorithm, a promise: `src/engine/plan.rs` and share/doc/planning.md.
//!
//! Example: `pytest-cloud probe --node node1 | pytest-cloud plan --mem-per-process 500 --explain`

use crate::cli::PlanArgs;
use crate::cmd::emit;
use crate::engine::plan::{make_plan, outcome, report, resolve_options};
use crate::error::{Error, Outcome, Result};
use crate::project;
use crate::schema::{self, Inventory};
use std::io::Write;

pub fn run(args: &PlanArgs, out: &mut dyn Write) -> Result<Outcome> {
    let doc = schema::read_stdin_document("inventory")?;
    let inventory: Inventory = match schema::kind_of(&doc) {
        "inventory" => schema::from_value(doc, "inventory")?,
        "plan" | "sync" | "session" => schema::plan_from(doc, "inventory")?.inventory,
        k => return Err(Error::bad_input(format!("plan reads an inventory document (from `pytest-cloud probe`), got kind {k:?}"))),
    };
    let root = project::project_root(args.source.as_deref())?;
    let options = resolve_options(
        &root,
        args.mem_per_process,
        args.max_processes,
        args.python.clone(),
        args.chdir.clone(),
        args.virtualenv_path.as_deref(),
        inventory.pythons_asked.first().map(String::as_str),
    )?;
    let (plan, explain) = make_plan(&inventory, options, &root);
    if args.explain {
        for line in &explain {
            eprintln!("{line}");
        }
    }
    emit(out, &schema::to_pretty(&plan))?;
    report(&plan, args.quiet);
    Ok(outcome(&plan))
}
