import math

import pytest

import shapes


@pytest.mark.geometry
@pytest.mark.parametrize("radius", range(12))
def test_area(radius, nap):
    nap()
    assert shapes.Circle(radius).area() == pytest.approx(math.pi * radius ** 2)


def test_sum(module_circles):
    assert shapes.area_sum(module_circles) == pytest.approx(math.pi * 30)


class TestGroupedOnOneWorker:
    """xdist_group keeps these on one worker under --dist loadgroup."""

    @pytest.mark.xdist_group("circles")
    def test_first(self, worker_id_env):
        assert worker_id_env

    @pytest.mark.xdist_group("circles")
    def test_second(self, worker_id_env):
        assert worker_id_env
