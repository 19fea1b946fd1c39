# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pytest_cloud_global_optspecs
    string join \n h/help V/version
end

function __fish_pytest_cloud_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pytest_cloud_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pytest_cloud_using_subcommand
    set -l cmd (__fish_pytest_cloud_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -s h -l help -d 'Print help'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -s V -l version -d 'Print version'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "probe" -d 'Probe nodes over ssh, concurrently: CPUs, memory, Python, rsync. Writes an inventory'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "plan" -d 'Plan test processes per node from an inventory on stdin. Writes a plan'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "sync" -d 'Rsync the project root (virtualenv included) to every planned node. Writes a sync document'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "exec" -d 'Run a command on every synced node or slot. Writes JSON Lines'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "release" -d 'Remove the run trees a sync document holds on its nodes, with their leases'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "completions" -d 'Print a shell completion script (generated from these very definitions) on stdout'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "pytest" -d 'Run pytest with its workers on the nodes: probe, plan, sync, then pytest-xdist'
complete -c pytest-cloud -n "__fish_pytest_cloud_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l node -d 'Node to probe: [user@]host[:port] or an ssh config alias. Repeatable' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l nodes -d 'Space-separated nodes. Repeatable' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l python -d 'Python interpreter name or path to look for on each node (every python3.N on its PATH is reported too, as a candidate for running a virtualenv). Repeatable' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l deadline -d 'Give up on a node after this many seconds in all (its ssh is killed)' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l ssh-config -d 'ssh config file used for every ssh call (as `ssh -F`); default: ssh\'s own (~/.ssh/config and /etc/ssh/ssh_config)' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l connect-timeout -d 'ssh ConnectTimeout in seconds (TCP connect and banner)' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l control-persist -d 'Keep each node\'s shared ssh connection open this long after use; 0 = no sharing' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -l stdin -d 'Also read nodes from a document on stdin (an inventory or {"kind":"nodes"}); implied when no --node/--nodes is given'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -s q -l quiet -d 'No progress on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand probe" -s h -l help -d 'Print help'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -l mem-per-process -d 'Memory one test process needs, in MiB; caps slots at floor(available / this)' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -l max-processes -d 'At most this many processes per node' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -l python -d 'Interpreter on the nodes (a name or an absolute path): the one to run without a virtualenv; with one, the one it must run on [default: the first compatible of the venv\'s own base, python3.X, python3, other python3.N]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -l chdir -d 'Directory on each node, relative to the remote home [default: pytest_<local user>_<project root name>]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -l virtualenv-path -d 'The project\'s virtualenv, inside the project root [default: detected]' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -l source -d 'Project root [default: pytest\'s rootdir of the current directory]' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -l explain -d 'Print the arithmetic per node on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -s q -l quiet -d 'No progress on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand plan" -s h -l help -d 'Print help'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l source -d 'Project root to sync [default: the plan\'s source]' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l rsync-bandwidth-limit -d 'Bandwidth limit per rsync process in KB/s; 0 = unlimited' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l rsync-max-processes -d 'At most this many rsync processes at once [default: all nodes at once]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l rsync-cipher -d 'ssh cipher for rsync; "" or "none" leaves the choice to ssh' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l exclude -d 'Do not sync files matching this rsync pattern (also kept on the nodes). Repeatable. More rules, in rsync filter syntax, go in .pytest-cloud-ignore at the project root' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l develop-egg -d 'A package directory inside the project whose sources the nodes import from their synced copy (like `pip install -e`, with no pip or index on the node). Repeatable; adds to ini `cloud_develop_eggs`' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l env -d 'How each node gets its environment: sync (the venv travels with the project), build (the node builds one with uv for its own Python, cached there), auto (sync where the venv fits the node, build where it does not)' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l lock-wait -d 'Wait this long for another run\'s lock on a node\'s directory before dropping the node' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l keep-minutes -d 'Keep this run\'s tree on the nodes this long after the sync (and after each exec that uses it) before a later run may remove it; `pytest-cloud release` removes it at once' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l ssh-config -d 'ssh config file used for every ssh call (as `ssh -F`); default: ssh\'s own (~/.ssh/config and /etc/ssh/ssh_config)' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l connect-timeout -d 'ssh ConnectTimeout in seconds (TCP connect and banner)' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l control-persist -d 'Keep each node\'s shared ssh connection open this long after use; 0 = no sharing' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l include-git -d 'Sync .git directories too (excluded by default)'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -l wheelhouse -d 'Build nodes install with no index: the controller fetches the wheels for each build node\'s platform and Python and sends them (nodes without internet). Without it, the wheelhouse is used only after a node\'s index cannot be reached'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -s q -l quiet -d 'No progress on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand sync" -s h -l help -d 'Print help'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l per -d 'One job per node, or one per slot (worker) of each node' -r -f -a "node\t'One job per node'
slot\t'One job per slot: `slots` jobs on each node'"
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l jobs -d 'Jobs running at once [default: all of them]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l timeout -d 'Kill a job after this many seconds on its node; it is reported with `"timed_out": true`' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l tail-bytes -d 'Bytes of each job\'s stdout and stderr kept in its record (the last ones)' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l output-dir -d 'Save each job\'s full stdout and stderr as DIR/<job>/stdout and DIR/<job>/stderr (their paths are in the records)' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l ssh-config -d 'ssh config file used for every ssh call (as `ssh -F`); default: ssh\'s own (~/.ssh/config and /etc/ssh/ssh_config)' -r -F
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l connect-timeout -d 'ssh ConnectTimeout in seconds (TCP connect and banner)' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -l control-persist -d 'Keep each node\'s shared ssh connection open this long after use; 0 = no sharing' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -s q -l quiet -d 'No progress on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand exec" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand release" -l wait-pid -d 'First keep the leases renewed while process PID lives (what the launcher runs beside pytest), then release' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand release" -s q -l quiet -d 'No report on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand release" -s h -l help -d 'Print help'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand completions" -s h -l help -d 'Print help'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-node -d 'node to run tests on: [user@]host[:port] or an ssh alias; repeatable' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-nodes -d 'space-separated nodes; repeatable' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-python -d 'interpreter on the nodes (name, absolute path, or a version: 3.12 = python3.12) the venv must run on, or a node-built env is made for; unset: the first compatible of the venv\'s own base, python3.X, python3 [default: python3]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-env -d 'how each node gets its environment: sync (your venv travels), build (the node builds one with uv for its own Python), auto (sync where the venv fits the node, build where it does not) [default: auto]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-chdir -d 'directory on the nodes, relative to the remote home [default: pytest_<user>_<project>]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-virtualenv-path -d 'the project\'s virtualenv, inside the project [default: $VIRTUAL_ENV, .venv, venv]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-mem-per-process -d 'MiB one test process needs; caps processes per node' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-max-processes -d 'at most this many processes per node' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-rsync-bandwidth-limit -d 'KB/s per rsync process, 0 = unlimited [default: 5000]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-rsync-max-processes -d 'rsync processes at once [default: all nodes]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-rsync-cipher -d 'ssh cipher for rsync [default: aes128-gcm@openssh.com]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-ssh-config -d 'ssh config file for every ssh call [default: ssh\'s own]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-connect-timeout -d 'ssh ConnectTimeout in seconds [default: 5]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-node-timeout -d 'a node that answers nothing for this many seconds is lost and its tests run on the others (at least 4) [default: 12]' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-develop-egg -d 'package directory inside the project to install in develop mode on the nodes; repeatable' -r
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-wheelhouse -d 'build nodes install with no index: the controller fetches the wheels for each node\'s platform and Python and sends them (for nodes without internet; without it, only after a node\'s index cannot be reached)'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-timings -d 'print how long each phase took (probe, plan, sync, worker start, tests, teardown) as one JSON line on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-prepare -d 'probe, plan and sync, then print a session document instead of running pytest'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-quiet -d 'no header or progress on stderr'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand pytest" -l cloud-help -d 'this help'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "probe" -d 'Probe nodes over ssh, concurrently: CPUs, memory, Python, rsync. Writes an inventory'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "plan" -d 'Plan test processes per node from an inventory on stdin. Writes a plan'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "sync" -d 'Rsync the project root (virtualenv included) to every planned node. Writes a sync document'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "exec" -d 'Run a command on every synced node or slot. Writes JSON Lines'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "release" -d 'Remove the run trees a sync document holds on its nodes, with their leases'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "completions" -d 'Print a shell completion script (generated from these very definitions) on stdout'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "pytest" -d 'Run pytest with its workers on the nodes: probe, plan, sync, then pytest-xdist'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand help; and not __fish_seen_subcommand_from probe plan sync exec release completions pytest help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pytest-cloud -n "__fish_pytest_cloud_using_subcommand completions" -f -a "bash zsh fish"
