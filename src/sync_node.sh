# pytest-cloud sync, node side: POSIX sh, read from stdin by `sh -s -- MODE ARGS...`.
# Prints key=value lines that src/engine/sync/node.rs reads; ends with sync_node_end=1 when it got
# through. It never deletes outside DIR, and inside DIR only after seeing the marker.
#
#   preflight DIR LOCK HOLDER STALE_MIN BREAK_HOLDER BASE_PY WANT_VERSION MARKER_TEXT
#       1. the interpreter chosen for the venv, BASE_PY, must run and be WANT_VERSION ("" =
#          no venv); with the lock, say which managed venv files DIR has (rebased=DIGEST);
#       2. DIR must be absent, empty, or carry the marker (else target=unsafe, untouched);
#       3. take the lock (mkdir LOCK, atomic), breaking it first if its holder is
#          BREAK_HOLDER (judged stale by the caller);
#       4. under the lock, create DIR and its marker when needed, and say whether the last
#          sync into DIR ran to its end (clean=1: the stamp DIR/.pytest-cloud-synced was
#          there; it is removed now, and finish writes it again).
#   finish DIR LOCK HOLDER PTH PYTHON REBASE SWEEP N DELETED1..DELETEDN ENTRY...
#       when REBASE is not empty, run rebase_venv DIR (src/rebase.rs prepends it to this
#       script: the venv's pyvenv.cfg, bin/python* and scripts for this node, written into
#       the base before any run tree is made from it); remove orphan bytecode (SWEEP=full:
#       anywhere in DIR; SWEEP=listed: only that of the
#       N deleted .py files rsync reported, paths relative to DIR), write (or remove) the
#       editable .pth at DIR/PTH with ENTRY lines (only when it changes), check PYTHON runs
#       with every ENTRY on sys.path, write the stamp, release the lock.
#   release DIR LOCK HOLDER
#       remove LOCK if HOLDER holds it (lock=released), else say lock=absent or lock=other.
#   beat DIR LOCK HOLDER
#       touch LOCK (its mtime is the heartbeat) if HOLDER holds it (lock=renewed|lost). A held
#       lock is stale once older than the ttl_min its holder line names (else STALE_MIN).
#
# Nothing is left locked when the controller goes away mid-step (its ssh killed, the
# connection lost): SIGPIPE is ignored, so a write to the closed stdout fails instead of
# killing the script before it releases; and a preflight whose final answer cannot be
# written (nobody will ever know it took the lock) gives the lock back itself.
#   Fast path (src/engine/sync/fast.rs): with fast_digest set by the prelude, preflight ends
#       a no-change re-sync itself (fast_path, below: fast=done, run_dir=, venv=) or says why
#       not (fast=no, fast_reason=) and goes on as before. finish writes the stamp line
#       "DIGEST NONCE": stamp_digest (set by its prelude; "-" = none), which is what fast_path
#       compares, and a nonce new with every sync into the base.
#
# Run trees (see share/doc/sync-safety.md, "Concurrent runs"): DIR is the shared base that
# rsync updates under LOCK; each run works in its own tree RUNS/ID, hard links of the base
# made under LOCK, with a lease RUNS/ID.lease (its holder line; its mtime is the heartbeat).
# The modes and options below are kept in their own functions.
#   preflight ... RUNS            (appended) RUNS must be absent or carry its marker; the
#       leases there are listed (lease=ID STALE HOLDER, STALE=1 when older than its ttl_min),
#       and trees without a lease (orphan=ID).
#   finish DIR LOCK HOLDER PTH PYTHON REBASE RUNS ID LEASE NREAP REAP_ID REAP_HOLDER... SWEEP N ...
#       also: reap the NREAP named trees (only while their lease still names REAP_HOLDER;
#       "" = an orphan), then make the run tree RUNS/ID with its lease; PYTHON (relative to
#       DIR) is checked in the run tree; ID "" = no run tree (the old single-directory mode).
#   renew DIR LOCK HOLDER RUNS ID LEASE    touch the lease if it is still LEASE (lease=renewed|lost)
#   drop DIR LOCK HOLDER RUNS ID LEASE     hand the run's new bytecode to the base, remove the
#       run tree and its lease (released=1), or keep the tree as RUNS/idle.ID for the next
#       no-change run when it is still exactly what it was made as (kept=idle.ID; "Kept run
#       trees", below).
#   reap DIR LOCK HOLDER RUNS N ID HOLDER...   reap the N named trees (only while their lease
#       still names HOLDER): those a fast path listed whose holder the controller found gone.
set -u
trap '' PIPE
marker=.pytest-cloud-target
synced=.pytest-cloud-synced
mode=$1
shift
dir=$1 lock=$2 holder=$3
shift 3

