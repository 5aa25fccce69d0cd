"""Fixtures of the zoo tests: a private cache folder, one ``small`` zoo per session (its committed checkpoints)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.zoo.train import ZooResult


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``$LEE_CACHE_DIR`` for the zoo tests: the zoo datasets and the default zoo folder go there."""
    path = tmp_path_factory.mktemp("zoo-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEE_CACHE_DIR", str(path))
        yield str(path)


SMALL_ZOO = Path(__file__).parents[1] / "data" / "zoo-small"
"""The ``small`` preset's four trained models, as ``lee zoo train --preset small`` writes them (README there)."""


@pytest.fixture(scope="session")
def small_zoo(zoo_cache: str) -> ZooResult:
    """The ``small`` preset in the default zoo folder (so the catalog name ``zoo`` finds it).

    Its checkpoints are the committed ones (:data:`SMALL_ZOO`), which ``train_zoo`` finds under their cache keys
    and reuses: training all four takes about 75 s of both cores. ``test_small_preset_...`` trains one of them
    again and compares, and fails if a committed model no longer has the current key (code or data changed); the
    models without one are trained here meanwhile, so every other test still sees a real ``small`` zoo.
    """
    import catalog
    from pipelines.zoo.grid import preset
    from pipelines.zoo.train import train_zoo

    models = catalog.zoo_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    for f in sorted(SMALL_ZOO.glob("zoo-*")):
        shutil.copy2(f, models / f.name)
    lines: list[str] = []
    result = train_zoo(preset("small"), catalog.zoo_dir(), preset="small", threads=2, log=lines.append)
    print("\n".join(lines) + f"\nsmall preset: {result.wall_s:.1f} s wall")
    return result
