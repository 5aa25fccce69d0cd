"""Summarising a sweep: the closing tables (mean LEE ± stderr per generator, the layerwise shares) and
what was done, skipped and failed.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any, TextIO

import duckdb

from liecore import GENERATORS
from pipelines.errors import UsageError
from pipelines.running.execute import SweepResult
from pipelines.running.plan import Plan, fallback_warning
from pipelines.running.progress import format_table
from pipelines.store.results import Store
from pipelines.store.units import WorkUnit

__all__ = ["STATS", "pivot_summary", "print_dataset_errors", "print_summary", "summary_table"]


def summary_table(store: Store, units: list[WorkUnit]) -> list[dict[str, Any]]:
    """Mean LEE ± stderr per model, weights, dataset and generator over the done ``lee`` units."""
    keys = [u.key for u in units if u.family == "lee"]
    t = store.read_table("lee", keys)  # noqa: F841 - read by DuckDB below
    rel = duckdb.sql(
        """
        SELECT model, weights, dataset, generator,
               avg(value) AS lee, stddev_samp(value) / sqrt(count(*)) AS stderr,
               avg(mean_abs) AS mean_abs, stddev_samp(mean_abs) / sqrt(count(*)) AS stderr_abs, count(*) AS n
        FROM t GROUP BY ALL ORDER BY model, dataset, generator
        """
    )
    cols = rel.columns
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


STATS = ("lee", "mean_abs")
"""Per-image statistics the summaries can show: the LEE (mean of squares), or ``mean_abs`` = mean_c |L_X f(x)_c|,
the statistic the paper's end-to-end tables store."""

STAT_HEADERS = {
    "lee": "LEE = E_x ||L_X f(x)||^2 / dim(out), mean ± standard error over n images:",
    "mean_abs": "mean_abs = E_x mean_c |L_X f(x)_c| (the paper's tables' statistic, not the LEE), "
    "mean ± standard error over n images:",
}


def pivot_summary(rows: list[dict[str, Any]], stat: str = "lee") -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """``summary_table`` rows pivoted for reading: one row per model, weights and dataset, one column per
    generator holding ``mean ± stderr`` of ``stat`` (``lee`` or ``mean_abs``; a ``mean_abs`` column's header
    says so), and the number of images. Generators keep liecore's order."""
    if stat not in STATS:
        raise UsageError(f"unknown statistic {stat!r}: one of {', '.join(STATS)}")
    value, err = ("lee", "stderr") if stat == "lee" else ("mean_abs", "stderr_abs")
    order = {name: i for i, name in enumerate(GENERATORS)}
    generators = sorted({r["generator"] for r in rows}, key=lambda g: (order.get(g, len(order)), g))
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["model"], r["weights"], r["dataset"])
        row = table.setdefault(key, {"model": key[0], "weights": key[1], "dataset": key[2], "n": r["n"]})
        se = r[err]
        row[r["generator"]] = f"{r[value]:.3g}±{se:.2g}" if se is not None and se == se else f"{r[value]:.3g}"
        row["n"] = max(row["n"], r["n"])
    columns = [("model", "model"), ("weights", "weights"), ("dataset", "dataset")]
    columns += [(g, g if stat == "lee" else f"{g} mean_abs") for g in generators] + [("n", "n")]
    return list(table.values()), columns


def layerwise_summary(store: Store, units: list[WorkUnit], top: int = 3) -> list[dict[str, Any]]:
    """Per model, dataset and generator of the done ``layerwise`` units: the end-to-end LEE, each layer type's
    share of it and the ``top`` layers with the largest shares.

    Shares are ratios of means over the images (sum of the signed additive shares over sum of the end-to-end
    values), so the types plus ``unattributed`` sum to 1.
    """
    keys = [u.key for u in units if u.family == "layerwise"]
    if not keys:
        return []
    t = store.read_table("layerwise", keys)  # noqa: F841 - read by DuckDB below
    if not t.num_rows:
        return []
    con = duckdb.connect()
    con.register("t", t)
    base = "model, dataset, generator, method"
    e2e = {
        tuple(r[:4]): (r[4], r[5])
        for r in con.execute(
            f"SELECT {base}, sum(value), count(*) FROM t WHERE kind = 'end_to_end' GROUP BY ALL"
        ).fetchall()
    }
    by_kind: dict[tuple, list[tuple[str, float]]] = defaultdict(list)
    for *k, kind, share in con.execute(
        f"SELECT {base}, CASE WHEN kind = 'layer' THEN layer_kind ELSE kind END, sum(share) FROM t "
        f"WHERE kind <> 'end_to_end' GROUP BY ALL ORDER BY {base}, 6 DESC, 5"
    ).fetchall():
        by_kind[tuple(k)].append((kind, share))
    layers: dict[tuple, list[tuple[str, float]]] = defaultdict(list)
    for *k, layer, share in con.execute(
        f"SELECT {base}, layer, sum(share) FROM t WHERE kind = 'layer' GROUP BY ALL ORDER BY {base}, 6 DESC, 5"
    ).fetchall():
        layers[tuple(k)].append((layer, share))
    rows = []
    for k, (total, n) in sorted(e2e.items()):
        if not total:
            continue
        rows.append(
            {
                "model": k[0],
                "dataset": k[1],
                "generator": k[2],
                "method": k[3],
                "lee": total / n,
                "n": n,
                "types": ", ".join(f"{kind} {s / total:.2f}" for kind, s in by_kind[k]),
                "top": ", ".join(f"{layer} {s / total:.2f}" for layer, s in layers[k][:top]),
            }
        )
    return rows


