"""Pictures of where the equivariance error arises (``lee explain``): overlays, layer maps, an index page.

:func:`liecore.explain_all` gives, per image and generator, signed maps of each layer's share of the
image's LEE (fractions that add up to 1 with the remainder). This module draws them with matplotlib's
object API (Agg canvas, no pyplot state):

* :func:`overlay_figure`: the image, then one panel per generator with the signed ``image_map`` on a
  diverging scale centred at 0 over the image in grey. The caller passes one ``vmax`` for every model, so
  the panels of different models compare.
* :func:`layer_figure`: the feature-map shares of the layers that carry most of the share, each on its
  own grid and its own symmetric scale (the layer's total share in the title).
* :func:`write_index`: an HTML page linking every figure, with the per-image LEE and the shares.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from pipelines.analysis.figures import FigureContext, NoData

__all__ = [
    "ExplainEntry",
    "display_image",
    "layer_figure",
    "overlay_figure",
    "robust_vmax",
    "save",
    "where_lee_lives",
    "write_index",
]

CMAP = "RdBu_r"
"""Diverging colour map: red where a location adds to the LEE, blue where it cancels some of it."""


@dataclass
class ExplainEntry:
    """One (model, image) row of the index page."""

    model: str
    weights: str
    image_id: str
    overlay: str
    layers: dict[str, str] = field(default_factory=dict)  # generator -> file of its top-layer figure
    lee: dict[str, float] = field(default_factory=dict)  # generator -> the image's LEE
    border: dict[str, float] = field(default_factory=dict)  # generator -> share within the border band
    remainder: dict[str, float] = field(default_factory=dict)


def display_image(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(H, W, 3)`` in [0, 1] of one normalized ``(3, H, W)`` model input."""
    img = x.transpose(1, 2, 0) * np.asarray(std)[None, None, :] + np.asarray(mean)[None, None, :]
    return np.clip(img, 0.0, 1.0)


def robust_vmax(maps: Sequence[np.ndarray], q: float = 99.5) -> float:
    """A symmetric colour limit shared by ``maps``: the ``q``-th percentile of the absolute values (so that a
    few extreme pixels do not wash the rest out), never 0."""
    vals = np.concatenate([np.abs(np.asarray(m, dtype=np.float64)).ravel() for m in maps]) if maps else np.zeros(1)
    vals = vals[np.isfinite(vals)]
    v = float(np.percentile(vals, q)) if vals.size else 0.0
    return v if v > 0 else 1e-12


def _norm(vmax: float) -> TwoSlopeNorm:
    return TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)


