import os
import time

import pytest

import shapes


@pytest.fixture(scope="session")
def unit_square():
    # A session fixture: built once per worker.
    return shapes.Square(1)


@pytest.fixture(scope="module")
def module_circles():
    return [shapes.Circle(r) for r in range(5)]


@pytest.fixture
def worker_id_env():
    """The xdist worker this test runs on ("master" when not distributed)."""
    return os.environ.get("PYTEST_XDIST_WORKER", "master")


@pytest.fixture
def nap():
    def sleep(seconds=0.05):
        time.sleep(seconds)
    return sleep