def print_layerwise_summary(store: Store, units: list[WorkUnit], out: TextIO | None = None) -> bool:
    """Print :func:`layerwise_summary` (nothing when the units have no layerwise rows). True if printed."""
    out = out or sys.stdout
    rows = layerwise_summary(store, units)
    if not rows:
        return False
    print(
        "Layerwise: share of the end-to-end LEE by layer type and the top layers (signed additive shares, "
        "ratio of means over n images; types plus unattributed sum to 1):",
        file=out,
    )
    print(
        format_table(
            rows,
            [
                ("model", "model"),
                ("dataset", "dataset"),
                ("generator", "generator"),
                ("lee", "end-to-end LEE"),
                ("n", "n"),
                ("types", "share by layer type"),
                ("top", "top layers"),
            ],
        ),
        file=out,
    )
    return True


def print_summary(result: SweepResult, out: TextIO | None = None, *, stat: str = "lee") -> None:
    """The sweep's table (``stat``, mean ± stderr over images, per generator; the layerwise summary when the
    sweep has only layerwise units) and what was done, skipped, failed."""
    out = out or sys.stdout
    p = result.plan
    rows, columns = pivot_summary(summary_table(p.store, p.units), stat)
    layerwise = print_layerwise_summary(p.store, p.units, out)
    for r in rows:
        if r["weights"] == "random" and r["model"] in p.fallbacks:
            r["weights"] = "random*"  # not asked for: --weights auto fell back (warning below)
    if rows:
        print(("\n" if layerwise else "") + STAT_HEADERS[stat], file=out)
    if rows or not layerwise:
        print(format_table(rows, columns), file=out)
    if any(r["weights"].startswith("random") for r in rows):
        print(
            "weights=random: random-init models (no pretrained weights here). Their softmax output is near uniform,\n"
            "so LEE is small; some sit at 0 or the float floor (ResMLP: timm zero-inits its classifier;\n"
            "EfficientNet: random-init features barely vary with the input). Learned equivariance needs trained "
            "weights: `lee eval -m offline` (ImageNet-pretrained, no hub),\n"
            "the hub (--weights auto/hub), or `lee zoo train`.",
            file=out,
        )
    warning = fallback_warning(p)
    if warning:
        print("* " + warning.removeprefix("lee: warning: "), file=out)
    n_failed = len(result.failed)
    meanwhile = [r for r in result.done if r.get("skipped")]  # done by a concurrent run on the same root
    other = f"{len(meanwhile)} computed meanwhile by another run (not redone), " if meanwhile else ""
    print(
        f"\n{len(p.units)} units: {len(result.done) - len(meanwhile)} computed, {other}{len(p.skipped)} already "
        f"done (skipped), {n_failed} failed; {result.wall_s:.1f}s. Results: {p.store.uri}",
        file=out,
    )
    for r in result.failed:
        first = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
        print(f"  FAILED {r['family']}:{r['model']}@{r['dataset']} [{r['unit']}]: {first}", file=out)
    print_dataset_errors(p, out)


def print_dataset_errors(p: Plan, out: TextIO | None = None, limit: int = 5) -> None:
    """Images of the datasets that could not be read or decoded (skipped; the next ones were used)."""
    out = out or sys.stdout
    for name, d in p.datasets.items():
        if d.errors:
            print(
                f"  dataset {name}: {len(d.errors)} image(s) skipped (unreadable or undecodable), "
                f"{d.info.n_images} used:",
                file=out,
            )
            for image_id, msg in d.errors[:limit]:
                print(f"    {image_id}: {msg}", file=out)
            if len(d.errors) > limit:
                print(f"    ... and {len(d.errors) - limit} more", file=out)
