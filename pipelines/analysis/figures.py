"""The report's figures: matplotlib drawings of query results (no SQL, no statistics here).

Every function takes a ``pandas.DataFrame`` read from the analysis views (:mod:`pipelines.analysis.report`
runs the queries) and a :class:`FigureContext` (dataset, weights, colours), and returns a
``matplotlib.figure.Figure``. Figures are built on the object API with the Agg canvas, so nothing touches
pyplot's global state or the process-wide backend. A function that finds nothing it can draw raises
:class:`NoData` with the reason; the report turns that into a :func:`placeholder` figure.

Titles state the figure's n (models, images), the dataset, the weights (pretrained or random init) and
the output configuration (``output probs · cubic interpolation``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

__all__ = [
    "LAYER_TYPES",
    "FigureContext",
    "NoData",
    "alt_vs_top1",
    "antialiasing",
    "family_colors",
    "gap",
    "generators_vs_top1",
    "layer_type_shares",
    "layerwise_cumulative",
    "lee_vs_top1",
    "n_text",
    "placeholder",
    "pretraining_data",
    "save",
    "scale_within_family",
]

LAYER_TYPES: tuple[str, ...] = (
    "patch embedding",
    "convolution",
    "normalization",
    "normalization+activation",
    "activation",
    "downsampling/pooling",
    "attention",
    "MLP",
    "composite block",
    "other",
    "unattributed",
)
"""The layer types of ``lee_layer_type`` (pipelines/sql/03_layerwise.sql), in drawing order."""

_LAYER_COLORS = dict(
    zip(
        LAYER_TYPES,
        (
            "#8c564b",
            "#1f77b4",
            "#2ca02c",
            "#e377c2",
            "#ff7f0e",
            "#9467bd",
            "#d62728",
            "#17becf",
            "#bcbd22",
            "#c7c7c7",
            "#444444",
        ),
        strict=True,
    )
)
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_DPI = 110


class NoData(Exception):
    """Nothing to draw; the message says what is missing."""


@dataclass(frozen=True)
class FigureContext:
    """What every figure states, and the shared colours.

    Attributes:
        dataset: The dataset(s) drawn, as a label (``sample-test``).
        weights: Human label of the weights selection (``pretrained weights`` / ``random-init weights`` /
            ``all weights (pretrained and random-init)``).
        random_init: True when any drawn row comes from random-init weights (then the x-axis top-1 is the
            catalog accuracy of the *pretrained* checkpoint, not the accuracy of the evaluated weights).
        family_colors: Architecture family -> colour, the same in every figure.
        config: The output configuration drawn, as a label (``output probs · cubic interpolation``);
            empty: not stated.
    """

    dataset: str
    weights: str
    random_init: bool = False
    family_colors: dict[str, str] = field(default_factory=dict)
    config: str = ""

    def color(self, family: object) -> str:
        return self.family_colors.get(str(family), "#7f7f7f")


def _clip(name: str, width: int) -> str:
    """``name`` cut to ``width`` characters with an ellipsis (model names have no spaces to shorten at)."""
    return name if len(name) <= width else name[: width - 1] + "…"


def family_colors(families: Sequence[object]) -> dict[str, str]:
    """A fixed colour per family (sorted names cycle through a 10-colour palette)."""
    names = sorted({str(f) for f in families})
    return {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(names)}


def n_text(df: pd.DataFrame, n_col: str = "n", model_col: str = "model") -> str:
    """``n = 3 models, 4 images each`` (or ``4-8 images per model``) for a summary table."""
    models = df[model_col].nunique() if model_col in df else 0
    if n_col not in df or df.empty:
        return f"n = {models} models"
    lo, hi = int(df[n_col].min()), int(df[n_col].max())
    images = f"{lo} images each" if lo == hi else f"{lo}-{hi} images per model"
    return f"n = {models} model{'s' if models != 1 else ''}, {images}"


def _suptitle(fig: Figure, lines: Sequence[str]) -> None:
    """A title wrapped to the figure's width (about 11 characters per inch at 11 pt)."""
    width = max(40, int(fig.get_figwidth() * 11))
    fig.suptitle("\n".join(w for line in lines for w in textwrap.wrap(line, width)), fontsize=11)


