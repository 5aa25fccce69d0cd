"""Reproduces the numbers of docs/findings-explain.md: where the LEE of the offline EfficientNet-Lites arises.

    # 1. the sweeps (both resume; about 10 min of one CPU core in all)
    python -m pipelines eval -m offline -d sample-test -n 32 --metrics explain -g translate_x,rotate -r results/explain
    python -m pipelines eval -m offline -d sample-test -n 32 --metrics explain -g translate_x,rotate \
        -r results/explain --weights random
    # 2. the tables (markdown on stdout, every row also in findings-explain.json)
    PYTHONPATH=. python docs/findings/explain_lites.py results/explain

Most numbers come from the named analyses (``lee query --analysis border_share | layer_location | texture``,
here through :func:`pipelines.analysis.analyses.run_analysis`, the same code). What the tool has no analysis for is
computed here from the ``explain`` table with DuckDB: the summed share of the stride-2 convolutions
(``Conv2dSame``), the share by layer class, the image map's share by distance from the image centre, and the
stride-2 layers' texture correlation on the interior cells only (is it the border?) with the paired
pretrained-minus-random difference.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from pipelines.analysis import analyses
from pipelines.analysis.analyses import _spearman_rows  # the texture analysis' own rank correlation
from pipelines.analysis.stats import bootstrap_counts
from pipelines.analysis.views import connect

ROOT = sys.argv[1] if len(sys.argv) > 1 else "results/explain"
N_BOOT, SEED, LEVEL = 2000, 0, 0.95
WEIGHTS = ("pretrained", "random")
SHORT = {
    "tf_efficientnet_lite0.in1k": "lite0",
    "tf_efficientnet_lite1.in1k": "lite1",
    "tf_efficientnet_lite2.in1k": "lite2",
}
Q = [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2]


def fmt(est: float, lo: float, hi: float, d: int = 2) -> str:
    return f"{est:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}]"


def lee_weighted(mat: np.ndarray, lee: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of the pooled LEE per column of ``mat`` (n images, k), percentile bootstrap over images."""
    est = lee @ mat / lee.sum()
    counts = bootstrap_counts(len(lee), N_BOOT, np.random.default_rng(SEED)).astype(float)
    boot = (counts @ (lee[:, None] * mat)) / (counts @ lee)[:, None]
    lo, hi = np.quantile(boot, Q, axis=0)
    return est, lo, hi


def mean_boot(x: np.ndarray) -> tuple[float, float, float]:
    """Mean over images with a percentile bootstrap interval over images (NaN left out)."""
    ok = ~np.isnan(x)
    x = x[ok]
    counts = bootstrap_counts(len(x), N_BOOT, np.random.default_rng(SEED)).astype(float)
    boot = counts @ x / counts.sum(1)
    lo, hi = np.quantile(boot, Q)
    return float(x.mean()), float(lo), float(hi)


def weights_of(w: str) -> str:
    return "('hub', 'file')" if w == "pretrained" else "('random')"


