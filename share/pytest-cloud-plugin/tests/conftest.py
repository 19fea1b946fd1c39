"""Fixtures for the plugin's tests: a FAKE pytest-cloud binary.

The fake stands in for `pytest-cloud --version` and `pytest-cloud pytest --cloud-prepare` only (the real binary is tested
with real sshd nodes elsewhere): it prints the installed plugin's version (or $FAKE_CLOUD_VERSION), logs a prepare's argv, "syncs" by copying the project to a mirror
directory, and prints a session document whose workers are local `popen//chdir=<mirror>`
gateways, so xdist, the glue's argument handling and the workers are all real.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest_plugins = ["pytester"]

FAKE = r'''
import json, os, shutil, sys
if sys.argv[1:] == ["--version"]:
    # The plugin checks this before anything else; by default the installed plugin's version.
    from importlib import metadata
    print("pytest-cloud", os.environ.get("FAKE_CLOUD_VERSION") or metadata.version("pytest-cloud"))
    sys.exit(0)
with open(os.environ["FAKE_CLOUD_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}) + "\n")
sys.stderr.write(os.environ.get("FAKE_CLOUD_STDERR", "fake-cloud: node1: 2 slots\n"))
sys.stderr.flush()
code = int(os.environ.get("FAKE_CLOUD_EXIT", "0"))
if code:
    sys.exit(code)
if "FAKE_CLOUD_STDOUT" in os.environ:
    sys.stdout.write(os.environ["FAKE_CLOUD_STDOUT"])
    sys.exit(0)
mirror = os.environ["FAKE_CLOUD_MIRROR"]
root = os.getcwd()  # the project root: the nearest directory with an ini file, as the binary finds it
while not any(os.path.exists(os.path.join(root, f)) for f in ("tox.ini", "pytest.ini", "pyproject.toml")):
    root = os.path.dirname(root)
shutil.copytree(root, mirror, dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".pytest_cache", "__pycache__"))
workers = int(os.environ.get("FAKE_CLOUD_WORKERS", "2"))
print(json.dumps({
    "format_version": int(os.environ.get("FAKE_CLOUD_FORMAT", "1")),
    "kind": "session",
    "rootdir": root,
    "python": sys.executable,
    "xdist": {"tx": [f"popen//chdir={mirror}"] * workers, "dist": "load",
              "max_worker_restart": 2 * workers},
    "header": ["node1: 2 slots", "node4: dropped (connection refused)"],
    "timings_ms": {"probe": 1, "plan": 0, "sync": 2},
    "sync": {},
}))
'''


def in_ci() -> bool:
    """`CI` set to anything but empty, 0 or false (CI=true from .ci/run)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(present: bool, what: str, how: str) -> None:
    """The one rule for a test whose real check needs something that may be missing (as
    tests/common/require.rs in the crate): under CI it fails, naming what is missing and how to
    get it; elsewhere it skips with a loud SKIPPED reason (`-rs` lists it)."""
    if present:
        return
    if in_ci():
        pytest.fail(f"{what} is missing; {how}. Under CI a missing prerequisite fails the test (it never skips)", pytrace=False)
    pytest.skip(f"SKIPPED: {what} is missing; {how}. Its check did NOT run (under CI=true this fails)")


@pytest.fixture
def installed_wheel() -> str:
    """The installed pytest-cloud distribution's version. The plugin registers through the
    wheel's pytest11 entry point and the fake binary reports the installed version, so these
    tests need the wheel installed in the venv that runs them (scripts/test does that)."""
    from pytest_cloud import binary

    version = binary.plugin_version()
    require(version is not None, "the installed pytest-cloud wheel (pytest_cloud is imported from a source tree)",
            "run scripts/test, or pip install target/wheels/pytest_cloud-*.whl into this venv (scripts/build-wheel builds it)")
    return version


@pytest.fixture
def fake_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed_wheel: str) -> SimpleNamespace:
    path = tmp_path / "bin" / "pytest-cloud"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{FAKE}")
    path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.touch()
    mirror = tmp_path / "mirror"
    monkeypatch.setenv("FAKE_CLOUD_LOG", str(log))
    monkeypatch.setenv("FAKE_CLOUD_MIRROR", str(mirror))
    monkeypatch.setenv("PYTEST_CLOUD_BINARY", str(path))
    monkeypatch.delenv("PYTEST_CLOUD_ROOTDIR", raising=False)

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    return SimpleNamespace(path=path, calls=calls, mirror=mirror)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A small project: tests in tests/, one of which proves where it ran."""
    pytester.makeini("[pytest]\n")
    pytester.mkpydir("tests")
    pytester.makepyfile(**{
        "tests/test_where": """
            import os

            def test_runs_in_the_mirror(worker_id):
                assert worker_id.startswith("gw")
                assert os.getcwd().startswith(os.environ["FAKE_CLOUD_MIRROR"])

            def test_two():
                pass
        """,
        "tests/test_other": """
            import pytest

            @pytest.mark.parametrize("i", range(3))
            def test_param(i):
                pass

            @pytest.mark.skip(reason="skipped here")
            def test_skipped():
                pass
        """,
    })
    pytester.makeconftest("""
        def pytest_report_header(config):
            if not hasattr(config, "workerinput"):
                return "seen: dist=%s maxworkerrestart=%s tx=%d" % (
                    config.option.dist, config.option.maxworkerrestart, len(config.option.tx or []))
    """)
    return pytester