took_lock=0
end() {
    if ! echo "sync_node_end=1" && [ "$took_lock" = 1 ]; then
        release
    fi
    exit 0
}

release() {
    # Only our own lock: another run may have broken a stale one of ours and taken it.
    if [ -d "$lock" ] && [ "$(cat "$lock/holder" 2>/dev/null)" = "$holder" ]; then
        rm -rf -- "$lock"
    fi
}

runs_marker=.pytest-cloud-runs
run_stamp=.pytest-cloud-run

# RUNS: new, marked, or refused (a directory pytest-cloud did not make is never written to).
runs_state() {
    if [ ! -e "$1" ] && [ ! -L "$1" ]; then
        echo new
    elif [ -d "$1" ] && [ ! -L "$1" ] && [ -f "$1/$runs_marker" ]; then
        echo marked
    else
        echo unsafe
    fi
}

# Lists the leases in RUNS and the trees that have none. A lease is stale when its mtime
# (the holder's heartbeat) is older than the ttl_min its holder line names; the caller adds
# what only it can know (a holder on its own machine whose processes are gone).
runs_list() {
    [ -d "$1" ] || return 0
    for l in "$1"/*.lease; do
        [ -f "$l" ] || continue
        id=${l##*/}
        id=${id%.lease}
        h=$(head -n 1 -- "$l" 2>/dev/null)
        ttl=$(printf '%s\n' "$h" | tr ' ' '\n' | sed -n 's/^ttl_min=\([0-9][0-9]*\)$/\1/p')
        st=0
        [ -n "$(find "$l" -prune -mmin +"${ttl:-60}" 2>/dev/null)" ] && st=1
        echo "lease=$id $st $h"
    done
    for t in "$1"/*; do
        [ -d "$t" ] || continue
        id=${t##*/}
        [ -e "$t.lease" ] || echo "orphan=$id"
    done
}

