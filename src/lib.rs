//! pytest-cloud: probe ssh nodes, plan pytest-xdist workers, sync the project, run the suite.
//! The binary is a thin shell over these modules; the launcher calls the same functions
//! in-process that the subcommands expose.

pub mod cli;
pub mod cmd;
pub mod engine;
pub mod envbuild;
pub mod envsupply;
pub mod error;
pub mod interp;
pub mod manifest;
pub mod interrupt;
pub mod machine;
pub mod options;
pub mod parallel;
pub mod proc;
pub mod project;
pub mod rebase;
pub mod remote;
pub mod rsync;
pub mod schema;
pub mod ssh;
pub mod venv;
