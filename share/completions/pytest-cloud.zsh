#compdef pytest-cloud

autoload -U is-at-least

_pytest-cloud() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_pytest-cloud_commands" \
"*::: :->pytest-cloud" \
&& ret=0
    case $state in
    (pytest-cloud)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:pytest-cloud-command-$line[1]:"
        case $line[1] in
            (probe)
_arguments "${_arguments_options[@]}" : \
'*--node=[Node to probe\: \[user@\]host\[\:port\] or an ssh config alias. Repeatable]:NODE:_default' \
'*--nodes=[Space-separated nodes. Repeatable]:'N1 N2 ...':_default' \
'*--python=[Python interpreter name or path to look for on each node (every python3.N on its PATH is reported too, as a candidate for running a virtualenv). Repeatable]:NAME:_default' \
'--deadline=[Give up on a node after this many seconds in all (its ssh is killed)]:SECS:_default' \
'--ssh-config=[ssh config file used for every ssh call (as \`ssh -F\`); default\: ssh'\''s own (~/.ssh/config and /etc/ssh/ssh_config)]:FILE:_files' \
'--connect-timeout=[ssh ConnectTimeout in seconds (TCP connect and banner)]:SECS:_default' \
'--control-persist=[Keep each node'\''s shared ssh connection open this long after use; 0 = no sharing]:SECS:_default' \
'--stdin[Also read nodes from a document on stdin (an inventory or {"kind"\:"nodes"}); implied when no --node/--nodes is given]' \
'-q[No progress on stderr]' \
'--quiet[No progress on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(plan)
_arguments "${_arguments_options[@]}" : \
'--mem-per-process=[Memory one test process needs, in MiB; caps slots at floor(available / this)]:MB:_default' \
'--max-processes=[At most this many processes per node]:N:_default' \
'--python=[Interpreter on the nodes (a name or an absolute path)\: the one to run without a virtualenv; with one, the one it must run on \[default\: the first compatible of the venv'\''s own base, python3.X, python3, other python3.N\]]:NAME:_default' \
'--chdir=[Directory on each node, relative to the remote home \[default\: pytest_<local user>_<project root name>\]]:DIR:_default' \
'--virtualenv-path=[The project'\''s virtualenv, inside the project root \[default\: detected\]]:PATH:_files' \
'--source=[Project root \[default\: pytest'\''s rootdir of the current directory\]]:DIR:_files' \
'--explain[Print the arithmetic per node on stderr]' \
'-q[No progress on stderr]' \
'--quiet[No progress on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(sync)
_arguments "${_arguments_options[@]}" : \
'--source=[Project root to sync \[default\: the plan'\''s source\]]:DIR:_files' \
'--rsync-bandwidth-limit=[Bandwidth limit per rsync process in KB/s; 0 = unlimited]:KBPS:_default' \
'--rsync-max-processes=[At most this many rsync processes at once \[default\: all nodes at once\]]:N:_default' \
'--rsync-cipher=[ssh cipher for rsync; "" or "none" leaves the choice to ssh]:CIPHER:_default' \
'*--exclude=[Do not sync files matching this rsync pattern (also kept on the nodes). Repeatable. More rules, in rsync filter syntax, go in .pytest-cloud-ignore at the project root]:PATTERN:_default' \
'*--develop-egg=[A package directory inside the project whose sources the nodes import from their synced copy (like \`pip install -e\`, with no pip or index on the node). Repeatable; adds to ini \`cloud_develop_eggs\`]:PATH:_files' \
'--env=[How each node gets its environment\: sync (the venv travels with the project), build (the node builds one with uv for its own Python, cached there), auto (sync where the venv fits the node, build where it does not)]:auto|sync|build:_default' \
'--lock-wait=[Wait this long for another run'\''s lock on a node'\''s directory before dropping the node]:SECS:_default' \
'--keep-minutes=[Keep this run'\''s tree on the nodes this long after the sync (and after each exec that uses it) before a later run may remove it; \`pytest-cloud release\` removes it at once]:MINUTES:_default' \
'--ssh-config=[ssh config file used for every ssh call (as \`ssh -F\`); default\: ssh'\''s own (~/.ssh/config and /etc/ssh/ssh_config)]:FILE:_files' \
'--connect-timeout=[ssh ConnectTimeout in seconds (TCP connect and banner)]:SECS:_default' \
'--control-persist=[Keep each node'\''s shared ssh connection open this long after use; 0 = no sharing]:SECS:_default' \
'--include-git[Sync .git directories too (excluded by default)]' \
'--wheelhouse[Build nodes install with no index\: the controller fetches the wheels for each build node'\''s platform and Python and sends them (nodes without internet). Without it, the wheelhouse is used only after a node'\''s index cannot be reached]' \
'-q[No progress on stderr]' \
'--quiet[No progress on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(exec)
_arguments "${_arguments_options[@]}" : \
'--per=[One job per node, or one per slot (worker) of each node]:PER:((node\:"One job per node"
slot\:"One job per slot\: \`slots\` jobs on each node"))' \
'--jobs=[Jobs running at once \[default\: all of them\]]:N:_default' \
'--timeout=[Kill a job after this many seconds on its node; it is reported with \`"timed_out"\: true\`]:SECS:_default' \
'--tail-bytes=[Bytes of each job'\''s stdout and stderr kept in its record (the last ones)]:N:_default' \
'--output-dir=[Save each job'\''s full stdout and stderr as DIR/<job>/stdout and DIR/<job>/stderr (their paths are in the records)]:DIR:_files' \
'--ssh-config=[ssh config file used for every ssh call (as \`ssh -F\`); default\: ssh'\''s own (~/.ssh/config and /etc/ssh/ssh_config)]:FILE:_files' \
'--connect-timeout=[ssh ConnectTimeout in seconds (TCP connect and banner)]:SECS:_default' \
'--control-persist=[Keep each node'\''s shared ssh connection open this long after use; 0 = no sharing]:SECS:_default' \
'-q[No progress on stderr]' \
'--quiet[No progress on stderr]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'*::command -- The command to run, after `--`, as words\: each reaches the node as one word. {node} {slot} {slots} {worker} {dir} {python} are replaced per job:_default' \
&& ret=0
;;
(release)
_arguments "${_arguments_options[@]}" : \
'--wait-pid=[First keep the leases renewed while process PID lives (what the launcher runs beside pytest), then release]:PID:_default' \
'-q[No report on stderr]' \
'--quiet[No report on stderr]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
':shell -- Shell to write the completion script for:(bash zsh fish)' \
&& ret=0
;;
(pytest)
_arguments "${_arguments_options[@]}" : \
'*--cloud-node=[node to run tests on\: \[user@\]host\[\:port\] or an ssh alias; repeatable]:VALUE:_default' \
'*--cloud-nodes=[space-separated nodes; repeatable]:VALUE:_default' \
'*--cloud-python=[interpreter on the nodes (name, absolute path, or a version\: 3.12 = python3.12) the venv must run on, or a node-built env is made for; unset\: the first compatible of the venv'\''s own base, python3.X, python3 \[default\: python3\]]:VALUE:_default' \
'*--cloud-env=[how each node gets its environment\: sync (your venv travels), build (the node builds one with uv for its own Python), auto (sync where the venv fits the node, build where it does not) \[default\: auto\]]:VALUE:_default' \
'*--cloud-chdir=[directory on the nodes, relative to the remote home \[default\: pytest_<user>_<project>\]]:VALUE:_default' \
'*--cloud-virtualenv-path=[the project'\''s virtualenv, inside the project \[default\: \$VIRTUAL_ENV, .venv, venv\]]:VALUE:_default' \
'*--cloud-mem-per-process=[MiB one test process needs; caps processes per node]:VALUE:_default' \
'*--cloud-max-processes=[at most this many processes per node]:VALUE:_default' \
'*--cloud-rsync-bandwidth-limit=[KB/s per rsync process, 0 = unlimited \[default\: 5000\]]:VALUE:_default' \
'*--cloud-rsync-max-processes=[rsync processes at once \[default\: all nodes\]]:VALUE:_default' \
'*--cloud-rsync-cipher=[ssh cipher for rsync \[default\: aes128-gcm@openssh.com\]]:VALUE:_default' \
'*--cloud-ssh-config=[ssh config file for every ssh call \[default\: ssh'\''s own\]]:VALUE:_default' \
'*--cloud-connect-timeout=[ssh ConnectTimeout in seconds \[default\: 5\]]:VALUE:_default' \
'*--cloud-node-timeout=[a node that answers nothing for this many seconds is lost and its tests run on the others (at least 4) \[default\: 12\]]:VALUE:_default' \
'*--cloud-develop-egg=[package directory inside the project to install in develop mode on the nodes; repeatable]:VALUE:_default' \
'--cloud-wheelhouse[build nodes install with no index\: the controller fetches the wheels for each node'\''s platform and Python and sends them (for nodes without internet; without it, only after a node'\''s index cannot be reached)]' \
'--cloud-timings[print how long each phase took (probe, plan, sync, worker start, tests, teardown) as one JSON line on stderr]' \
'--cloud-prepare[probe, plan and sync, then print a session document instead of running pytest]' \
'--cloud-quiet[no header or progress on stderr]' \
'--cloud-help[this help]' \
'*::rest -- every other argument goes to pytest unchanged (paths, -k, -m, -x, --dist, ...):_default' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_pytest-cloud__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:pytest-cloud-help-command-$line[1]:"
        case $line[1] in
            (probe)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(plan)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(sync)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(exec)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(release)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(completions)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(pytest)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_pytest-cloud_commands] )) ||
_pytest-cloud_commands() {
    local commands; commands=(
'probe:Probe nodes over ssh, concurrently\: CPUs, memory, Python, rsync. Writes an inventory' \
'plan:Plan test processes per node from an inventory on stdin. Writes a plan' \
'sync:Rsync the project root (virtualenv included) to every planned node. Writes a sync document' \
'exec:Run a command on every synced node or slot. Writes JSON Lines' \
'release:Remove the run trees a sync document holds on its nodes, with their leases' \
'completions:Print a shell completion script (generated from these very definitions) on stdout' \
'pytest:Run pytest with its workers on the nodes\: probe, plan, sync, then pytest-xdist' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'pytest-cloud commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__completions_commands] )) ||
_pytest-cloud__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud completions commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__exec_commands] )) ||
_pytest-cloud__subcmd__exec_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud exec commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help_commands] )) ||
_pytest-cloud__subcmd__help_commands() {
    local commands; commands=(
'probe:Probe nodes over ssh, concurrently\: CPUs, memory, Python, rsync. Writes an inventory' \
'plan:Plan test processes per node from an inventory on stdin. Writes a plan' \
'sync:Rsync the project root (virtualenv included) to every planned node. Writes a sync document' \
'exec:Run a command on every synced node or slot. Writes JSON Lines' \
'release:Remove the run trees a sync document holds on its nodes, with their leases' \
'completions:Print a shell completion script (generated from these very definitions) on stdout' \
'pytest:Run pytest with its workers on the nodes\: probe, plan, sync, then pytest-xdist' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'pytest-cloud help commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__completions_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__completions_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help completions commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__exec_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__exec_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help exec commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__help_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help help commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__plan_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__plan_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help plan commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__probe_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__probe_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help probe commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__pytest_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__pytest_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help pytest commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__release_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__release_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help release commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__help__subcmd__sync_commands] )) ||
_pytest-cloud__subcmd__help__subcmd__sync_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud help sync commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__plan_commands] )) ||
_pytest-cloud__subcmd__plan_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud plan commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__probe_commands] )) ||
_pytest-cloud__subcmd__probe_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud probe commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__pytest_commands] )) ||
_pytest-cloud__subcmd__pytest_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud pytest commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__release_commands] )) ||
_pytest-cloud__subcmd__release_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud release commands' commands "$@"
}
(( $+functions[_pytest-cloud__subcmd__sync_commands] )) ||
_pytest-cloud__subcmd__sync_commands() {
    local commands; commands=()
    _describe -t commands 'pytest-cloud sync commands' commands "$@"
}

if [ "$funcstack[1]" = "_pytest-cloud" ]; then
    _pytest-cloud "$@"
else
    compdef _pytest-cloud pytest-cloud
fi
