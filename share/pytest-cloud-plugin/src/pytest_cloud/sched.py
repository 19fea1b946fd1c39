"""pytest-cloud's duration-aware scheduling for pytest-xdist (controller only).

Two parts, independent of the rest of the glue:

- :class:`DurationRecorder` sums every test's setup, call and teardown time as the reports
  reach the controller and, when the session ends, merges them into the project's pytest cache
  (``config.cache``, key ``pytest-cloud/durations``): an exponential moving average per test
  id, entries not seen for :data:`FORGET_AFTER_RUNS` runs dropped (renamed or deleted tests).
  ``--cache-clear`` starts the history afresh and ``-p no:cacheprovider`` turns it off, as for
  pytest's own cache. Only the controller writes it; the launcher syncs ``.pytest_cache`` to
  the nodes like the rest of the tree.
- :class:`DurationScheduling`, an xdist scheduler (the ``Scheduling`` protocol of
  ``xdist/scheduler/protocol.py``, made through the public ``pytest_xdist_make_scheduler``
  hook): the longest expected work first, handed out in pieces that shrink with the work left
  (each piece about 1/(2 x workers) of it, guided self-scheduling), and at the end a hungry
  worker steals from the one with the most queued work, so the tests phase approaches
  max(longest test, total work / workers). With ``--dist loadscope|loadfile|loadgroup`` the
  units are xdist's groups (ordered by their total), each kept on one worker, never stolen.

Tests without a recorded duration get the median of their module's recorded tests, else of
all recorded tests. Which scheduler runs (:func:`choose`), set by ``PYTEST_CLOUD_SCHEDULER``:

- ``auto`` (unset): ours when the launcher or the plugin picked ``--dist load`` because the
  user gave no ``--dist``, and durations are recorded; xdist's otherwise;
- ``duration``: ours for ``--dist load|loadscope|loadfile|loadgroup`` even without history;
- ``xdist``: always xdist's own.

``--dist each`` and ``--dist worksteal`` always get xdist's.
"""

from __future__ import annotations

import os
import statistics
from collections import deque
from typing import Any, Callable, Iterable, Mapping, Sequence

import pytest

CACHE_KEY = "pytest-cloud/durations"
CACHE_FORMAT = 1
SCHEDULER_ENV = "PYTEST_CLOUD_SCHEDULER"
#: Weight of the newest run in a test's recorded duration.
EMA_WEIGHT = 0.5
#: A test id not seen for this many recorded runs is forgotten.
FORGET_AFTER_RUNS = 20
#: Refill a worker when less than this much expected work (s) is queued behind its current
#: test: about one controller round trip plus a margin, so it never waits for work.
LOOKAHEAD_S = 0.1
#: Steal only when it moves at least this much expected work (s); less is not worth a round trip.
STEAL_MIN_S = 0.02
#: Every worker needs two tests: the one it runs and the next one (xdist's worker runs a test
#: only once it knows its successor, for fixture teardown).
MIN_PENDING = 2


def group_key(nodeid: str) -> str:
    """A test id without the ``@group`` suffix ``--dist loadgroup`` adds, so the history is
    the same under every ``--dist`` (xdist's own rule: an ``@`` after the last ``]``)."""
    at = nodeid.rfind("@")
    return nodeid[:at] if at > nodeid.rfind("]") else nodeid


