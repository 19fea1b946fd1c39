"""pytest-cloud's controller glue for pytest-xdist ssh workers.

The tree on every node is a mirror of the local project root, placed there by
pytest-cloud before pytest starts (rsync, venv included). Plain xdist does not
know that and, for every ssh worker:

1. execnet-rsyncs the controller's ``pytest/`` and ``_pytest/`` into the worker's
   chdir (once per worker, with delete=True, where they would shadow the node's
   venv on ``sys.path``);
2. rewrites path arguments with ``make_reltoroot``, which raises
   ``ValueError: arg tests not relative to an rsync root`` for any relative path
   that exists locally (``pytest tests/``);
3. on a lost node, reports the tests that were running there as failed, then
   tries to start a replacement worker there from the main loop; the ssh connect
   fails with ``execnet.HostNotFound`` and the controller crashes with an
   INTERNALERROR (what is done instead: ``_NodeFaults``);
4. makes the workers' gateways one after another, each waiting for three round
   trips (ssh session and interpreter start, ``chdir``, ``rinfo``): 8 workers
   spent 0.4-1.0 s there before the last one could start importing pytest;
5. hands each test report to pytest the moment it arrives, so a test that was
   running on a node that is then lost has already reported its setup (and maybe
   its call) when it runs again elsewhere: two PASSED lines, a nameless
   ``<testcase>`` in the JUnit XML, two setups in ``--report-log``.

This module fixes exactly those five things on the controller (patches 1-5 in
the code, each named with its reason in share/doc/xdist-notes.md section 1), and
runs each worker in the mirror of the controller's cwd (a change to the specs
that ``pytest_xdist_setupnodes`` is given), nothing else: reports,
``-k``/``-m``/``-p``/``-o`` and ``--dist`` are xdist's own. It also turns on the
duration-aware scheduling of sched.py (its own module: the recorded durations and a
scheduler made through xdist's public ``pytest_xdist_make_scheduler`` hook, no patch).

It is loaded in one of two ways, both on the controller only:
- by the pytest-cloud launcher: ``PYTEST_PLUGINS=pytest_cloud_glue`` with this
  file written as ``pytest_cloud_glue.py`` into a folder on ``PYTHONPATH`` and
  ``PYTEST_CLOUD_ROOTDIR=<local project root>``. execnet does not pass the
  controller's environment to ssh workers, so workers never load it;
- by the ``pytest_cloud.plugin`` pytest plugin, which calls :func:`activate`.

Under the launcher's early controller, pytest starts while the nodes are synced and this
module waits, in a ``pytest_cmdline_main`` wrapper, for the workers handed over on the socket
named by ``PYTEST_CLOUD_HANDOVER`` (a hook, not a patch: share/doc/performance.md).

Without ``PYTEST_CLOUD_ROOTDIR`` and on workers it does nothing.
Tested with pytest-xdist 3.6.1, 3.7.0 and 3.8.0 (pytest 8.4 and 9.2); other
xdist versions are refused with a UsageError, because the patched functions
are xdist internals.
"""

from __future__ import annotations

import os
import posixpath
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

#: The xdist versions this glue was tested with: >= 3.6, < 3.9.
XDIST_TESTED = ((3, 6), (3, 9))
ROOTDIR_ENV = "PYTEST_CLOUD_ROOTDIR"
#: JSON of the launcher's own phases (probe, plan, sync, in ms) and, under "exec_at_ms", the
#: wall-clock time it started pytest; set by ``pytest-cloud pytest --cloud-timings``.
TIMINGS_ENV = "PYTEST_CLOUD_TIMINGS"
#: "1" when the launcher added ``--dist load`` because the user gave no ``--dist``.
DIST_DEFAULTED_ENV = "PYTEST_CLOUD_DIST_DEFAULTED"
_PLUGIN_NAME = "pytest-cloud-glue"
_FAULTS_NAME = "pytest-cloud-faults"
#: The launcher's ``--cloud-node-timeout`` (seconds), for the messages only: ssh's keepalive
#: on each node's shared connection is what enforces it.
NODE_TIMEOUT_ENV = "PYTEST_CLOUD_NODE_TIMEOUT"
#: The exit code of a run that lost every node with tests left to run: pytest-cloud's
#: "no usable node" (share/doc/exit-codes.md).
EXIT_ALL_NODES_LOST = 69
#: The user property (a JUnit ``<property>``, ``user_properties`` in ``--report-log``) that
#: names the lost node a test was moved from; one per node, in order, if it was moved twice.
MOVED_FROM_PROPERTY = "pytest_cloud_moved_from"


def _sched_module() -> Any:
    """The duration-aware scheduling (sched.py): the launcher writes it beside this file as
    ``pytest_cloud_sched``; in the pip package it is ``pytest_cloud.sched``."""
    if __name__ == "pytest_cloud_glue":
        import pytest_cloud_sched as sched  # type: ignore[import-not-found]
    else:
        from pytest_cloud import sched
    return sched


