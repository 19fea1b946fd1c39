"""pytest-cloud: run a pytest suite on ssh nodes with pytest-xdist (see pytest_cloud.plugin)."""
