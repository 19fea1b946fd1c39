//! The cluster tier: every test that needs real sshd nodes on loopback (root, `sshd`, rsync,
//! GNU parallel, python3-venv, the network for PyPI once). One binary, so the tests share the
//! prebuilt test venv (`common::venv`) and, where they leave the nodes as they found them, one
//! cluster (`Cluster::shared`). Built only with `--features cluster-tests`: plain
//! `cargo test` is the laptop tier; `scripts/test` runs both and fails when the cluster
//! tier's prerequisites are missing.

#[path = "../common/mod.rs"]
mod common;

mod envbuild;
mod envsupply;
mod exec;
mod isolation;
mod launcher;
mod local_cluster;
mod plugin;
mod probe_plan;
mod reports;
mod sync;
