"""Fixtures of the zoo tests: a private cache folder, one ``small`` zoo per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipelines.zoo.train import ZooResult


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``$LEE_CACHE_DIR`` for the zoo tests: the zoo datasets and the default zoo folder go there."""
    path = tmp_path_factory.mktemp("zoo-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEE_CACHE_DIR", str(path))
        yield str(path)


@pytest.fixture(scope="session")
def small_zoo(zoo_cache: str) -> ZooResult:
    """The ``small`` preset trained once, into the default zoo folder (so the catalog name ``zoo`` finds it)."""
    import catalog
    from pipelines.zoo.grid import preset
    from pipelines.zoo.train import train_zoo

    lines: list[str] = []
    result = train_zoo(preset("small"), catalog.zoo_dir(), preset="small", threads=2, log=lines.append)
    print("\n".join(lines) + f"\nsmall preset: {result.wall_s:.1f} s wall")
    return result
