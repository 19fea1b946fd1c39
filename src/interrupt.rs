//! Ctrl-C as a request, not a crash: a stage that holds something on the nodes (sync's
//! directory locks) must get the chance to give it back. The first SIGINT/SIGTERM sets a
//! process-wide flag that long-running loops check; a second one exits at once with 130, so
//! a stuck cleanup never traps the user.
//!
//! Children started from the terminal get the same Ctrl-C themselves (same process group);
//! [`forward`] covers a signal sent to this process alone.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the handlers (once per process; later calls are no-ops). Without this call
/// [`requested`] is always false and signals keep their default action.
pub fn install() {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // The shutdown action must be registered first: it sees the flag as it was
            // before this signal, so only a second signal exits.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag));
            let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
        }
        flag
    });
}

/// Asks for a stop as a first Ctrl-C would (a no-op without [`install`]): for a reason of our
/// own, such as the pytest we prepare for having gone.
pub fn request() {
    if let Some(f) = FLAG.get() {
        f.store(true, Ordering::SeqCst);
    }
}

/// Whether the user asked us to stop.
pub fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Passes the interrupt on to child processes (by pid), best effort.
pub fn forward(pids: &[u32]) {
    for &pid in pids {
        crate::machine::interrupt(pid);
    }
}
