//! Sync's part of running the project's venv on a node's own interpreter: the choice of that
//! interpreter before anything is written to the node (`src/interp.rs`), the rsync rules that
//! leave the venv files the node writes itself alone, and the code `finish` runs to write them
//! when they changed (`src/rebase.rs`, `src/rebase_node.sh`).

use super::SyncOptions;
use super::local::Local;
use super::node::NodeRun;
use crate::{interp, rebase, schema};
use std::path::Path;

/// The rsync filter rules for the managed files of `opts.venv` (none without a venv).
pub(super) fn managed_rules(root: &Path, opts: &SyncOptions) -> Vec<String> {
    opts.venv.as_deref().and_then(|rel| rebase::Layout::read(root, rel).ok()).map(|l| l.filter_rules()).unwrap_or_default()
}

/// The node's interpreter for the project's venv, chosen from what the probe found there,
/// remembered in the run. Ok(None): no venv. Err: why no interpreter there fits.
pub(super) fn choose_interpreter(r: &mut NodeRun, local: &Local) -> std::result::Result<Option<interp::Choice>, String> {
    let Some(v) = &local.venv else { return Ok(None) };
    let c = interp::choose(&v.needs, &r.facts, local.pinned_python.as_deref())
        .map_err(|e| format!("{e}; install a compatible interpreter on the node, or make the venv from one the nodes have"))?;
    r.interpreter = Some(c.clone());
    Ok(Some(c))
}

/// What `finish` gets to write the node's managed venv files: the digest (empty when the
/// node has them already, as its stamp says) and the shell code that writes them.
pub(super) fn rebase_code(r: &NodeRun, local: &Local) -> (String, String) {
    match (&local.venv, &r.interpreter) {
        (Some(v), Some(c)) => {
            let (digest, code) = v.layout.node_code(c);
            if r.rebased_before.as_deref() == Some(digest.as_str()) { (String::new(), String::new()) } else { (digest, code) }
        }
        _ => (String::new(), String::new()),
    }
}

/// The synced node's interpreter, for the sync document and the launcher's header.
pub(super) fn node_interpreter(local: &Local, c: Option<&interp::Choice>) -> Option<schema::NodeInterpreter> {
    let (v, c) = (local.venv.as_ref()?, c?);
    Some(schema::NodeInterpreter {
        implementation: interp::implementation_name(&c.abi.implementation),
        version: c.version.clone(),
        path: c.path.clone(),
        venv_base_path: v.base.path.clone(),
        venv_base_version: v.base.version.clone(),
        rebased: c.path != v.base.path || c.version != v.base.version,
    })
}