def _scope_loadscope(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[0]


def _scope_loadfile(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _scope_loadgroup(nodeid: str) -> str:
    at = nodeid.rfind("@")
    return nodeid[at + 1:] if at > nodeid.rfind("]") else nodeid


#: --dist value -> how it groups test ids (None: every test on its own).
SCOPES: dict[str, Callable[[str], str] | None] = {
    "load": None,
    "loadscope": _scope_loadscope,
    "loadfile": _scope_loadfile,
    "loadgroup": _scope_loadgroup,
}


# ---------------------------------------------------------------------------------------------
# The recorded history
# ---------------------------------------------------------------------------------------------

def read_history(cache: Any) -> dict[str, Any]:
    """The stored history ``{"format_version", "runs", "tests": {id: [seconds, last_run]}}``,
    or an empty one when there is none or it is not ours to read."""
    empty: dict[str, Any] = {"format_version": CACHE_FORMAT, "runs": 0, "tests": {}}
    if cache is None:
        return empty
    doc = cache.get(CACHE_KEY, None)
    if (not isinstance(doc, dict) or doc.get("format_version") != CACHE_FORMAT
            or not isinstance(doc.get("tests"), dict) or not isinstance(doc.get("runs"), int)):
        return empty
    tests = {k: v for k, v in doc["tests"].items()
             if isinstance(v, list) and len(v) == 2 and isinstance(v[0], (int, float))
             and isinstance(v[1], int) and v[0] >= 0}
    return {"format_version": CACHE_FORMAT, "runs": doc["runs"], "tests": tests}


def merge_history(history: Mapping[str, Any], measured: Mapping[str, float]) -> dict[str, Any]:
    """The history after one more run that measured ``measured`` (id -> seconds)."""
    run = int(history.get("runs", 0)) + 1
    tests: dict[str, list[Any]] = {}
    for nodeid, (seconds, last) in history.get("tests", {}).items():
        if run - last <= FORGET_AFTER_RUNS:
            tests[nodeid] = [seconds, last]
    for nodeid, seconds in measured.items():
        old = tests.get(nodeid)
        value = seconds if old is None else old[0] + EMA_WEIGHT * (seconds - old[0])
        tests[nodeid] = [round(value, 6), run]
    return {"format_version": CACHE_FORMAT, "runs": run, "tests": dict(sorted(tests.items()))}


def durations_of(history: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v[0]) for k, v in history.get("tests", {}).items()}


def estimate(collection: Sequence[str], known: Mapping[str, float]) -> list[float]:
    """Expected seconds of every collected test: its record, else the median of its module's
    records, else the median of all records (1.0 without any: all alike)."""
    by_module: dict[str, list[float]] = {}
    for nodeid, seconds in known.items():
        by_module.setdefault(nodeid.split("::", 1)[0], []).append(seconds)
    overall = statistics.median(known.values()) if known else 1.0
    module_median = {m: statistics.median(v) for m, v in by_module.items()}
    out = []
    for nodeid in collection:
        key = group_key(nodeid)
        seconds = known.get(key)
        if seconds is None:
            seconds = module_median.get(key.split("::", 1)[0], overall)
        out.append(seconds)
    return out


class DurationRecorder:
    """Sums each test's phases on the controller; merges them into the cache at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.measured: dict[str, float] = {}

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when in ("setup", "call", "teardown"):
            key = group_key(report.nodeid)
            self.measured[key] = self.measured.get(key, 0.0) + float(report.duration or 0.0)

    @pytest.hookimpl
    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or not self.measured:
            return
        cache.set(CACHE_KEY, merge_history(read_history(cache), self.measured))


# ---------------------------------------------------------------------------------------------
# Choosing the scheduler
# ---------------------------------------------------------------------------------------------

def check_env() -> str:
    mode = os.environ.get(SCHEDULER_ENV, "").strip() or "auto"
    if mode not in ("auto", "duration", "xdist"):
        raise pytest.UsageError(f"pytest-cloud: ${SCHEDULER_ENV} is {mode!r}; "
                                "expected auto, duration or xdist")
    return mode


def choose(mode: str, dist: str, dist_defaulted: bool, known: int) -> tuple[bool, str]:
    """(ours?, why) for the header."""
    if dist not in SCOPES:
        return False, f"--dist {dist}"
    if mode == "xdist":
        return False, f"--dist {dist}, ${SCHEDULER_ENV}=xdist"
    if mode == "duration":
        return True, f"--dist {dist}, ${SCHEDULER_ENV}=duration"
    if not dist_defaulted:
        return False, f"--dist {dist} as given"
    if not known:
        return False, "--dist load: no recorded durations yet"
    return True, "no --dist given"


class SchedulerChoice:
    """The plugin that makes the scheduler and says in the header which one runs."""

    def __init__(self, config: pytest.Config, dist_defaulted: bool) -> None:
        self.config = config
        self.mode = check_env()
        self.dist_defaulted = dist_defaulted
        self._decided: tuple[bool, str, dict[str, float]] | None = None
        self.scheduler: DurationScheduling | None = None

    def decide(self) -> tuple[bool, str, dict[str, float]]:
        # Lazily: config.cache may be made after this plugin is registered.
        if self._decided is None:
            known = durations_of(read_history(getattr(self.config, "cache", None)))
            ours, why = choose(self.mode, self.config.getvalue("dist"), self.dist_defaulted, len(known))
            self._decided = (ours, why, known)
        return self._decided

    @pytest.hookimpl
    def pytest_report_header(self, config: pytest.Config) -> str:
        ours, why, known = self.decide()
        if ours:
            line = (f"pytest-cloud: scheduler DurationScheduling, longest first ({why}; "
                    f"{len(known)} recorded test durations")
            slots = _slots(config)
            if known and slots:
                # Collection has not happened yet: this assumes every recorded test runs.
                expected = max(max(known.values()), sum(known.values()) / slots)
                line += f"; all of them: expected {expected:.1f} s on {slots} slots"
            return line + ")"
        name = {"load": "LoadScheduling", "loadscope": "LoadScopeScheduling",
                "loadfile": "LoadFileScheduling", "loadgroup": "LoadGroupScheduling",
                "worksteal": "WorkStealingScheduling", "each": "EachScheduling"}
        dist = config.getvalue("dist")
        return f"pytest-cloud: scheduler {name.get(dist, dist)} of pytest-xdist ({why})"

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        ours, _, known = self.decide()
        if not ours:
            return None
        self.scheduler = DurationScheduling(config, log, known, SCOPES[config.getvalue("dist")])
        return self.scheduler

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        s = self.scheduler
        if s is None or s.expected_s is None or self.config.option.verbose < 0:
            return
        terminalreporter.write_line(
            f"pytest-cloud: scheduled longest first: expected {s.expected_s:.1f} s of tests on "
            f"{s.slots} workers (longest unit {s.longest_s:.1f} s, all {s.total_s:.1f} s)")


def _slots(config: Any) -> int:
    """The workers the controller will start (xdist renamed the function in 3.7)."""
    import xdist.workermanage as wm

    parse = getattr(wm, "parse_tx_spec_config", None) or getattr(wm, "parse_spec_config")
    try:
        return len(parse(config))
    except Exception:  # no --tx: not distributed, nothing to expect
        return 0


def register(config: pytest.Config, dist_defaulted: bool) -> None:
    """Turn both parts on for this controller (the glue's ``activate`` calls it)."""
    config.pluginmanager.register(DurationRecorder(config), "pytest-cloud-durations")
    config.pluginmanager.register(SchedulerChoice(config, dist_defaulted), "pytest-cloud-sched")


# ---------------------------------------------------------------------------------------------
# The scheduler
# ---------------------------------------------------------------------------------------------

class DurationScheduling:
    """Longest expected work first, in shrinking pieces, stealing at the end.

    ``durations`` maps test ids to recorded seconds; ``scope`` groups test ids into units that
    stay on one worker (None: every test is its own unit, and may be stolen).

    Invariants: ``queue`` holds units (lists of collection indices) not yet sent, longest
    first; ``node2pending[node]`` the indices sent to ``node`` and not yet reported complete,
    in the order the worker runs them (its first is running or about to). A removed node's
    pending tests go back to the front of the queue except the first, which :meth:`remove_node`
    returns as the crashed item; whether it runs again is the caller's decision
    (``mark_test_pending``), as with xdist's own schedulers.
    """

    def __init__(self, config: Any, log: Any, durations: Mapping[str, float],
                 scope: Callable[[str], str] | None = None, numnodes: int | None = None) -> None:
        if numnodes is None:
            numnodes = _slots(config)
        self.numnodes = numnodes
        self.config = config
        self.log = log.durationsched if log is not None else (lambda *a: None)
        self.durations = durations
        self.scope = scope
        self.node2collection: dict[Any, list[str]] = {}
        self.node2pending: dict[Any, list[int]] = {}
        self.collection: list[str] | None = None
        self.cost: list[float] = []
        self.queue: deque[list[int]] = deque()
        self.queued_s = 0.0
        self.steal_from: Any = None
        self.expected_s: float | None = None
        self.longest_s = self.total_s = 0.0
        self.slots = 0

    # -- the protocol's properties ------------------------------------------------------------

    @property
    def nodes(self) -> list[Any]:
        return list(self.node2pending)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.node2collection) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.queue or self.steal_from is not None:
            return False
        return all(len(p) < MIN_PENDING for p in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.queue) or any(self.node2pending.values())

    # -- nodes coming and going ---------------------------------------------------------------

    def add_node(self, node: Any) -> None:
        assert node not in self.node2pending
        self.node2pending[node] = []

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        assert node in self.node2pending
        if self.collection is not None and list(collection) != self.collection:
            # A replacement that collected something else gets nothing (xdist logs and moves on).
            from xdist.report import report_collection_diff

            other = next(iter(self.node2collection))
            self.log(report_collection_diff(self.collection, collection,
                                            other.gateway.id, node.gateway.id))
            return
        self.node2collection[node] = list(collection)

    def remove_node(self, node: Any) -> str | None:
        pending = self.node2pending.pop(node)
        if self.steal_from is node:
            self.steal_from = None  # a dead node answers no steal; its tests come back below
        if not pending:
            self._fill_all()
            return None
        assert self.collection is not None
        crashitem = self.collection[pending[0]]
        self._requeue_front(pending[1:])
        self._fill_all()
        return crashitem

    # -- tests coming and going ---------------------------------------------------------------

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            self._fill_all()
            return
        if not self._same_collections():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        if not self.collection:
            return
        self.cost = estimate(self.collection, self.durations)
        units = self._units(range(len(self.collection)))
        units.sort(key=lambda u: (-self._cost_of(u), u[0]))
        self.queue.extend(units)
        self.queued_s = sum(self.cost)
        self.total_s = self.queued_s
        self.longest_s = self._cost_of(units[0])
        self.slots = len(self._ready_nodes())
        self.expected_s = max(self.longest_s, self.total_s / max(1, self.slots))
        # Rounds of one piece per hungry worker, the least loaded first (longest processing
        # time first): the longest units are spread one per worker before anybody gets a
        # second one, and a second one goes where the first was shortest.
        while self.queue:
            hungry = sorted((n for n in self._ready_nodes() if self._hungry(n)),
                            key=lambda n: self._cost_of(self.node2pending[n]))
            if not hungry:
                break
            for node in hungry:
                if self.queue:
                    self._send(node, self._piece())
        self._fill_all()

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        self.node2pending[node].remove(item_index)
        self._fill(node)

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        self._requeue_front([self.collection.index(item)])
        self._fill_all()

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        """The worker's answer to a steal: these tests left its queue."""
        if self.steal_from is node:
            self.steal_from = None
        pending = self.node2pending.get(node)
        if pending is not None:  # else it is gone and remove_node requeued them already
            stolen = set(indices)
            self.node2pending[node] = [i for i in pending if i not in stolen]
            self._requeue_front([i for i in pending if i in stolen])
        self._fill_all()

    # -- the policy ---------------------------------------------------------------------------

    def _ready_nodes(self) -> list[Any]:
        return [n for n in self.node2pending if n in self.node2collection and not n.shutting_down]

    def _queued_behind(self, pending: Sequence[int]) -> float:
        return sum(self.cost[i] for i in pending[1:])

    def _target(self) -> float:
        return self.queued_s / (2 * max(1, len(self._ready_nodes())))

    def _hungry(self, node: Any) -> bool:
        pending = self.node2pending[node]
        if len(pending) < MIN_PENDING:
            return True
        return self._queued_behind(pending) < min(LOOKAHEAD_S, self._target())

    def _piece(self) -> list[int]:
        """Units from the head of the queue worth about :meth:`_target`, at least one."""
        target = self._target()
        piece: list[int] = []
        got = 0.0
        limit = target * (1 + 1e-9)  # float sums of equal tests land just above the target
        while self.queue and (not piece or got + self._cost_of(self.queue[0]) <= limit):
            unit = self.queue.popleft()
            piece.extend(unit)
            got += self._cost_of(unit)
        self.queued_s = max(0.0, self.queued_s - got) if self.queue else 0.0
        return piece

    def _fill(self, node: Any) -> None:
        if node not in self.node2pending or node not in self.node2collection or node.shutting_down:
            return
        while self.queue and self._hungry(node):
            self._send(node, self._piece())
        if not self.queue and len(self.node2pending[node]) < MIN_PENDING:
            if not self._steal_for(node):
                # Nothing left anywhere for it: shut it down, so it runs its last test.
                node.shutdown()

    def _fill_all(self) -> None:
        for node in self._ready_nodes():
            self._fill(node)

    def _steal_for(self, hungry: Any) -> bool:
        """True when a steal is under way (the hungry worker waits for its answer)."""
        if self.scope is not None:
            return False
        if self.steal_from is not None:
            return True
        best, best_s = None, 0.0
        for node in self._ready_nodes():
            if node is not hungry:
                queued = self._queued_behind(self.node2pending[node])
                if queued > best_s:
                    best, best_s = node, queued
        if best is None:
            return False
        # Half of its queued work from the tail, keeping its running test and the next one.
        pending = self.node2pending[best]
        stolen: list[int] = []
        got = 0.0
        for i in reversed(pending[MIN_PENDING:]):
            if got + self.cost[i] > best_s / 2:
                break
            stolen.append(i)
            got += self.cost[i]
        if not stolen or got < STEAL_MIN_S:
            return False
        stolen.reverse()
        best.send_steal(stolen)
        self.steal_from = best
        return True

    def _send(self, node: Any, indices: list[int]) -> None:
        if indices:
            self.node2pending[node].extend(indices)
            node.send_runtest_some(indices)

    def _units(self, indices: Iterable[int]) -> list[list[int]]:
        assert self.collection is not None
        if self.scope is None:
            return [[i] for i in indices]
        groups: dict[str, list[int]] = {}
        for i in indices:
            groups.setdefault(self.scope(self.collection[i]), []).append(i)
        return list(groups.values())

    def _cost_of(self, unit: Sequence[int]) -> float:
        return sum(self.cost[i] for i in unit)

    def _requeue_front(self, indices: Sequence[int]) -> None:
        units = self._units(indices)
        units.sort(key=lambda u: (-self._cost_of(u), u[0]))
        self.queue.extendleft(reversed(units))
        self.queued_s += sum(self._cost_of(u) for u in units)

    def _same_collections(self) -> bool:
        from xdist.report import report_collection_diff

        (first, col), *rest = self.node2collection.items()
        same = True
        for node, collection in rest:
            msg = report_collection_diff(col, collection, first.gateway.id, node.gateway.id)
            if msg:
                same = False
                self.log(msg)
                self.config.hook.pytest_collectreport(report=pytest.CollectReport(
                    nodeid=node.gateway.id, outcome="failed", longrepr=msg, result=[]))
        return same
