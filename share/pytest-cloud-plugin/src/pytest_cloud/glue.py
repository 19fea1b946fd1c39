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
3. on a lost node, tries to start a replacement worker from the main loop; the
   ssh connect fails with ``execnet.HostNotFound`` and the controller crashes
   with an INTERNALERROR;
4. makes the workers' gateways one after another, each waiting for three round
   trips (ssh session and interpreter start, ``chdir``, ``rinfo``): 8 workers
   spent 0.4-1.0 s there before the last one could start importing pytest.

This module fixes exactly those four things on the controller (patches 1-4 in
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


def _sched_module() -> Any:
    """The duration-aware scheduling (sched.py): the launcher writes it beside this file as
    ``pytest_cloud_sched``; in the pip package it is ``pytest_cloud.sched``."""
    if __name__ == "pytest_cloud_glue":
        import pytest_cloud_sched as sched  # type: ignore[import-not-found]
    else:
        from pytest_cloud import sched
    return sched


def pytest_configure(config: pytest.Config) -> None:
    """Entry point when loaded through ``PYTEST_PLUGINS`` (the Rust launcher)."""
    rootdir = os.environ.get(ROOTDIR_ENV)
    if rootdir and not hasattr(config, "workerinput"):
        activate(config, rootdir)


def activate(config: pytest.Config, rootdir: str | os.PathLike[str],
             dist_defaulted: bool | None = None) -> None:
    """Turn the glue on for this (controller) config; a second call is a no-op.

    ``dist_defaulted``: ``--dist load`` was our choice, not the user's (the duration-aware
    scheduler may then take over, see sched.py); None reads ``$PYTEST_CLOUD_DIST_DEFAULTED``.
    """
    if hasattr(config, "workerinput") or config.pluginmanager.has_plugin(_PLUGIN_NAME):
        return
    workermanage = check_xdist()
    glue = _ControllerGlue(config, Path(rootdir), workermanage)
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
        # host -> why it is considered lost; host -> [(worker id, error)];
        # host -> ids of the replacement workers started there
        self.lost: dict[str, str] = {}
        self.down: dict[str, list[tuple[str, str]]] = {}
        self.replaced: dict[str, list[str]] = {}

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
        # Patch 3: a replacement worker that cannot connect must not crash the run.
        dsession._clone_node = self._guard_clone(dsession, dsession._clone_node)
        # Patch 4: all gateways at once (after the chdir above, which they carry).
        _connect_all_at_once(dsession.nodemanager.group, specs)

    def _guard_clone(self, dsession: Any, clone: Any) -> Any:
        def guarded_clone(node: Any) -> Any:
            host = _host(node)
            if host not in self.lost:
                replacement = self._try_clone(clone, node, host)
                if replacement is not None:
                    return replacement
            if self._needs_rescue(dsession, node):
                # The tests queued on the lost node went back to the scheduler,
                # but every worker left on the live nodes may already have been
                # told to shut down (load scheduling does that as soon as nothing
                # is pending), so nobody would run them. Start one worker on a
                # live node instead; only now, so live nodes are not overloaded.
                for spec in self._live_specs(dsession):
                    spare = _SpareNode(spec)
                    rescue = self._try_clone(clone, spare, _host(spare))
                    if rescue is not None:
                        self._line(f"pytest-cloud: {node.gateway.id} on lost node {host} "
                                   f"replaced by {rescue.gateway.id} on {_host(spare)}")
                        return rescue
            else:
                self._line(f"pytest-cloud: not replacing {node.gateway.id} on lost node "
                           f"{host}; its pending tests go to the other workers")
            if not self._live_workers(dsession, node):
                # Without this xdist raises "Unexpectedly no active workers
                # available" (INTERNALERROR); say what happened instead.
                dsession.shouldstop = "pytest-cloud: every node is lost: " + "; ".join(
                    f"{h} ({why})" for h, why in self.lost.items()
                )
            return None

        return guarded_clone

    def _try_clone(self, clone: Any, node: Any, host: str) -> Any:
        try:
            replacement = clone(node)
        except Exception as exc:  # execnet.HostNotFound, OSError, EOFError, ...
            self.lost[host] = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self._line(f"pytest-cloud: node {host} is lost: cannot start a worker there "
                       f"({self.lost[host]})")
            return None
        self.replaced.setdefault(host, []).append(replacement.gateway.id)
        return replacement

    def _live_workers(self, dsession: Any, dying: Any) -> list[Any]:
        return [n for n in dsession._active_nodes
                if n is not dying and _host(n) not in self.lost]

    def _needs_rescue(self, dsession: Any, dying: Any) -> bool:
        sched = dsession.sched
        if sched is None or not sched.has_pending:
            return False
        return all(n.shutting_down for n in self._live_workers(dsession, dying))

    def _live_specs(self, dsession: Any) -> list[Any]:
        # One spec per live host, the host with the fewest replacements first.
        by_host: dict[str, Any] = {}
        for spec in dsession.nodemanager.specs:
            host = _host_of_spec(spec)
            if host not in self.lost:
                by_host.setdefault(host, spec)
        return sorted(by_host.values(),
                      key=lambda s: len(self.replaced.get(_host_of_spec(s), [])))

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        if error:
            self.down.setdefault(_host(node), []).append((node.gateway.id, str(error)))

    @pytest.hookimpl
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        # xdist's message names the worker only ("worker 'gw3' crashed while running ...").
        worker = getattr(report, "node", None)
        if worker is not None and isinstance(report.longrepr, str):
            report.longrepr += f" on node {_host(worker)}"

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.down:
            return
        terminalreporter.write_sep("=", "pytest-cloud: workers lost", yellow=True)
        for host, downs in self.down.items():
            workers = ", ".join(sorted({w for w, _ in downs}))
            errors = "; ".join(sorted({e for _, e in downs}))
            if host in self.lost:
                state = f"node lost ({self.lost[host]})"
            elif host in self.replaced:
                state = "replaced by " + ", ".join(self.replaced[host])
            else:
                state = "not replaced (--max-worker-restart reached)"
            terminalreporter.write_line(f"{host}: workers {workers} down ({errors}); {state}")

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