def main() -> None:
    con = connect(ROOT, threads=1)
    out: dict[str, list] = {}
    n_img = con.execute("SELECT count(DISTINCT sample_index) FROM explain").fetchone()[0]
    sizes = con.execute("SELECT DISTINCT model, input_h, input_w FROM explain ORDER BY model").fetchall()
    print(f"images per model: {n_img}; inputs: " + ", ".join(f"{SHORT[m]} {h}x{w}" for m, h, w in sizes))

    # 1. border (lee query --analysis border_share)
    print("\n### Border share (share of the LEE within k px of the border; area fraction in brackets)\n")
    print("| model | weights | generator | 1 px | 2 px | 4 px | 8 px | 16 px |")
    print("|---|---|---|---|---|---|---|---|")
    for w in WEIGHTS:
        df = analyses.run_analysis(con, "border_share", weights=w, n_boot=N_BOOT, seed=SEED, level=LEVEL)
        out[f"border_share/{w}"] = df.to_dict("records")
        for (m, g), d in df[df.statistic == "border_share"].groupby(["model", "generator"], sort=True):
            cells = [
                f"{fmt(r.estimate, r.ci_low, r.ci_high)} ({r.area_fraction:.3f})"
                for r in d.sort_values("border_px").itertuples()
            ]
            print(f"| {SHORT[m]} | {w} | {g} | " + " | ".join(cells) + " |")

    # 2. layers (lee query --analysis layer_location) and classes / stride-2 (DuckDB over explain)
    print("\n### Share by layer class, and the five stride-2 convolutions (Conv2dSame) together\n")
    print("| model | weights | generator | Conv2dSame (stride 2) | Conv2d (stride 1) | BatchNormAct2d | other |")
    print("|---|---|---|---|---|---|---|")
    for w in WEIGHTS:
        d = con.sql(f"""
            SELECT model, generator, unit, sample_index, any_value(lee) AS lee,
                   coalesce(sum(total) FILTER (WHERE layer_class = 'Conv2dSame'), 0) AS s2,
                   coalesce(sum(total) FILTER (WHERE layer_class = 'Conv2d'), 0) AS conv,
                   coalesce(sum(total) FILTER (WHERE layer_class = 'BatchNormAct2d'), 0) AS bnact,
                   coalesce(sum(total) FILTER (WHERE layer_class NOT IN ('Conv2dSame', 'Conv2d', 'BatchNormAct2d')
                                               OR kind IN ('special', 'remainder')), 0) AS other
            FROM explain WHERE kind IN ('layer', 'special', 'remainder') AND weights IN {weights_of(w)}
            GROUP BY ALL ORDER BY model, generator, unit, sample_index""").df()
        for (m, g), gd in d.groupby(["model", "generator"], sort=True):
            est, lo, hi = lee_weighted(gd[["s2", "conv", "bnact", "other"]].to_numpy(float), gd["lee"].to_numpy(float))
            out.setdefault(f"classes/{w}", []).append(
                {
                    "model": m,
                    "generator": g,
                    "estimate": est.tolist(),
                    "ci_low": lo.tolist(),
                    "ci_high": hi.tolist(),
                    "n": len(gd),
                }
            )
            print(f"| {SHORT[m]} | {w} | {g} | " + " | ".join(fmt(*t) for t in zip(est, lo, hi, strict=True)) + " |")

    print("\n### Top layers and cells (lee query --analysis layer_location)\n")
    for w in WEIGHTS:
        df = analyses.run_analysis(con, "layer_location", weights=w, n_boot=N_BOOT, seed=SEED, level=LEVEL, top=5)
        out[f"layer_location/{w}"] = df.to_dict("records")
        for (m, g), d in df.groupby(["model", "generator"], sort=True):
            lay = d[d.statistic == "layer_share"].head(4)
            cel = d[d.statistic == "cell_share"].head(3)
            print(
                f"- {SHORT[m]} {w} {g}: layers "
                + "; ".join(
                    f"`{r.term}` ({r.layer_class}) {fmt(r.estimate, r.ci_low, r.ci_high)}" for r in lay.itertuples()
                )
                + "; cells "
                + "; ".join(
                    f"`{r.term}` at (y, x) = ({r.y:.2f}, {r.x:.2f}) {fmt(r.estimate, r.ci_low, r.ci_high, 3)}"
                    for r in cel.itertuples()
                )
            )

    # 3. where in the image, by distance from the centre (equal-area quarters of the 16 x 16 image cells)
    print("\n### Image map by distance from the centre (four equal-area quarters of the cells, inner to outer)\n")
    print("| model | weights | generator | inner | 2nd | 3rd | outer (corners) |")
    print("|---|---|---|---|---|---|---|")
    for w in WEIGHTS:
        d = con.sql(f"""SELECT model, generator, unit, sample_index, lee, grid_h, grid_w, cells FROM explain
                        WHERE kind = 'image' AND weights IN {weights_of(w)}
                        ORDER BY model, generator, unit, sample_index""").df()
        for (m, g), gd in d.groupby(["model", "generator"], sort=True):
            gh, gw = int(gd.grid_h.iloc[0]), int(gd.grid_w.iloc[0])
            yy, xx = np.meshgrid((np.arange(gh) + 0.5) / gh - 0.5, (np.arange(gw) + 0.5) / gw - 0.5, indexing="ij")
            rank = np.argsort(np.hypot(yy, xx).ravel(), kind="stable")
            quarter = np.empty(gh * gw, int)
            quarter[rank] = np.arange(gh * gw) * 4 // (gh * gw)
            cells = np.stack([np.asarray(c, float) for c in gd.cells])
            mat = np.stack([cells[:, quarter == q].sum(1) for q in range(4)], 1)
            est, lo, hi = lee_weighted(mat, gd["lee"].to_numpy(float))
            out.setdefault(f"radial/{w}", []).append(
                {"model": m, "generator": g, "estimate": est.tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist()}
            )
            print(f"| {SHORT[m]} | {w} | {g} | " + " | ".join(fmt(*t) for t in zip(est, lo, hi, strict=True)) + " |")

    # 3b. which side of the border: TF "same" padding of a stride-2 layer on an even input pads only bottom / right
    print("\n### Image map in the outer row / column of cells by side (each 1/16 of the image)\n")
    print("| model | weights | generator | top | bottom | left | right |")
    print("|---|---|---|---|---|---|---|")
    for w in WEIGHTS:
        d = con.sql(f"""SELECT model, generator, unit, sample_index, lee, grid_h, grid_w, cells FROM explain
                        WHERE kind = 'image' AND weights IN {weights_of(w)}
                        ORDER BY model, generator, unit, sample_index""").df()
        for (m, g), gd in d.groupby(["model", "generator"], sort=True):
            gh, gw = int(gd.grid_h.iloc[0]), int(gd.grid_w.iloc[0])
            cells = np.stack([np.asarray(c, float).reshape(gh, gw) for c in gd.cells])
            mat = np.stack([cells[:, 0].sum(1), cells[:, -1].sum(1), cells[:, :, 0].sum(1), cells[:, :, -1].sum(1)], 1)
            est, lo, hi = lee_weighted(mat, gd["lee"].to_numpy(float))
            out.setdefault(f"sides/{w}", []).append(
                {"model": m, "generator": g, "estimate": est.tolist(), "ci_low": lo.tolist(), "ci_high": hi.tolist()}
            )
            print(f"| {SHORT[m]} | {w} | {g} | " + " | ".join(fmt(*t) for t in zip(est, lo, hi, strict=True)) + " |")

    # 4. texture (lee query --analysis texture) and the paired pretrained - random difference
    print(
        "\n### Texture: Spearman rho of |share| per cell with the input's gradient energy (mean over images), "
        "and the share of |map| in the 25% most textured cells\n"
    )
    print(
        "| model | weights | generator | rho stride-2 | rho stride-1 conv | rho BN+ReLU6 | rho image map "
        "| stride-2 in textured 25% |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for w in WEIGHTS:
        df = analyses.run_analysis(con, "texture", weights=w, n_boot=N_BOOT, seed=SEED, level=LEVEL, top=5)
        out[f"texture/{w}"] = df.to_dict("records")
        for (m, g), d in df.groupby(["model", "generator"], sort=True):
            t = d.set_index(["term", "statistic"])

            def cell(term: str, stat: str = "texture_rho", t=t) -> str:
                r = t.loc[(term, stat)]
                return fmt(r.estimate, r.ci_low, r.ci_high)

            print(
                f"| {SHORT[m]} | {w} | {g} | {cell('class:Conv2dSame')} | {cell('class:Conv2d')} | "
                f"{cell('class:BatchNormAct2d')} | {cell('<image>')} | "
                f"{cell('class:Conv2dSame', 'textured_share')} |"
            )

    print(
        "\n### Stride-2 texture rho on all cells and on the interior cells only (outer ring of cells left out), "
        "pretrained, random, and pretrained minus random (paired by image)\n"
    )
    rho: dict[tuple[str, str, str], pd.DataFrame] = {}
    for w in WEIGHTS:
        tex = con.sql(f"""SELECT model, generator, sample_id, texture, grid_h, grid_w FROM explain
                          WHERE kind = 'image' AND weights IN {weights_of(w)} ORDER BY ALL""").df()
        lay = con.sql(f"""SELECT model, generator, sample_id, grid_h, grid_w, cells FROM explain
                          WHERE kind = 'layer' AND layer_class = 'Conv2dSame' AND weights IN {weights_of(w)}
                          ORDER BY ALL""").df()
        for (m, g), td in tex.groupby(["model", "generator"], sort=True):
            gh, gw = int(td.grid_h.iloc[0]), int(td.grid_w.iloc[0])
            inner = np.zeros((gh, gw), bool)
            inner[1:-1, 1:-1] = True
            vals = {}
            for r in td.itertuples():
                acc = np.zeros((gh, gw))
                for lr in lay[(lay.model == m) & (lay.generator == g) & (lay.sample_id == r.sample_id)].itertuples():
                    a = np.abs(np.asarray(lr.cells, float)).reshape(lr.grid_h, lr.grid_w)
                    acc += analyses._area_matrix(gh, lr.grid_h) @ a @ analyses._area_matrix(gw, lr.grid_w).T
                t = np.asarray(r.texture, float).reshape(gh, gw)
                vals[r.sample_id] = (
                    float(_spearman_rows(acc.reshape(1, -1), t.ravel())[0]),
                    float(_spearman_rows(acc[inner].reshape(1, -1), t[inner])[0]),
                )
            rho[(m, g, w)] = pd.DataFrame.from_dict(vals, orient="index", columns=["all", "interior"])
    print("| model | generator | cells | pretrained | random | pretrained - random |")
    print("|---|---|---|---|---|---|")
    for m, g in sorted({(m, g) for m, g, _ in rho}):
        if (m, g, "pretrained") not in rho or (m, g, "random") not in rho:
            continue
        for cells in ("all", "interior"):
            p, r = rho[(m, g, "pretrained")][cells], rho[(m, g, "random")][cells]
            diff = (p - r).dropna()
            row = {"model": m, "generator": g, "cells": cells, "n": len(diff)}
            for k, v in (("pretrained", p), ("random", r), ("diff", diff)):
                row[k] = mean_boot(v.dropna().to_numpy(float))
            out.setdefault("texture_stride2", []).append(row)
            print(
                f"| {SHORT[m]} | {g} | {cells} | {fmt(*row['pretrained'])} | {fmt(*row['random'])} | "
                f"{fmt(*row['diff'])} |"
            )
    with open("findings-explain.json", "w") as fh:
        json.dump(out, fh, default=str)


if __name__ == "__main__":
    main()