# Removes run tree RUNS/ID if its lease still says HOLDER ("" = it has no lease). Renaming the
# lease first makes the decision once: of two runs reaping the same tree, one rename wins, and
# a holder that was only slow sees its lease gone (renew prints lease=lost).
run_reap() {
    r_runs=$1 r_id=$2 r_holder=$3
    case "$r_id" in "" | . | .. | */* | .*) return 0 ;; esac
    if [ -n "$r_holder" ]; then
        [ "$(head -n 1 -- "$r_runs/$r_id.lease" 2>/dev/null)" = "$r_holder" ] || return 0
        mv -- "$r_runs/$r_id.lease" "$r_runs/$r_id.reaped.$$" 2>/dev/null || return 0
    elif [ -e "$r_runs/$r_id.lease" ]; then
        return 0
    fi
    rm -rf -- "$r_runs/$r_id" 2>/dev/null
    rm -f -- "$r_runs/$r_id.reaped.$$"
    echo "reaped=$r_id"
}

# Writes RUNS/ID's lease LEASE (RUNS made and marked first). A tree never exists without one.
run_lease() {
    l_runs=$1 l_id=$2 l_lease=$3
    mkdir -p -- "$l_runs" || { echo "error=cannot create $l_runs"; return 1; }
    [ -f "$l_runs/$runs_marker" ] || printf '%s\n' "Made by pytest-cloud: one tree per run of $dir; removed when the run ends." >"$l_runs/$runs_marker" ||
        { echo "error=cannot write $l_runs/$runs_marker"; return 1; }
    printf '%s\n' "$l_lease" >"$l_runs/$l_id.lease.tmp" && mv -f -- "$l_runs/$l_id.lease.tmp" "$l_runs/$l_id.lease" ||
        { echo "error=cannot write $l_runs/$l_id.lease"; return 1; }
}

# The base's stamp line ("DIGEST NONCE", written by finish), or "" when there is none.
stamp_line() {
    s_line=
    [ -f "$dir/$synced" ] && IFS= read -r s_line <"$dir/$synced"
    printf '%s\n' "$s_line"
}

# Makes RUNS/ID: the lease first (so a tree never exists without one), then hard links of
# the base. rsync replaces a changed file by a new one (temp file + rename), so a later sync
# into the base never changes a file this tree sees. .pytest_cache is copied, not linked:
# pytest's cache writes its values in place. The tree's stamp RUNS/ID/.pytest-cloud-run holds
# the base's stamp line it was made from: its mtime is when the tree was complete (what the
# run changes is newer), its line says which sync of the base it mirrors (kept trees, below).
run_make() {
    m_runs=$1 m_id=$2 m_lease=$3
    run_lease "$m_runs" "$m_id" "$m_lease" || return 1
    if ! cp -al -- "$dir" "$m_runs/$m_id" 2>/dev/null; then
        # cp -l is GNU and busybox; rsync (which the node has) links as well, a little slower.
        rm -rf -- "$m_runs/$m_id"
        rsync -rlpt --link-dest="$dir/" -- "$dir/" "$m_runs/$m_id/" 2>/dev/null ||
            { rm -rf -- "$m_runs/$m_id"; rm -f -- "$m_runs/$m_id.lease"; echo "error=cannot make the run tree $m_runs/$m_id"; return 1; }
    fi
    run_base_cache "$m_runs/$m_id" || return 1
    stamp_line >"$m_runs/$m_id/$run_stamp"
    echo "run_dir=$m_runs/$m_id"
}

# TREE's .pytest_cache becomes the base's (none when the base has none).
run_base_cache() {
    if [ -d "$dir/.pytest_cache" ]; then
        rm -rf -- "$1/.pytest_cache" && cp -Rp -- "$dir/.pytest_cache" "$1/.pytest_cache" ||
            { echo "error=cannot copy .pytest_cache into $1"; return 1; }
    elif [ -e "$1/.pytest_cache" ]; then
        rm -rf -- "$1/.pytest_cache" || { echo "error=cannot remove $1/.pytest_cache"; return 1; }
    fi
}

# Kept run trees (share/doc/sync.md, "A no-change re-sync in one round trip"): a released
# tree that is still exactly what it was made as, of the sync the base still holds, is kept as
# RUNS/idle.ID instead of removed, and the next no-change run takes it (one rename) instead of
# linking a new one (a link per file: most of a no-change pre-flight's time on the node).
# Exact: nothing in it is newer than its stamp but bytecode and .pytest_cache (a file written,
# created, deleted or renamed changes its mtime or its directory's), and its stamp line is
# the base's, whose nonce is new with every sync into the base (rsync replaces a changed file
# by a new one, so a tree of an older sync may hold what the base no longer does; a file
# changed in place in the base is changed in every tree that links it, and the base's own
# newer-than-stamp check sends that run down the full path, which writes a new nonce).
# At most IDLE_MAX are kept; one of an older sync is removed by the next run that sees it.
idle_max=2

# Whether TREE may be kept: exact (CHANGED, what run_harvest printed, is empty) and of the
# base's current sync, which must be one the fast path can match (a digest, not "-").
run_keepable() {
    k_tree=$1 k_changed=$2
    [ -z "$k_changed" ] && [ -f "$k_tree/$run_stamp" ] || return 1
    k_line=
    IFS= read -r k_line <"$k_tree/$run_stamp" || return 1
    case "$k_line" in "" | "- "* | *" ") return 1 ;; esac
    [ "$k_line" = "$(stamp_line)" ]
}

# Removes the kept trees in RUNS that are not of the base's current sync.
idle_sweep() {
    i_line=$(stamp_line)
    for t in "$1"/idle.*; do
        [ -d "$t" ] || continue
        t_line=
        [ -f "$t/$run_stamp" ] && IFS= read -r t_line <"$t/$run_stamp"
        [ -n "$i_line" ] && [ "$t_line" = "$i_line" ] && continue
        # Not a dot name: should this be cut short, the tree left is an orphan the next run reaps.
        mv -- "$t" "$1/reaped-idle.$$" 2>/dev/null && rm -rf -- "$1/reaped-idle.$$"
    done
}

# Takes a kept tree of the base's current sync as RUNS/ID (its lease written first); prints
# run_dir= and returns 0, or returns 1 when there is none (or another run took it first).
run_claim() {
    c_runs=$1 c_id=$2 c_lease=$3 c_line=$(stamp_line)
    [ -n "$c_line" ] || return 1
    for t in "$c_runs"/idle.*; do
        [ -d "$t" ] && [ -f "$t/$run_stamp" ] || continue
        t_line=
        IFS= read -r t_line <"$t/$run_stamp" || continue
        [ "$t_line" = "$c_line" ] || continue
        # Still exact now (run_harvest's rule): nothing changed it since its release judged it,
        # such as a process its run left behind or an edit on the node.
        if [ -n "$(find "$t" -path "$t/.pytest_cache" -prune -o -newer "$t/$run_stamp" ! \( -type f -path '*/__pycache__/*.pyc' \) ! -name __pycache__ -print 2>/dev/null | head -n 1)" ]; then
            mv -- "$t" "$c_runs/reaped-idle.$$" 2>/dev/null && rm -rf -- "$c_runs/reaped-idle.$$"
            continue
        fi
        run_lease "$c_runs" "$c_id" "$c_lease" || return 1
        if mv -- "$t" "$c_runs/$c_id" 2>/dev/null; then
            echo "run_dir=$c_runs/$c_id"
            echo "run_tree=kept"
            # 2: the tree is this run's but unusable (error= said why); the caller stops.
            run_base_cache "$c_runs/$c_id" || return 2
            return 0
        fi
        rm -f -- "$c_runs/$c_id.lease"
    done
    return 1
}

# Bytecode compiled in a run tree is given to the base (a hard link), so the next run's tree
# starts with it, where the base still has that very source file (same inode) and no bytecode
# of its own. Python writes .pyc files by temp file + rename, so sharing them is safe.
# Prints, in the same walk, what else in the tree is newer than its stamp (one path a line;
# "-" when the tree has no stamp): what run_keepable judges. .pytest_cache is left out (the
# next run gets its own), and so are __pycache__ directories themselves.
run_harvest() {
    h_tree=$1
    [ -f "$h_tree/$run_stamp" ] && [ -d "$dir" ] || { echo "-"; return 0; }
    # One ln per __pycache__ directory, not a mkdir and an ln per file: find lists a
    # directory's files together, and a cold run's tree has a few hundred of them (the
    # release of one node took 1-3 s under load with a fork per file).
    find "$h_tree" -path "$h_tree/.pytest_cache" -prune -o -newer "$h_tree/$run_stamp" \( \( -type f -path '*/__pycache__/*.pyc' -exec sh -c '
        tree=$1 base=$2
        shift 2
        to= list=
        # A new __pycache__ in the base keeps its directory'\''s mtime: the base gains only
        # bytecode, so the next run still finds nothing there newer than the stamp (fast_path).
        mkpc() {
            [ -d "$to" ] && return 0
            p=${to%/__pycache__/}
            ref=${tree%/*}/.pytest-cloud-mtime.$$
            touch -r "$p" "$ref" || return 1
            mkdir -- "$to" || { rm -f -- "$ref"; return 1; }
            touch -m -r "$ref" "$p"
            rm -f -- "$ref"
        }
        flush() {
            [ -n "$list" ] || return 0
            mkpc 2>/dev/null && eval "ln -- $list \"\$to\"" 2>/dev/null
            list=
        }
        for f do
            rel=${f#"$tree"/}
            case "$rel" in
            __pycache__/*) d= ;;
            */__pycache__/*) d=${rel%/__pycache__/*}/ ;;
            *) continue ;;
            esac
            name=${f##*/}
            src=$d${name%%.*}.py
            [ -e "$base/$rel" ] && continue
            [ "$tree/$src" -ef "$base/$src" ] || continue
            [ "$base/${d}__pycache__/" = "$to" ] || { flush; to=$base/${d}__pycache__/; }
            case "$f" in
            *"'\''"*) mkpc 2>/dev/null && ln -- "$f" "$to" 2>/dev/null ;;
            *) list="$list '\''$f'\''" ;;
            esac
        done
        flush
        exit 0' sh "$h_tree" "$dir" {} + \) -o \( ! -name __pycache__ -print \) \) 2>/dev/null
}

