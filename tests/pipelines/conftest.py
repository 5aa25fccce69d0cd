"""One local Ray per test session, shared by every ``@pytest.mark.ray`` test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=200 * 1024**2,
        )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _quiet_env():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    yield
