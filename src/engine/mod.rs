//! The engines: probe, plan, sync, exec and the launcher's session, with no clap types.

pub mod exec;
pub mod plan;
pub mod probe;
pub mod session;
pub mod sync;