def _title(fig: Figure, what: str, ctx: FigureContext, n: str, extra: str = "") -> None:
    line2 = f"dataset {ctx.dataset} · {ctx.weights} · {ctx.config + ' · ' if ctx.config else ''}{n}"
    if extra:
        line2 += f" · {extra}"
    _suptitle(fig, [what, line2])


def _new(n_panels: int, *, max_cols: int = 4, panel: tuple[float, float] = (4.2, 3.4)) -> tuple[Figure, list[Axes]]:
    cols = max(1, min(max_cols, n_panels))
    rows = max(1, math.ceil(n_panels / cols))
    fig = Figure(figsize=(max(7.5, panel[0] * cols), panel[1] * rows + 1.0), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _log_errors(mean: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Asymmetric error bars for a log axis: the lower bar stops above zero."""
    se = np.nan_to_num(np.asarray(se, dtype=float), nan=0.0)
    mean = np.asarray(mean, dtype=float)
    low = np.minimum(se, mean * 0.95)
    return np.vstack([low, se])


def _positive(df: pd.DataFrame, col: str) -> tuple[pd.DataFrame, int]:
    ok = df[col].notna() & (df[col] > 0) & np.isfinite(df[col].astype(float))
    return df[ok], int((~ok).sum())


def _top1_label(ctx: FigureContext) -> str:
    return "catalog top-1 of the pretrained checkpoint (%)" if ctx.random_init else "top-1 accuracy (%)"


def _size(params: pd.Series, pmax: float) -> np.ndarray:
    p = params.astype(float).fillna(0).to_numpy()
    return 25 + 275 * np.sqrt(np.clip(p, 0, None) / pmax) if pmax > 0 else np.full(len(p), 60.0)


def _family_legend(ax: Axes, ctx: FigureContext, families: Sequence[object], pmax: float | None = None) -> None:
    handles = [
        Line2D([], [], marker="o", ls="", color=ctx.color(f), label=str(f)) for f in sorted(set(map(str, families)))
    ]
    if pmax and pmax > 0:
        for p in sorted({pmax, round(pmax / 4, 2)}):
            s = float(_size(pd.Series([p]), pmax)[0])
            handles.append(
                Line2D([], [], marker="o", ls="", color="#bbbbbb", markersize=math.sqrt(s), label=f"{p:.3g} M params")
            )
    ax.legend(handles=handles, fontsize=7, loc="best", frameon=False)


def lee_vs_top1(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 1 (right) of the paper: mean LEE vs top-1, one panel per generator.

    ``df``: ``lee_summary`` rows (model, family, params_m, top1, generator, mean_lee, se_lee, n, weights).
    Colour = family, marker area = parameter count, error bars = standard error over images, log y.
    Random-init rows are hollow markers.
    """
    df, dropped_acc = df[df["top1"].notna()], int(df["top1"].isna().sum())
    df, dropped = _positive(df, "mean_lee")
    if df.empty:
        raise NoData("no model with both a top-1 accuracy in the catalog and a positive LEE")
    gens = sorted(df["generator"].unique())
    fig, axes = _new(len(gens))
    pmax = float(df["params_m"].max()) if df["params_m"].notna().any() else 0.0
    for ax, g in zip(axes, gens, strict=True):
        d = df[df["generator"] == g]
        for _, r in d.iterrows():
            random = r.get("weights") == "random"
            ax.errorbar(
                r["top1"],
                r["mean_lee"],
                yerr=_log_errors([r["mean_lee"]], [r["se_lee"]]),
                fmt="none",
                ecolor=ctx.color(r["family"]),
                alpha=0.6,
                lw=1,
            )
            ax.scatter(
                r["top1"],
                r["mean_lee"],
                s=_size(pd.Series([r["params_m"]]), pmax),
                facecolors="none" if random else ctx.color(r["family"]),
                edgecolors=ctx.color(r["family"]),
                alpha=0.85,
                linewidths=1.2,
            )
        ax.set_yscale("log")
        ax.set_title(g, fontsize=10)
        ax.set_xlabel(_top1_label(ctx), fontsize=8)
        ax.set_ylabel("LEE (mean ± s.e.)", fontsize=8)
        ax.grid(alpha=0.3, which="both", lw=0.5)
    _family_legend(axes[0], ctx, df["family"].fillna("unknown"), pmax)
    notes = []
    if dropped:
        notes.append(f"{dropped} model x generator points with LEE <= 0 not drawn (log axis)")
    if dropped_acc:
        notes.append(f"{dropped_acc} rows without catalog top-1 not drawn")
    _title(
        fig,
        "Fig. 1 — LEE vs top-1 accuracy per generator (colour: family, size: parameters)",
        ctx,
        n_text(df),
        "; ".join(notes),
    )
    return fig


def generators_vs_top1(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 5 (left): the LEE of every generator against top-1 in one panel, colour = generator.

    ``df``: ``lee_summary`` rows. Lines join each generator's models in order of accuracy.
    """
    df, dropped = _positive(df[df["top1"].notna()], "mean_lee")
    if df.empty:
        raise NoData("no model with both a top-1 accuracy in the catalog and a positive LEE")
    fig, (ax,) = _new(1, panel=(7.5, 4.8))
    for i, g in enumerate(sorted(df["generator"].unique())):
        d = df[df["generator"] == g].sort_values("top1")
        c = _PALETTE[i % len(_PALETTE)]
        ax.errorbar(
            d["top1"],
            d["mean_lee"],
            yerr=_log_errors(d["mean_lee"], d["se_lee"]),
            color=c,
            fmt="o",
            ms=5,
            alpha=0.8,
            capsize=2,
            label=g,
        )
    ax.set_yscale("log")
    ax.set_xlabel(_top1_label(ctx), fontsize=9)
    ax.set_ylabel("LEE (mean ± s.e.)", fontsize=9)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=7, frameon=False, ncols=2)
    _title(
        fig,
        "Fig. 5a — every generator's LEE vs top-1 accuracy",
        ctx,
        n_text(df),
        f"{dropped} points with LEE <= 0 not drawn" if dropped else "",
    )
    return fig


def alt_vs_top1(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 5 (right): each alternative metric against top-1, one panel per metric.

    ``df``: ``alt_summary`` rows (model, family, top1, metric, mean_value, se_value, value_unit,
    higher_is_better, n).
    """
    df = df[df["top1"].notna() & df["mean_value"].notna()]
    if df.empty:
        raise NoData("no alternative-metric result for a model with a catalog top-1")
    metrics = sorted(df["metric"].unique())
    fig, axes = _new(len(metrics), max_cols=3)
    for ax, m in zip(axes, metrics, strict=True):
        d = df[df["metric"] == m]
        for _, r in d.iterrows():
            c = ctx.color(r["family"])
            ax.errorbar(
                r["top1"],
                r["mean_value"],
                yerr=0 if pd.isna(r["se_value"]) else r["se_value"],
                fmt="o",
                color=c,
                mfc="none" if r.get("weights") == "random" else c,
                ms=6,
                capsize=2,
                alpha=0.85,
            )
        vals = d["mean_value"].astype(float)
        if (vals > 0).all() and vals.max() / vals.min() > 100:
            ax.set_yscale("log")
        hib = d["higher_is_better"].dropna()
        direction = (
            ""
            if hib.empty
            else (" (higher = more equivariant)" if bool(hib.iloc[0]) else " (lower = more equivariant)")
        )
        unit = d["value_unit"].dropna()
        ax.set_title(f"{m}{direction}", fontsize=9)
        ax.set_ylabel(f"mean ± s.e. [{unit.iloc[0] if not unit.empty else '?'}]", fontsize=8)
        ax.set_xlabel(_top1_label(ctx), fontsize=8)
        ax.grid(alpha=0.3, lw=0.5)
    _family_legend(axes[0], ctx, df["family"].fillna("unknown"))
    _title(fig, "Fig. 5b — alternative equivariance metrics vs top-1 accuracy", ctx, n_text(df))
    return fig


def layerwise_cumulative(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 4 (left): cumulative fraction of the end-to-end LEE by relative depth, a line per model.

    ``df``: ``layerwise_cumulative`` rows (model, generator, depth, cumulative_fraction, n, family,
    share_additive). The gap between a line's end and 1 is the unattributed share.
    """
    df = df[df["depth"].notna() & df["cumulative_fraction"].notna()]
    if df.empty:
        raise NoData("layerwise rows exist but none has a non-zero end-to-end LEE")
    gens = sorted(df["generator"].unique())
    fig, axes = _new(len(gens), max_cols=3, panel=(4.8, 3.6))
    models = sorted(df["model"].unique())
    styles = ("-", "--", ":", "-.")
    for ax, g in zip(axes, gens, strict=True):
        d = df[df["generator"] == g]
        for i, m in enumerate(models):
            dm = d[d["model"] == m].sort_values("depth")
            if dm.empty:
                continue
            fam = dm["family"].iloc[0] if "family" in dm else None
            ax.step(
                dm["depth"],
                dm["cumulative_fraction"],
                where="post",
                color=ctx.color(fam),
                ls=styles[i % len(styles)],
                lw=1.3,
                label=f"{m} ({fam})",
            )
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_title(g, fontsize=10)
        ax.set_xlabel("relative depth (layer call order, 0 = input)", fontsize=8)
        ax.set_ylabel("cumulative share of end-to-end LEE", fontsize=8)
        ax.grid(alpha=0.3, lw=0.5)
    axes[0].legend(fontsize=7, frameon=False)
    extra = "" if df["share_additive"].all() else "some rows without additive shares (older files): value used"
    _title(fig, "Fig. 4a — cumulative layerwise contribution vs depth", ctx, n_text(df), extra)
    return fig


def layer_type_shares(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 4 (right): signed share of the end-to-end LEE by layer type, a stacked bar per model.

    ``df``: ``layer_type_shares`` rows (model, generator, layer_type, share_fraction, n). Positive and
    negative shares stack away from zero; with additive shares each bar's net total is 1.
    """
    df = df[df["share_fraction"].notna()]
    if df.empty:
        raise NoData("layerwise rows exist but none has a non-zero end-to-end LEE")
    gens = sorted(df["generator"].unique())
    models = sorted(df["model"].unique())
    fig, axes = _new(len(gens), max_cols=2, panel=(6.0, 0.45 * len(models) + 1.6))
    present = [t for t in LAYER_TYPES if t in set(df["layer_type"])] + sorted(set(df["layer_type"]) - set(LAYER_TYPES))
    for ax, g in zip(axes, gens, strict=True):
        d = df[df["generator"] == g]
        pos = np.zeros(len(models))
        neg = np.zeros(len(models))
        for t in present:
            vals = np.array([d[(d["model"] == m) & (d["layer_type"] == t)]["share_fraction"].sum() for m in models])
            if not np.any(np.abs(vals) > 1e-12):
                continue
            left = np.where(vals >= 0, pos, neg)
            ax.barh(
                np.arange(len(models)),
                vals,
                left=left,
                color=_LAYER_COLORS.get(t, "#999999"),
                label=t,
                height=0.7,
                edgecolor="white",
                lw=0.3,
            )
            pos += np.where(vals >= 0, vals, 0)
            neg += np.where(vals < 0, vals, 0)
        ax.set_yticks(np.arange(len(models)), models, fontsize=7)
        ax.axvline(0, color="k", lw=0.6)
        ax.axvline(1, color="k", lw=0.6, ls=":")
        ax.set_title(g, fontsize=10)
        ax.set_xlabel("share of end-to-end LEE (signed, sums to 1)", fontsize=8)
        ax.grid(alpha=0.3, axis="x", lw=0.5)
    axes[-1].legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _title(fig, "Fig. 4b — share of the LEE by layer type", ctx, n_text(df))
    return fig


def _dodge_plot(
    ax: Axes, d: pd.DataFrame, order: list[str], marker_fill: dict[str, bool], colors: dict[str, str]
) -> None:
    gens = sorted(d["generator"].unique())
    width = 0.8 / max(1, len(order))
    for j, m in enumerate(order):
        dm = d[d["model"] == m].set_index("generator").reindex(gens)
        x = np.arange(len(gens)) - 0.4 + width * (j + 0.5)
        ok = dm["mean_lee"].notna().to_numpy()
        c = colors[m]
        ax.errorbar(
            x[ok],
            dm["mean_lee"][ok],
            yerr=_log_errors(dm["mean_lee"][ok], dm["se_lee"][ok]),
            fmt="o",
            color=c,
            mfc=c if marker_fill[m] else "white",
            ms=6,
            capsize=2,
            label=m,
        )
    ax.set_xticks(np.arange(len(gens)), gens, fontsize=8, rotation=30)
    ax.set_yscale("log")
    ax.set_ylabel("LEE (mean ± s.e.)", fontsize=8)
    ax.grid(alpha=0.3, which="both", axis="y", lw=0.5)


def antialiasing(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 6 (case study): anti-aliased (BlurPool) models next to their plain counterparts.

    ``df``: ``lee_summary`` rows of the compared models with a ``pair`` column (the anti-aliased model's
    name, shared by it and its plain counterparts) and ``anti_aliased``. One panel per pair, generators on
    x; filled markers = anti-aliased, hollow = plain.
    """
    df, dropped = _positive(df, "mean_lee")
    if df.empty or df["pair"].nunique() == 0:
        raise NoData("no anti-aliased model with a plain counterpart in these results")
    pairs = sorted(df["pair"].unique())
    fig, axes = _new(len(pairs), max_cols=2, panel=(6.0, 3.8))
    for ax, p in zip(axes, pairs, strict=True):
        d = df[df["pair"] == p]
        order = sorted(d["model"].unique(), key=lambda m: (not bool(d[d["model"] == m]["anti_aliased"].iloc[0]), m))
        fill = {m: bool(d[d["model"] == m]["anti_aliased"].iloc[0]) for m in order}
        colors = {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(order)}
        _dodge_plot(ax, d, order, fill, colors)
        ax.set_title(f"{p} vs plain", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    _title(
        fig,
        "Fig. 6a — anti-aliasing: BlurPool (filled) vs plain (hollow)",
        ctx,
        n_text(df),
        f"{dropped} points with LEE <= 0 not drawn" if dropped else "",
    )
    return fig


def scale_within_family(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 6 (case study): LEE against parameter count, a line per family, one panel per generator.

    ``df``: ``lee_summary`` rows with ``params_m``.
    """
    df, dropped = _positive(df[df["params_m"].notna() & (df["params_m"] > 0)], "mean_lee")
    if df.empty:
        raise NoData("no model with a parameter count and a positive LEE")
    gens = sorted(df["generator"].unique())
    fig, axes = _new(len(gens))
    for ax, g in zip(axes, gens, strict=True):
        d = df[df["generator"] == g]
        for fam, dfam in d.groupby(d["family"].fillna("unknown")):
            dfam = dfam.sort_values("params_m")
            ax.errorbar(
                dfam["params_m"],
                dfam["mean_lee"],
                yerr=_log_errors(dfam["mean_lee"], dfam["se_lee"]),
                color=ctx.color(fam),
                marker="o",
                ms=5,
                lw=1,
                capsize=2,
                label=str(fam),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(g, fontsize=10)
        ax.set_xlabel("parameters (M)", fontsize=8)
        ax.set_ylabel("LEE (mean ± s.e.)", fontsize=8)
        ax.grid(alpha=0.3, which="both", lw=0.5)
    axes[0].legend(fontsize=7, frameon=False)
    _title(
        fig,
        "Fig. 6b — scale within family: LEE vs parameter count",
        ctx,
        n_text(df),
        f"{dropped} points with LEE <= 0 not drawn" if dropped else "",
    )
    return fig


def _count(n: float) -> str:
    """300, 1.2k, 1.3M, 2.3B (an image count on a tick label); '?' when unknown."""
    if n is None or not np.isfinite(n):
        return "?"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2g}{unit}"
    return f"{n:.0f}"


def pretraining_data(df: pd.DataFrame, ctx: FigureContext) -> Figure:
    """Figure 6 (case study): LEE by pretraining data (ordered by its size), one panel per generator.

    ``df``: ``lee_summary`` rows with ``pretrain_data``, ``pretrain_images``, ``arch``. Checkpoints of the
    same architecture are joined by a line. A set used at several sizes (the zoo's digits with 300 and
    1,200 training images) is one tick per size, ``digits (300)``.
    """
    df, dropped = _positive(df[df["pretrain_data"].notna()], "mean_lee")
    if df.empty:
        raise NoData("no model with known pretraining data and a positive LEE")
    sizes = df.groupby("pretrain_data")["pretrain_images"].nunique()
    several = df["pretrain_data"].isin(sizes[sizes > 1].index)
    df = df.assign(
        data=df["pretrain_data"].where(~several, df["pretrain_data"] + " (" + df["pretrain_images"].map(_count) + ")")
    )
    order = df.groupby("data")["pretrain_images"].max().fillna(np.inf).sort_values().index.tolist()
    pos = {p: i for i, p in enumerate(order)}
    gens = sorted(df["generator"].unique())
    fig, axes = _new(len(gens))
    rng = np.random.default_rng(0)
    for ax, g in zip(axes, gens, strict=True):
        d = df[df["generator"] == g].copy()
        d["x"] = d["data"].map(pos) + rng.uniform(-0.15, 0.15, len(d))
        for _, da in d.groupby("arch"):
            if da["data"].nunique() > 1:
                da = da.sort_values("x")
                ax.plot(da["x"], da["mean_lee"], color=ctx.color(da["family"].iloc[0]), lw=0.8, alpha=0.6)
        for _, r in d.iterrows():
            c = ctx.color(r["family"])
            ax.errorbar(
                r["x"],
                r["mean_lee"],
                yerr=_log_errors([r["mean_lee"]], [r["se_lee"]]),
                fmt="o",
                color=c,
                mfc="none" if r.get("weights") == "random" else c,
                ms=5,
                capsize=2,
            )
        ax.set_xticks(range(len(order)), order, fontsize=8, rotation=30)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_yscale("log")
        ax.set_title(g, fontsize=10)
        ax.set_xlabel("pretraining data (by size)", fontsize=8)
        ax.set_ylabel("LEE (mean ± s.e.)", fontsize=8)
        ax.grid(alpha=0.3, which="both", axis="y", lw=0.5)
    _family_legend(axes[0], ctx, df["family"].fillna("unknown"))
    _title(
        fig,
        "Fig. 6c — pretraining data: LEE by pretraining set",
        ctx,
        n_text(df),
        f"{dropped} points with LEE <= 0 not drawn" if dropped else "",
    )
    return fig


_ROLE_STYLE = {"train": ("#2ca02c", "s"), "test": ("#1f77b4", "o"), "ood": ("#d62728", "^")}


def gap(df: pd.DataFrame, ctx: FigureContext, ratios: pd.DataFrame | None = None) -> Figure:
    """Figure 7: the equivariance gap, LEE on train vs test vs OOD data per model, one panel per generator.

    ``df``: ``lee_summary`` rows of every role (model, family, role, dataset, generator, mean_lee, se_lee,
    n). ``ratios`` (optional): the ``gap`` analysis table (``estimate``, ``ci_low``, ``ci_high`` plus
    identifying columns); drawn as a second row of panels with the intervals.
    """
    df, dropped = _positive(df[df["role"].notna()], "mean_lee")
    roles_per_model = df.groupby(["model", "generator"])["role"].transform("nunique")
    single = df.loc[roles_per_model < 2, "model"].nunique()
    df = df[roles_per_model >= 2]
    if df.empty:
        raise NoData("no model has results on two dataset roles (train/test/ood)")
    gens = sorted(df["generator"].unique())
    family = df.groupby("model")["family"].first().astype(str)
    models = sorted(df["model"].unique(), key=lambda m: (family[m], m))
    roles = [r for r in ("train", "test", "ood") if r in set(df["role"])] + sorted(set(df["role"]) - set(_ROLE_STYLE))
    ratio_panels = ratios is not None and not ratios.empty and {"estimate", "ci_low", "ci_high"} <= set(ratios)
    n_panels = len(gens) + (1 if ratio_panels else 0)
    width = min(18.0, max(5.0, 0.3 * len(models) + 3))
    fig, axes = _new(n_panels, max_cols=2 if width <= 8 else 1, panel=(width, 3.8))
    width = 0.7 / len(roles)
    for ax, g in zip(axes, gens, strict=False):
        d = df[df["generator"] == g]
        for j, role in enumerate(roles):
            color, marker = _ROLE_STYLE.get(role, ("#7f7f7f", "D"))
            dr = d[d["role"] == role].groupby("model").agg(mean_lee=("mean_lee", "mean"), se_lee=("se_lee", "max"))
            dr = dr.reindex(models)
            x = np.arange(len(models)) - 0.35 + width * (j + 0.5)
            ok = dr["mean_lee"].notna().to_numpy()
            ax.errorbar(
                x[ok],
                dr["mean_lee"][ok],
                yerr=_log_errors(dr["mean_lee"][ok], dr["se_lee"][ok]),
                fmt=marker,
                color=color,
                ms=6,
                capsize=2,
                label=role,
            )
        ax.set_xticks(
            np.arange(len(models)),
            [f"{_clip(m, 28)} ({family[m]})" for m in models],
            fontsize=7,
            rotation=30,
            ha="right",
        )
        ax.set_yscale("log")
        ax.set_title(g, fontsize=10)
        ax.set_ylabel("LEE (mean ± s.e.)", fontsize=8)
        ax.grid(alpha=0.3, which="both", axis="y", lw=0.5)
        ax.legend(fontsize=7, frameon=False, title="role", title_fontsize=7)
    if ratio_panels:
        _ratio_panel(axes[-1], ratios)
    datasets = ", ".join(f"{r}: {', '.join(sorted(df[df['role'] == r]['dataset'].unique()))}" for r in roles)
    notes = [f"roles {datasets}"]
    missing = [r for r in ("train", "test", "ood") if r not in roles]
    if missing:
        notes.append(f"no {'/'.join(missing)} data")
    if dropped:
        notes.append(f"{dropped} points with LEE <= 0 not drawn")
    if single:
        notes.append(f"{single} models with one role only not drawn")
    _suptitle(
        fig,
        [
            "Fig. 7 — equivariance gap: LEE on train vs test vs OOD data",
            f"{ctx.weights} · {ctx.config + ' · ' if ctx.config else ''}{n_text(df)} · " + "; ".join(notes),
        ],
    )
    return fig


def _ratio_panel(ax: Axes, ratios: pd.DataFrame) -> None:
    """The gap analysis's ratios (``statistic`` ratio per model, geomean_ratio per family) with intervals."""
    r = ratios[ratios["estimate"].notna()].reset_index(drop=True)
    title = "gap analysis: ratios"
    if len(r) > 40 and "statistic" in r and (r["statistic"] == "geomean_ratio").any():
        r = r[r["statistic"] == "geomean_ratio"].reset_index(drop=True)
        title += " (families only; per-model ratios in the gap table)"
    if len(r) > 60:
        title += f" (first 60 of {len(r)})"
        r = r.head(60)
    multi_gen = "generator" in r and r["generator"].nunique() > 1

    def label(row: pd.Series) -> str:
        who = (
            f"{row.get('family')} (family geomean)"
            if row.get("statistic") == "geomean_ratio"
            else str(row.get("model"))
        )
        text = f"{_clip(who, 36)} · {row.get('term', '')}"
        return f"{text} · {row['generator']}" if multi_gen else text

    y = np.arange(len(r))
    est = r["estimate"].to_numpy(float)
    lo = np.nan_to_num(est - r["ci_low"].to_numpy(float), nan=0.0).clip(0)
    hi = np.nan_to_num(r["ci_high"].to_numpy(float) - est, nan=0.0).clip(0)
    family = (r["statistic"] == "geomean_ratio").to_numpy() if "statistic" in r else np.zeros(len(r), bool)
    if (~family).any():
        ax.errorbar(
            est[~family],
            y[~family],
            xerr=np.vstack([lo, hi])[:, ~family],
            fmt="o",
            color="#333333",
            ms=4,
            capsize=2,
            label="model",
        )
    if family.any():
        ax.errorbar(
            est[family],
            y[family],
            xerr=np.vstack([lo, hi])[:, family],
            fmt="D",
            color="#d62728",
            ms=5,
            capsize=2,
            label="family (geometric mean)",
        )
    ax.axvline(1.0, color="k", lw=0.6, ls=":")
    ax.set_yticks(y, [label(row) for _, row in r.iterrows()], fontsize=6)
    ax.invert_yaxis()
    if (est > 0).all() and (r["ci_low"].fillna(1) > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel("LEE ratio to the test role (estimate and bootstrap interval)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both", axis="x", lw=0.5)
    ax.legend(fontsize=7, frameon=False)


def placeholder(title: str, missing: str, how: Sequence[str] = (), *, error: bool = False) -> Figure:
    """A figure that says it has no data: what is missing and which command produces it."""
    fig = Figure(figsize=(9, 3.6), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.add_patch(
        Rectangle(
            (0.01, 0.02), 0.98, 0.96, transform=ax.transAxes, fill=False, ls="--", ec="#b00020" if error else "#888888"
        )
    )
    head = ("FIGURE FAILED: " if error else "NO DATA: ") + title
    ax.text(
        0.5,
        0.86,
        "\n".join(textwrap.wrap(head, 90)),
        ha="center",
        va="top",
        fontsize=12,
        weight="bold",
        transform=ax.transAxes,
    )
    body = "\n".join(textwrap.wrap(missing, 100))
    if how:
        body += "\n\nProduce it with:\n" + "\n".join(f"  {h}" for h in how)
    ax.text(0.04, 0.62, body, ha="left", va="top", fontsize=9, family="monospace", transform=ax.transAxes)
    return fig


def save(fig: Figure, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``stem.png`` and ``stem.svg`` under ``out_dir``.

    The SVG keeps its text as text (``svg.fonttype = none``: searchable, selectable, editable) and has no
    date, so the same figure gives the same file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    fig.savefig(png, format="png", metadata={"Software": None})
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": stem}):
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return png, svg
