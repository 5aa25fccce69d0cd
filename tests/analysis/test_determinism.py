"""The same results root and the same seed give byte-identical analysis tables, whatever DuckDB's threads.

DuckDB returns rows in no fixed order without ORDER BY (a parallel scan, join or aggregation interleaves them
differently from run to run), and the analyses feed rows in the order they come to bootstrap resamples (which
draw positions), regressions and correlations (float sums). Every query of ``pipelines.analysis.analyses``
therefore orders its rows totally; this test runs all five analyses over one store through fresh connections
with one and with several DuckDB threads and compares the tables exactly (``lee report`` writes them as CSV).
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from pipelines.analysis.analyses import ANALYSES, run_analysis
from pipelines.analysis.views import connect
from pipelines.store.results import Store

from .conftest import EXPLAIN_ROW_COLUMNS, layerwise_columns, write_unit

LAYERS = [
    ("stem", "Conv2d", "convolution"),
    ("bn", "BatchNorm2d", "normalization"),
    ("act", "ReLU", "activation"),
    ("fc", "Linear", "linear"),
]


def _store(planted, tmp_path) -> str:
    """A copy of the planted store (lee + alt results of 72 models) with layerwise results of 6 of its models."""
    root = str(tmp_path / "results")
    shutil.copytree(planted.root, root)
    rng = np.random.default_rng(5)
    store = Store(root)
    cfg = {"generators": ["rotate"], "method": "exact", "output": "probs", "interpolation": "cubic"}
    for m in planted.models[:: len(planted.models) // 6]:
        fractions = rng.dirichlet(np.ones(len(LAYERS) + 1) * 20, size=10)
        write_unit(
            store,
            "layerwise",
            m["name"],
            "synth-test",
            "test",
            layerwise_columns(LAYERS, fractions, np.exp(rng.normal(-8, 0.5, 10))),
            config=cfg,
        )
        write_unit(store, "explain", m["name"], "synth-test", "test", _explain_columns(rng, 10), config=cfg)
    return root


def _explain_columns(rng: np.random.Generator, n_images: int, size: int = 16, grid: int = 4) -> dict[str, list]:
    """explain-table columns: per image two layer rows (signed maps on grid x grid cells), the image row (its
    cells, a 1-px border profile of a size x size input and a texture on its cells) and the remainder; the shares
    add up to 1."""
    names = EXPLAIN_ROW_COLUMNS
    cols: dict[str, list] = {c: [] for c in names}
    for i in range(n_images):
        lee = float(np.exp(rng.normal(-8, 0.5)))
        maps = [rng.normal(0.4, 0.3, grid * grid) / grid**2 for _ in LAYERS[:2]]
        image = (maps[0] + maps[1]).tolist()
        profile = rng.dirichlet(np.ones(size // 2)) * sum(image)
        remainder = 1.0 - sum(image)
        texture = rng.dirichlet(np.ones(grid * grid)).tolist()
        rows = [
            ("layer", name, cls, j, kind, grid, m.tolist(), None)
            for j, ((name, cls, kind), m) in enumerate(zip(LAYERS[:2], maps, strict=True))
        ]
        rows += [
            ("image", "<image>", "", -1, "image", grid, image, profile.tolist()),
            ("remainder", "<remainder>", "", -1, "remainder", None, None, None),
        ]
        for kind, layer, cls, j, lkind, g, cells, prof in rows:
            total = remainder if cells is None else float(np.sum(cells))
            for c, v in zip(
                names,
                (
                    f"img{i}",
                    i,
                    "rotate",
                    kind,
                    layer,
                    cls,
                    j,
                    lkind,
                    g,
                    g,
                    total,
                    abs(total) if cells is None else float(np.abs(cells).sum()),
                    cells,
                    prof,
                    texture if kind == "image" else None,
                    size,
                    size,
                    lee,
                ),
                strict=True,
            ):
                cols[c].append(v)
    return cols


def _tables(
    root: str, catalog: str, threads: int, options: dict[str, dict], keep_order: bool = True
) -> dict[str, pd.DataFrame]:
    con = connect(root, catalogs=[catalog], threads=threads)
    if not keep_order:  # DuckDB may then reorder even a scan's rows (joins, filters): only ORDER BY orders them
        con.execute("SET preserve_insertion_order = false")
    try:
        return {
            name: run_analysis(con, name, weights="any", n_boot=200, seed=7, **options.get(name, {}))
            for name in ANALYSES
        }
    finally:
        con.close()


def test_analyses_are_identical_across_duckdb_threads_and_connections(planted, tmp_path):
    root = _store(planted, tmp_path)
    names = [m["name"] for m in planted.models]
    # anti-aliasing ratios need pairs: any two models with the same images stand in (bootstrap over images)
    options = {"scale": {"pairs": [(names[0], names[1]), (names[24], names[26])]}}
    want = _tables(root, planted.catalog, 1, options)
    for name, df in want.items():  # every analysis has rows, with bootstrap intervals
        assert len(df) and np.isfinite(df["ci_low"]).any(), name
    assert (want["scale"]["statistic"] == "ratio").sum() == 2 * 3 * 2  # pairs x datasets x generators
    # fresh connections: DuckDB's parallel plans interleave rows differently each time
    for threads, keep_order in ((4, True), (3, True), (4, False)):
        got = _tables(root, planted.catalog, threads, options, keep_order)
        for name in ANALYSES:
            pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=f"{name}, threads={threads}")
            assert got[name].to_csv(index=False) == want[name].to_csv(index=False), name
