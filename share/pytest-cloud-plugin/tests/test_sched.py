"""The duration-aware scheduler as a plain object with fake workers, its history, and two real
runs through the plugin (popen workers) that record and then use the durations."""

from __future__ import annotations

import heapq
import json
from typing import Sequence

import pytest

from pytest_cloud import sched
from pytest_cloud.sched import DurationScheduling


class FakeNode:
    """What the scheduler sees of a WorkerController, and a worker's queue as xdist's worker
    keeps it: it starts a test once it holds the next one (or was told to shut down); a steal
    takes only tests behind the running one and the next one."""

    count = 0

    def __init__(self) -> None:
        FakeNode.count += 1
        self.gateway = type("G", (), {"id": f"gw{FakeNode.count}"})()
        self.sent: list[int] = []
        self.queue: list[int] = []
        self.steals: list[list[int]] = []
        self.steals_asked = 0
        self.shut = False

    def send_runtest_some(self, indices: Sequence[int]) -> None:
        self.sent.extend(indices)
        self.queue.extend(indices)

    def send_steal(self, indices: Sequence[int]) -> None:
        self.steals.append(list(indices))
        self.steals_asked += 1

    def shutdown(self) -> None:
        self.shut = True

    @property
    def shutting_down(self) -> bool:
        return self.shut

    def answer_steal(self) -> list[int]:
        wanted = set(self.steals.pop(0))
        stolen = [i for i in self.queue[2:] if i in wanted]
        self.queue = [i for i in self.queue if i not in stolen]
        return stolen


def make(collection, durations, nodes=2, scope=None):
    s = DurationScheduling(None, None, durations, scope, numnodes=nodes)
    workers = [FakeNode() for _ in range(nodes)]
    for w in workers:
        s.add_node(w)
    for w in workers:
        s.add_node_collection(w, collection)
    assert s.collection_is_completed
    return s, workers


def simulate(s, workers, seconds):
    """Run the fake workers on simulated time (no clock): returns (end time, who ran what)."""
    s.schedule()
    now = 0.0
    running: list[tuple[float, int, FakeNode]] = []
    busy: set[int] = set()
    ran: dict[int, str] = {}
    while True:
        for w in workers:
            while w.steals:
                s.remove_pending_tests_from_node(w, w.answer_steal())
        for w in workers:
            if id(w) not in busy and w.queue and (len(w.queue) >= 2 or w.shut):
                busy.add(id(w))
                heapq.heappush(running, (now + seconds[w.queue[0]], id(w), w))
        if not running:
            break
        now, _, w = heapq.heappop(running)
        busy.discard(id(w))
        index = w.queue.pop(0)
        assert index not in ran, "ran twice"
        ran[index] = w.gateway.id
        s.mark_test_complete(w, index, seconds[index])
    assert s.tests_finished
    return now, ran


def skewed(short=2000, slow=8):
    ids = [f"tests/test_fast.py::test_fast[{i}]" for i in range(short)]
    ids += [f"tests/test_slow.py::test_slow[{i}]" for i in range(slow)]
    seconds = [0.002] * short + [2.5] * slow
    return ids, seconds


def test_the_longest_tests_go_first_one_per_worker():
    ids, seconds = skewed()
    s, workers = make(ids, dict(zip(ids, seconds)), nodes=8)
    s.schedule()
    slow = set(range(2000, 2008))
    assert {w.sent[0] for w in workers} == slow  # every worker starts with a slow test
    assert all(w.sent[1] not in slow for w in workers)  # and none holds a second one
    assert not any(w.shut for w in workers)
    assert s.expected_s == pytest.approx(max(2.5, sum(seconds) / 8))


def test_pieces_shrink_with_the_work_left():
    ids = [f"t.py::test_{i}" for i in range(400)]
    s, (w,) = make(ids, {i: 0.01 for i in ids}, nodes=1)
    s.schedule()
    sizes = [len(w.sent)]
    while w.queue:
        before = len(w.sent)
        s.mark_test_complete(w, w.queue.pop(0))
        if len(w.sent) > before:
            sizes.append(len(w.sent) - before)
    assert sizes[0] == 200  # half of the work for the only worker, then ever smaller
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    assert sorted(w.sent) == list(range(400)) and w.shut


