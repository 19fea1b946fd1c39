//! The local half of a sync, made before any node is asked anything: the local facts (source,
//! chdir, filters, cipher, venv), the local tools check, the ssh config, what the rsync command
//! is (`FanoutKey`), the manifest walk and, when it will likely be needed, a GNU parallel
//! already starting. None of it depends on a node's answer, so the launcher makes it on a
//! thread of its own while the probe runs (src/engine/session.rs) and nothing local stands
//! between the probe's end and the pre-flights; `sync` alone makes it from the plan.
//!
//! Whether the launcher starts parallel up front is decided by a record on this machine, in
//! the private runtime dir: the manifest digest of the last sync of this root and chdir to
//! these nodes in which every node ended with this tree stamped (by the fast path or after a
//! clean rsync). When the tree's digest equals it, the nodes will very likely take the fast
//! path, so parallel (a perl program: 0.1-0.5 CPU-s) is not started beside the probe and the
//! early pytest; the fan-out starts it when a pre-flight says a node needs rsync after all.
//! Otherwise (a changed tree, a first run) it starts at once. The record only ever decides
//! when parallel starts, never what is sent: the nodes' stamps decide that.

use super::SyncOptions;
use super::fanout::{Fanout, FanoutKey};
use super::local::{Local, check_local_tools, local_facts, source_root};
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::schema::{Plan, PlanOptions};
use crate::ssh::{self, Destination, SshSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a sync of one plan needs of this machine, made by [`prepare`] and used by
/// [`super::sync_prepared`]. Errors are kept, not returned, so that a sync reports them in the
/// order it always has (the local facts first, then the plan's nodes, then the tools).
pub struct Prepared {
    made_for: MadeFor,
    /// The options as given, and as the sync uses them (the plan's venv filled in).
    pub(super) given: SyncOptions,
    pub(super) opts: SyncOptions,
    /// What the local checks would tell the user, said when the sync starts.
    pub(super) infos: Vec<String>,
    pub(super) local: Result<Local>,
    pub(super) transfer: Result<Transfer>,
    pub(super) fanout: Option<Fanout>,
    record: Option<PathBuf>,
}

/// The plan inputs a [`Prepared`] was made for; a plan that differs gets a new one.
#[derive(PartialEq)]
struct MadeFor {
    source: String,
    options: PlanOptions,
    ssh: SshSettings,
    nodes: Vec<Destination>,
}

/// The transfer as the fan-out runs it: the ssh config of every node, the rsync command and
/// the manifest digest of what it would send (None: the tree could not be read, no fast path).
pub(super) struct Transfer {
    pub(super) config: PathBuf,
    pub(super) key: FanoutKey,
    pub(super) manifest: Option<Arc<Manifest>>,
}

/// Makes the local half of syncing `source` with the plan `options` to `nodes` (the
/// inventory's, with its ssh settings). `early_fanout`: start GNU parallel now unless the
/// record says the nodes already hold this tree (the launcher); false: the fan-out starts it
/// when the first node needs rsync (`sync`).
pub fn prepare(source: &str, options: &PlanOptions, ssh: &SshSettings, nodes: &[Destination], given: &SyncOptions, early_fanout: bool) -> Prepared {
    let made_for = MadeFor { source: source.to_string(), options: options.clone(), ssh: ssh.clone(), nodes: nodes.to_vec() };
    let opts = SyncOptions { venv: given.venv.clone().or_else(|| options.virtualenv_path.clone()), ..given.clone() };
    let mut infos = Vec::new();
    let root = match source_root(source, &opts, &mut |s| infos.push(s)) {
        Ok(r) => r,
        Err(e) => {
            let transfer = Err(Error::internal("no transfer without a source"));
            return Prepared { made_for, given: given.clone(), opts, infos, local: Err(e), transfer, fanout: None, record: None };
        }
    };
    // Two halves at once: the local facts wait for small programs (`ssh -Q cipher`, the venv's
    // python, `id -un`); the walk and the tools check are this thread's.
    let ((local, facts_infos), (transfer, fanout, record)) = std::thread::scope(|s| {
        let facts = s.spawn(|| {
            let mut infos = Vec::new();
            let local = local_facts(root.clone(), options, &opts, &mut |s| infos.push(s));
            (local, infos)
        });
        let transfer = ssh::write_config(ssh, nodes).map(|config| {
            let key = FanoutKey::new(&root, &config, &opts);
            let manifest = super::fast::manifest(&crate::machine::hostname(), &root, &key.rules, &key.rsync_options).map(Arc::new);
            Transfer { config, key, manifest }
        });
        let record = record_path(&root, &options.chdir, nodes);
        let mut fanout = None;
        if let Ok(t) = &transfer {
            let digest = t.manifest.as_ref().map(|m| m.digest.as_str());
            let stamped = digest.is_some() && record.as_deref().and_then(|p| std::fs::read_to_string(p).ok()).as_deref() == digest;
            if early_fanout && !stamped && !nodes.is_empty() {
                let jobs = opts.max_processes.map(|m| m as usize).unwrap_or(nodes.len()).min(nodes.len());
                // If it cannot start, the fan-out tries again when a node needs it, and says why.
                fanout = Fanout::start_with(t.key.clone(), jobs).ok();
            }
        }
        if !nodes.is_empty() {
            // Asked here, beside the probe; the sync reads the answer (check_local_tools).
            let _ = check_local_tools();
        }
        (facts.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), (transfer, fanout, record))
    });
    infos.extend(facts_infos);
    Prepared { made_for, given: given.clone(), opts, infos, local, transfer, fanout, record }
}

impl Prepared {
    /// For `plan`, from the same options: this one when it was made for it, else a new one
    /// (the parallel started for the other is closed unused).
    pub(super) fn for_plan(self, plan: &Plan) -> Prepared {
        let wanted = MadeFor {
            source: plan.source.clone(),
            options: plan.options.clone(),
            ssh: plan.inventory.ssh.clone(),
            nodes: super::node::inventory_destinations(plan),
        };
        if self.made_for == wanted {
            return self;
        }
        let given = self.given.clone();
        drop(self);
        prepare(&wanted.source, &wanted.options, &wanted.ssh, &wanted.nodes, &given, false)
    }

    /// After a sync: the record says "these nodes hold this tree" only when every node of the
    /// plan ended with it stamped; anything else (a node dropped, an rsync that was partial, a
    /// node that builds its own env) removes it, so the next run starts parallel up front.
    pub(super) fn remember(&self, all_stamped: bool) {
        let Some(path) = &self.record else { return };
        let digest = self.transfer.as_ref().ok().and_then(|t| t.manifest.as_ref()).map(|m| m.digest.clone());
        match digest.filter(|_| all_stamped) {
            Some(d) => {
                if std::fs::read_to_string(path).ok().as_deref() != Some(d.as_str()) {
                    let _ = std::fs::write(path, d);
                }
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The record of the last fully stamped sync of `root` into `chdir` on `nodes`.
fn record_path(root: &Path, chdir: &str, nodes: &[Destination]) -> Option<PathBuf> {
    let mut id = format!("{}\0{chdir}", root.display());
    for n in nodes {
        id.push('\0');
        id.push_str(&n.key());
    }
    Some(ssh::runtime_dir().ok()?.join(format!("synced-{:016x}", ssh::fnv1a(id.as_bytes()))))
}
