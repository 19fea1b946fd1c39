# pytest-cloud sync, node side: POSIX sh, read from stdin by `sh -s -- MODE ARGS...`.
# Prints key=value lines that src/engine/sync/node.rs reads; ends with sync_node_end=1 when it got
# through. It never deletes outside DIR, and inside DIR only after seeing the marker.
#
#   preflight DIR LOCK HOLDER STALE_MIN BREAK_HOLDER BASE_PY WANT_VERSION MARKER_TEXT
#       1. the venv's base interpreter BASE_PY must run and be WANT_VERSION ("" = no venv);
#       2. DIR must be absent, empty, or carry the marker (else target=unsafe, untouched);
#       3. take the lock (mkdir LOCK, atomic), breaking it first if its holder is
#          BREAK_HOLDER (judged stale by the caller);
#       4. under the lock, create DIR and its marker when needed, and say whether the last
#          sync into DIR ran to its end (clean=1: the stamp DIR/.pytest-cloud-synced was
#          there; it is removed now, and finish writes it again).
#   finish DIR LOCK HOLDER PTH PYTHON SWEEP N DELETED1..DELETEDN ENTRY...
#       remove orphan bytecode (SWEEP=full: anywhere in DIR; SWEEP=listed: only that of the
#       N deleted .py files rsync reported, paths relative to DIR), write (or remove) the
#       editable .pth at DIR/PTH with ENTRY lines (only when it changes), check PYTHON runs
#       with every ENTRY on sys.path, write the stamp, release the lock.
#   release DIR LOCK HOLDER
#       remove LOCK if HOLDER holds it.
set -u
marker=.pytest-cloud-target
synced=.pytest-cloud-synced
mode=$1
shift
dir=$1 lock=$2 holder=$3
shift 3

end() {
    echo "sync_node_end=1"
    exit 0
}

release() {
    # Only our own lock: another run may have broken a stale one of ours and taken it.
    if [ -d "$lock" ] && [ "$(cat "$lock/holder" 2>/dev/null)" = "$holder" ]; then
        rm -rf -- "$lock"
    fi
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

case "$mode" in
preflight)
    stale=$1 break_holder=$2 py=$3 want=$4 marker_text=$5
    if [ -n "$py" ]; then
        if [ ! -e "$py" ]; then
            echo "python=missing"
            end
        fi
        # -S (no site import) saves a third of the start-up; the version is the same.
        if v=$("$py" -S -c "import sys; print('%d.%d.%d' % sys.version_info[:3])" 2>&1); then
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
    parent=$(dirname -- "$dir")
    mkdir -p -- "$parent" || { echo "error=cannot create $parent"; end; }
    if [ -n "$break_holder" ] && [ "$(cat "$lock/holder" 2>/dev/null)" = "$break_holder" ]; then
        # Rename first: of two runs breaking the same stale lock, only one rename succeeds.
        mv -- "$lock" "$lock.stale.$$" 2>/dev/null && rm -rf -- "$lock.stale.$$"
    fi
    if mkdir -- "$lock" 2>/dev/null; then
        printf '%s\n' "$holder" >"$lock/holder" || { rm -rf -- "$lock"; echo "error=cannot write $lock/holder"; end; }
        echo "lock=acquired"
    else
        if [ ! -d "$lock" ]; then
            echo "error=cannot create the lock directory $lock"
            end
        fi
        echo "lock=held"
        echo "lock_holder=$(head -n 1 "$lock/holder" 2>/dev/null)"
        [ -n "$(find "$lock" -prune -mmin +"$stale" 2>/dev/null)" ] && echo "lock_stale=1"
        end
    fi
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
    pth=$1 python=$2 sweep=$3 n=$4
    shift 4
    [ -f "$dir/$marker" ] || { release; echo "error=the marker $dir/$marker is gone"; end; }
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
    if [ -n "$python" ]; then
        if out=$("$python" -c '
import sys
missing = [p for p in sys.argv[1:] if p not in sys.path]
if missing:
    sys.exit("not on sys.path: " + " ".join(missing))
print("%d.%d.%d" % sys.version_info[:3])' "$@" 2>&1); then
            echo "venv=ok $out"
        else
            echo "venv=failed"
            printf '%s\n' "$out" | tail -n 5 | sed 's/^/venv_message=/'
        fi
    fi
    : >"$dir/$synced" || { release; echo "error=cannot write $dir/$synced"; end; }
    release
    end
    ;;
release)
    release
    end
    ;;
*)
    echo "error=unknown mode $mode"
    end
    ;;
esac