#: The early controller: the launcher starts pytest while its own child probes, plans and
#: syncs, and that child hands the workers over on this Unix socket (share/doc/performance.md).
HANDOVER_ENV = "PYTEST_CLOUD_HANDOVER"
#: The child's process group, which a SIGINT reaching pytest during the wait is passed on to.
HANDOVER_PGID_ENV = "PYTEST_CLOUD_HANDOVER_PGID"
#: Exit code when the launcher's child ended without handing over (it crashed or was killed).
EXIT_INTERNAL = 70


def _forward_sigint(signum: int, frame: Any) -> None:
    """A SIGINT reaching pytest before the hand-over is passed on to the launcher's child (in
    its own process group, so this is the one it gets), which stops the sync, gives the locks
    back and hands over exit code 130."""
    import signal

    try:
        os.killpg(int(os.environ.get(HANDOVER_PGID_ENV, "")), signal.SIGINT)
    except (ValueError, OSError):
        pass


def _install_forwarding() -> Any:
    """From the glue's import on (before the conftests load), while pytest waits."""
    import signal
    import threading

    if os.environ.get(HANDOVER_ENV) and threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGINT, _forward_sigint)
    return None


_SIGINT_BEFORE_HANDOVER = _install_forwarding()
#: The hand-over connection, held open until pytest exits (see receive_handover).
_HANDOVER_LINK: list[Any] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> Any:
    """Under the early controller: wait for the hand-over before pytest's main (and xdist's
    option checks) runs; before it, pytest has printed nothing."""
    if os.environ.get(HANDOVER_ENV) and not hasattr(config, "workerinput"):
        receive_handover(config)
    return (yield)


