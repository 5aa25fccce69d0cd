"""``lee zoo summary``: the zoo's results table (the paper's Table 1 in miniature) from a results store.

Joins the ``lee`` rows of a sweep over the zoo (``lee eval -m zoo -d digits -g rotate``) with each model's
training provenance from the catalog (accuracies, recipe, size, training-set size) and writes Markdown:

- per architecture: test error on rotated digits next to the rotation LEE (mean +- stderr over images);
- the rank correlation between rotation LEE and test error over the digit models, with a bootstrap 95%
  interval over models;
- the augmentation effect (LEE of a recipe over the same model trained without augmentation);
- the train / test / OOD gap of LEE and accuracy.

Every number says how many images or models it is over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np

from pipelines.store.results import Store

__all__ = ["collect", "render_markdown"]


def collect(results: str, specs: Sequence[Any], generator: str = "rotate") -> list[dict[str, Any]]:
    """One record per zoo model: its training metadata and mean LEE (+ stderr, n) on each dataset it was run on.

    Only done units with the trained weights (``weights = 'file'``) and differentiated probabilities count.
    Where a results root holds several such units of one model and dataset (sweeps with other image
    counts, seeds or interpolants), the unit with the most images is used: images are never pooled across
    units.
    """
    con = duckdb.connect()
    con.register("t", Store(results).read_table("lee"))
    rows = con.execute(
        """
        WITH per_unit AS (
            SELECT model, dataset, unit, avg(value) AS lee, stddev_samp(value) / sqrt(count(*)) AS se,
                   count(*) AS n
            FROM t WHERE generator = ? AND weights = 'file' AND output = 'probs'
            GROUP BY ALL
        )
        SELECT model, dataset, lee, se, n FROM per_unit
        QUALIFY row_number() OVER (PARTITION BY model, dataset ORDER BY n DESC, unit) = 1
        """,
        [generator],
    ).fetchall()
    lee: dict[str, dict[str, tuple[float, float, int]]] = {}
    for model, dataset, value, se, n in rows:
        lee.setdefault(model, {})[dataset] = (float(value), float(se) if se is not None else math.nan, int(n))
    out = []
    for spec in specs:
        t_ = spec.training or {}
        if not t_:
            continue
        out.append(
            {
                "name": spec.name,
                "family": spec.family,
                "size": t_.get("size"),
                "task": t_.get("task"),
                "recipe": t_.get("recipe"),
                "train_n": t_.get("train_n"),
                "params": t_.get("params"),
                "pretrain": t_.get("pretrain"),
                "train_acc": t_.get("train_acc"),
                "test_acc": t_.get("test_acc"),
                "ood_acc": t_.get("ood_acc"),
                "lee": lee.get(spec.name, {}),
                "seed": t_.get("seed", 0),
            }
        )
    return out


def _spearman_ci(x: np.ndarray, y: np.ndarray, seed: int = 0, reps: int = 2000) -> tuple[float, float, float]:
    """Spearman's rho of ``x`` and ``y`` and a percentile bootstrap 95% interval (resampling pairs)."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(reps):
        idx = rng.integers(0, len(x), len(x))
        if len(set(idx.tolist())) < 3:
            continue
        r = spearmanr(x[idx], y[idx]).statistic
        if r == r:
            boots.append(r)
    if not boots:
        return rho, math.nan, math.nan
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return rho, float(lo), float(hi)


def _fmt_lee(v: tuple[float, float, int] | None) -> str:
    if v is None:
        return "-"
    return f"{v[0]:.3g} ± {v[1]:.1g}"


def _seed_spread(recs: list[dict[str, Any]], test_ds: str) -> list[str]:
    """The spread over seeds of each configuration trained from more than one seed (``lee zoo train --seeds``):
    test error and rotation LEE as mean ± sample sd and min-max over the seeds."""
    by_config: dict[tuple, list[dict[str, Any]]] = {}
    for r in recs:
        key = (r["family"], r["size"], r["train_n"], r["recipe"], bool(r["pretrain"]))
        by_config.setdefault(key, []).append(r)
    multi = {k: v for k, v in by_config.items() if len({r.get("seed", 0) for r in v}) > 1}
    if not multi:
        return []
    out = [
        "",
        "Spread over seeds (configurations trained from more than one seed; mean ± sd, min-max):",
        "",
        "| family | size | recipe | train n | seeds | test error % | rotation LEE (test) |",
        "|---|---|---|---|---|---|---|",
    ]

    def spread(v: np.ndarray, fmt: str) -> str:
        sd = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
        return f"{v.mean():{fmt}} ± {sd:{fmt}} ({v.min():{fmt}}-{v.max():{fmt}})"

    for (fam, size, n, recipe, ft), rs in sorted(multi.items(), key=lambda kv: [str(x) for x in kv[0]]):
        err = np.array([100 * (1 - r["test_acc"]) for r in rs])
        lee = np.array([r["lee"][test_ds][0] for r in rs])
        seeds = ",".join(str(r.get("seed", 0)) for r in sorted(rs, key=lambda r: r.get("seed", 0)))
        out.append(
            f"| {fam} | {size} | {recipe}{' (ft)' if ft else ''} | {n} | {seeds} | {spread(err, '.1f')} | "
            f"{spread(lee, '.3g')} |"
        )
    return out


