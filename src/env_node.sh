# pytest-cloud, node side of a node-built env (src/envbuild.rs, src/engine/sync/build.rs):
# POSIX sh read from stdin by `sh -s -- MODE ARGS...`, after a prelude that defines
# `env_requirements` (prints the requirements) and `env_overlay DIR` (writes the editable
# metadata, console scripts and .pth into DIR), with put_file from src/rebase_node.sh.
# Prints key=value lines; ends with env_node_end=1.
#
#   build ENVS KEY PY UV UVPART UVSHA WAIT_S [LINKS [PRUNE_MIN [RUN_ID LEASE]]]
#       ENVS/KEY is the env; it counts only with its marker ENVS/KEY/.pytest-cloud-env, written
#       last. Under the lock ENVS/KEY.lock (mkdir, atomic) a partial env is removed and the env
#       made anew: `UV venv --python PY`, `UV pip install -r` the requirements, env_overlay,
#       console scripts made relocatable, the marker. A run that finds the lock held waits
#       (up to WAIT_S seconds) for the marker, so concurrent runs of one key build it once.
#       LINKS not empty: install from that directory of wheels only (--no-index
#       --find-links), for a node that reaches no index.
#       UVSHA not empty: UVPART is a binary the controller just sent (a name of this run's
#       own: two runs may send one at once), checked against that sha256 and renamed to UV.
#       After a build, envs unused for PRUNE_MIN minutes are removed (prune_envs).
#       RUN_ID and LEASE: the run that uses the env, recorded as ENVS/KEY.users/RUN_ID (one
#       line: the absolute path of its run tree's lease), as the pre-flight does for an env
#       it finds; pruning keeps an env while a user's lease is live (env_in_use).
#   prune ENVS MAX_AGE_MIN KEEP_KEY
#       removes envs whose marker was not touched for MAX_AGE_MIN minutes and that no live
#       run uses (prune_envs).
set -u
mode=$1
shift
env_marker=.pytest-cloud-env
envs_marker=.pytest-cloud-envs

end() {
    echo "env_node_end=1"
    exit 0
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum -- "$1" | cut -d ' ' -f 1
    else
        shasum -a 256 -- "$1" | cut -d ' ' -f 1
    fi
}

# Whether an env is used by a live run: a record in its USERS directory names a lease that
# exists and was renewed within the ttl_min its holder line names (the rule by which sync
# reaps run trees, share/doc/sync-safety.md), or names a lease not made yet by a record
# younger than an hour (a sync under way: the pre-flight records, the run tree comes later).
# Records of runs that are over (lease gone, or stale) are removed.
env_in_use() {
    u_dir=$1
    [ -d "$u_dir" ] || return 1
    u_live=1
    for u_rec in "$u_dir"/*; do
        [ -f "$u_rec" ] || continue
        u_lease=$(head -n 1 -- "$u_rec" 2>/dev/null)
        if [ -n "$u_lease" ] && [ -f "$u_lease" ]; then
            u_ttl=$(head -n 1 -- "$u_lease" 2>/dev/null | tr ' ' '\n' | sed -n 's/^ttl_min=\([0-9][0-9]*\)$/\1/p')
            if [ -z "$(find "$u_lease" -prune -mmin +"${u_ttl:-60}" 2>/dev/null)" ]; then
                u_live=0
                continue
            fi
        elif [ -z "$(find "$u_rec" -prune -mmin +60 2>/dev/null)" ]; then
            u_live=0
            continue
        fi
        rm -f -- "$u_rec"
    done
    return $u_live
}

# Records that run RUN_ID (lease LEASE) uses ENV.
env_user() {
    [ -n "$2" ] || return 0
    mkdir -p -- "$1.users" 2>/dev/null && printf '%s\n' "$3" >"$1.users/$2"
    return 0
}

# Removes envs in ENVS whose marker was not touched (by a pre-flight that found it) for AGE
# minutes, but never KEEP, one being built (its lock is there), one a live run uses
# (env_in_use), or one without a marker. Renamed first: a run reaching for it sees it whole
# or not at all.
prune_envs() {
    p_envs=$1 p_age=$2 p_keep=$3
    [ -f "$p_envs/$envs_marker" ] || return 0
    for m in "$p_envs"/*/"$env_marker"; do
        [ -f "$m" ] || continue
        d=${m%/*}
        k=${d##*/}
        [ "$k" = "$p_keep" ] && continue
        [ -e "$d.lock" ] && continue
        [ -n "$(find "$m" -prune -mmin +"$p_age" 2>/dev/null)" ] || continue
        if env_in_use "$d.users"; then
            echo "kept_in_use=$k"
            continue
        fi
        mv -- "$d" "$d.pruned.$$" 2>/dev/null && rm -rf -- "$d.pruned.$$" "$d.users" && echo "pruned=$k"
    done
    return 0
}

