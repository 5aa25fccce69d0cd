"""Fixtures of the catalog tests: a private cache folder and the tiny models' weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def lee_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point ``$LEE_CACHE_DIR`` at a fresh folder for the whole session (the sample set is built there)."""
    path = tmp_path_factory.mktemp("lee-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEE_CACHE_DIR", str(path))
        yield path
