"""Fixtures of the pipeline tests: Ray's logs not deduplicated (one local Ray per session is ``ray_session``, in
tests/conftest.py)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _quiet_env():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    yield