# Touches the lease while it is still LEASE (a lease renamed away by a reaper is lost).
run_renew() {
    if [ "$(head -n 1 -- "$1/$2.lease" 2>/dev/null)" = "$3" ] && touch -c -- "$1/$2.lease"; then
        echo "lease=renewed"
    else
        echo "lease=lost"
    fi
}

run_drop() {
    d_runs=$1 d_id=$2 d_lease=$3
    case "$d_id" in "" | . | .. | */* | .*) echo "error=bad run id"; return 0 ;; esac
    d_changed=$(run_harvest "$d_runs/$d_id")
    d_ours=0
    [ "$(head -n 1 -- "$d_runs/$d_id.lease" 2>/dev/null)" = "$d_lease" ] && d_ours=1
    # Kept for the next no-change run (run_keepable) while fewer than idle_max are, and only
    # while the lease is still ours: renamed before the lease goes, so no reaper ever sees it
    # as a tree without a lease (and removes it while it is being kept).
    set -- "$d_runs"/idle.*
    d_idle=0
    [ -e "$1" ] && d_idle=$#
    if [ "$d_ours" = 1 ] && [ "$d_idle" -lt "$idle_max" ] && run_keepable "$d_runs/$d_id" "$d_changed" &&
        mv -- "$d_runs/$d_id" "$d_runs/idle.$d_id" 2>/dev/null; then
        mv -- "$d_runs/$d_id.lease" "$d_runs/$d_id.reaped.$$" 2>/dev/null && rm -f -- "$d_runs/$d_id.reaped.$$"
        echo "kept=idle.$d_id"
        echo "released=1"
        return 0
    fi
    if [ "$d_ours" = 1 ]; then
        mv -- "$d_runs/$d_id.lease" "$d_runs/$d_id.reaped.$$" 2>/dev/null
    fi
    # A worker of this run may still be exiting (writing bytecode) just after the controller
    # ended: give it a moment rather than leave the tree for a later run to reap.
    d_try=0
    until rm -rf -- "$d_runs/$d_id" 2>/dev/null || [ "$d_try" -ge 10 ]; do
        d_try=$((d_try + 1))
        sleep 0.3 2>/dev/null || sleep 1
    done
    rm -f -- "$d_runs/$d_id.reaped.$$"
    if [ -e "$d_runs/$d_id" ]; then
        d_left=$(find "$d_runs/$d_id" -mindepth 1 2>/dev/null | head -n 3 | tr '\n' ' ')
        echo "error=could not remove all of $d_runs/$d_id (left: ${d_left:-the directory itself})"
    fi
    echo "released=1"
}

# Prints the state of DIR: new, marked, empty, unsafe (with a sample of what is there).
target_state() {
    if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then
        echo new
    elif [ ! -d "$dir" ]; then
        echo notdir
    elif [ -f "$dir/$marker" ]; then
        echo marked
    elif entries=$(ls -A -- "$dir" 2>&1); then
        if [ -z "$entries" ]; then echo empty; else echo unsafe; fi
    else
        echo unreadable
    fi
}

sample() {
    ls -A -- "$dir" 2>/dev/null | head -n 5 | tr '\n' ' '
}

# The fast path of a no-change re-sync (src/engine/sync/fast.rs), called by preflight under
# the lock once DIR is known marked. The caller's prelude sets fast_digest (the manifest
# digest of what rsync would send now, mixed with the node's managed files and the .pth),
# fast_run_id, fast_lease, fast_python and fast_pth (relative to DIR; "" = no venv),
# fast_entries (the .pth lines, one a line), fast_host and fast_boot (the controller's), and
# defines fast_cache TREE, which writes the controller's .pytest_cache into TREE (a run
# rewrites it every time, so it travels with this call and is not in the digest).
# It goes ahead only when all of these hold, and otherwise returns 1 having changed nothing,
# so preflight goes on as before (rsync, then finish):
#   - the stamp DIR/.pytest-cloud-synced holds fast_digest (its first word): finish wrote it
#     at the end of a complete sync of exactly this tree (preflight removes the stamp before
#     any rsync, so an interrupted sync leaves none);
#   - nothing in DIR outside __pycache__ is newer than the stamp (nobody changed the base
#     since; a run's bytecode handed back to the base lives in __pycache__).
# Then, still in this round trip: the trees whose leases are stale and the orphans are reaped
# (a fresh lease of a process on the controller's machine, which only the controller can see
# to be gone, is listed as lease=ID 0 HOLDER for it to judge), this run's tree is a kept one
# (run_claim) or made, with its lease, the lock is released and the venv check is answered
# (done in the base before the lock when its stamp held the digest, else in the tree), as
# finish does after rsync.
# venv_check TREE PYTHON PTH LINE...: the venv interpreter of the run tree TREE runs and has
# every .pth LINE (relative to the .pth's own directory, site-packages) on sys.path; answers
# venv=ok VERSION, or venv=failed with the last lines it said.
venv_check() {
    vc_tree=$1 vc_python=$2 vc_pth=$3
    shift 3
    # -B: it writes no bytecode (in the base, a new __pycache__ would be a change there).
    if vc_out=$("$vc_tree/$vc_python" -B -c '
import os, sys
pth = sys.argv[1]
want = [os.path.abspath(os.path.join(os.path.dirname(pth), l)) for l in sys.argv[2:]]
missing = [p for p in want if p not in sys.path]
if missing:
    sys.exit("not on sys.path: " + " ".join(missing))
print("%d.%d.%d" % sys.version_info[:3])' "$vc_tree/$vc_pth" "$@" 2>&1); then
        echo "venv=ok $vc_out"
    else
        echo "venv=failed"
        printf '%s\n' "$vc_out" | tail -n 5 | sed 's/^/venv_message=/'
    fi
}

fast_path() {
    f_line=$(stamp_line)
    if [ "${f_line%% *}" != "$fast_digest" ]; then
        echo "fast=no"
        echo "fast_reason=the tree differs from the one last synced here"
        return 1
    fi
    f_new=$(find "$dir" -name __pycache__ -prune -o -newer "$dir/$synced" -print 2>/dev/null | head -n 1)
    if [ -n "$f_new" ]; then
        echo "fast=no"
        echo "fast_reason=changed on the node since the last sync: $f_new"
        return 1
    fi
    echo "fast=done"
    if [ -d "$runs" ]; then
        for l in "$runs"/*.lease; do
            [ -f "$l" ] || continue
            f_id=${l##*/}
            f_id=${f_id%.lease}
            f_holder=$(head -n 1 -- "$l" 2>/dev/null)
            if [ -n "$(find "$l" -prune -mmin +"$(fast_ttl "$l")" 2>/dev/null)" ]; then
                run_reap "$runs" "$f_id" "$f_holder"
                continue
            fi
            # A fresh lease of a run of the controller's machine: only the controller can
            # tell whether its holder is gone, and reaps that tree itself (mode reap).
            case " $f_holder " in
            *" pid=0 "*) ;;
            *" host=$fast_host boot=$fast_boot "*) echo "lease=$f_id 0 $f_holder" ;;
            esac
        done
        for t in "$runs"/*; do
            case "${t##*/}" in idle.*) continue ;; esac
            [ -d "$t" ] && [ ! -e "$t.lease" ] && run_reap "$runs" "${t##*/}" ""
        done
        idle_sweep "$runs"
    fi
    f_claim=0
    run_claim "$runs" "$fast_run_id" "$fast_lease" || f_claim=$?
    if [ "$f_claim" = 2 ]; then
        release
        return 0
    elif [ "$f_claim" != 0 ]; then
        run_make "$runs" "$fast_run_id" "$fast_lease" || { release; return 0; }
    fi
    fast_cache "$runs/$fast_run_id" || { release; echo "error=cannot write the pytest cache into $runs/$fast_run_id"; return 0; }
    # The tree is complete now: its stamp's mtime says so (run_keepable).
    printf '%s\n' "$f_line" >"$runs/$fast_run_id/$run_stamp"
    release
    [ -n "$fast_python" ] || return 0
    if [ -n "$fast_venv" ]; then
        # Checked in the base before the lock, whose stamp held this digest then and now: the
        # tree links those very files (the .pth lines are relative, so they hold in both).
        echo "$fast_venv"
    else
        fast_venv_check "$runs/$fast_run_id"
    fi
    return 0
}

