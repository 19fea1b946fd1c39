"""Which ``pytest-cloud`` binary the plugin runs, and whether it is the plugin's own release.

The wheel installs the binary into the scripts directory of the environment it is installed
in (a venv's ``bin/``), so that is where the plugin looks by default. The order:

1. ``--cloud-binary PATH``, else ``$PYTEST_CLOUD_BINARY``: an explicit choice wins, so a
   developer's build or a test's stand-in can replace the installed one.
2. Beside the interpreter: the scripts directory of the running Python's install scheme, then
   the scripts directory of the prefix this package sits in (``pip install --user`` /
   ``--prefix`` put the package and the binary under one prefix). pip, not ``PATH``, decided
   these, so they hold the binary that came with this very package.
3. ``pytest-cloud`` on ``PATH`` (an editable install of the plugin carries no binary).

Whatever is found must report the plugin's version (``<binary> --version`` prints
``pytest-cloud X``): the session document and the glue change together, so a binary from
another release is refused before anything is synced, naming both versions and both paths.

Nothing here runs at import time; ``locate`` is called only when ``--cloud-node`` is given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import pytest

BINARY_ENV = "PYTEST_CLOUD_BINARY"
NAME = "pytest-cloud"
DISTRIBUTION = "pytest-cloud"


@dataclass(frozen=True)
class Found:
    path: str
    how: str  # "--cloud-binary", "$PYTEST_CLOUD_BINARY", "beside the interpreter", "PATH"
    version: str  # what the binary reported

    def describe(self) -> str:
        """One line for the report header."""
        return f"binary {self.path} ({self.how}), version {self.version}"


def plugin_version() -> str | None:
    """This package's installed version; None when it runs from a source tree uninstalled."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def scripts_dirs() -> list[Path]:
    """Where pip put this package's scripts, most specific first, without duplicates."""
    dirs: list[Path] = []
    scripts = sysconfig.get_path("scripts")
    if scripts:
        dirs.append(Path(scripts))
    # <prefix>/lib/pythonX.Y/site-packages/pytest_cloud -> <prefix>/bin
    package = Path(__file__).resolve().parent
    site, pyver, lib = package.parent, package.parent.parent, package.parent.parent.parent
    if site.name in ("site-packages", "dist-packages") and pyver.name.startswith("python") \
            and lib.name in ("lib", "lib64"):
        dirs.append(lib.parent / "bin")
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            unique.append(d)
    return unique


def _candidate(config_binary: str | None, env: Mapping[str, str],
               dirs: Iterable[Path], path_env: str | None) -> tuple[str, str]:
    """(path, how) of the binary to use, or a UsageError saying where it looked."""
    given, how = (config_binary, "--cloud-binary") if config_binary else (env.get(BINARY_ENV), f"${BINARY_ENV}")
    if given:
        found = shutil.which(given, path=path_env) if os.sep not in given else None
        found = found or (given if os.path.isfile(given) else None)
        if not found:
            raise pytest.UsageError(f"pytest-cloud: {how} names {given!r}, which does not exist")
        return os.path.abspath(found), how
    looked = []
    for d in dirs:
        path = d / NAME
        looked.append(str(d))
        if path.is_file() and os.access(path, os.X_OK):
            return str(path), "beside the interpreter"
    found = shutil.which(NAME, path=path_env)
    if found:
        return os.path.abspath(found), "PATH"
    raise pytest.UsageError(
        f"pytest-cloud: no pytest-cloud binary beside this Python ({', '.join(looked) or 'no scripts directory'}) "
        "nor on PATH; --cloud-node needs it to probe and sync the nodes. The pytest-cloud wheel "
        "installs it (pip install pytest_cloud-*.whl, see share/doc/install.md); an editable or "
        f"source-tree install does not. Or name one with --cloud-binary=PATH or ${BINARY_ENV}."
    )


def binary_version(path: str) -> str:
    """The version ``<path> --version`` prints (``pytest-cloud 6.0.0-dev.0`` -> ``6.0.0-dev.0``)."""
    try:
        out = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise pytest.UsageError(f"pytest-cloud: cannot run `{path} --version`: {exc}") from None
    words = out.stdout.decode(errors="replace").split()
    if out.returncode != 0 or len(words) != 2 or words[0] != NAME:
        said = (out.stdout or out.stderr).decode(errors="replace").strip()[:200]
        raise pytest.UsageError(
            f"pytest-cloud: `{path} --version` exited {out.returncode} and printed {said!r}, "
            f"not `{NAME} VERSION`: it is not a pytest-cloud binary"
        )
    return words[1]


def same_version(a: str, b: str) -> bool:
    """Cargo's ``6.0.0-dev.0`` and PEP 440's ``6.0.0.dev0`` are one version."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def locate(config_binary: str | None = None, env: Mapping[str, str] | None = None,
           dirs: Iterable[Path] | None = None, path_env: str | None = None,
           wanted: str | None = None) -> Found:
    """The binary to run for this plugin, checked to be of the plugin's release.

    The parameters default to the real process state; tests pass their own. ``wanted`` is the
    plugin's version (default: the installed distribution's); when the plugin is not installed
    (a source tree on sys.path) there is nothing to compare with, and the header says so.
    """
    env = os.environ if env is None else env
    dirs = scripts_dirs() if dirs is None else dirs
    path, how = _candidate(config_binary, env, dirs, path_env)
    version = binary_version(path)
    wanted = plugin_version() if wanted is None else wanted
    if wanted is None:
        return Found(path, how, f"{version} (plugin not installed: version not compared)")
    if not same_version(version, wanted):
        plugin_at = Path(__file__).resolve().parent
        raise pytest.UsageError(
            f"pytest-cloud: the binary {path} (found by {how}) is version {version}, but this "
            f"plugin ({plugin_at}, {sys.executable}) is version {wanted}; the binary and the "
            "plugin must come from the same release. Reinstall the pytest-cloud wheel in this "
            "environment, or point --cloud-binary / $PYTEST_CLOUD_BINARY at a matching binary."
        )
    return Found(path, how, version)
