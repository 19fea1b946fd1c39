"""The glue's pure parts and its guards, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_cloud import glue

ROOTS = ("/home/me/proj",)


@pytest.mark.parametrize("arg, expected", [
    ("tests", "tests"),
    ("tests/test_x.py::test_y[1-2]", "tests/test_x.py::test_y[1-2]"),
    ("-k", "-k"),
    ("not slow", "not slow"),
    ("/home/me/proj", "."),
    ("/home/me/proj/tests/test_x.py::TestA::test_b", "tests/test_x.py::TestA::test_b"),
    ("/home/me/proj/./tests/../tests", "tests"),
    ("/home/me/project2/tests", "/home/me/project2/tests"),
    ("/tmp/report.xml", "/tmp/report.xml"),
    ("--rootdir=/home/me/proj", "--rootdir=."),
    ("--junitxml=/home/me/proj/out/junit.xml", "--junitxml=out/junit.xml"),
    ("--junitxml=/tmp/junit.xml", "--junitxml=/tmp/junit.xml"),
    ("-o=cache_dir=/x", "-o=cache_dir=/x"),
])
def test_mirror_arg(arg, expected):
    assert glue.mirror_arg(ROOTS, arg) == expected


@pytest.mark.parametrize("arg, cwd, expected", [
    ("test_x.py", "/home/me/proj/tests", "test_x.py"),
    ("/home/me/proj/tests/test_x.py::t", "/home/me/proj/tests", "test_x.py::t"),
    ("/home/me/proj/conftest.py", "/home/me/proj/tests", "../conftest.py"),
    ("--rootdir=/home/me/proj", "/home/me/proj/tests", "--rootdir=.."),
    ("/home/me/proj/tests", "/elsewhere", "tests"),
])
def test_mirror_arg_from_another_cwd(arg, cwd, expected):
    assert glue.mirror_arg(ROOTS, arg, cwd) == expected


def test_mirror_arg_relative_from_outside_the_project(tmp_path):
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    assert glue.mirror_arg((str(root),), "proj/tests::t", str(tmp_path)) == "tests::t"
    assert glue.mirror_arg((str(root),), "nonexistent", str(tmp_path)) == "nonexistent"


def test_unsupported_xdist_is_refused(monkeypatch):
    import xdist

    monkeypatch.setattr(xdist, "__version__", "3.5.0")
    with pytest.raises(pytest.UsageError, match=r"supports pytest-xdist >=3.6,<3.9 but .* 3.5.0"):
        glue.check_xdist()
    monkeypatch.setattr(xdist, "__version__", "4.0.0")
    with pytest.raises(pytest.UsageError, match="4.0.0"):
        glue.check_xdist()


def test_make_reltoroot_is_only_ours_for_our_roots(pytester, monkeypatch):
    import xdist.workermanage as wm

    original = wm.make_reltoroot
    monkeypatch.setenv("PYTEST_CLOUD_ROOTDIR", str(pytester.path))
    config = pytester.parseconfigure("-p", "pytest_cloud.glue")
    try:
        assert wm.make_reltoroot is not original
        (pytester.path / "tests").mkdir()
        mirror = glue._MirrorRoots(pytester.path)
        assert not mirror  # empty: NodeManager.rsync_roots sends nothing
        assert wm.make_reltoroot(mirror, ["tests", str(pytester.path / "tests")]) == ["tests", "tests"]
        with pytest.raises(ValueError, match="not relative to an rsync root"):
            wm.make_reltoroot([Path("/elsewhere")], [str(pytester.path / "tests")])
    finally:
        config._ensure_unconfigure()
    assert wm.make_reltoroot is original


def test_inert_without_rootdir_env(pytester, monkeypatch):
    import xdist.workermanage as wm

    monkeypatch.delenv("PYTEST_CLOUD_ROOTDIR", raising=False)
    original = wm.make_reltoroot
    config = pytester.parseconfigure("-p", "pytest_cloud.glue")
    try:
        assert wm.make_reltoroot is original
        assert not config.pluginmanager.has_plugin("pytest-cloud-glue")
    finally:
        config._ensure_unconfigure()


def test_gateways_are_made_all_at_once_and_handed_out_per_spec():
    """Every ssh spec's gateway is being made at the same time (a barrier that only opens when
    all of them are in makegateway at once), and xdist's later makegateway(spec) gets that
    spec's own gateway, with its rinfo already fetched; other specs are made as before."""
    import threading

    class Spec:
        def __init__(self, name, ssh=True):
            self.name, self.ssh = name, ssh

    class Gateway:
        def __init__(self, spec):
            self.spec, self.rinfo_calls = spec, 0

        def _rinfo(self):
            self.rinfo_calls += 1

    specs = [Spec(f"w{i}") for i in range(4)]
    barrier = threading.Barrier(len(specs), timeout=30)
    made = []

    class Group:
        def makegateway(self, spec=None):
            made.append(spec)
            if spec in specs and len(made) <= len(specs):
                barrier.wait()  # BrokenBarrierError if the specs were made one at a time
            return Gateway(spec)

    group = Group()
    glue._connect_all_at_once(group, specs)
    for spec in reversed(specs):  # any order, as xdist asks
        gateway = group.makegateway(spec)
        assert gateway.spec is spec and gateway.rinfo_calls == 1
    spare = Spec("replacement")
    assert group.makegateway(spare).spec is spare, "a spec not prepared is made on demand"
    again = group.makegateway(specs[0])
    assert again.spec is specs[0] and again.rinfo_calls == 0, "each prepared gateway is handed out once"
    assert len(made) == len(specs) + 2


def test_a_gateway_that_cannot_be_made_fails_where_xdist_asks_for_it():
    class Spec:
        ssh = True

    class Group:
        def makegateway(self, spec=None):
            raise OSError("no route to node")

    group = Group()
    spec = Spec()
    glue._connect_all_at_once(group, [spec])
    with pytest.raises(OSError, match="no route"):
        group.makegateway(spec)


def test_a_test_completing_on_a_worker_whose_node_just_died_does_not_end_the_session():
    """The scheduler's send of further tests to a worker whose channel execnet closed raises
    OSError("cannot send ..."); the glue leaves that worker's tests to its "down" event (they
    are in the scheduler's pending list already) instead of an INTERNALERROR; any other error
    still goes out."""
    class Sched:
        def __init__(self):
            self.node2pending = {"gw0": []}

        def mark_test_complete(self, node, item_index, duration=0):
            self.node2pending[node].extend([7, 8])
            if node == "gw0":
                raise OSError("cannot send (already closed?)")
            raise OSError("disk full")

    sched = Sched()
    glue._survive_closed_channel(sched)
    assert sched.mark_test_complete("gw0", 3, duration=0.1) is None
    assert sched.node2pending["gw0"] == [7, 8], "kept for remove_node to hand back"
    sched.node2pending["gw1"] = []
    with pytest.raises(OSError, match="disk full"):
        sched.mark_test_complete("gw1", 4)
