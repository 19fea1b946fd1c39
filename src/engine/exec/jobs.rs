//! The jobs of an exec: one per node or per slot, the placeholders replaced, each wrapped in
//! the remote `WRAPPER` and quoted for the node's shell. Pure, tested without processes.

use crate::error::{Error, Result};
use crate::schema::PlannedNode;
use crate::ssh::{self, Destination};

/// How the work is split into jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Node,
    Slot,
}

/// The remote side of every job, run as `sh -c WRAPPER pytest-cloud-exec MARKER TIMEOUT DIR
/// BIN env NAME=value ... COMMAND...`. BIN not empty (the run tree's venv `bin/`, see
/// [`venv_bin`]) goes first on the job's PATH, on the node (the node's own PATH is not known
/// here), so a console script or `pytest` runs by name from the env. It does not `exec` the command: a command killed by a signal
/// would make sshd send `exit-signal`, which OpenSSH's client turns into a silent 255 (measured),
/// indistinguishable from ssh failing. `setsid` (when the node has it) puts the command in its
/// own process group so a timeout kills its children too; `wait`'s stderr is silenced because
/// dash reports "Terminated" there.
///
/// Nothing left behind: the wrapper's stdin is the ssh channel, which the local side keeps
/// open (exec holds parallel's stdin, which every job's ssh inherits, and sends nothing). When
/// ssh goes away (Ctrl-C, parallel's timeout, a dead connection) sshd closes the channel and
/// the watcher's `read` sees EOF: it ends the command's process group, TERM and, after 2 s,
/// KILL. The command itself gets `/dev/null` as stdin (an asynchronous list's, as before) and
/// not the channel (fd 3 is closed for it).
pub const WRAPPER: &str = r#"m=$1 t=$2 d=$3 b=$4; shift 4
cd -- "$d" 2>/dev/null || { printf '%s nodir\n' "$m" >&2; exit 1; }
[ -z "$b" ] || { PATH=$b:$PATH; export PATH; }
g=; command -v setsid >/dev/null 2>&1 && g=setsid
exec 3<&0
$g "$@" 3<&- & p=$!
{ while IFS= read -r _; do :; done <&3; trap '' TERM; kill -TERM -"$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; sleep 2; kill -KILL -"$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; } >/dev/null 2>&1 & e=$!
exec 3<&-
w=
if [ "$t" -gt 0 ]; then
  $g sh -c 'sleep "$1"; printf "%s timeout\n" "$3" >&2; kill -TERM -"$2" 2>/dev/null || kill -TERM "$2" 2>/dev/null; sleep 5; kill -KILL -"$2" 2>/dev/null || kill -KILL "$2" 2>/dev/null' - "$t" "$p" "$m" >/dev/null & w=$!
fi
wait "$p" 2>/dev/null; s=$?
kill -TERM "$e" 2>/dev/null
[ -z "$w" ] || kill -TERM -"$w" 2>/dev/null || kill -TERM "$w" 2>/dev/null
printf '%s exit %s\n' "$m" "$s" >&2
exit "$s""#;

/// One job: where it runs and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// 1-based, in document order; parallel's sequence number.
    pub seq: usize,
    pub node: String,
    pub slot: Option<u32>,
    pub worker: Option<String>,
    pub remote_dir: String,
    /// The user's words with the placeholders replaced.
    pub command: Vec<String>,
    /// What the node's shell is given: wrapper, environment and command, quoted.
    pub remote_command: String,
    pub dest: Destination,
}

impl Job {
    /// The job's record before anything is known of its outcome: who, where and what, no output.
    pub fn blank_record(&self) -> crate::schema::JobRecord {
        crate::schema::JobRecord {
            job: self.seq,
            node: self.node.clone(),
            slot: self.slot,
            worker: self.worker.clone(),
            command: self.command.clone(),
            exit_code: None,
            signal: None,
            timed_out: false,
            error: None,
            duration_ms: 0,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_path: None,
            stderr_path: None,
        }
    }
}

const SLOT_ONLY: [&str; 2] = ["slot", "worker"];

/// `{slot}` and `{worker}` have no value when a job is a whole node.
pub fn check_placeholders(command: &[String], per: Per) -> Result<()> {
    if per == Per::Slot {
        return Ok(());
    }
    for word in command {
        for name in SLOT_ONLY {
            if word.contains(&format!("{{{name}}}")) {
                return Err(Error::usage(format!(
                    "{{{name}}} in {word:?} needs one job per slot: add --per slot (with --per node, use {{slots}})"
                )));
            }
        }
    }
    Ok(())
}