@pytest.mark.parametrize("slots", [8, 4, 3])
def test_the_tail_ends_near_the_bound(slots, pytester):
    ids, seconds = skewed()
    s, workers = make(ids, dict(zip(ids, seconds)), nodes=slots)
    end, ran = simulate(s, workers, seconds)
    assert sorted(ran) == list(range(len(ids)))
    # The best any order can do: the longest test, or the work spread evenly; 8 slow tests
    # on 3 workers cannot do better than 3 rounds of them.
    bound = max(2.5 * -(-8 // slots), sum(seconds) / slots)
    assert end <= bound * 1.03
    # xdist's own LoadScheduling on the same simulated workers ends later
    from xdist.scheduler import LoadScheduling

    load = LoadScheduling(pytester.parseconfig(f"--tx={slots}*popen"))
    load_workers = [FakeNode() for _ in range(slots)]
    for w in load_workers:
        load.add_node(w)
    for w in load_workers:
        load.add_node_collection(w, ids)
    load_end, load_ran = simulate(load, load_workers, seconds)
    assert sorted(load_ran) == list(range(len(ids)))
    assert end < load_end


def test_stealing_balances_what_the_estimates_got_wrong():
    ids = [f"t.py::test_{i}" for i in range(200)]
    s, workers = make(ids, {}, nodes=4)  # no history: all alike
    actual = [0.05 if i < 50 else 0.001 for i in range(200)]  # ...but the first 50 are slow
    end, ran = simulate(s, workers, actual)
    assert sorted(ran) == list(range(200))
    assert sum(w.steals_asked for w in workers) > 0
    assert sum(len(w.sent) for w in workers) > 200  # some tests were sent twice: stolen, resent
    assert end <= sum(actual) / 4 * 1.25


def test_groups_stay_on_one_worker_longest_group_first():
    ids = ([f"a.py::test_{i}" for i in range(10)] + [f"b.py::test_{i}" for i in range(3)]
           + [f"c.py::test_{i}" for i in range(4)])
    durations = {i: (0.1 if i.startswith("a") else 1.0 if i.startswith("b") else 0.5) for i in ids}
    seconds = [durations[i] for i in ids]
    s, workers = make(ids, durations, nodes=2, scope=sched.SCOPES["loadfile"])
    s.schedule()
    # b (3 s) first, then c (2 s), then a (1 s), whole files only
    assert [ids[i].split("::")[0] for i in workers[0].sent[:3]] == ["b.py"] * 3
    assert [ids[i].split("::")[0] for i in workers[1].sent[:4]] == ["c.py"] * 4
    end, ran = simulate(s, workers, seconds)
    for f in "abc":
        assert len({w for i, w in ran.items() if ids[i].startswith(f)}) == 1, f
    assert all(not w.steals for w in workers)


def test_loadgroup_scope_and_history_keys():
    assert sched.SCOPES["loadgroup"]("t.py::test_a@db") == "db"
    assert sched.SCOPES["loadgroup"]("t.py::test_a[x@y]") == "t.py::test_a[x@y]"
    assert sched.SCOPES["loadscope"]("t.py::C::test_a") == "t.py::C"
    assert sched.group_key("t.py::test_a@db") == "t.py::test_a"
    assert sched.group_key("t.py::test_a[x@y]") == "t.py::test_a[x@y]"


def test_a_node_going_away_gives_its_tests_back():
    ids = [f"t.py::test_{i}" for i in range(40)]
    s, (a, b) = make(ids, {i: 0.01 for i in ids}, nodes=2)
    s.schedule()
    held = list(s.node2pending[a])
    assert len(held) >= 2
    crashed = s.remove_node(a)
    assert crashed == ids[held[0]]  # the caller decides about the one it was running
    assert a not in s.nodes
    # the rest is queued again or already with b, and nothing is lost
    queued = {i for unit in s.queue for i in unit}
    assert set(held[1:]) <= queued | set(s.node2pending[b])
    assert held[0] not in queued | set(s.node2pending[b])
    s.mark_test_pending(crashed)  # e.g. a fault handler re-running it
    done = []
    while b.queue:
        i = b.queue.pop(0)
        done.append(i)
        s.mark_test_complete(b, i)
    assert sorted(done) == list(range(40)) and s.tests_finished and b.shut


def test_a_node_lost_while_a_steal_is_under_way():
    ids = [f"t.py::test_{i}" for i in range(60)]
    s, (a, b, c) = make(ids, {i: 0.01 for i in ids}, nodes=3)
    s.schedule()
    while s.queue:  # b and c work through everything not yet sent
        for w in (b, c):
            if w.queue and s.queue:
                s.mark_test_complete(w, w.queue.pop(0))
    while len(b.queue) > 1:
        s.mark_test_complete(b, b.queue.pop(0))
    assert s.steal_from is not None and s.steal_from.steals
    victim = s.steal_from
    victim_pending = list(s.node2pending[victim])
    s.remove_node(victim)  # it dies before it answers
    assert s.steal_from is not victim
    survivors = [w for w in (a, b, c) if w is not victim]
    held = {i for w in survivors for i in s.node2pending[w]} | {i for u in s.queue for i in u}
    assert set(victim_pending[1:]) <= held
    assert not s.tests_finished


def test_history_merges_forgets_and_estimates():
    h = sched.merge_history({}, {"a.py::t1": 1.0, "a.py::t2": 3.0, "b.py::t": 10.0})
    assert h["runs"] == 1 and h["tests"]["a.py::t1"] == [1.0, 1]
    h = sched.merge_history(h, {"a.py::t1": 2.0})
    assert h["tests"]["a.py::t1"] == [1.5, 2] and h["tests"]["b.py::t"] == [10.0, 1]
    for _ in range(sched.FORGET_AFTER_RUNS):
        h = sched.merge_history(h, {"a.py::t1": 2.0})
    assert "b.py::t" not in h["tests"] and "a.py::t1" in h["tests"]
    known = {"a.py::t1": 1.0, "a.py::t2": 3.0, "a.py::t3": 4.0, "b.py::t": 10.0}
    assert sched.estimate(["a.py::new", "c.py::new", "a.py::t2@grp"], known) == [3.0, 3.5, 3.0]
    assert sched.estimate(["x.py::t"], {}) == [1.0]


class FakeCache:
    def __init__(self, value):
        self.value = value

    def get(self, key, default):
        return self.value if key == sched.CACHE_KEY else default


@pytest.mark.parametrize("stored", [None, "junk", {"format_version": 2, "runs": 1, "tests": {}},
                                    {"format_version": 1, "runs": 1, "tests": {"a": "x"}}])
def test_unreadable_history_is_no_history(stored):
    assert sched.durations_of(sched.read_history(FakeCache(stored))) == {}


@pytest.mark.parametrize("mode, dist, defaulted, known, ours", [
    ("auto", "load", True, 5, True),
    ("auto", "load", True, 0, False),     # the first run records, xdist schedules
    ("auto", "load", False, 5, False),    # --dist load given: xdist's, unchanged
    ("auto", "loadfile", False, 5, False),
    ("duration", "loadfile", False, 0, True),
    ("duration", "worksteal", False, 5, False),
    ("duration", "each", False, 5, False),
    ("xdist", "load", True, 5, False),
])
def test_which_scheduler_runs(mode, dist, defaulted, known, ours):
    assert sched.choose(mode, dist, defaulted, known)[0] is ours


def test_a_bad_scheduler_setting_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(sched.SCHEDULER_ENV, "fastest")
    with pytest.raises(pytest.UsageError, match="expected auto, duration or xdist"):
        sched.check_env()


SKEWED_SUITE = {
    "tests/test_a_fast": """
        import pytest

        @pytest.mark.parametrize("i", range(30))
        def test_fast(i):
            pass
    """,
    "tests/test_z_slow": """
        import time

        def test_slow():
            time.sleep(0.3)
    """,
    # Every test notes when it starts (the workers are local processes: one file, appends).
    "tests/conftest": """
        import os
        import pytest

        @pytest.fixture(autouse=True)
        def _note_start(request):
            log = os.environ.get("START_LOG")
            if log:
                with open(log, "a") as f:
                    f.write(os.environ["PYTEST_XDIST_WORKER"] + " " + request.node.nodeid + "\\n")
    """,
}


def _outcomes(junit) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    out = {}
    for case in ET.parse(junit).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        out[f"{case.get('classname')}.{case.get('name')}"] = kinds[0] if kinds else "passed"
    return out


def test_second_run_starts_the_slow_test_first(project, fake_binary, monkeypatch):
    monkeypatch.delenv(sched.SCHEDULER_ENV, raising=False)
    project.makepyfile(**SKEWED_SUITE)
    runs = []
    for n in (1, 2):
        log = project.path / f"starts-{n}.txt"
        monkeypatch.setenv("START_LOG", str(log))
        result = project.runpytest("--cloud-node=node1", "-p", "xdist", "tests", "--cloud-timings",
                                   f"--junitxml={project.path / f'run-{n}.xml'}")
        result.assert_outcomes(passed=36, skipped=1)
        starts: dict[str, list[str]] = {}  # worker -> the tests it started, in order
        for line in log.read_text().splitlines():
            worker, nodeid = line.split(" ", 1)
            starts.setdefault(worker, []).append(nodeid)
        runs.append((result, starts, _outcomes(project.path / f"run-{n}.xml")))
    (first, starts1, outcomes1), (second, starts2, outcomes2) = runs
    slow = "tests/test_z_slow.py::test_slow"
    first.stdout.fnmatch_lines(["*scheduler LoadScheduling of pytest-xdist "
                                "(--dist load: no recorded durations yet)*"])
    # collection order: it came last on its worker; then it was the first on its worker
    assert [w[-1] for w in starts1.values() if slow in w] == [slow]
    second.stdout.fnmatch_lines(["*scheduler DurationScheduling, longest first "
                                 "(no --dist given; 37 recorded test durations; "
                                 "all of them: expected 0.3 s on 2 slots)*",
                                 "*scheduled longest first: expected * s of tests on 2 workers*"])
    assert [w[0] for w in starts2.values() if slow in w] == [slow]
    timings = [json.loads(line.split(" ", 2)[2]) for run in (first, second)
               for line in run.errlines if line.startswith("pytest-cloud: timings ")]
    assert len(timings) == 2 and "tests_expected" not in timings[0]
    assert timings[1]["tests_expected"] >= 300 and "tests" in timings[1]
    assert outcomes1 == outcomes2 and len(outcomes2) == 37
    stored = json.loads((project.path / ".pytest_cache/v/pytest-cloud/durations").read_text())
    assert stored["runs"] == 2 and len(stored["tests"]) == 37
    assert stored["tests"][slow][0] >= 0.3


def test_dist_load_given_stays_xdists(project, fake_binary, monkeypatch):
    monkeypatch.delenv(sched.SCHEDULER_ENV, raising=False)
    project.makepyfile(**SKEWED_SUITE)
    project.runpytest("--cloud-node=node1", "-p", "xdist", "tests").assert_outcomes(passed=36, skipped=1)
    again = project.runpytest("--cloud-node=node1", "-p", "xdist", "--dist", "load", "tests")
    again.assert_outcomes(passed=36, skipped=1)
    again.stdout.fnmatch_lines(["*scheduler LoadScheduling of pytest-xdist (--dist load as given)*"])


def test_no_cacheprovider_records_nothing(project, fake_binary, monkeypatch):
    monkeypatch.delenv(sched.SCHEDULER_ENV, raising=False)
    project.makepyfile(**SKEWED_SUITE)
    for _ in range(2):
        r = project.runpytest("--cloud-node=node1", "-p", "xdist", "-p", "no:cacheprovider", "tests")
        r.assert_outcomes(passed=36, skipped=1)
        r.stdout.fnmatch_lines(["*scheduler LoadScheduling*no recorded durations yet*"])
    assert not (project.path / ".pytest_cache").exists()