def overlay_figure(
    image: np.ndarray, maps: dict[str, np.ndarray], vmax: float, title: str, notes: dict[str, str] | None = None
) -> Figure:
    """The image and, per generator, its signed ``image_map`` over the image in grey.

    Args:
        image: ``(H, W, 3)`` in [0, 1].
        maps: generator -> ``(H, W)`` share of the LEE per pixel.
        vmax: the colour limit (the same for every model compared).
        title: the figure title (model, weights, image).
        notes: generator -> a line under its panel (LEE, border share).
    """
    n = 1 + len(maps)
    fig = Figure(figsize=(3.2 * n + 0.8, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    grey = image.mean(-1)
    im = None
    for ax, (gen, m) in zip(axes[1:], maps.items(), strict=True):
        ax.imshow(grey, cmap="gray", alpha=1.0)
        im = ax.imshow(m, cmap=CMAP, norm=_norm(vmax), alpha=0.75, interpolation="nearest")
        ax.set_title(gen, fontsize=9)
        if notes and gen in notes:
            ax.set_xlabel(notes[gen], fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes[1:]), fraction=0.03, pad=0.02)
        cb.set_label("share of the image's LEE per pixel", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def layer_figure(layer_maps: dict[str, np.ndarray], shares: dict[str, float], title: str) -> Figure:
    """The feature-map shares of the given layers (each ``(h, w)``, its own symmetric scale)."""
    n = max(1, len(layer_maps))
    fig = Figure(figsize=(2.8 * n + 0.4, 3.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, m) in zip(axes, layer_maps.items(), strict=False):
        v = float(np.abs(m).max()) or 1e-12
        im = ax.imshow(m, cmap=CMAP, norm=_norm(v), interpolation="nearest")
        ax.set_title(f"{name}\n{m.shape[0]}x{m.shape[1]}, share {shares.get(name, float('nan')):+.3f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.ax.tick_params(labelsize=6)
    if not layer_maps:
        axes[0].text(0.5, 0.5, "no layer with a located error", ha="center", va="center")
        axes[0].set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig


def save(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def write_index(
    out: Path, entries: Sequence[ExplainEntry], *, generators: Sequence[str], vmax: float, border_px: int, command: str
) -> Path:
    """``out/index.html``: every overlay and top-layer figure, with the per-image LEE and shares."""
    rows = []
    for e in entries:
        cells = []
        for g in generators:
            layer = e.layers.get(g)
            link = f'<br><a href="{html.escape(layer)}">top layers</a>' if layer else ""
            cells.append(
                f"<td>LEE {e.lee.get(g, float('nan')):.3g}<br>border {e.border.get(g, float('nan')):.3f}"
                f"<br>remainder {e.remainder.get(g, float('nan')):+.3f}{link}</td>"
            )
        rows.append(
            f"<tr><td>{html.escape(e.model)}<br><small>{html.escape(e.weights)}</small></td>"
            f"<td>{html.escape(e.image_id)}</td>"
            f'<td><a href="{html.escape(e.overlay)}"><img src="{html.escape(e.overlay)}" height="180"></a></td>'
            + "".join(cells)
            + "</tr>"
        )
    head = "".join(f"<th>{html.escape(g)}</th>" for g in generators)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lee explain</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}}</style></head>
<body><h1>Where the equivariance error arises</h1>
<p>Each overlay shows the signed share of the image's LEE per pixel (red: adds to the LEE, blue: cancels
some of it), from <code>liecore.explain</code>: every layer's exact share at each location of its
feature map, resampled to the input grid keeping its total. The colour scale is the same for every model
and generator (&plusmn;{vmax:.3g}). <i>border</i>: share of the image map within {border_px} px of the
border; <i>remainder</i>: the share of what happens between recorded layers.</p>
<p><code>{html.escape(command)}</code></p>
<table><tr><th>model</th><th>image</th><th>overlay</th>{head}</tr>
{"".join(rows)}
</table></body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path


def _weighted_mean(stack: np.ndarray, lee: np.ndarray) -> np.ndarray:
    """LEE-weighted mean over images of per-image share maps (the share of the pooled LEE)."""
    return np.tensordot(lee, stack, axes=(0, 0)) / lee.sum()


def where_lee_lives(rows: pd.DataFrame, ctx: FigureContext, max_models: int = 6) -> Figure:
    """The report's "where the LEE lives": per model (row) and generator (column) the mean image map on its pooled
    cells, LEE-weighted over images, one colour scale for every panel; the last column plots the cumulative share
    within ``k`` px of the border against ``k``, one line per generator, with the area those pixels cover (grey).

    Args:
        rows: the ``explain`` table's image rows: ``model``, ``weights``, ``generator``, ``lee``, ``cells``,
            ``grid_h``, ``grid_w``, ``border_profile``, ``input_h``, ``input_w``.
        ctx: the report's figure context (dataset, weights, configuration for the title).
    """
    if rows.empty:
        raise NoData("no explain results (lee eval --metrics explain)")
    rows = rows.assign(key=rows["model"] + " (" + rows["weights"] + ")")
    keys = sorted(rows["key"].unique())[:max_models]
    gens = sorted(rows["generator"].unique())
    means: dict[tuple[str, str], np.ndarray] = {}
    profiles: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for (k, g), d in rows[rows["key"].isin(keys)].groupby(["key", "generator"], sort=True):
        gh, gw = int(d["grid_h"].iloc[0]), int(d["grid_w"].iloc[0])
        lee = d["lee"].to_numpy(float)
        means[(k, g)] = _weighted_mean(np.stack([np.asarray(c, float).reshape(gh, gw) for c in d["cells"]]), lee)
        prof = _weighted_mean(np.stack([np.cumsum(np.asarray(p, float)) for p in d["border_profile"]]), lee)
        h, w = int(d["input_h"].iloc[0]), int(d["input_w"].iloc[0])
        ks = np.arange(1, len(prof) + 1)
        area = 1 - np.clip(h - 2 * ks, 0, None) * np.clip(w - 2 * ks, 0, None) / (h * w)
        profiles[(k, g)] = (prof, area)
    vmax = robust_vmax(list(means.values()), 99.0)
    ncol = len(gens) + 1
    fig = Figure(figsize=(2.6 * ncol + 1.0, 2.5 * len(keys) + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), ncol, squeeze=False)
    im = None
    for r, k in enumerate(keys):
        for c, g in enumerate(gens):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if (k, g) in means:
                im = ax.imshow(means[(k, g)], cmap=CMAP, norm=_norm(vmax), interpolation="nearest")
            if r == 0:
                ax.set_title(g, fontsize=9)
            if c == 0:
                ax.set_ylabel("\n".join(k.rsplit(" ", 1)), fontsize=7)
        ax = axes[r][-1]
        for g in gens:
            if (k, g) in profiles:
                prof, area = profiles[(k, g)]
                ax.plot(np.arange(1, len(prof) + 1), prof, label=g)
        if profiles:
            _, area = next(iter(profiles.values()))
            ax.plot(np.arange(1, len(area) + 1), area, color="0.6", ls="--", label="area")
        ax.set_xscale("log")
        ax.tick_params(labelsize=6)
        if r == 0:
            ax.set_title("share within k px of the border", fontsize=8)
            ax.legend(fontsize=6)
        if r == len(keys) - 1:
            ax.set_xlabel("k (px)", fontsize=7)
    if im is not None:
        cb = fig.colorbar(im, ax=[a for row in axes for a in row[:-1]], fraction=0.025, pad=0.02)
        cb.set_label("share of the pooled LEE per cell", fontsize=7)
    shown = "" if len(rows["key"].unique()) <= max_models else f", first {max_models} shown"
    per_model = rows.groupby("key")["sample_index"].nunique()
    lo, hi = int(per_model.min()), int(per_model.max())
    images = f"{lo} images each" if lo == hi else f"{lo}-{hi} images per model"
    n = f"n = {len(per_model)} model{'s' if len(per_model) != 1 else ''}, {images}{shown}"
    fig.suptitle(f"Where the LEE lives\ndataset {ctx.dataset} · {ctx.weights} · {ctx.config} · {n}", fontsize=9)
    return fig
