"""``alt_summary.pooled_value``: StyleGAN3's EQ statistic (PSNR of the squared error pooled over every image and draw)
from the per-image ``sse`` / ``mask_count`` a unit stores, whatever the batches it was computed in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import catalog
import liecore.metrics as m
from pipelines.analysis.views import connect
from pipelines.spec.families import compute_alt, image_rngs
from pipelines.store.results import Store
from tests.analysis.conftest import write_unit


def _columns(cols: dict, first: int) -> dict:
    pos = np.asarray(cols["sample_pos"]) + first
    return {
        "sample_id": [f"img{p:03d}" for p in pos],
        "sample_index": pos.astype(np.int32),
        **{
            k: cols[k]
            for k in ("metric", "value", "value_unit", "higher_is_better", "sse", "mask_count", "peak_to_peak", "seed")
        },
    }


def test_pooled_value_is_stylegan3s_statistic_over_batches(tmp_path) -> None:
    loaded = catalog.build_model("test_resnet.r160_in1k", weights="random")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (80, 90, 3), dtype=np.uint8) for _ in range(4)]
    x = loaded.preprocess(images)[..., :32, :32]  # 32 px: EQ-R's 4x-upsampled rotations cost 5x more at 64 px
    config = {"metrics": ["eq_t", "eq_r", "circular_shift_consistency"], "output": "probs"}
    kw = {"config": config, "mean": None, "std": None, "seed": 3}
    parts = [_columns(compute_alt(loaded.model, x[i : i + 2], first_index=i, **kw), i) for i in (0, 2)]
    columns = {k: [v for p in parts for v in list(p[k])] for k in parts[0]}
    store = Store(str(tmp_path / "r"))
    write_unit(store, "alt", "test_resnet.r160_in1k", "d", "test", columns, config=config)
    con = connect(str(tmp_path / "r"))
    got = dict(con.execute("SELECT metric, pooled_value FROM alt_summary").fetchall())

    for name in ("eq_t", "eq_r"):
        batches = [m.METRICS[name](loaded.model, x[i : i + 2], rng=image_rngs(3, i, 2)) for i in (0, 2)]
        sse = sum(float(b.extras["sse"].sum()) for b in batches)
        count = sum(float(b.extras["count"].sum()) for b in batches)
        assert got[name] == pytest.approx(20 * math.log10(2.0) - 10 * math.log10(sse / count), rel=1e-12), name
        # the same images and draws in one call: liecore's own pooled statistic (float32 kernels of another
        # batch size round differently)
        whole = m.METRICS[name](loaded.model, x, rng=image_rngs(3, 0, 4))
        assert whole.pooled is not None and math.isfinite(whole.pooled)
        assert got[name] == pytest.approx(whole.pooled, rel=1e-6), name
        per_image = float(torch.as_tensor(whole.values).mean())
        assert abs(got[name] - per_image) > 1e-3  # not the mean of per-image PSNRs
    assert got["circular_shift_consistency"] is None  # no pooled statistic for the other metrics