def render_markdown(records: list[dict[str, Any]], task: str = "digits", generator: str = "rotate") -> str:
    """The README section's tables and statements for one task's models."""
    test_ds, train_ds, ood_ds = f"{task}-test", f"{task}-train", f"{task}-ood"
    recs = [r for r in records if r["task"] == task and test_ds in r["lee"]]
    if not recs:
        return f"(no {generator} LEE on {test_ds} for the zoo's {task} models in these results)"
    n_img = recs[0]["lee"][test_ds][2]
    lines = [
        f"Rotation LEE = mean over {n_img} `{test_ds}` images of ||L_rotate softmax(f(x))||^2 / classes "
        f"(± standard error over images); errors on all {task} test images.",
        "",
        "| model | family | size | params | recipe | train n | test error % | OOD error % | rotation LEE (test) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"e2cnn": 0, "cnn": 1, "mixer": 2, "vit": 3}
    for r in sorted(recs, key=lambda r: (order.get(r["family"], 9), r["size"], -(r["train_n"] or 0), r["recipe"])):
        ood = "-" if r["ood_acc"] is None else f"{100 * (1 - r['ood_acc']):.1f}"
        recipe = r["recipe"] + (" (ft from patches)" if r["pretrain"] else "")
        lines.append(
            f"| {r['name']} | {r['family']} | {r['size']} | {r['params'] / 1e3:.0f}k | {recipe} | {r['train_n']} | "
            f"{100 * (1 - r['test_acc']):.1f} | {ood} | {_fmt_lee(r['lee'].get(test_ds))} |"
        )
    lines.append("")
    x = np.array([r["lee"][test_ds][0] for r in recs])
    y = np.array([1 - r["test_acc"] for r in recs])
    if len(recs) >= 4:
        rho, lo, hi = _spearman_ci(x, y)
        lines.append(
            f"- LEE vs accuracy: Spearman rank correlation between rotation LEE and test error over the "
            f"n = {len(recs)} {task} models: {rho:+.2f} (bootstrap 95% interval over models "
            f"[{lo:+.2f}, {hi:+.2f}])."
        )
    # each seed's model against the unaugmented model of the same seed
    by_key = {
        (r["family"], r["size"], r["train_n"], r["recipe"], bool(r["pretrain"]), r.get("seed", 0)): r for r in recs
    }
    multi_seed = len({k[-1] for k in by_key}) > 1
    effects = []
    for (fam, size, n, recipe, ft, seed), r in sorted(by_key.items(), key=lambda kv: [str(x) for x in kv[0]]):
        base = by_key.get((fam, size, n, "none", False, seed))
        if recipe != "none" and not ft and base is not None:
            effects.append(
                (
                    f"{fam} s{seed}" if multi_seed else fam,
                    recipe,
                    base["lee"][test_ds][0] / r["lee"][test_ds][0],
                    100 * (r["test_acc"] - base["test_acc"]),
                )
            )
    for recipe in ("translate", "rotate", "strong"):
        sel = [e for e in effects if e[1] == recipe]
        if sel:
            parts = ", ".join(f"{fam} {ratio:.2g}x ({dacc:+.1f} pts acc)" for fam, _, ratio, dacc in sel)
            gm = math.exp(float(np.mean([math.log(e[2]) for e in sel])))
            what = "models" if multi_seed else "families"
            lines.append(
                f"- Augmentation `{recipe}` vs none (rotation LEE none / {recipe}; n = {len(sel)} "
                f"{what}, geometric mean {gm:.2g}x): {parts}."
            )
    lines += _seed_spread(recs, test_ds)
    gap = [r for r in recs if train_ds in r["lee"] and ood_ds in r["lee"]]
    if gap:
        tr = np.array([r["lee"][train_ds][0] for r in gap])
        te = np.array([r["lee"][test_ds][0] for r in gap])
        od = np.array([r["lee"][ood_ds][0] for r in gap])
        up_te = int((te > tr).sum())
        up_od = int((od > te).sum())
        acc = np.array([[r["train_acc"], r["test_acc"], r["ood_acc"]] for r in gap], dtype=float)
        ood_acc = (
            "OOD - (its classes are not the model's)"
            if np.isnan(acc[:, 2]).all()
            else f"OOD {100 * np.nanmean(acc[:, 2]):.1f}%"
        )
        lines.append(
            f"- Train/test/OOD gap (n = {len(gap)} models): median rotation LEE ratio test/train "
            f"{np.median(te / tr):.2f} (test > train for {up_te}/{len(gap)}), OOD/test {np.median(od / te):.2f} "
            f"(OOD > test for {up_od}/{len(gap)}); mean accuracy train {100 * acc[:, 0].mean():.1f}%, "
            f"test {100 * acc[:, 1].mean():.1f}%, {ood_acc}."
        )
    return "\n".join(lines)
