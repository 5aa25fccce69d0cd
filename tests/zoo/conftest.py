"""Fixtures of the zoo tests: a private cache folder and one ``small`` zoo per session.

The ``small`` preset takes about a minute of both CPUs to train, and the zoo tests run late in the session.
So as soon as the tests are collected, if one of them needs the trained zoo, ``lee zoo train --preset small``
starts in a background process at a low CPU priority (``nice 10``): it trains on the CPU time the other
tests leave idle (the suite keeps about 1.3 of the 2 cores busy) and gives way whenever they need it.
``small_zoo`` then waits for it and reads its models. Training is deterministic given the seed, so where it
runs changes no number.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.zoo.train import ZooResult

ROOT = Path(__file__).resolve().parents[2]
TRAIN_TIMEOUT_S = 900  # at the lowest priority on a busy machine; alone it takes about 75 s
_CACHE = pytest.StashKey[str]()
_TRAINER = pytest.StashKey["subprocess.Popen[bytes]"]()
_STARTED = pytest.StashKey[float]()


@dataclass(frozen=True)
class SmallZoo:
    """The trained ``small`` preset: the models as :func:`pipelines.zoo.train.train_zoo` finds them now (in
    grid order) and what ``lee zoo train --preset small`` printed when it trained them."""

    result: ZooResult
    train_log: str
    train_wall_s: float

    @property
    def models(self):  # noqa: ANN201 - list[TrainedModel]
        return self.result.models


def _cache_dir(config: pytest.Config) -> str:
    if _CACHE not in config.stash:
        config.stash[_CACHE] = tempfile.mkdtemp(prefix="lee-zoo-cache-")
    return config.stash[_CACHE]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start training the ``small`` preset in the background if a selected test needs it."""
    config = session.config
    if not any("small_zoo" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    cache = _cache_dir(config)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    # OMP_WAIT_POLICY=PASSIVE: torch's two OpenMP threads sleep at a barrier instead of spinning, which on a
    # busy machine (one thread waiting for the other to be scheduled) burns the CPU the tests need; the
    # thread count, and so every number, is that of `lee zoo train`'s default.
    env = {**os.environ, "LEE_CACHE_DIR": cache, "PYTHONPATH": path, "OMP_WAIT_POLICY": "PASSIVE"}
    log = open(Path(cache) / "train.log", "wb")  # noqa: SIM115 - the child writes it; closed with the session
    config.stash[_TRAINER] = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "zoo", "train", "--preset", "small"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.nice(10),
        start_new_session=True,
    )
    config.stash[_STARTED] = time.perf_counter()
    config.add_cleanup(log.close)


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = config.stash.get(_TRAINER, None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    if _CACHE in config.stash:
        shutil.rmtree(config.stash[_CACHE], ignore_errors=True)


@pytest.fixture(scope="session")
def zoo_cache(pytestconfig: pytest.Config) -> Iterator[str]:
    """``$LEE_CACHE_DIR`` for the zoo tests: the zoo datasets and the default zoo folder go there."""
    path = _cache_dir(pytestconfig)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEE_CACHE_DIR", path)
        yield path


@pytest.fixture(scope="session")
def small_zoo(zoo_cache: str, pytestconfig: pytest.Config) -> SmallZoo:
    """The ``small`` preset, trained by the background ``lee zoo train`` into the default zoo folder (so the
    catalog name ``zoo`` finds it), then read back as ``train_zoo`` finds it (every model cached)."""
    import catalog
    from pipelines.zoo.grid import preset
    from pipelines.zoo.train import train_zoo

    proc = pytestconfig.stash[_TRAINER]
    t0 = time.perf_counter()
    try:
        rc = proc.wait(timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    waited = time.perf_counter() - t0
    log = (Path(zoo_cache) / "train.log").read_text()
    assert rc == 0, f"`lee zoo train --preset small` exited with {rc}:\n{log[-3000:]}"
    wall = time.perf_counter() - pytestconfig.stash[_STARTED]
    print(f"\n{log}\nsmall preset trained in the background: {wall:.1f} s wall, {waited:.1f} s of it waited for here")
    result = train_zoo(preset("small"), catalog.zoo_dir(), preset="small", threads=2, log=lambda _: None)
    return SmallZoo(result, log, wall)
