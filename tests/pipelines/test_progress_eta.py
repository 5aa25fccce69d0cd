"""The ETA follows per-unit cost (family and model size) and holds steady while units of different sizes finish."""

from __future__ import annotations

import datetime as dt
import io
import random

from pipelines.running.progress import Progress


def _simulate(with_costs: bool):
    """A steady run on one actor: each unit takes 0.02 s per unit of cost (+-20%), big and small models and a
    layerwise family (10x) interleaved. Returns (estimated, true seconds left) at each finished unit."""
    rng = random.Random(0)
    sizes = [64.0, 1.0, 8.0, 1.0, 64.0, 8.0] * 3
    units = [
        (f"u{i}", "layerwise" if i % 7 == 3 else "lee", s * (10.0 if i % 7 == 3 else 1.0)) for i, s in enumerate(sizes)
    ]
    walls = [0.02 * c * rng.uniform(0.8, 1.2) for _, _, c in units]
    now = [1000.0]
    prog = Progress(len(units), 8 * len(units), stream=io.StringIO(), enabled=False, clock=lambda: now[0])
    if with_costs:
        prog.set_costs(units)
    prog.start(1)
    pairs = []
    for i, ((key, family, _), wall) in enumerate(zip(units, walls, strict=True)):
        started = dt.datetime.fromtimestamp(now[0], tz=dt.timezone.utc)
        now[0] += wall
        prog.update("done", 8, {"wall_s": wall, "started_at": started, "family": family}, key=key)
        left = sum(walls[i + 1 :])
        if left > 0:
            pairs.append((prog.eta(now[0]), left))
    return pairs, prog


def test_cost_eta_is_within_2x_of_the_truth_and_steady():
    pairs, _ = _simulate(with_costs=True)
    for est, true in pairs:
        assert true / 2 <= est <= true * 2, (est, true)
    for (a, _), (b, _) in zip(pairs, pairs[1:], strict=False):  # between updates, beyond the work that finished
        assert b <= a * 2


def test_image_rate_eta_jumps_on_the_same_run():
    """The control: the images-at-the-measured-rate estimate misses the same run by more than 2x."""
    pairs, _ = _simulate(with_costs=False)
    assert any(not (true / 2 <= est <= true * 2) for est, true in pairs if est is not None)


def test_eta_counts_down_between_units_and_spreads_over_actors():
    now = [0.0]
    prog = Progress(3, 3, stream=io.StringIO(), enabled=False, clock=lambda: now[0])
    prog.set_costs([("a", "lee", 1.0), ("b", "lee", 1.0), ("c", "lee", 1.0)])
    prog.start(2)
    assert prog.eta() is None  # nothing finished: no estimate
    now[0] = 10.0
    prog.update("done", 1, {"wall_s": 10.0}, key="a")
    assert prog.eta() == 10.0  # two units of 10 s left on two actors
    now[0] = 14.0
    assert prog.eta() == 6.0