case "$mode" in
build)
    envs=$1 key=$2 py=$3 uv=$4 uvpart=$5 uvsha=$6 wait_s=$7 links=${8-} prune_min=${9-} run_id=${10-} lease=${11-}
    env=$envs/$key
    lock=$env.lock
    # An empty one is another run's, between its mkdir and its marker (two runs at once).
    if [ -e "$envs" ] && [ ! -f "$envs/$envs_marker" ] && [ -n "$(ls -A -- "$envs" 2>/dev/null)" ]; then
        echo "error=$envs exists and was not made by pytest-cloud (no $envs_marker); remove it or let pytest-cloud make it"
        end
    fi
    mkdir -p -- "$envs" || { echo "error=cannot create $envs"; end; }
    [ -f "$envs/$envs_marker" ] || printf '%s\n' "Made by pytest-cloud: environments built on this node, one per key; unused ones are removed." >"$envs/$envs_marker"
    if [ -n "$uvsha" ]; then
        got=$(sha256_of "$uvpart" 2>/dev/null)
        if [ "$got" != "$uvsha" ]; then
            rm -f -- "$uvpart"
            echo "error=the uv binary sent to $uvpart has sha256 ${got:-unreadable}, not $uvsha"
            end
        fi
        chmod 755 "$uvpart" && mv -f -- "$uvpart" "$uv" || { rm -f -- "$uvpart"; echo "error=cannot install $uv"; end; }
        echo "uv=installed"
    fi
    [ -x "$uv" ] || { echo "error=no uv at $uv"; end; }
    waited=0
    while :; do
        if [ -f "$env/$env_marker" ]; then
            touch -c -- "$env/$env_marker"
            env_user "$env" "$run_id" "$lease"
            echo "env=ready"
            echo "env_waited_s=$waited"
            end
        fi
        if mkdir -- "$lock" 2>/dev/null; then
            printf '%s\n' "pid=$$ started_unix=$(date +%s)" >"$lock/holder"
            break
        fi
        if [ -n "$(find "$lock" -prune -mmin +60 2>/dev/null)" ]; then
            # A builder that died an hour ago: rename first, so one of two runs takes it over.
            mv -- "$lock" "$lock.stale.$$" 2>/dev/null && rm -rf -- "$lock.stale.$$"
            continue
        fi
        if [ "$waited" -ge "$wait_s" ]; then
            echo "error=another run has been building $env for ${waited} s (lock $lock: $(cat "$lock/holder" 2>/dev/null)); remove the lock if that run is gone"
            end
        fi
        [ "$waited" -eq 0 ] && echo "env_waiting=1"
        sleep 1
        waited=$((waited + 1))
    done
    echo "env=building"
    started=$(date +%s)
    log=$lock/log
    # A partial env (no marker: a build that was cut short) is never used: made anew.
    rm -rf -- "$env"
    export UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR="${PYTEST_CLOUD_UV_CACHE_DIR:-$envs/../uv-cache}" UV_NO_PROGRESS=1
    # The node's own certificate store, as pip and curl there use it (uv's bundled roots
    # alone fail behind a proxy whose CA the node trusts: "invalid peer certificate:
    # UnknownIssuer"); verification stays on. UV_NATIVE_TLS is the older uv's name for it.
    export UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1
    unset VIRTUAL_ENV UV_PROJECT_ENVIRONMENT CONDA_PREFIX 2>/dev/null
    ok=1
    "$uv" venv --quiet --python "$py" -- "$env" >"$log" 2>&1 || ok=0
    if [ "$ok" = 1 ]; then
        env_requirements >"$env/.pytest-cloud-requirements.txt" || ok=0
    fi
    if [ "$ok" = 1 ]; then
        if [ -n "$links" ]; then
            "$uv" pip install --quiet --python "$env/bin/python" --no-index --find-links "$links" -r "$env/.pytest-cloud-requirements.txt" >>"$log" 2>&1 || ok=0
        else
            "$uv" pip install --quiet --python "$env/bin/python" -r "$env/.pytest-cloud-requirements.txt" >>"$log" 2>&1 || ok=0
        fi
    fi
    if [ "$ok" = 0 ]; then
        echo "env=failed"
        # uv's own headline (which package, why) comes before a build's long output.
        grep -E 'Failed to (build|download|fetch|prepare)|No solution found|Because |there is no version|has no wheels|^error:' -- "$log" 2>/dev/null | head -n 8 | sed 's/^/env_error=/'
        tail -n 40 -- "$log" 2>/dev/null | sed 's/^/env_message=/'
        rm -rf -- "$env" "$lock"
        end
    fi
    env_overlay "$env" || { rm -rf -- "$env" "$lock"; echo "env=failed"; echo "env_message=cannot write the editable files into $env"; end; }
    # Scripts uv wrote run $env/bin/python by its absolute path: a run tree reaches the env
    # through its own link, and its interpreter must see that path (to import the run tree's
    # sources). Make them run the python beside the path they were called by.
    for f in "$env"/bin/*; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        first=$(head -n 1 -- "$f" 2>/dev/null)
        case "$first" in
        "#!$env/bin/python" | "#!$env/bin/python3" | "#!$env/bin/python"[0-9]*)
            {
                printf '%s\n' '#!/bin/sh' "'''exec' \"\$(dirname -- \"\$0\")\"/python \"\$0\" \"\$@\"" "' '''"
                tail -n +2 -- "$f"
            } >"$f.pytest-cloud-new" && chmod 755 "$f.pytest-cloud-new" && mv -f -- "$f.pytest-cloud-new" "$f"
            ;;
        esac
    done
    rm -f -- "$env"/bin/activate*
    from=index
    [ -n "$links" ] && from="wheels:$links"
    printf '%s\n' "key=$key python=$py built_unix=$(date +%s) from=$from" >"$env/$env_marker" || { rm -rf -- "$env" "$lock"; echo "error=cannot write $env/$env_marker"; end; }
    rm -rf -- "$lock"
    env_user "$env" "$run_id" "$lease"
    echo "env=built"
    echo "env_build_s=$(($(date +%s) - started))"
    # A new env is the moment old ones may go (a node whose envs never change grows no more).
    [ -n "${prune_min:-}" ] && prune_envs "$envs" "$prune_min" "$key"
    end
    ;;
prune)
    prune_envs "$1" "$2" "$3"
    end
    ;;
*)
    echo "error=unknown mode $mode"
    end
    ;;
esac