def receive_handover(config: pytest.Config) -> None:
    """Reads the hand-over to its end: the ``--tx`` specs (and the launcher's phases), or the
    exit code the launcher's child ended with, which pytest then exits with at once and without
    a report (the child has said why). The environment variables are removed, so the tests'
    own subprocesses never see them."""
    import json
    import signal
    import socket
    import sys

    path = os.environ[HANDOVER_ENV]
    # What the controller imports once it has its workers (xdist imports its session and
    # execnet in its pytest_configure): imported now, while the nodes are being synced.
    try:
        import execnet  # noqa: F401
        import xdist.dsession  # noqa: F401
        import xdist.workermanage  # noqa: F401

        _sched_module()
    except ImportError:
        pass  # said properly by check_xdist() once configured

    previous = signal.signal(signal.SIGINT, _forward_sigint)
    if _SIGINT_BEFORE_HANDOVER is not None:
        previous = _SIGINT_BEFORE_HANDOVER
    chunks: list[bytes] = []
    link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        link.connect(path)
        while True:
            data = link.recv(65536)
            if not data:
                break
            chunks.append(data)
        # Kept open for the life of this process (the processes it starts do not inherit it,
        # PEP 446): the launcher's child, which holds the run trees on the nodes, sees its
        # EOF the moment pytest exits and removes them at once (a fork that still holds it
        # delays nothing: the child also watches pytest's pid).
        _HANDOVER_LINK.append(link)
    except OSError as exc:
        sys.stderr.write(f"pytest-cloud: error: no hand-over from the launcher at {path}: {exc}\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERNAL)
    finally:
        signal.signal(signal.SIGINT, previous)
        os.environ.pop(HANDOVER_ENV, None)
        os.environ.pop(HANDOVER_PGID_ENV, None)
    try:
        doc = json.loads(b"".join(chunks))
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("kind") != "handover":
        sys.stderr.write("pytest-cloud: error: the launcher stopped before it handed the nodes over\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERNAL)
    if "exit" in doc:
        os._exit(int(doc["exit"]))
    config.option.tx = list(doc["tx"])
    if config.option.maxworkerrestart is None and doc.get("max_worker_restart") is not None:
        config.option.maxworkerrestart = str(doc["max_worker_restart"])
    if TIMINGS_ENV in os.environ:
        phases = dict(doc.get("timings_ms") or {})
        # controller_start is then what the run still waited for after the hand-over.
        phases["exec_at_ms"] = doc.get("handed_over_at_ms")
        os.environ[TIMINGS_ENV] = json.dumps(phases)


def pytest_configure(config: pytest.Config) -> None:
    """Entry point when loaded through ``PYTEST_PLUGINS`` (the Rust launcher)."""
    rootdir = os.environ.get(ROOTDIR_ENV)
    if rootdir and not hasattr(config, "workerinput"):
        activate(config, rootdir)


def activate(config: pytest.Config, rootdir: str | os.PathLike[str],
             dist_defaulted: bool | None = None, node_timeout: str | None = None) -> None:
    """Turn the glue on for this (controller) config; a second call is a no-op.

    ``dist_defaulted``: ``--dist load`` was our choice, not the user's (the duration-aware
    scheduler may then take over, see sched.py); None reads ``$PYTEST_CLOUD_DIST_DEFAULTED``.
    ``node_timeout``: the launcher's ``--cloud-node-timeout``, for messages (default:
    ``$PYTEST_CLOUD_NODE_TIMEOUT``).
    """
    if hasattr(config, "workerinput") or config.pluginmanager.has_plugin(_PLUGIN_NAME):
        return
    workermanage = check_xdist()
    glue = _ControllerGlue(config, Path(rootdir), workermanage)
    config.pluginmanager.register(
        _NodeFaults(config, node_timeout or os.environ.get(NODE_TIMEOUT_ENV)), _FAULTS_NAME)
    config.pluginmanager.register(glue, _PLUGIN_NAME)
    config.add_cleanup(glue.restore)
    if dist_defaulted is None:
        dist_defaulted = os.environ.get(DIST_DEFAULTED_ENV) == "1"
    _sched_module().register(config, dist_defaulted)
    launcher_phases = os.environ.get(TIMINGS_ENV)
    if launcher_phases is not None:
        config.pluginmanager.register(_Timings(launcher_phases), "pytest-cloud-timings")


class _Timings:
    """Where a run's time goes, phase by phase, printed on stderr when pytest ends as one line
    ``pytest-cloud: timings {json}`` (milliseconds), so people and scripts/bench can read it.

    Phases: the launcher's probe, plan and sync; ``controller_start`` (exec of pytest to its
    configure); ``worker_start`` (xdist sets up the nodes until every worker is ready);
    ``tests`` (from there to the end of the session: collection on the workers and the tests);
    ``teardown`` (workers shut down, reports written). When the duration-aware scheduler ran,
    ``tests_expected`` (not a phase, not in ``total``) is what it expected of ``tests``.
    """

    def __init__(self, launcher_phases: str) -> None:
        import json
        import time

        self._clock = time.monotonic
        self._json = json
        try:
            phases = json.loads(launcher_phases) if launcher_phases else {}
        except ValueError:
            phases = {}
        exec_at = phases.pop("exec_at_ms", None)
        self.phases: dict[str, int] = {k: int(v) for k, v in phases.items()}
        if exec_at is not None:
            self.phases["controller_start"] = max(0, int(time.time() * 1000) - int(exec_at))
        self.marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, self._clock())

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_setupnodes(self) -> None:
        self._mark("setup")

    @pytest.hookimpl
    def pytest_testnodeready(self) -> None:
        self.marks["ready"] = self._clock()  # the last worker's readiness counts

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self._mark("finish")

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        import sys

        end = self._clock()
        m = self.marks
        ms = lambda a, b: int(round((b - a) * 1000))  # noqa: E731
        if "setup" in m and "ready" in m:
            self.phases["worker_start"] = ms(m["setup"], m["ready"])
        if "ready" in m and "finish" in m:
            self.phases["tests"] = ms(m["ready"], m["finish"])
        if "finish" in m:
            self.phases["teardown"] = ms(m["finish"], end)
        order = ["probe", "plan", "sync", "controller_start", "worker_start", "tests", "teardown"]
        ordered = {k: self.phases[k] for k in order if k in self.phases}
        ordered["total"] = sum(ordered.values())
        # Not a phase: what the duration-aware scheduler expected of "tests" from the recorded
        # durations (max(longest, all / workers); collection and per-test overhead not included).
        scheduler = getattr(config.pluginmanager.getplugin("pytest-cloud-sched"), "scheduler", None)
        if getattr(scheduler, "expected_s", None) is not None:
            ordered["tests_expected"] = int(round(scheduler.expected_s * 1000))
        sys.stderr.write("pytest-cloud: timings " + self._json.dumps(ordered) + "\n")
        sys.stderr.flush()


def check_xdist() -> Any:
    try:
        import xdist
        import xdist.workermanage as workermanage
    except ImportError as exc:
        raise pytest.UsageError(
            f"pytest-cloud needs pytest-xdist in the project's environment ({exc}); "
            "install it with: python -m pip install 'pytest-xdist>=3.6,<3.9'"
        ) from None
    version = getattr(xdist, "__version__", "unknown")
    try:
        major_minor = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    low, high = XDIST_TESTED
    if not (low <= major_minor < high) or not hasattr(workermanage, "make_reltoroot"):
        raise pytest.UsageError(
            f"pytest-cloud supports pytest-xdist >=3.6,<3.9 but this environment has "
            f"pytest-xdist {version}; install a supported one with: "
            "python -m pip install 'pytest-xdist>=3.6,<3.9'"
        )
    return workermanage


class _MirrorRoots(list):  # type: ignore[type-arg]
    """Stands in for ``NodeManager.roots`` (the dirs xdist would rsync).

    Empty, so ``NodeManager.rsync_roots`` sends nothing (patch 1), and typed, so
    the patched ``make_reltoroot`` knows the call is ours (patch 2) and leaves any
    other NodeManager in the process (pytester, nested sessions) to xdist.
    """

    def __init__(self, rootdir: Path) -> None:
        super().__init__()
        self.rootdir = rootdir


def mirror_arg(rootdirs: tuple[str, ...], arg: str, cwd: str | None = None) -> str:
    """One command-line argument as the worker in the node's mirror needs it.

    The worker's cwd is the mirror of the controller's cwd (see ``pytest_xdist_setupnodes``),
    so relative arguments pass unchanged. Absolute paths under the local root, alone
    (``/root/proj/tests::test_x``) or as a long option's value (``--rootdir=/root/proj``),
    become relative to the cwd. Only when the controller runs outside the project does a
    relative path that exists locally get mapped the same way. Anything else is left as is.
    """
    if arg.startswith("--") and "=" in arg:
        name, _, value = arg.partition("=")
        new_value = _mirror_path(rootdirs, value, cwd)
        return arg if new_value is None else f"{name}={new_value}"
    path, sep, rest = arg.partition("::")
    new_path = _mirror_path(rootdirs, path, cwd)
    return arg if new_path is None else new_path + sep + rest


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _mirror_path(rootdirs: tuple[str, ...], path: str, cwd: str | None) -> str | None:
    cwd_inside = cwd is not None and any(_under(cwd, root) for root in rootdirs)
    if os.path.isabs(path):
        full = os.path.normpath(path)
    elif cwd is not None and not cwd_inside and path and os.path.exists(os.path.join(cwd, path)):
        full = os.path.normpath(os.path.join(cwd, path))
    else:
        return None
    for root in rootdirs:
        if _under(full, root):
            base = cwd if cwd is not None and _under(cwd, root) else root
            return os.path.relpath(full, base)
    return None


class _ControllerGlue:
    def __init__(self, config: pytest.Config, rootdir: Path, workermanage: Any) -> None:
        self.config = config
        given = os.path.normpath(os.path.abspath(rootdir))
        # The launcher may name the root through a symlink; match both spellings.
        self.rootdirs = tuple(dict.fromkeys([given, os.path.realpath(given)]))
        self.workermanage = workermanage
        self.original_make_reltoroot = workermanage.make_reltoroot
        # Patch 2: a module global, looked up by WorkerController.setup at call time,
        # before any hook runs, so no hook can replace it. Delegates unless the
        # roots are ours.
        original = self.original_make_reltoroot
        rootdirs = self.rootdirs
        cwd = os.path.normpath(str(config.invocation_params.dir))
        # Where the controller runs, relative to the root ("." at the root, None outside it):
        # the workers run in the same place in the mirror.
        inside = [root for root in rootdirs if _under(cwd, root)]
        self.subdir = os.path.relpath(cwd, inside[0]) if inside else None

        def make_reltoroot(roots: Any, args: list[str]) -> list[str]:
            if isinstance(roots, _MirrorRoots):
                return [mirror_arg(rootdirs, str(a), cwd) for a in args]
            return original(roots, args)

        workermanage.make_reltoroot = make_reltoroot

    def restore(self) -> None:
        self.workermanage.make_reltoroot = self.original_make_reltoroot

    @pytest.hookimpl
    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: Any) -> None:
        # Runs inside NodeManager.setup_nodes, after NodeManager.__init__ computed
        # the rsync roots and before the first gateway is made.
        dsession = config.pluginmanager.getplugin("dsession")
        if dsession is None or getattr(dsession, "nodemanager", None) is None:
            return
        # Patch 1: no execnet rsync of pytest/ and _pytest/ (the node has its own).
        dsession.nodemanager.roots = _MirrorRoots(Path(self.rootdirs[0]))
        # Started in a subdirectory, pytest takes relative args (and, with none, the cwd
        # instead of testpaths) from there; a worker in the mirror root would collect
        # nothing or something else. Run it in the same subdirectory of the mirror.
        if self.subdir and self.subdir != ".":
            for spec in specs:
                if spec.chdir:
                    spec.chdir = posixpath.join(spec.chdir, *self.subdir.split(os.sep))
        # Patch 3: no replacement worker on a lost node (see _NodeFaults).
        faults = config.pluginmanager.getplugin(_FAULTS_NAME)
        if faults is not None:
            faults.guard_clone(dsession)
        # Patch 4: all gateways at once (after the chdir above, which they carry).
        _connect_all_at_once(dsession.nodemanager.group, specs)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: Any) -> None:
        # A skip's location is the worker's absolute path (the node's mirror); show it the
        # way a local run does, relative to the local tree.
        longrepr = getattr(report, "longrepr", None)
        worker = getattr(report, "node", None)
        if not (report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3 and worker):
            return
        chdir = getattr(worker.gateway.spec, "chdir", None)
        path = str(longrepr[0])
        if chdir and self.subdir and self.subdir != ".":
            # pytest_xdist_setupnodes appended the subdirectory; the mirror root is above it
            tail = "/" + self.subdir.replace(os.sep, "/")
            chdir = chdir[: -len(tail)] if chdir.rstrip("/").endswith(tail) else chdir
        if chdir and path.startswith(chdir.rstrip("/") + "/"):
            local = os.path.join(self.rootdirs[0], path[len(chdir.rstrip("/")) + 1:])
            report.longrepr = (local, longrepr[1], longrepr[2])

    def _line(self, text: str) -> None:
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(text)


