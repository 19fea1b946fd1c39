"""The plugin end to end: real pytest + xdist popen workers, a fake binary (see conftest)."""

from __future__ import annotations

import os

import pytest


def test_inert_without_nodes(project, fake_binary):
    result = project.runpytest_subprocess("tests")
    result.assert_outcomes(passed=4, failed=1, skipped=1)  # not in the mirror, no worker id
    assert fake_binary.calls() == []
    assert "pytest-cloud:" not in result.stdout.str()


def test_runs_on_the_planned_workers(project, fake_binary):
    result = project.runpytest_subprocess(
        "tests", "-v",
        "--cloud-node=node1", "--cloud-nodes=node2 node3", "--cloud-node=node1",
        "--cloud-mem-per-process=500", "--cloud-max-processes=4", "--cloud-python=python3.11",
        "--cloud-chdir=pc_dir", "--cloud-virtualenv-path=.venv",
        "--cloud-rsync-bandwidth-limit=0", "--cloud-rsync-max-processes=2",
        "--cloud-rsync-cipher=aes256-ctr", "--cloud-ssh-config=my_ssh_config",
    )
    result.assert_outcomes(passed=5, skipped=1)
    calls = fake_binary.calls()
    assert len(calls) == 1, "workers receive --cloud-node too and must not call the binary"
    assert calls[0]["cwd"] == str(project.path)
    assert calls[0]["argv"] == [
        "pytest", "--cloud-prepare",
        "--cloud-node=node1", "--cloud-node=node2", "--cloud-node=node3", "--cloud-node=node1",
        "--cloud-python=python3.11", "--cloud-chdir=pc_dir", "--cloud-virtualenv-path=.venv",
        "--cloud-mem-per-process=500", "--cloud-max-processes=4",
        "--cloud-rsync-bandwidth-limit=0", "--cloud-rsync-max-processes=2",
        "--cloud-rsync-cipher=aes256-ctr", "--cloud-ssh-config=my_ssh_config",
    ]
    result.stdout.fnmatch_lines([
        f"pytest-cloud: binary {fake_binary.path} ($PYTEST_CLOUD_BINARY), version *",
        "pytest-cloud: node1: 2 slots",
        "pytest-cloud: node4: dropped (connection refused)",
        "seen: dist=load maxworkerrestart=4 tx=2",
        "*PASSED tests/test_where.py::test_runs_in_the_mirror*",
    ])
    assert "fake-cloud: node1: 2 slots" in result.stderr.str()  # the binary's stderr passes through


def test_the_wheelhouse_flag_reaches_the_binary(project, fake_binary):
    result = project.runpytest_subprocess("tests", "--cloud-node=node1", "--cloud-env=build", "--cloud-wheelhouse")
    result.assert_outcomes(passed=5, skipped=1)
    argv = fake_binary.calls()[0]["argv"]
    assert argv[-2:] == ["--cloud-env=build", "--cloud-wheelhouse"], argv


def test_timings_line_carries_the_binarys_phases_and_xdists(project, fake_binary):
    result = project.runpytest_subprocess("tests", "--cloud-node=node1", "--cloud-timings",
                                          "--cloud-connect-timeout=3")
    result.assert_outcomes(passed=5, skipped=1)
    assert fake_binary.calls()[0]["argv"][-1] == "--cloud-connect-timeout=3"
    lines = [l for l in result.stderr.lines if l.startswith("pytest-cloud: timings ")]
    assert len(lines) == 1, result.stderr.str()
    import json
    phases = json.loads(lines[0].split(" ", 2)[2])
    assert phases["probe"] == 1, phases  # the binary's own phases come through
    for phase in ("worker_start", "tests", "teardown", "total"):
        assert isinstance(phases[phase], int), phases


def test_user_choices_win(project, fake_binary):
    result = project.runpytest_subprocess(
        "tests", "--cloud-node=node1", "--dist", "loadfile", "--max-worker-restart", "7")
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines(["seen: dist=loadfile maxworkerrestart=7 tx=2"])


