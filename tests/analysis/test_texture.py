"""The ``texture`` analysis on a constructed ``explain`` store whose answers are known.

Per image a random texture on 4 x 4 cells, and layers placed against it: ``down1`` / ``down2`` (class
``Conv2dSame``) put an absolute share proportional to the texture in every cell (signs random), so their rank
correlation with the texture is exactly 1; ``anti`` (``Conv2d``) is a strictly decreasing function of it (-1);
``noise`` (``ReLU``) is drawn independently of it (0 in expectation); ``coarse`` (``BatchNorm2d``, a 2 x 2 grid)
has all its mass in the quadrant that holds the 4 most textured cells, so after resampling onto the 4 x 4 cells
all of its mass is in the textured quarter; ``moved`` is the same map in the quadrant of the least textured
cells (none of it there). One more unit (another dataset) was written before the texture column existed.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.analysis import analyses
from pipelines.analysis.views import connect
from pipelines.store.results import Store

from .conftest import EXPLAIN_ROW_COLUMNS, write_unit

MODEL = "tf_efficientnet_lite0.in1k"
N_IMG, G = 12, 4
QUADRANTS = [
    (slice(0, 2), slice(0, 2)),
    (slice(0, 2), slice(2, 4)),
    (slice(2, 4), slice(0, 2)),
    (slice(2, 4), slice(2, 4)),
]


def _texture(rng: np.random.Generator, hot: int, cold: int) -> np.ndarray:
    """4 x 4 texture (fractions) whose 4 largest cells fill quadrant ``hot`` and 4 smallest quadrant ``cold``."""
    t = rng.uniform(1.0, 2.0, (G, G))
    t[QUADRANTS[hot]] = rng.uniform(5.0, 6.0, (2, 2))
    t[QUADRANTS[cold]] = rng.uniform(0.1, 0.5, (2, 2))
    return t / t.sum()


def _columns(rng: np.random.Generator, with_texture: bool = True) -> dict[str, list]:
    names = EXPLAIN_ROW_COLUMNS
    cols: dict[str, list] = {c: [] for c in names}

    def add(i, kind, layer, cls, idx, cells, tex=None):
        arr = np.asarray(cells, float)
        vals = (
            f"img{i}",
            i,
            "rotate",
            kind,
            layer,
            cls,
            idx,
            kind,
            arr.shape[0],
            arr.shape[1],
            float(arr.sum()),
            float(np.abs(arr).sum()),
            arr.ravel().tolist(),
            None,
            tex,
            2 * G,
            2 * G,
            1.0 + i,
        )
        for c, v in zip(names, vals, strict=True):
            cols[c].append(v)

    for i in range(N_IMG):
        hot, cold = rng.choice(4, size=2, replace=False)
        t = _texture(rng, hot, cold)
        sign = rng.choice([-1.0, 1.0], size=(G, G))
        ranks = t.ravel().argsort().argsort().reshape(G, G)
        coarse, moved = np.zeros((2, 2)), np.zeros((2, 2))
        coarse[divmod(int(hot), 2)] = 0.2
        moved[divmod(int(cold), 2)] = 0.2
        layers = [
            ("down1", "Conv2dSame", 0.3 * sign * t),
            ("down2", "Conv2dSame", 0.1 * t),
            ("anti", "Conv2d", 0.01 * (G * G - ranks)),
            ("noise", "ReLU", rng.normal(size=(G, G)) * 0.01),
            ("coarse", "BatchNorm2d", coarse),
            ("moved", "BatchNorm2d", moved),
        ]
        for j, (name, cls, cells) in enumerate(layers):
            add(i, "layer", name, cls, j, cells)
        add(i, "image", "<image>", "", -1, 0.5 * t, t.ravel().tolist() if with_texture else None)
    return cols


@pytest.fixture(scope="module")
def texture_table(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("texture") / "r")
    s = Store(root)
    rng = np.random.default_rng(5)
    cfg = {"generators": ["rotate"], "output": "probs", "interpolation": "cubic"}
    write_unit(s, "explain", MODEL, "sample-test", "test", _columns(rng), config=cfg)
    # a unit written before the texture column existed (schema version < 7)
    write_unit(s, "explain", MODEL, "sample-ood", "ood", _columns(rng, with_texture=False), config=cfg)
    con = connect(root, threads=1)
    df = analyses.texture(con, weights="any", n_boot=500)
    con.close()
    old = df[df.dataset == "sample-ood"]
    assert len(old) == 1 and old["n"].iloc[0] == 0 and np.isnan(old["estimate"].iloc[0])
    assert "12 images without texture" in old["note"].iloc[0] and "--force" in old["note"].iloc[0]
    return root, df[df.dataset == "sample-test"].set_index(["term", "statistic"])


def test_texture_recovers_the_planted_correlations(texture_table):
    _, df = texture_table
    for term in ("down1", "down2", "class:Conv2dSame", "<image>"):
        r = df.loc[(term, "texture_rho")]
        assert r["estimate"] == pytest.approx(1.0) and r["ci_low"] == pytest.approx(1.0), term
        assert r["n"] == N_IMG and r["n_of"] == "images"
    anti = df.loc[("anti", "texture_rho")]
    assert anti["estimate"] == pytest.approx(-1.0) and anti["ci_high"] == pytest.approx(-1.0)
    noise = df.loc[("noise", "texture_rho")]
    assert noise["ci_low"] < 0 < noise["ci_high"] and abs(noise["estimate"]) < 0.3
    assert df.loc[("class:Conv2dSame", "texture_rho"), "n_layers"] == 2


def test_textured_share_follows_the_mass_across_grids(texture_table):
    _, df = texture_table
    coarse = df.loc[("coarse", "textured_share")]
    assert coarse["estimate"] == pytest.approx(1.0) and coarse["cell_fraction"] == 0.25
    assert coarse["enrichment"] == pytest.approx(4.0)
    assert df.loc[("moved", "textured_share"), "estimate"] == pytest.approx(0.0, abs=1e-12)
    # the class of both: half the mass in the textured quarter
    assert df.loc[("class:BatchNorm2d", "textured_share"), "estimate"] == pytest.approx(0.5)
    # abs_share: LEE-weighted absolute share of the map (down1's |cells| add up to 0.3 in every image)
    assert df.loc[("down1", "texture_rho"), "abs_share"] == pytest.approx(0.3)
    for _, r in df.reset_index().iterrows():
        if np.isfinite(r["ci_low"]):
            assert r["ci_low"] - 1e-12 <= r["estimate"] <= r["ci_high"] + 1e-12, r


def test_texture_rejects_bad_options(texture_table):
    con = connect(texture_table[0], threads=1)
    with pytest.raises(ValueError, match="textured_fraction"):
        analyses.texture(con, textured_fraction=1.5)
    with pytest.raises(ValueError, match="top"):
        analyses.texture(con, top=-1)
    assert analyses.texture(con, weights="any", model="no-such-model").empty
    con.close()
