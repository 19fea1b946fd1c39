# pytest-cloud node probe: POSIX sh, no Python packages needed. Arguments: the Python code
# that prints an interpreter's ABI facts (src/interp.rs ABI_CODE), then interpreter names.
# Prints key=value lines; the Rust side (src/engine/probe.rs) interprets them. Never fails early:
# whatever it cannot read it leaves out.
echo "pytest_cloud_probe=1"
# One uname for three facts (it prints them in this order: kernel name, node name, machine).
read -r os host arch <<UNAME
$(uname -snm 2>/dev/null)
UNAME
echo "os=$os"
echo "arch=$arch"
echo "hostname=$host"
echo "user=$(id -un 2>/dev/null)"
echo "home=$HOME"
case "$os" in
Linux)
    # nproc honours the affinity mask (taskset, cpusets).
    echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"
    while read -r key val unit; do
        case "$key" in
        MemTotal:) echo "mem_total_kb=$val" ;;
        MemAvailable:) echo "mem_available_kb=$val" ;;
        esac
    done < /proc/meminfo
    # cgroup v2: limits of our cgroup and every ancestor apply.
    cg=$(sed -n 's/^0:://p' /proc/self/cgroup 2>/dev/null)
    if [ -n "$cg" ] && [ -d /sys/fs/cgroup ]; then
        p=$cg
        while :; do
            d=/sys/fs/cgroup${p%/}
            # read, not cat: a builtin, no process per file.
            [ -r "$d/cpu.max" ] && IFS= read -r v <"$d/cpu.max" && echo "cgroup_cpu_max=$v"
            [ -r "$d/memory.max" ] && IFS= read -r v <"$d/memory.max" && echo "cgroup_memory_max=$v"
            [ "$p" = "/" ] || [ -z "$p" ] && break
            case "$p" in /*/*) p=${p%/*} ;; *) p=/ ;; esac
        done
    fi
    # cgroup v1
    if [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        echo "cgroup_cpu_max=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
    fi
    if [ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
        echo "cgroup_memory_max=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
    fi
    ;;
Darwin)
    echo "cpus=$(sysctl -n hw.logicalcpu 2>/dev/null)"
    echo "mem_total_kb=$(( $(sysctl -n hw.memsize) / 1024 ))"
    ps=$(sysctl -n hw.pagesize 2>/dev/null)
    vm_stat 2>/dev/null | while IFS=: read -r k v; do
        v=$(echo "$v" | tr -dc 0-9)
        case "$k" in
        "Pages free"|"Pages inactive"|"Pages speculative"|"Pages purgeable") echo "mem_pages=$v $ps" ;;
        esac
    done
    ;;
esac
if command -v rsync >/dev/null 2>&1; then
    echo "rsync=$(rsync --version 2>/dev/null | sed -n '1s/.*version \([^ ]*\).*/\1/p')"
fi
# musl's loader prints its version; a musl Python has no glibc to report.
for m in /lib/ld-musl-*.so.1; do
    [ -x "$m" ] && echo "musl=$("$m" 2>&1 | sed -n 's/^Version //p')"
    break
done
# uv, for a node that builds its own env (src/envbuild.rs): the one on PATH and those
# pytest-cloud sent earlier (~/.cache/pytest-cloud/bin/uv-VERSION), with their versions.
for u in "$(command -v uv 2>/dev/null)" "$HOME"/.cache/pytest-cloud/bin/uv-*; do
    case "$u" in "" | *.part*) continue ;; esac
    [ -f "$u" ] && [ -x "$u" ] || continue
    echo "uv=$u	$("$u" --version 2>/dev/null | head -n 1)"
done
abi_code=$1
shift
# Candidates: the names asked for, then every python3.N on PATH (a venv made from any 3.N
# may be rebased onto it). Each distinct file runs once (-I -S: no site, no imports).
tab=$(printf '\t')
nl='
'
names=
add_name() {
    case "$nl$names" in *"$nl$1$nl"*) ;; *) names="$names$1$nl" ;; esac
}
for py in "$@"; do add_name "$py"; done
ifs=$IFS
IFS=:
for d in $PATH; do
    for f in "$d"/python3.[0-9] "$d"/python3.[0-9][0-9] "$d"/python3.[0-9]t "$d"/python3.[0-9][0-9]t; do
        [ -x "$f" ] && add_name "${f##*/}"
    done
done
IFS=$ifs
# Lines "realpath<TAB>output" of the interpreters already run.
seen=
while IFS= read -r py; do
    [ -n "$py" ] || continue
    path=$(command -v "$py" 2>/dev/null) || continue
    real=$(readlink -f "$path" 2>/dev/null) || real=$path
    out=$(printf '%s\n' "$seen" | while IFS= read -r line; do
        case "$line" in "$real$tab"*) printf '%s\n' "${line#*"$tab"}"; break ;; esac
    done)
    if [ -z "$out" ]; then
        out=$("$path" -I -S -c "$abi_code" 2>/dev/null) || continue
        seen="$seen$real$tab$out$nl"
    fi
    printf 'python=%s\t%s\t%s\n' "$py" "$path" "$out"
done <<NAMES
$names
NAMES
echo "pytest_cloud_probe_end=1"