def _connect_all_at_once(group: Any, specs: Any) -> None:
    """Start making every spec's gateway now, each on its own thread, and let the group's
    ``makegateway`` hand out the result when xdist's ``setup_node`` asks for that very spec
    (one after another, as before: hooks, ``WorkerController.setup`` and any error happen in
    the same order and place). The ``rinfo`` that ``WorkerController.setup`` waits for is
    fetched on the same thread. Any other spec (a replacement worker) is made as xdist
    would. The workers' ssh sessions share each node's one connection (ControlMaster),
    which the probe opened before pytest started.
    """
    make = group.makegateway
    pending: dict[int, tuple[Any, Future[Any]]] = {}

    def connect(spec: Any) -> Any:
        gateway = make(spec)
        gateway._rinfo()
        return gateway

    specs = [spec for spec in specs if getattr(spec, "ssh", None)]
    if not specs:
        return
    pool = ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="pytest-cloud-connect")
    for spec in specs:
        pending[id(spec)] = (spec, pool.submit(connect, spec))
    pool.shutdown(wait=False)

    def makegateway(spec: Any = None) -> Any:
        entry = pending.pop(id(spec), None) if spec is not None else None
        if entry is None or entry[0] is not spec:
            return make(spec)
        return entry[1].result()

    group.makegateway = makegateway