/// Replaces `{name}` for each known name, in one pass (a value that contains `{node}` is not
/// replaced again); unknown `{...}` stays as written, so `find -exec ... {} +` works.
pub fn substitute(word: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let replaced = after.find('}').and_then(|close| {
            let name = &after[..close];
            vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (v, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The jobs, in document order: nodes as listed, slots 0..slots within a node. Pure.
pub fn make_jobs(
    nodes: &[PlannedNode],
    per: Per,
    command: &[String],
    timeout_s: u64,
    marker: &str,
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for n in nodes {
        let dest = n.node.clone();
        let slots: Vec<Option<u32>> = match per {
            Per::Node => vec![None],
            Per::Slot => (0..n.slots).map(Some).collect(),
        };
        for slot in slots {
            let worker =
                slot.map(|s| n.workers.get(s as usize).cloned().unwrap_or_else(|| format!("{}-{s}", dest.label())));
            let mut vars: Vec<(&str, String)> = vec![
                ("node", n.node.key()),
                ("slots", n.slots.to_string()),
                ("dir", n.remote_dir.clone()),
                ("python", n.python.clone()),
            ];
            let mut env = vec![format!("PYTEST_CLOUD_NODE={}", n.node), format!("PYTEST_CLOUD_SLOTS={}", n.slots)];
            if let (Some(s), Some(w)) = (slot, &worker) {
                vars.push(("slot", s.to_string()));
                vars.push(("worker", w.clone()));
                env.push(format!("PYTEST_CLOUD_SLOT={s}"));
                env.push(format!("PYTEST_CLOUD_WORKER={w}"));
            }
            let words: Vec<String> = command.iter().map(|w| substitute(w, &vars)).collect();
            jobs.push(Job {
                seq: jobs.len() + 1,
                node: n.node.key(),
                slot,
                worker,
                remote_dir: n.remote_dir.clone(),
                remote_command: remote_command(marker, timeout_s, &n.remote_dir, venv_bin(n).unwrap_or(""), &env, &words),
                command: words,
                dest: dest.clone(),
            });
        }
    }
    Ok(jobs)
}

/// The `bin/` of the node's venv inside its run tree (`<remote_dir>/<venv>/bin`, synced or a
/// link to a node-built env) when `python` is that venv's; None for an interpreter outside
/// the tree (a project without a venv: the node's own PATH is left as it is).
pub fn venv_bin(n: &PlannedNode) -> Option<&str> {
    let rest = n.python.strip_prefix(n.remote_dir.as_str())?.strip_prefix('/')?;
    let (dir, exe) = rest.rsplit_once('/')?;
    (exe.starts_with("python") && (dir == "bin" || dir.ends_with("/bin"))).then(|| &n.python[..n.remote_dir.len() + 1 + dir.len()])
}

/// The string the node's login shell runs for one job.
pub fn remote_command(marker: &str, timeout_s: u64, dir: &str, bin: &str, env: &[String], words: &[String]) -> String {
    let mut all: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "pytest-cloud-exec".into(),
        marker.into(),
        timeout_s.to_string(),
        dir.into(),
        bin.into(),
        "env".into(),
    ];
    all.extend(env.iter().cloned());
    all.extend(words.iter().cloned());
    ssh::remote_quote(&all)
}

/// A marker no command prints by accident: fixed prefix, per-run nonce.
pub(super) fn new_marker() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{}-{nanos}", std::process::id());
    format!("pytest-cloud-exec-status-{:016x}", ssh::fnv1a(seed.as_bytes()))
}


#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::error::Exit;

    pub(crate) fn node(name: &str, slots: u32) -> PlannedNode {
        PlannedNode {
            node: Destination::parse(name).unwrap(),
            slots,
            workers: (0..slots).map(|i| format!("{name}-{i}")).collect(),
            remote_dir: format!("/home/u/pytest_u_proj/{name}"),
            python: "/home/u/pytest_u_proj/.venv/bin/python".into(),
        }
    }

    pub(crate) fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn placeholders_are_replaced_once_and_unknown_ones_kept() {
        let vars = vec![("node", "n{slot}".to_string()), ("slot", "3".to_string())];
        assert_eq!(substitute("{node}:{slot}", &vars), "n{slot}:3");
        assert_eq!(substitute("find . -exec rm {} +", &vars), "find . -exec rm {} +");
        assert_eq!(substitute("{{slot}}", &vars), "{3}");
        assert_eq!(substitute("{unclosed", &vars), "{unclosed");
        assert_eq!(substitute("é{slot}ü", &vars), "é3ü");
    }

    #[test]
    fn per_slot_gives_one_job_per_slot_in_document_order() {
        let jobs = make_jobs(
            &[node("a", 2), node("b", 1)],
            Per::Slot,
            &words(&["echo", "{node}", "{slot}/{slots}", "{worker}"]),
            0,
            "M",
        )
        .unwrap();
        let got: Vec<(usize, &str, Option<u32>, Vec<String>)> =
            jobs.iter().map(|j| (j.seq, j.node.as_str(), j.slot, j.command.clone())).collect();
        assert_eq!(
            got,
            vec![
                (1, "a", Some(0), words(&["echo", "a", "0/2", "a-0"])),
                (2, "a", Some(1), words(&["echo", "a", "1/2", "a-1"])),
                (3, "b", Some(0), words(&["echo", "b", "0/1", "b-0"])),
            ]
        );
    }

    #[test]
    fn per_node_refuses_slot_placeholders() {
        let e = check_placeholders(&words(&["echo", "{worker}"]), Per::Node).unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.message.contains("--per slot"), "{}", e.message);
        assert!(check_placeholders(&words(&["make", "-j{slots}"]), Per::Node).is_ok());
        let jobs = make_jobs(&[node("a", 4)], Per::Node, &words(&["make", "-j{slots}"]), 0, "M").unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].slot, &jobs[0].worker), (None, &None));
        assert_eq!(jobs[0].command, words(&["make", "-j4"]));
    }

    #[test]
    fn remote_command_keeps_every_word_whole() {
        let tricky = "it's a \"test\"; echo pwned $(id) `id` \n next";
        let cmd =
            remote_command("MARK", 7, "/d ir", "/d ir/.venv/bin", &words(&["PYTEST_CLOUD_NODE=a"]), &words(&["printf", "%s", tricky]));
        let back = shell_words::split(&cmd).unwrap();
        assert_eq!(back[0..3], words(&["sh", "-c", WRAPPER]));
        assert_eq!(
            back[3..],
            words(&["pytest-cloud-exec", "MARK", "7", "/d ir", "/d ir/.venv/bin", "env", "PYTEST_CLOUD_NODE=a", "printf", "%s", tricky])
        );
    }

    #[test]
    fn the_run_trees_venv_bin_goes_first_on_path_and_no_other_interpreters_dir() {
        let mut n = node("a", 1);
        n.remote_dir = "/home/u/pytest_u_proj/.pytest-cloud/runs/r1".into();
        n.python = format!("{}/.venv/bin/python", n.remote_dir);
        assert_eq!(venv_bin(&n), Some("/home/u/pytest_u_proj/.pytest-cloud/runs/r1/.venv/bin"));
        n.python = format!("{}/envs/dev/bin/python3.11", n.remote_dir);
        assert_eq!(venv_bin(&n), Some("/home/u/pytest_u_proj/.pytest-cloud/runs/r1/envs/dev/bin"));
        let job = make_jobs(&[n.clone()], Per::Node, &words(&["x"]), 0, "M").unwrap().remove(0);
        assert_eq!(shell_words::split(&job.remote_command).unwrap()[7], "/home/u/pytest_u_proj/.pytest-cloud/runs/r1/envs/dev/bin");
        for outside in ["/usr/bin/python3", "/home/u/pytest_u_proj/.pytest-cloud/runs/r1x/.venv/bin/python", "python3"] {
            n.python = outside.into();
            assert_eq!(venv_bin(&n), None, "{outside}");
        }
        n.python = format!("{}/tool", n.remote_dir);
        assert_eq!(venv_bin(&n), None);
    }

    #[test]
    fn a_bad_node_name_in_the_document_is_bad_input() {
        // A node is parsed when the document is read (make_jobs takes it typed), so the
        // refusal happens there, before any job exists.
        let v = serde_json::json!({"node": "a;b", "slots": 1, "workers": ["a-0"], "remote_dir": "/r", "python": "p"});
        let e = crate::schema::from_value::<PlannedNode>(v, "plan").unwrap_err();
        assert_eq!(e.exit, Exit::BadInput);
        assert!(e.message.contains("\"a;b\""), "{}", e.message);
    }
}