# venv_check in TREE with the prelude's venv, .pth and lines.
fast_venv_check() {
    f_ifs=$IFS
    IFS='
'
    set -f
    # shellcheck disable=SC2086 # one .pth line per line of fast_entries
    set -- "$1" $fast_entries
    set +f
    IFS=$f_ifs
    f_tree=$1
    shift
    venv_check "$f_tree" "$fast_python" "$fast_pth" "$@"
}

# The ttl_min a lease's holder line names (60 when it names none), as runs_list reads it.
fast_ttl() {
    f_ttl=$(head -n 1 -- "$1" 2>/dev/null | tr ' ' '\n' | sed -n 's/^ttl_min=\([0-9][0-9]*\)$/\1/p')
    echo "${f_ttl:-60}"
}

case "$mode" in
preflight)
    stale=$1 break_holder=$2 py=$3 want=$4 marker_text=$5 runs=${6-}
    # A no-change re-sync (the base's stamp holds the prelude's digest, so its venv was made
    # for this very interpreter, which its bin/python is) asks the base's venv, which answers
    # for the interpreter too:
    # one Python start instead of two. Anything else, and the interpreter is asked itself.
    fast_venv=
    if [ -n "$py" ] && [ -n "${fast_digest-}" ] && [ -n "${fast_python-}" ] && [ -x "$dir/$fast_python" ] && [ "$dir/$fast_python" -ef "$py" ]; then
        f_line=$(stamp_line)
        if [ "${f_line%% *}" = "$fast_digest" ]; then
            fast_venv=$(fast_venv_check "$dir")
            case "$fast_venv" in
            "venv=ok "*) v=${fast_venv#venv=ok } ;;
            *) fast_venv= ;;
            esac
        fi
    fi
    if [ -n "$py" ]; then
        if [ -n "$fast_venv" ]; then
            :
        elif [ ! -e "$py" ]; then
            echo "python=missing"
            end
        # -S (no site import) saves a third of the start-up; the version is the same.
        elif v=$("$py" -S -c "import sys; print('%d.%d.%d' % sys.version_info[:3])" 2>&1); then
            :
        else
            v="unrunnable: $(printf '%s\n' "$v" | tail -n 2 | tr '\n' ' ')"
        fi
        echo "python=$v"
        [ "$v" = "$want" ] || end
    fi
    command -v rsync >/dev/null 2>&1 || { echo "rsync=missing"; end; }
    state=$(target_state)
    case "$state" in
    new | empty | marked) ;;
    *)
        echo "target=$state"
        echo "target_sample=$(sample)"
        end
        ;;
    esac
    if [ -n "$runs" ] && [ "$(runs_state "$runs")" = unsafe ]; then
        echo "runs=unsafe"
        end
    fi
    case "$dir" in */*) parent=${dir%/*} ;; *) parent=. ;; esac
    [ -n "$parent" ] || parent=/
    mkdir -p -- "$parent" || { echo "error=cannot create $parent"; end; }
    if [ -n "$break_holder" ] && [ "$(cat "$lock/holder" 2>/dev/null)" = "$break_holder" ]; then
        # Rename first: of two runs breaking the same stale lock, only one rename succeeds.
        mv -- "$lock" "$lock.stale.$$" 2>/dev/null && rm -rf -- "$lock.stale.$$"
    fi
    if mkdir -- "$lock" 2>/dev/null; then
        printf '%s\n' "$holder" >"$lock/holder" || { rm -rf -- "$lock"; echo "error=cannot write $lock/holder"; end; }
        took_lock=1
        echo "lock=acquired"
    else
        if [ ! -d "$lock" ]; then
            echo "error=cannot create the lock directory $lock"
            end
        fi
        echo "lock=held"
        h=$(head -n 1 "$lock/holder" 2>/dev/null)
        echo "lock_holder=$h"
        # A holder that renews its lock (beat) names ttl_min: stale once not renewed for that
        # long, by this node's clock; one that does not, STALE_MIN after it was made.
        ttl=$(printf '%s\n' "$h" | tr ' ' '\n' | sed -n 's/^ttl_min=\([0-9][0-9]*\)$/\1/p')
        [ -n "$(find "$lock" -prune -mmin +"${ttl:-$stale}" 2>/dev/null)" ] && echo "lock_stale=1"
        end
    fi
    [ -n "$runs" ] && runs_list "$runs"
    # A node that builds its own env: is it there (src/engine/sync/build.rs)?
    command -v env_preflight >/dev/null 2>&1 && env_preflight
    # Under the lock the state may have changed (another run finished in between).
    state=$(target_state)
    case "$state" in
    new | empty)
        if mkdir -p -- "$dir" && printf '%s\n' "$marker_text" >"$dir/$marker"; then
            echo "target=created"
            echo "clean=1"
        else
            release
            echo "error=cannot create $dir/$marker"
        fi
        ;;
    marked)
        echo "target=marked"
        # What the managed venv files were last made from (src/rebase.rs).
        [ -f "$dir/.pytest-cloud-rebased" ] && echo "rebased=$(cat "$dir/.pytest-cloud-rebased")"
        # A no-change re-sync ends here, in this one round trip (fast_path, below).
        if [ -n "${fast_digest-}" ] && fast_path; then end; fi
        # No stamp: an earlier sync stopped between rsync and its clean-up (interrupted,
        # killed), so bytecode of files it deleted may be left; this finish sweeps all of DIR.
        if [ -f "$dir/$synced" ] && rm -f -- "$dir/$synced"; then echo "clean=1"; else echo "clean=0"; fi
        ;;
    *)
        release
        echo "target=$state"
        echo "target_sample=$(sample)"
        ;;
    esac
    end
    ;;
finish)
    pth=$1 python=$2 rebase=$3 runs=$4 run_id=$5 lease=$6 nreap=$7
    shift 7
    while [ "$nreap" -gt 0 ]; do
        run_reap "$runs" "$1" "$2"
        shift 2
        nreap=$((nreap - 1))
    done
    sweep=$1 n=$2
    shift 2
    [ -f "$dir/$marker" ] || { release; echo "error=the marker $dir/$marker is gone"; end; }
    # A node that built its own env: DIR's venv becomes a link to it (src/engine/sync/build.rs).
    if command -v env_attach >/dev/null 2>&1; then
        env_attach "$dir" || { release; echo "error=cannot link the node's env into $dir"; end; }
    fi
    if [ -n "$rebase" ]; then
        if rebase_venv "$dir"; then echo "rebase=done"; else release; echo "error=the virtualenv could not be pointed at this node's interpreter"; end; fi
    fi
    # Bytecode whose source is gone: __pycache__/NAME.TAG[.opt-N].pyc belongs to ../NAME.py.
    # A changed source needs nothing: Python checks each .pyc against its source's mtime and
    # size, which rsync preserves. Only a sync that deleted NAME.py can leave such bytecode,
    # so normally only those are looked at; a sweep of the whole tree (thousands of files
    # with a venv) is for when the list of deletions may be incomplete.
    if [ "$sweep" = full ]; then
        find "$dir" -name __pycache__ -type d -prune -exec sh -c '
            for d do
                for f in "$d"/*.pyc; do
                    [ -e "$f" ] || continue
                    b=${f##*/}
                    [ -e "${d%/*}/${b%%.*}.py" ] || rm -f -- "$f"
                done
                rmdir -- "$d" 2>/dev/null
            done
            exit 0' sh {} +
    fi
    while [ "$n" -gt 0 ]; do
        f=$1
        shift
        n=$((n - 1))
        case "$f" in
        */*) parent=$dir/${f%/*} ;;
        *) parent=$dir ;;
        esac
        b=${f##*/}
        b=${b%.py}
        [ "$sweep" = listed ] && [ -d "$parent/__pycache__" ] && [ ! -e "$parent/$b.py" ] || continue
        rm -f -- "$parent/__pycache__/$b".*.pyc
        rmdir -- "$parent/__pycache__" 2>/dev/null
    done
    if [ -n "$pth" ]; then
        if [ $# -gt 0 ]; then
            # Rewritten only when it changes: writing it changes its directory's mtime, which
            # the next rsync would then have to set back.
            if [ ! -f "$dir/$pth" ] || [ "$(cat -- "$dir/$pth")" != "$(printf '%s\n' "$@")" ]; then
                printf '%s\n' "$@" >"$dir/$pth.tmp.$$" && mv -f -- "$dir/$pth.tmp.$$" "$dir/$pth" ||
                    { release; echo "error=cannot write $dir/$pth"; end; }
            fi
        else
            rm -f -- "$dir/$pth"
        fi
    fi
    # The digest ("-": none), and a nonce new with every sync into the base (kept trees).
    printf '%s %s\n' "${stamp_digest:--}" "${run_id:-$$}-$(date +%s)" >"$dir/$synced" || { release; echo "error=cannot write $dir/$synced"; end; }
    tree=$dir
    if [ -n "$run_id" ]; then
        run_make "$runs" "$run_id" "$lease" || { release; end; }
        tree=$runs/$run_id
    fi
    release
    if [ -n "$python" ]; then
        # The .pth lines are relative to its own directory (site-packages), so they hold in
        # any tree; checked where the run's workers will be.
        venv_check "$tree" "$python" "$pth" "$@"
    fi
    end
    ;;
renew)
    run_renew "$1" "$2" "$3"
    end
    ;;
reap)
    runs=$1 nreap=$2
    shift 2
    while [ "$nreap" -gt 0 ] && [ $# -ge 2 ]; do
        run_reap "$runs" "$1" "$2"
        shift 2
        nreap=$((nreap - 1))
    done
    end
    ;;
drop)
    run_drop "$1" "$2" "$3"
    end
    ;;
beat)
    # The heartbeat of a held lock: its mtime (src/engine/sync/beat.rs).
    if [ "$(cat "$lock/holder" 2>/dev/null)" = "$holder" ] && touch -c -- "$lock"; then echo "lock=renewed"; else echo "lock=lost"; fi
    end
    ;;
release)
    if [ ! -d "$lock" ]; then
        echo "lock=absent"
    elif [ "$(cat "$lock/holder" 2>/dev/null)" = "$holder" ]; then
        release
        if [ -d "$lock" ]; then echo "error=cannot remove $lock"; else echo "lock=released"; fi
    else
        echo "lock=other"
    fi
    end
    ;;
*)
    echo "error=unknown mode $mode"
    end
    ;;
esac
