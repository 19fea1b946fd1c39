//! sync's progress on stderr, for a terminal or a log.

use super::SyncEvent;
use super::node::describe_holder;
use std::io::Write;
use std::sync::Mutex;

/// Progress on stderr: plain lines, or with a terminal, one updating line per node in
/// flight below the plain lines.
pub struct Screen {
    pub(super) quiet: bool,
    pub(super) tty: bool,
    pub(super) state: Mutex<ScreenState>,
}

#[derive(Default)]
pub struct ScreenState {
    /// Node -> its live line, in start order.
    pub(super) live: Vec<(String, String)>,
    pub(super) drawn: usize,
}

impl Screen {
    pub fn new(quiet: bool, tty: bool) -> Self {
        Screen { quiet, tty, state: Mutex::new(ScreenState::default()) }
    }

    pub fn event(&self, e: &SyncEvent) {
        if self.quiet {
            return;
        }
        let line = match e {
            SyncEvent::Info(s) => Some(s.clone()),
            SyncEvent::Waiting { node, holder } => Some(format!("{node}: waiting for the lock held by {}", describe_holder(holder))),
            SyncEvent::Started { node, remote_dir } => {
                if self.tty {
                    self.update(node, format!("{node}: syncing to {remote_dir}"));
                    None
                } else {
                    Some(format!("{node}: syncing to {remote_dir}"))
                }
            }
            SyncEvent::Progress { node, progress } => {
                self.update(node, format!("{node}: {} {:>3}% {}", human_bytes(progress.bytes), progress.percent, progress.rate));
                None
            }
            SyncEvent::Synced(n) if n.transfer.as_deref() == Some("skipped") => {
                self.forget(&n.planned.node.key());
                Some(format!("{}: synced, transfer: skipped (unchanged since its last sync) in {:.1} s", n.planned.node, n.elapsed_ms as f64 / 1000.0))
            }
            SyncEvent::Synced(n) => {
                self.forget(&n.planned.node.key());
                Some(format!(
                    "{}: synced, {} sent ({} files) in {:.1} s{}",
                    n.planned.node,
                    human_bytes(n.bytes_sent),
                    n.files_transferred,
                    n.elapsed_ms as f64 / 1000.0,
                    n.warning.as_deref().map(|w| format!("; warning: {w}")).unwrap_or_default()
                ))
            }
            SyncEvent::Dropped(d) => {
                self.forget(&d.node.key());
                Some(format!("{}: dropped ({}: {})", d.node, d.error_kind.as_str(), d.message))
            }
        };
        if let Some(l) = line {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.erase(&mut st);
            to_stderr(&format!("{l}\n"));
            self.draw(&mut st);
        }
    }

    fn update(&self, node: &str, line: String) {
        if !self.tty {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.live.iter_mut().find(|(n, _)| n == node) {
            Some(entry) if entry.1 == line => return,
            Some(entry) => entry.1 = line,
            None => st.live.push((node.to_string(), line)),
        }
        self.erase(&mut st);
        self.draw(&mut st);
    }

    fn forget(&self, node: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.live.retain(|(n, _)| n != node);
    }

    fn erase(&self, st: &mut ScreenState) {
        if self.tty && st.drawn > 0 {
            // Up to the first live line, then clear to the end of the screen.
            to_stderr(&format!("\x1b[{}A\r\x1b[J", st.drawn));
            st.drawn = 0;
        }
    }

    fn draw(&self, st: &mut ScreenState) {
        if self.tty {
            for (_, l) in &st.live {
                to_stderr(&format!("{l}\n"));
            }
            st.drawn = st.live.len();
        }
    }

    pub fn clear(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.live.clear();
        self.erase(&mut st);
    }
}

/// Progress must never take the sync down: a closed terminal (EIO) is ignored, where
/// `eprintln!` would panic in the middle of holding the nodes' locks.
pub(super) fn to_stderr(s: &str) {
    let _ = std::io::stderr().write_all(s.as_bytes());
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_humans_do() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20 * 1024 * 1024 + 1), "20.0 MiB");
    }
}