@pytest.mark.parametrize("args", [
    ["tests/test_where.py::test_two"],
    ["-k", "param and not 1"],
    ["ABSOLUTE"],
])
def test_selection_reaches_the_workers(project, fake_binary, args):
    args = [str(project.path / "tests" / "test_other.py") if a == "ABSOLUTE" else a for a in args]
    local = project.runpytest_subprocess(*args, "-p", "no:cloud")
    remote = project.runpytest_subprocess(*args, "--cloud-node=node1")
    counts = local.parseoutcomes()
    counts.pop("deselected", None)  # xdist's controller does not count deselected tests
    counts.pop("failed", None)  # test_runs_in_the_mirror fails outside the mirror
    assert remote.parseoutcomes() == counts, remote.stdout.str()


def test_from_a_subdirectory(project, fake_binary, monkeypatch):
    """Relative args, and no args at all, mean on the workers what they mean in the local cwd."""
    monkeypatch.chdir(project.path / "tests")
    remote = project.runpytest_subprocess("test_other.py", "--cloud-node=n", "-rs")
    remote.assert_outcomes(passed=3, skipped=1)
    remote.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_other.py:*: skipped here"])
    remote = project.runpytest_subprocess("--cloud-node=n", "-v")
    remote.assert_outcomes(passed=5, skipped=1)
    remote.stdout.fnmatch_lines(["*PASSED*test_where.py::test_runs_in_the_mirror*"])


def test_develop_eggs_from_ini(pytester, fake_binary):
    pytester.makeini("[pytest]\ncloud_develop_eggs =\n    libs/a\n    libs/b\n")
    pytester.makepyfile(test_x="def test_x(): pass")
    pytester.runpytest_subprocess("--cloud-node=n")
    argv = fake_binary.calls()[0]["argv"]
    assert argv[-2:] == [f"--cloud-develop-egg={pytester.path / 'libs' / 'a'}",
                         f"--cloud-develop-egg={pytester.path / 'libs' / 'b'}"]


def test_binary_failure_passes_its_exit_code(project, fake_binary, monkeypatch):
    monkeypatch.setenv("FAKE_CLOUD_EXIT", "69")
    monkeypatch.setenv("FAKE_CLOUD_STDERR", "error: none of the given nodes is usable\n")
    result = project.runpytest_subprocess("--cloud-node=node1")
    assert result.ret == 69
    result.stderr.fnmatch_lines([
        "error: none of the given nodes is usable",
        "*pytest-cloud: `*pytest-cloud pytest --cloud-prepare --cloud-node=node1` exited with 69: "
        "error: none of the given nodes is usable*",
    ])


def test_binary_of_another_version_is_refused_before_anything_is_synced(project, fake_binary, monkeypatch):
    monkeypatch.setenv("FAKE_CLOUD_VERSION", "5.0.3")
    result = project.runpytest_subprocess("tests", "--cloud-node=node1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    from pytest_cloud.binary import plugin_version
    result.stderr.fnmatch_lines([
        f"*the binary {fake_binary.path} (found by $PYTEST_CLOUD_BINARY) is version 5.0.3, but "
        f"this plugin (*pytest_cloud, *) is version {plugin_version()}; the binary and the plugin "
        "must come from the same release*"
    ])
    assert fake_binary.calls() == []


def test_cloud_binary_option_beats_env(project, fake_binary, monkeypatch):
    monkeypatch.setenv("PYTEST_CLOUD_BINARY", "/nonexistent/pytest-cloud")
    result = project.runpytest_subprocess("tests", "--cloud-node=n", f"--cloud-binary={fake_binary.path}")
    result.assert_outcomes(passed=5, skipped=1)
    monkeypatch.setenv("PYTEST_CLOUD_BINARY", "/nonexistent/pytest-cloud")
    result = project.runpytest_subprocess("tests", "--cloud-node=n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*$PYTEST_CLOUD_BINARY names '/nonexistent/pytest-cloud'*"])


@pytest.mark.parametrize("stdout, message", [
    ("not json", "*printed no session document on stdout*it began with 'not json'*"),
    ('{"format_version": 1, "kind": "plan"}', "*printed a 'plan' document, expected kind 'session'*"),
    ('{"format_version": 1, "kind": "session", "rootdir": "/x", "xdist": {"tx": []}}',
     "*printed a session without rootdir or xdist.tx*"),
])
def test_unusable_output_is_a_usage_error(project, fake_binary, monkeypatch, stdout, message):
    monkeypatch.setenv("FAKE_CLOUD_STDOUT", stdout)
    result = project.runpytest_subprocess("--cloud-node=node1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_newer_session_format_is_refused(project, fake_binary, monkeypatch):
    monkeypatch.setenv("FAKE_CLOUD_FORMAT", "2")
    result = project.runpytest_subprocess("--cloud-node=node1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*session format 2, this plugin knows 1*same pytest-cloud release*"])


