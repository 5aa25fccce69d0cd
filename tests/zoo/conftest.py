"""Fixtures of the zoo tests: a private cache folder, one ``small`` zoo per session, the session's local Ray."""

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


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """The session's local Ray if a test started one already, else a 2-CPU one for this module."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=200 * 1024**2,
        )
    yield
    if started:
        ray.shutdown()
