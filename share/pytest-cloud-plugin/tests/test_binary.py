"""Which binary the plugin runs (pytest_cloud.binary), against the INSTALLED wheel.

scripts/test installs the wheel that scripts/build-wheel built into the venv that runs these
tests, so the real pytest-cloud binary sits in that venv's scripts directory.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

from pytest_cloud import binary


def fake(dir: Path, version: str, name: str = "pytest-cloud") -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / name
    path.write_text(f"#!/bin/sh\necho 'pytest-cloud {version}'\n")
    path.chmod(0o755)
    return path


def test_the_wheels_binary_is_found_beside_the_interpreter(installed_wheel):
    version = installed_wheel
    assert Path(binary.__file__).resolve().is_relative_to(Path(sysconfig.get_path("platlib")).resolve())
    found = binary.locate(env={}, path_env="")
    assert found.how == "beside the interpreter"
    assert found.path == str(Path(sysconfig.get_path("scripts")) / "pytest-cloud")
    # The binary speaks Cargo's version, the plugin PEP 440's; they are one version.
    assert binary.same_version(found.version, version), (found.version, version)


def test_an_explicit_binary_beats_the_installed_one(tmp_path, installed_wheel):
    version = installed_wheel
    given = fake(tmp_path / "dev", version)
    found = binary.locate(env={binary.BINARY_ENV: str(given)}, path_env="")
    assert (found.path, found.how) == (str(given), "$PYTEST_CLOUD_BINARY")
    other = fake(tmp_path / "opt", version)
    found = binary.locate(str(other), env={binary.BINARY_ENV: str(given)}, path_env="")
    assert (found.path, found.how) == (str(other), "--cloud-binary")


def test_path_is_the_last_resort(tmp_path):
    on_path = fake(tmp_path / "path", "6.1.0")
    found = binary.locate(env={}, dirs=[tmp_path / "empty"], path_env=str(on_path.parent), wanted="6.1.0")
    assert (found.path, found.how, found.version) == (str(on_path), "PATH", "6.1.0")
    assert found.describe() == f"binary {on_path} (PATH), version 6.1.0"


def test_nowhere_says_where_it_looked_and_how_to_get_one(tmp_path):
    with pytest.raises(pytest.UsageError) as err:
        binary.locate(env={}, dirs=[tmp_path / "venv-bin"], path_env=str(tmp_path / "nothing"))
    message = str(err.value)
    assert str(tmp_path / "venv-bin") in message
    assert "pip install pytest_cloud-*.whl" in message and "--cloud-binary" in message


def test_a_binary_of_another_release_is_refused_naming_both(tmp_path):
    old = fake(tmp_path / "old", "5.0.3")
    with pytest.raises(pytest.UsageError) as err:
        binary.locate(str(old), env={}, path_env="", wanted="6.0.0.dev0")
    message = str(err.value)
    assert f"the binary {old} (found by --cloud-binary) is version 5.0.3" in message
    assert "is version 6.0.0.dev0" in message and os.path.dirname(binary.__file__) in message


def test_something_that_is_not_pytest_cloud_is_refused(tmp_path):
    other = tmp_path / "pytest-cloud"
    other.write_text("#!/bin/sh\necho 'Python 3.11.2'\n")
    other.chmod(0o755)
    with pytest.raises(pytest.UsageError, match="not a pytest-cloud binary"):
        binary.locate(str(other), env={}, path_env="")


@pytest.mark.parametrize("cargo, pep440, same", [
    ("6.0.0-dev.0", "6.0.0.dev0", True),
    ("6.0.0", "6.0.0", True),
    ("6.0.0-rc.1", "6.0.0rc1", True),
    ("6.0.0", "6.0.0.dev0", False),
    ("6.0.1", "6.0.0", False),
])
def test_cargo_and_pep440_spellings_of_one_version(cargo, pep440, same):
    assert binary.same_version(cargo, pep440) is same