# ---------------------------------------------------------------- lost nodes


def _survive_closed_channel(sched: Any) -> None:
    """A test that completes on a worker whose node has just died (its "down" event not yet
    handled) makes the scheduler send that worker more tests on a channel execnet has closed:
    ``OSError("cannot send (already closed?)")``, which xdist lets end the session with an
    INTERNALERROR (exit 3 instead of the lost-node handling's outcome). Wrapped on the
    instance, like remove_node: the tests being sent are already in the scheduler's pending
    list for that node (xdist 3.6-3.8 ``LoadScheduling._send_tests`` extends
    ``node2pending`` before it sends), so the node's "down" event, which follows, hands them
    back as for any lost node. Any other error is raised as before."""
    mark = sched.mark_test_complete

    def mark_test_complete(node: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return mark(node, *args, **kwargs)
        except OSError as e:
            if "cannot send" not in str(e):
                raise
            return None

    sched.mark_test_complete = mark_test_complete


class _NodeFaults:
    """A node that is lost costs seconds, not tests (share/doc/faults.md).

    How a node's loss shows: every worker there goes down at once, because they are
    sessions over the node's one shared ssh connection (ControlMaster), and that
    connection closes when the node is killed (TCP closed) or when ssh's keepalive gives
    up on a frozen node or one off the network (``--cloud-node-timeout``).

    How it is told from a worker that crashed on a live node (a segfault, ``os._exit``):
    when a worker goes down, ``ssh -O check`` asks the node's shared connection whether it
    is still up (a local call, milliseconds). Up: the worker died on its own, and xdist's
    meaning holds (the running test fails, naming the node; a replacement starts there).
    Down: the node is lost for the rest of the run. Without a shared connection, a quick
    ``ssh NODE true`` decides instead.

    What happens then, through the scheduler protocol only (so it works with xdist's
    schedulers and any other): the scheduler's ``remove_node`` is wrapped on the instance
    (``pytest_xdist_make_scheduler`` hookwrapper); for a lost node the test it was running
    goes back with ``mark_test_pending`` and ``remove_node`` returns None, so xdist reports
    no crash for it. Its queued tests go back as usual. No worker is started on a lost node
    (patch 3); when every live worker has already been told to shut down, one worker per
    lost one is started on a live node to run what came back. A test that came back and
    was run nowhere by the end fails, saying so. Every node lost with tests left: the run
    stops and exits with ``EXIT_ALL_NODES_LOST``.

    Reports (patch 5): a worker's reports of a test are held back until its teardown
    report, then handed to pytest in order (``DSession.worker_testreport`` wrapped on the
    instance). When the node is lost meanwhile, the held reports are dropped and only the
    run on a live node is reported, carrying ``MOVED_FROM_PROPERTY``; so every reporter
    (terminal, JUnit, ``--report-log``, the ``--lf`` cache, the durations history, any
    plugin's ``pytest_runtest_logreport``) sees each test once.
    """

    def __init__(self, config: pytest.Config, node_timeout: str | None = None) -> None:
        import time

        self.config = config
        self._clock = time.monotonic
        self._wall = time.time
        self.started = self._clock()
        self.node_timeout = node_timeout
        self.sched: Any = None
        self.dsession: Any = None
        # host -> {"at": wall time, "after": s into the run, "why": text, "workers": [ids]}
        self.lost: dict[str, dict[str, Any]] = {}
        # nodeid -> (lost host, worker id); then where it ran again and how it ended
        self.moved: dict[str, tuple[str, str]] = {}
        self.rerun: dict[str, tuple[str, str]] = {}
        # nodeid -> the lost hosts it was moved from, in order (MOVED_FROM_PROPERTY)
        self.moved_from: dict[str, list[str]] = {}
        # worker -> (nodeid, its reports so far) of the test it runs; worker -> the last
        # test whose reports all went out (its teardown report came)
        self._held: dict[Any, tuple[str, list[Any]]] = {}
        self._completed: dict[Any, str] = {}
        self._deliver: Any = None
        # host -> [(worker id, error)] for workers that crashed on a live node
        self.crashed: dict[str, list[tuple[str, str]]] = {}
        self.replaced: dict[str, list[str]] = {}
        self.rescues: dict[str, list[str]] = {}
        self.all_lost: str | None = None
        self._reasons: dict[str, Any] = {}

    # -- the scheduler: any object with the Scheduling protocol

    @pytest.hookimpl(wrapper=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        sched = yield
        if sched is not None:
            self._wrap_remove_node(sched)
            _survive_closed_channel(sched)
        self.sched = sched
        # DSession makes the scheduler in pytest_runtestloop, before the first event of the
        # loop: no test report has come yet.
        dsession = config.pluginmanager.getplugin("dsession")
        if dsession is not None and self._deliver is None:
            self._hold_reports(dsession)
        return sched

    def _wrap_remove_node(self, sched: Any) -> None:
        remove_node = sched.remove_node

        def remove_lost_aware(node: Any) -> Any:
            crashitem = remove_node(node)
            host = _host(node)
            held_id = self._held.get(node, (None, []))[0]
            if host not in self.lost or crashitem is None or held_id != crashitem:
                # A crash on a live node keeps xdist's meaning: what the test reported so
                # far goes out, then xdist's crash report.
                self._release(node)
            if crashitem is None or host not in self.lost:
                return crashitem
            if held_id != crashitem and self._completed.get(node) == crashitem:
                # Its teardown report came; only the worker's "protocol complete" did not.
                return None
            # Not the test's fault: it goes back to the queue, and what it reported on the
            # lost node is dropped; its run elsewhere is what counts. Schedulers that re-queue
            # a crashed item's whole unit themselves (loadscope, loadfile, loadgroup) do not
            # implement mark_test_pending; the end-of-run check catches any that loses it.
            self._held.pop(node, None)
            try:
                sched.mark_test_pending(crashitem)
            except NotImplementedError:
                pass
            self.moved[crashitem] = (host, node.gateway.id)
            self.moved_from.setdefault(crashitem, []).append(host)
            return None

        sched.remove_node = remove_lost_aware

    # -- patch 5: a test's reports reach pytest once its teardown report is in

    def _hold_reports(self, dsession: Any) -> None:
        # DSession.loop_once dispatches each worker event to getattr(self, "worker_" + name),
        # so the instance attribute is what runs (xdist 3.6.1-3.8.0). No public hook can keep
        # a report from pytest's reporters.
        self._deliver = dsession.worker_testreport

        def worker_testreport(node: Any, rep: Any) -> None:
            held = self._held.get(node)
            if held is not None and held[0] != rep.nodeid:
                self._release(node)  # a report of the next test: the last one's ended
                held = None
            if held is None:
                held = self._held[node] = (rep.nodeid, [])
            held[1].append(rep)
            if rep.when == "teardown":
                self._release(node)

        dsession.worker_testreport = worker_testreport

    def _release(self, node: Any) -> None:
        nodeid, reports = self._held.pop(node, (None, []))
        moved_from = [(MOVED_FROM_PROPERTY, host) for host in self.moved_from.get(nodeid, [])]
        for rep in reports:
            if moved_from:
                rep.user_properties = list(rep.user_properties) + moved_from
            self._deliver(node=node, rep=rep)
        if reports and reports[-1].when == "teardown":
            self._completed[node] = nodeid

    # -- telling a lost node from a crashed worker

    @pytest.hookimpl(tryfirst=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        if not error:
            return
        host = _host(node)
        if host not in self.lost:
            alive, why = _node_answers(node.gateway.spec)
            if alive:
                self.crashed.setdefault(host, []).append((node.gateway.id, str(error)))
                return
            self._mark_lost(host, why, node.gateway.spec)
        self.lost[host]["workers"].append(node.gateway.id)

    def _mark_lost(self, host: str, why: str, spec: Any) -> None:
        self.lost[host] = {"at": self._wall(), "after": self._clock() - self.started,
                           "why": why, "workers": []}
        left = "its tests go to the other nodes" if self._hosts() - set(self.lost) - {host} \
            else "no node is left"
        self._line(f"pytest-cloud: node {host} is lost ({why}); {left}")
        # Why, in ssh's own words (refused, timed out, ...), for the summary only: in the
        # background, so the run does not wait for a connect timeout.
        self._reasons[host] = _Reconnect(spec)

    # -- patch 3: no worker on a lost node; a rescue worker on a live one when needed

    def guard_clone(self, dsession: Any) -> None:
        self.dsession = dsession
        clone = dsession._clone_node

        def guarded_clone(node: Any) -> Any:
            host = _host(node)
            if host not in self.lost:
                replacement = self._try_clone(clone, node, host)
                if replacement is not None:
                    self.replaced.setdefault(host, []).append(replacement.gateway.id)
                    return replacement
            if self._needs_rescue(dsession, node):
                for spec in self._live_specs(dsession):
                    spare = _SpareNode(spec)
                    rescue = self._try_clone(clone, spare, _host(spare))
                    if rescue is not None:
                        self.rescues.setdefault(_host(spare), []).append(rescue.gateway.id)
                        self._line(f"pytest-cloud: {node.gateway.id} on lost node {host}: its "
                                   f"tests go to {rescue.gateway.id} on {_host(spare)}")
                        return rescue
            else:
                self._line(f"pytest-cloud: not replacing {node.gateway.id} on lost node {host}")
            if not self._live_workers(dsession, node) and not self._finished():
                self.all_lost = "pytest-cloud: every node is lost: " + ", ".join(self.lost)
                dsession.shouldstop = self.all_lost
            return None

        dsession._clone_node = guarded_clone

    def _try_clone(self, clone: Any, node: Any, host: str) -> Any:
        try:
            return clone(node)
        except Exception as exc:  # execnet.HostNotFound, OSError, EOFError, ...
            if host not in self.lost:
                self._mark_lost(host, f"cannot start a worker there: {type(exc).__name__}: {exc}"
                                .rstrip(": "), node.gateway.spec)
            return None

    def _hosts(self) -> set[str]:
        nodemanager = getattr(self.dsession, "nodemanager", None)
        return {_host_of_spec(s) for s in getattr(nodemanager, "specs", [])}

    def _finished(self) -> bool:
        return self.sched is not None and self.sched.tests_finished

    def _live_workers(self, dsession: Any, dying: Any) -> list[Any]:
        return [n for n in dsession._active_nodes
                if n is not dying and _host(n) not in self.lost]

    def _needs_rescue(self, dsession: Any, dying: Any) -> bool:
        # Tests came back from the lost node, but the live workers may all have been told
        # to shut down already (load scheduling does that as soon as nothing is pending):
        # nobody would run them. At most one rescue per lost worker, so live nodes take on
        # no more workers than the run lost.
        sched = self.sched or dsession.sched
        if sched is None or not sched.has_pending:
            return False
        lost_workers = sum(len(info["workers"]) for info in self.lost.values())
        rescues = sum(len(r) for r in self.rescues.values())
        taking = [n for n in self._live_workers(dsession, dying) if not n.shutting_down]
        return rescues < lost_workers and len(taking) <= rescues

    def _live_specs(self, dsession: Any) -> list[Any]:
        # One spec per live host, the host with the fewest rescue workers first.
        by_host: dict[str, Any] = {}
        for spec in dsession.nodemanager.specs:
            host = _host_of_spec(spec)
            if host not in self.lost:
                by_host.setdefault(host, spec)
        return sorted(by_host.values(), key=lambda s: len(self.rescues.get(_host_of_spec(s), [])))

    # -- reports

    @pytest.hookimpl
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        # xdist's message names the worker only ("worker 'gw3' crashed while running ...").
        worker = getattr(report, "node", None)
        if worker is not None and isinstance(report.longrepr, str):
            report.longrepr += f" on node {_host(worker)}"

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.nodeid not in self.moved or report.nodeid in self.rerun:
            return
        worker = getattr(report, "node", None)
        if worker is None:
            return
        if report.when == "call" or report.failed or report.skipped:
            self.rerun[report.nodeid] = (f"{_host(worker)} ({worker.gateway.id})", report.outcome)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Whatever is still held (the run stopped early: -x, Ctrl-C) came from workers that
        # were not lost: it goes out; a lost node's unfinished test stays unreported.
        for node in list(self._held):
            if _host(node) in self.lost:
                self._held.pop(node)
            else:
                self._release(node)
        if self.all_lost:
            session.exitstatus = EXIT_ALL_NODES_LOST
            return
        # A test that came back from a lost node must have run somewhere: if not (a
        # scheduler that dropped it, --max-worker-restart reached), it fails, saying why.
        for nodeid, (host, worker) in self.moved.items():
            if nodeid in self.rerun:
                continue
            fspath = nodeid.split("::")[0]
            why = (f"pytest-cloud: {nodeid} was running on {worker} when node {host} was lost, "
                   "and no live worker ran it again")
            moved_from = [(MOVED_FROM_PROPERTY, h) for h in self.moved_from.get(nodeid, [host])]
            self.rerun[nodeid] = ("nowhere", "failed")
            # A call and a teardown, as a test that ran: JUnit writes a testcase's properties
            # when its teardown report comes.
            for when, outcome, longrepr in (("call", "failed", why), ("teardown", "passed", None)):
                report = pytest.TestReport(
                    nodeid=nodeid, location=(fspath, None, fspath), keywords={}, outcome=outcome,
                    longrepr=longrepr, when=when, user_properties=moved_from,
                )
                self.config.hook.pytest_runtest_logreport(report=report)
            if session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        import time

        tr = terminalreporter
        if self.lost:
            tr.write_sep("=", "pytest-cloud: nodes lost", yellow=True)
            for host, info in self.lost.items():
                when = time.strftime("%H:%M:%S", time.localtime(info["at"]))
                reason = info["why"]
                probe = self._reasons.get(host)
                answer = probe.result() if probe is not None else None
                if answer:
                    reason += f"; a new connection: {answer}"
                workers = ", ".join(sorted(info["workers"])) or "no worker"
                timeout = f"; nodes silent for {self.node_timeout} s count as lost" \
                    if self.node_timeout else ""
                tr.write_line(f"{host}: lost at {when}, {info['after']:.1f} s into the session "
                              f"({reason}{timeout}); workers {workers} down, none started "
                              "there again")
                moved = [(n, w) for n, (h, w) in self.moved.items() if h == host]
                if not moved:
                    tr.write_line("  no test was running there")
                for nodeid, worker in moved:
                    if nodeid in self.rerun:
                        where, outcome = self.rerun[nodeid]
                        tr.write_line(f"  moved: {nodeid} (was on {worker}): {outcome} on {where}")
                    else:
                        tr.write_line(f"  not run: {nodeid} (was on {worker})")
            if self.all_lost:
                tr.write_line(f"{self.all_lost}; the run stopped with tests left "
                              f"(exit {EXIT_ALL_NODES_LOST})", red=True)
        if self.crashed:
            tr.write_sep("=", "pytest-cloud: workers crashed", yellow=True)
            for host, downs in self.crashed.items():
                workers = ", ".join(sorted({w for w, _ in downs}))
                errors = "; ".join(sorted({e for _, e in downs}))
                again = self.replaced.get(host)
                state = ("replaced by " + ", ".join(again)) if again else \
                    "not replaced (--max-worker-restart reached)"
                tr.write_line(f"{host} (node alive): workers {workers} down ({errors}); {state}")

    def _line(self, text: str) -> None:
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(text)


def _ssh_base(spec: Any) -> list[str]:
    argv = ["ssh"]
    if getattr(spec, "ssh_config", None):
        argv += ["-F", str(spec.ssh_config)]
    return argv


def _node_answers(spec: Any, timeout: float = 10.0) -> tuple[bool, str]:
    """Whether the node of a worker that just went down is still there, and if not, why."""
    import subprocess

    if not getattr(spec, "ssh", None):
        return True, "not an ssh worker"  # popen/socket: no node of ours to lose
    words = str(spec.ssh).split()
    try:
        check = subprocess.run(_ssh_base(spec) + ["-O", "check"] + words, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"ssh -O check failed: {exc}"
    if check.returncode == 0:
        return True, "its shared ssh connection is up"
    if "No ControlPath specified" not in check.stderr and "ControlPath none" not in check.stderr:
        return False, "its shared ssh connection closed"
    # No shared connection to ask: try one (ConnectTimeout from the config bounds it).
    try:
        probe = subprocess.run(_ssh_base(spec) + words + ["true"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"ssh {spec.ssh} true: {exc}"
    if probe.returncode == 0:
        return True, "it answers ssh"
    return False, (probe.stderr.strip().splitlines() or ["ssh failed"])[-1]


class _Reconnect:
    """One direct ssh connection attempt in the background, for the summary's reason
    (ssh's own words: refused, timed out during banner exchange, ...). Never shares or
    becomes a shared connection, and ends within ConnectTimeout."""

    def __init__(self, spec: Any) -> None:
        import subprocess
        import threading

        self.answer: str | None = None
        argv = _ssh_base(spec) + ["-o", "ControlMaster=no", "-o", "ControlPath=none"] \
            + str(spec.ssh).split() + ["true"]

        def attempt() -> None:
            try:
                out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                     text=True, timeout=15)
                lines = out.stderr.strip().splitlines()
                self.answer = "it answers again" if out.returncode == 0 else \
                    (lines[-1] if lines else f"ssh exited {out.returncode}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.answer = f"no answer ({type(exc).__name__})"

        self.thread = threading.Thread(target=attempt, name="pytest-cloud-reconnect", daemon=True)
        self.thread.start()

    def result(self) -> str | None:
        self.thread.join(timeout=0.5)
        return self.answer


class _SpareNode:
    """What DSession._clone_node reads from a dead node: its gateway's spec.

    Lets xdist's own _clone_node start a worker from a live node's spec.
    """

    def __init__(self, spec: Any) -> None:
        import execnet

        # A fresh XSpec from the spec's text: _clone_node resets and re-allocates the id.
        fresh = execnet.XSpec(str(spec))
        fresh.chdir = spec.chdir  # the text lacks the subdirectory set in pytest_xdist_setupnodes
        self.gateway = type("_Gateway", (), {"spec": fresh})()


def _host(node: Any) -> str:
    return _host_of_spec(node.gateway.spec)


def _host_of_spec(spec: Any) -> str:
    return str(getattr(spec, "ssh", None) or getattr(spec, "socket", None) or spec)
