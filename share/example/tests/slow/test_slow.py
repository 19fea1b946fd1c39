import os

import pytest

import shapes


@pytest.mark.slow
@pytest.mark.parametrize("n", range(16))
def test_slow_sum(n, nap):
    nap(0.1)
    assert shapes.area_sum([shapes.Square(1)] * n) == n


def test_runs_on_a_worker(worker_id_env):
    # Under pytest-cloud every test runs on an xdist worker, never the controller.
    if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        assert worker_id_env != "master"


def test_imports_the_package_from_this_tree():
    # The editable install must resolve to the copy of src/ next to the tests, on a node too.
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert os.path.abspath(shapes.__file__).startswith(os.path.join(here, "src")), shapes.__file__
