"""pytest plugin: the pytest-cloud 5.x command line (``--cloud-node`` ...) on top of the binary.

On the xdist controller, when at least one node is given, ``pytest_configure`` runs
``<binary> pytest --cloud-prepare --cloud-...=VALUE ...``. The binary probes the nodes, plans
the workers and syncs the project root (venv included) to every node, then prints ONE
``session`` JSON document on stdout (schema: share/doc/schema.md); its stderr (progress,
dropped nodes) goes straight to the user. The plugin then sets ``--tx``, ``--dist`` (only when
the user left it at ``no``) and ``--max-worker-restart`` (only when the user did not give one)
before pytest-xdist creates its DSession (xdist's ``pytest_configure`` is ``trylast``; ours is
``tryfirst``), and activates the controller glue in-process.

It does nothing on xdist workers (they receive the controller's ``--cloud-*`` arguments too),
nothing when no node is given, and nothing when pytest only shows something (``--help``,
``--markers``, ``--fixtures``, ``--fixtures-per-test``, ``--cache-show``, ``--collect-only``:
``SHOW_ONLY_OPTIONS``), so a ``--cloud-node`` in ``addopts`` costs those no probe or sync.
Nothing is looked up at import time.

Exit codes: the binary's own code when it fails (64 usage, 69 no usable node, 72 missing
tool, 75 node directory locked, see share/doc/exit-codes.md); 4 (usage error) when the binary
cannot be found, is of another version than the plugin (pytest_cloud.binary), or prints
something that is not a session document.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pytest_cloud import binary, glue
from pytest_cloud import options as cloud_options

BINARY_ENV = binary.BINARY_ENV
SESSION_FORMAT_VERSION = 1
_SESSION_KEY = pytest.StashKey[dict]()
_BINARY_KEY = pytest.StashKey[binary.Found]()


def _help(option: dict[str, Any]) -> str:
    default = option["default"]
    return f"{option['help']} [default: {default}]" if default else option["help"]


def _dest(name: str) -> str:
    return name[2:].replace("-", "_")


# The binary's own option table (src/options.rs), as generated into options.py: the options
# the plugin registers, with the binary's help and defaults, so both say the same. The
# value options are passed on to the binary as --cloud-x=VALUE when given.
_PLUGIN_OPTIONS = [o for o in cloud_options.OPTIONS if o["plugin"]]
_VALUE_OPTIONS = [
    (o["name"], _dest(o["name"]), int if o["kind"] == "integer" else str, _help(o))
    for o in _PLUGIN_OPTIONS
    if o["kind"] in ("text", "path", "integer")
]


# Flags the binary acts on, passed on as given (--cloud-timings is the plugin's own: it merges the
# binary's phases with xdist's).
_FORWARDED_FLAGS = [
    (o["name"], _dest(o["name"]))
    for o in _PLUGIN_OPTIONS
    if o["kind"] == "flag" and o["name"] != "--cloud-timings"
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cloud", "distributed testing on ssh nodes (pytest-cloud)")
    for o in _PLUGIN_OPTIONS:
        if o["kind"] == "nodes":
            # One list for --cloud-node and --cloud-nodes, so the nodes keep their order.
            group.addoption(o["name"], action="append", dest="cloud_node", default=[],
                            metavar=o["metavar"], help=_help(o))
        elif o["kind"] == "flag":
            group.addoption(o["name"], action="store_true", dest=_dest(o["name"]), default=False,
                            help=_help(o))
    for option, dest, type_, help_ in _VALUE_OPTIONS:
        group.addoption(option, action="store", dest=dest, type=type_, default=None, help=help_)
    group.addoption("--cloud-binary", action="store", dest="cloud_binary", default=None,
                    metavar="PATH",
                    help=f"the pytest-cloud binary [default: ${BINARY_ENV}, else the one installed "
                         "beside this Python, else pytest-cloud on PATH]; the header names "
                         "the one used")
    parser.addini("cloud_develop_eggs", type="linelist", default=[],
                  help="package directories inside the project root that the nodes import "
                       "from their synced copy (develop mode)")


def cloud_nodes(config: pytest.Config) -> list[str]:
    """Every node given, in order (duplicates are the binary's to drop)."""
    return [node for given in config.getoption("cloud_node") or [] for node in given.split()]


def prepare_argv(config: pytest.Config, binary: str) -> list[str]:
    """``<binary> pytest --cloud-prepare`` plus the cloud options the user gave."""
    argv = [binary, "pytest", "--cloud-prepare"]
    argv += [f"--cloud-node={node}" for node in cloud_nodes(config)]
    for option, dest, _, _ in _VALUE_OPTIONS:
        value = config.getoption(dest)
        if value is not None:
            argv.append(f"{option}={value}")
    for option, dest in _FORWARDED_FLAGS:
        if config.getoption(dest):
            argv.append(option)
    for egg in config.getini("cloud_develop_eggs"):
        # The ini names paths relative to the ini file, as 5.x did with the rootdir.
        base = config.inipath.parent if config.inipath else config.rootpath
        argv.append(f"--cloud-develop-egg={(base / egg).resolve()}")
    return argv


def find_binary(config: pytest.Config) -> binary.Found:
    """The binary to run (how it is found and checked: pytest_cloud.binary)."""
    return binary.locate(config.getoption("cloud_binary"))


def run_prepare(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run the binary; its stderr goes to ours as it comes, its stdout is the session."""
    shown = " ".join(shlex.quote(a) for a in argv)
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise pytest.UsageError(f"pytest-cloud: cannot start `{shown}`: {exc}") from None
    tail: collections.deque[str] = collections.deque(maxlen=5)

    def pass_stderr() -> None:
        # Own thread, so a chatty stderr can never block the stdout read below.
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.strip():
                tail.append(line.rstrip())

    relay = threading.Thread(target=pass_stderr, daemon=True)
    relay.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    code = proc.wait()
    relay.join()
    if code != 0:
        code = 128 - code if code < 0 else code  # killed by signal n -> 128+n
        last = tail[-1] if tail else "no message"
        pytest.exit(f"pytest-cloud: `{shown}` exited with {code}: {last}", returncode=code)
    try:
        doc = json.loads(stdout)
    except ValueError as exc:
        raise pytest.UsageError(
            f"pytest-cloud: `{shown}` printed no session document on stdout ({exc}); "
            f"it began with {stdout[:80].decode(errors='replace')!r}"
        ) from None
    return check_session(doc, shown)


def check_session(doc: Any, shown: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("kind") != "session":
        kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
        raise pytest.UsageError(f"pytest-cloud: `{shown}` printed a {kind!r} document, "
                                "expected kind 'session'")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > SESSION_FORMAT_VERSION:
        raise pytest.UsageError(
            f"pytest-cloud: the binary speaks session format {version!r}, this plugin knows "
            f"{SESSION_FORMAT_VERSION}; install the plugin from the same pytest-cloud release "
            "as the binary"
        )
    xdist = doc.get("xdist")
    if (not isinstance(xdist, dict) or not isinstance(xdist.get("tx"), list) or not xdist["tx"]
            or not isinstance(doc.get("rootdir"), str)):
        raise pytest.UsageError(f"pytest-cloud: `{shown}` printed a session without "
                                "rootdir or xdist.tx")
    return doc


#: pytest's options that show something and run no test (the dests of ``--help``, ``--markers``,
#: ``--fixtures``, ``--fixtures-per-test``, ``--cache-show`` and ``--version``, though
#: ``--version`` alone ends before any ``pytest_configure``). They answer from the local tree, as
#: without nodes: with them the plugin runs no binary, touches no node and starts no worker,
#: whatever ``addopts`` holds. ``--collect-only`` does the same (collection runs locally).
#: Not here: ``--trace-config``, ``--setup-plan``, ``--setup-only``: those run the session.
SHOW_ONLY_OPTIONS = ("help", "markers", "showfixtures", "show_fixtures_per_test", "cacheshow",
                     "version", "collectonly")


def shows_only(config: pytest.Config) -> bool:
    """True when this pytest run only shows something (``SHOW_ONLY_OPTIONS``)."""
    return any(config.getoption(dest, None) for dest in SHOW_ONLY_OPTIONS)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or not cloud_nodes(config):
        return
    if shows_only(config):
        return  # no --tx: xdist starts no worker either, whatever --dist says
    if config.getoption("numprocesses", None) or config.getoption("tx", None):
        raise pytest.UsageError(
            "pytest-cloud: --cloud-node decides the workers; drop -n/--tx "
            "(size them with --cloud-max-processes or --cloud-mem-per-process)"
        )
    glue.check_xdist()  # refuse an untested xdist before syncing anything
    found = find_binary(config)
    config.stash[_BINARY_KEY] = found
    argv = prepare_argv(config, found.path)
    session = run_prepare(argv, config.invocation_params.dir)
    xdist = session["xdist"]
    config.option.tx = list(xdist["tx"])
    dist_defaulted = config.option.dist == "no"
    if dist_defaulted:
        config.option.dist = xdist.get("dist") or "load"
    if config.option.maxworkerrestart is None and xdist.get("max_worker_restart") is not None:
        config.option.maxworkerrestart = str(xdist["max_worker_restart"])
    config.stash[_SESSION_KEY] = session
    if config.getoption("cloud_timings"):
        # The glue reads the binary's phases from here, as it does under the launcher.
        os.environ[glue.TIMINGS_ENV] = json.dumps(session.get("timings_ms") or {})
        config.add_cleanup(lambda: os.environ.pop(glue.TIMINGS_ENV, None))
    env = session.get("env") if isinstance(session.get("env"), dict) else {}
    glue.activate(config, session["rootdir"], dist_defaulted=dist_defaulted,
                  node_timeout=env.get(glue.NODE_TIMEOUT_ENV))


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    session = config.stash.get(_SESSION_KEY, None)
    if session is None:
        return None
    lines = [config.stash[_BINARY_KEY].describe()] + list(session.get("header") or [])
    return [f"pytest-cloud: {line}" for line in lines]