def test_numprocesses_conflicts(project, fake_binary):
    result = project.runpytest_subprocess("-n", "2", "--cloud-node=node1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cloud-node decides the workers; drop -n/--tx*"])
    assert fake_binary.calls() == []


def test_collect_only_does_not_sync(project, fake_binary):
    result = project.runpytest_subprocess("--co", "-q", "--cloud-node=node1")
    assert result.ret == 0
    assert fake_binary.calls() == []


@pytest.mark.parametrize("args, shown", [
    (["--help"], "*--cloud-node=NODE*"),
    (["-h"], "*--cloud-node=NODE*"),
    (["--version"], "pytest *"),
    (["--version", "--version"], "*pytest-cloud-*"),
    (["--markers"], "@pytest.mark.xdist_group*"),
    (["--fixtures"], "tmp_path*"),
    (["--fixtures-per-test", "tests/test_where.py"], "*fixtures used by test_runs_in_the_mirror*"),
    (["--cache-show"], "*cachedir: *"),
], ids=["help", "h", "version", "version-twice", "markers", "fixtures", "fixtures-per-test",
        "cache-show"])
def test_options_that_only_show_something_touch_no_node(project, fake_binary, monkeypatch, args,
                                                         shown):
    # --cloud-node in addopts, as a project that always runs on its nodes has it; and a binary
    # that, if it were even asked for its version, would be refused.
    project.makeini("[pytest]\naddopts = --cloud-node=node1 --dist loadgroup\n")
    monkeypatch.setenv("FAKE_CLOUD_VERSION", "0.0.1")
    result = project.runpytest_subprocess(*args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert fake_binary.calls() == []
    pytest.LineMatcher(result.stdout.lines + result.stderr.lines).fnmatch_lines([shown])
    assert "pytest-cloud:" not in result.stdout.str() + result.stderr.str()


def test_crashed_worker_is_replaced_and_reported(pytester, fake_binary):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_crash="""
        import os, pytest

        def test_crash():
            os._exit(1)

        @pytest.mark.parametrize("i", range(4))
        def test_fine(i):
            pass
    """)
    result = pytester.runpytest_subprocess("--cloud-node=node1")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([
        "*worker 'gw*' crashed while running 'test_crash.py::test_crash' on node *popen//chdir=*",
        "*pytest-cloud: workers crashed*",
        "* (node alive): workers gw* down (Not properly terminated); replaced by gw2",
    ])


def test_a_worker_crash_in_teardown_reports_what_xdist_reports(pytester, fake_binary):
    # The glue holds a test's reports until its teardown report (so a lost node's test is
    # reported once, from its rerun); a crash on a live node must still show what the test
    # reported before it, then xdist's crash report, exactly as xdist alone does.
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_crash="""
        import os, pytest

        @pytest.fixture
        def dies_in_teardown():
            yield
            os._exit(1)

        def test_passes_then_its_worker_dies(dies_in_teardown):
            pass

        @pytest.mark.parametrize("i", range(3))
        def test_fine(i):
            pass
    """)

    def reports(*args):
        result = pytester.runpytest_subprocess("-rA", "--junitxml=out.xml", *args)
        import xml.etree.ElementTree as ET
        cases = sorted((tc.get("name"), ",".join(sorted(c.tag for c in tc)) or "passed")
                       for tc in ET.parse(pytester.path / "out.xml").getroot().iter("testcase"))
        summary = sorted(line.split(" - ")[0] for line in result.stdout.lines
                         if line.startswith(("PASSED ", "FAILED ", "ERROR ")))
        return result.ret, summary, cases

    alone = reports("-n", "2", "-p", "no:cloud")
    assert "FAILED test_crash.py::test_passes_then_its_worker_dies" in alone[1], alone
    assert reports("--cloud-node=node1") == alone
