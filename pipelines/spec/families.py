"""Metric families: what one work unit computes on a batch, and the table it fills.

Each family turns ``(model, images)`` into long-format columns for its table in
:mod:`pipelines.store.schema`; the runner adds the key columns (unit, model, dataset, sample).
``lee`` uses :func:`liecore.lee`; ``alt`` uses ``liecore.metrics.METRICS``; ``layerwise`` uses
``liecore.layerwise``. A family's ``version`` goes into the unit key, so a new metric version
makes ``lee reevaluate`` redo the units it affects.

Randomness is per image: image ``i`` of the evaluated dataset (``first_index`` + its position in
the batch) draws from its own generator seeded with :func:`image_seed` ``(seed, i)``, so a value
does not depend on the batch size or on which images share the batch (out-of-memory halving
changes no number).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import liecore
from liecore.metrics import METRICS

__all__ = [
    "EXPLAIN_GRID",
    "FAMILY_IMPLS",
    "Family",
    "available_alt_metrics",
    "border_distance",
    "border_profile",
    "border_share",
    "family_version",
    "image_rngs",
    "image_seed",
    "pool_map",
    "texture_map",
]

Columns = dict[str, list[Any] | np.ndarray]

ALT_METRIC_REVISIONS: dict[str, str] = {name: "1" for name in METRICS} | {"shift_consistency": "2"}
"""Each alternative metric's revision, part of the ``alt`` units' keys (``eq_t=1,...``): bump one metric's
revision when its values change for the same inputs, so ``lee reevaluate`` redoes only the units that ran it.
shift_consistency 2: its windows have the model's input size, cut from a crop :data:`SHIFT_MARGIN` larger (1: windows
``SHIFT_MARGIN`` smaller than the input, which models of a fixed input size refused)."""

SHIFT_MARGIN = 32
"""Zhang (2019)'s shift consistency: two windows of the model's input size at offsets ``0 .. 31`` per axis, cut from
the eval crop enlarged by 32 pixels (224-pixel windows of a 256-pixel crop), so every model sees inputs of the size
it was built for."""


@dataclass(frozen=True)
class Family:
    """A metric family: the table it fills and ``compute(model, x, *, config, mean, std, seed, first_index)``
    over one batch. ``margin(config)``: pixels per axis its images need beyond the model's input; when it is
    positive the runner also passes ``x_margin``, the same images cropped that much larger
    (``LoadedModel.preprocess(margin=...)``)."""

    name: str
    table: str
    compute: Callable[..., Columns]
    margin: Callable[[dict[str, Any]], int] = lambda config: 0


def family_version(name: str, config: dict[str, Any] | None = None) -> str:
    """Version string of a family's implementation (part of the unit key)."""
    base = f"liecore-{liecore.__version__}"
    # The family revision after the liecore version: bumped when a family's values change for
    # the same unit key, so `lee reevaluate` redoes its units ("metric version changed").
    # alt.2 / layerwise.2: random draws per image from (seed, sample_index) instead of per
    # batch; layerwise.2 also: stochastic shares exact, keyword-input layers recorded.
    # layerwise.3: layer_kind `normalization_activation` for timm's fused norm + activation layers
    # (BatchNormAct2d, ...), filed under `normalization` before (the values are unchanged).
    # alt.3: eq_r and eq_t_frac use StyleGAN3's transforms and masks (band-limited rotation at
    # 4x with the rotated-square mask; the fractional-shift mask on whole-pixel shifts).
    if name == "alt":
        names = (config or {}).get("metrics") or sorted(METRICS)
        return base + "/alt.3:" + ",".join(f"{n}={ALT_METRIC_REVISIONS.get(n, '?')}" for n in names)
    if name == "layerwise":
        return base + "/layerwise.3"
    if name == "explain":
        return base + "/explain.1"
    return base + "/lee"


def available_alt_metrics() -> list[str]:
    return sorted(METRICS)


def image_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` (0-based position in the evaluated dataset) of a unit seeded with ``seed``."""
    ss = np.random.SeedSequence([int(seed) % 2**64, int(index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def image_rngs(seed: int, first_index: int, n: int) -> list[torch.Generator]:
    """CPU generators of images ``first_index .. first_index + n - 1`` (one per image)."""
    return [torch.Generator().manual_seed(image_seed(seed, first_index + i)) for i in range(n)]


def _kwargs_for(fn: Callable, offered: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``offered`` that ``fn`` accepts (by name)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    offered = {k: v for k, v in offered.items() if v is not None}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in params}


def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def compute_lee(
    model, x: torch.Tensor, *, config: dict[str, Any], mean, std, seed: int, first_index: int = 0
) -> Columns:
    """``lee`` rows for one batch: one per (image, generator)."""
    res = liecore.lee(
        model,
        x,
        config["generators"],
        output=config["output"],
        interpolation=config["interpolation"],
        mean=mean,
        std=std,
    )
    b, g = res.values.shape
    return {
        "sample_pos": np.repeat(np.arange(b), g),
        "generator": list(res.generators) * b,
        "metric": ["lee"] * (b * g),
        "value": _np(res.values).reshape(-1),
        "mean_abs": _np(res.mean_abs).reshape(-1),
        "output": [res.output] * (b * g),
        "interpolation": [res.interpolation] * (b * g),
    }


def alt_margin(config: dict[str, Any]) -> int:
    """The margin ``alt`` images need: :data:`SHIFT_MARGIN` when shift consistency is among the metrics."""
    return SHIFT_MARGIN if "shift_consistency" in config["metrics"] else 0


def compute_alt(
    model,
    x: torch.Tensor,
    *,
    config: dict[str, Any],
    mean,
    std,
    seed: int,
    first_index: int = 0,
    x_margin: torch.Tensor | None = None,
) -> Columns:
    """``alt`` rows for one batch: one per (image, metric); each image draws from its own generator.

    ``x_margin`` (:func:`alt_margin`): the images cropped :data:`SHIFT_MARGIN` larger, for shift consistency.
    """
    cols: dict[str, list] = {
        k: []
        for k in (
            "sample_pos",
            "metric",
            "value",
            "value_unit",
            "higher_is_better",
            "sse",
            "mask_count",
            "peak_to_peak",
            "seed",
        )
    }
    offered = {
        "mean": mean,
        "std": std,
        "seed": seed,
        "interpolation": config.get("interpolation"),
        "output": config.get("output"),
    }
    for name in config["metrics"]:
        fn = METRICS[name]
        kwargs = _kwargs_for(fn, offered)
        if "rng" in inspect.signature(fn).parameters:
            kwargs["rng"] = image_rngs(seed, first_index, x.shape[0])
        if name == "shift_consistency":
            if x_margin is None:
                raise ValueError(f"shift_consistency needs x_margin, the images cropped {SHIFT_MARGIN} pixels larger")
            res = fn(model, x_margin, **kwargs, max_shift=SHIFT_MARGIN)
        else:
            res = fn(model, x, **kwargs)
        vals = _np(res.values).reshape(-1)
        n = len(vals)
        cols["sample_pos"].extend(range(n))
        cols["metric"].extend([res.name] * n)
        cols["value"].extend(vals.tolist())
        cols["value_unit"].extend([res.unit] * n)
        cols["higher_is_better"].extend([res.higher_is_better] * n)
        pooled = "sse" in res.extras and "count" in res.extras  # the EQ metrics: StyleGAN3 pools these over images
        cols["sse"].extend(_np(res.extras["sse"]).reshape(-1).tolist() if pooled else [None] * n)
        cols["mask_count"].extend(_np(res.extras["count"]).reshape(-1).tolist() if pooled else [None] * n)
        cols["peak_to_peak"].extend([float(res.params["peak_to_peak"]) if pooled else None] * n)
        cols["seed"].extend([seed] * n)
    return cols


def activation_layouts(model: torch.nn.Module):
    """Declared activation layouts of a timm model, from what the model itself declares.

    Token grids come from ``patch_embed.grid_size`` (or ``stem.grid_size`` for MLP-Mixer and
    ResMLP) with ``num_prefix_tokens`` invariant tokens; 4-D activations are NHWC when the
    model declares ``output_fmt = 'NHWC'`` (Swin, MambaOut), NCHW otherwise. Layers that
    declare their own ``output_fmt`` (timm's patch embeddings) are taken at their word by
    liecore.
    """
    embed = getattr(model, "patch_embed", None) or getattr(model, "stem", None)
    grid = getattr(embed, "grid_size", None)
    tokens = ()
    if grid is not None:
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        tokens = (liecore.Layout.tokens(tuple(int(g) for g in grid), prefix),)
    fmt = getattr(model, "output_fmt", "NCHW")
    fmt = getattr(fmt, "value", fmt)
    return liecore.ActivationLayouts(spatial=liecore.Layout.spatial(channels_last=fmt == "NHWC"), tokens=tokens)


def compute_layerwise(
    model, x: torch.Tensor, *, config: dict[str, Any], mean, std, seed: int, first_index: int = 0
) -> Columns:
    """``layerwise`` rows for one batch: per (image, generator) one row per layer call, one
    ``end_to_end`` and one ``unattributed`` row (shares add up to the end-to-end value).

    Both methods run on the whole batch; the stochastic method draws image ``i``'s probes from
    its own generator (:func:`image_rngs`), so its estimates do not depend on the batch."""
    names = (
        "sample_pos",
        "generator",
        "method",
        "num_probes",
        "kind",
        "layer",
        "layer_class",
        "call_index",
        "layer_kind",
        "value",
        "share",
        "stderr",
    )
    cols: dict[str, list] = {k: [] for k in names}
    method = config["method"]
    probes = config.get("num_probes") if method == "stochastic" else None
    layouts = activation_layouts(model)

    def add(gen, kind, layer, cls, idx, layer_kind, value, share, stderr=None):
        vals = _np(value).reshape(-1)
        n = len(vals)
        cols["sample_pos"].extend(range(n))
        for key, v in (
            ("generator", gen),
            ("method", method),
            ("num_probes", probes),
            ("kind", kind),
            ("layer", layer),
            ("layer_class", cls),
            ("call_index", int(idx)),
            ("layer_kind", layer_kind),
        ):
            cols[key].extend([v] * n)
        cols["value"].extend(vals.tolist())
        cols["share"].extend(_np(share).reshape(-1).tolist())
        cols["stderr"].extend([None] * n if stderr is None else _np(stderr).reshape(-1).tolist())

    def run(gen):
        return liecore.layerwise(
            model,
            x,
            gen,
            method=method,
            output=config.get("output"),
            layouts=layouts,
            interpolation=config.get("interpolation") or "cubic",
            mean=mean,
            std=std,
            num_probes=probes or 100,
            seed=seed,
            # fresh per generator: each image's probes are the same whatever generator comes first
            rng=image_rngs(seed, first_index, x.shape[0]) if method == "stochastic" else None,
        )

    for gen in config["generators"]:
        res = run(gen)
        for r in res.records:
            add(gen, "layer", r.name, r.cls, r.index, r.kind, r.value, r.share, r.stderr)
        add(gen, "end_to_end", "<end_to_end>", "", -1, "end_to_end", res.end_to_end, res.end_to_end)
        add(gen, "unattributed", "<unattributed>", "", -1, "unattributed", res.unattributed, res.unattributed_share)
    return cols


EXPLAIN_GRID = 16
"""Cells per axis of the ``explain`` family's pooled maps (a layer's own grid when it is smaller)."""


def border_distance(h: int, w: int) -> np.ndarray:
    """``(h, w)`` integer distance of each pixel to the nearest image edge (0 on the outermost ring)."""
    r = np.arange(h)[:, None]
    c = np.arange(w)[None, :]
    return np.minimum(np.minimum(r, h - 1 - r), np.minimum(c, w - 1 - c))


def border_profile(m: np.ndarray) -> np.ndarray:
    """Sum of an ``(h, w)`` map over each 1-px ring at distance 0, 1, ... from the border (sums to the map's total)."""
    d = border_distance(*m.shape)
    return np.bincount(d.ravel(), weights=np.asarray(m, dtype=np.float64).ravel(), minlength=int(d.max()) + 1)


def border_share(m: np.ndarray, k: int) -> float:
    """Sum of an ``(h, w)`` map within ``k`` px of the border (distance < k)."""
    return float(np.asarray(m, dtype=np.float64)[border_distance(*m.shape) < k].sum())


def pool_map(m: torch.Tensor, cells: int = EXPLAIN_GRID) -> torch.Tensor:
    """``(B, h, w)`` maps summed onto ``min(cells, h) x min(cells, w)`` cells by area overlap (totals kept)."""
    h, w = m.shape[-2:]
    return liecore.resample_mass(m, (min(cells, h), min(cells, w)))


def texture_map(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` images -> ``(B, H, W)`` local gradient energy ``sum_c (d_row x_c)^2 + (d_col x_c)^2`` per
    pixel (central differences inside, one-sided at the edges: ``torch.gradient``), in the units of ``x``."""
    x = x.detach().to(torch.float64)
    gy, gx = torch.gradient(x, dim=(-2, -1))
    return (gy.square() + gx.square()).sum(1)


def texture_cells(x: torch.Tensor, cells: int = EXPLAIN_GRID) -> torch.Tensor:
    """``(B, gh, gw)``: each cell's share of the image's gradient energy (:func:`texture_map` summed on the cells of
    :func:`pool_map`, divided by the image's total; rows add up to 1, an image without any gradient gives 0)."""
    e = pool_map(texture_map(x), cells)
    tot = e.sum((1, 2), keepdim=True)
    return torch.where(tot > 0, e / tot.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))


def compute_explain(
    model, x: torch.Tensor, *, config: dict[str, Any], mean, std, seed: int, first_index: int = 0
) -> Columns:
    """``explain`` rows for one batch (:func:`liecore.explain_all`): per (image, generator) one ``layer`` row per
    layer call with a located error (its share map pooled by :func:`pool_map`, row-major in ``cells``), one
    ``special`` row per layer with unlocated shares (prefix tokens, outputs that do not move), one ``image`` row
    (the image map pooled on the input's cells, its border profile in 1-px rings, and the input's texture on the
    same cells: :func:`texture_cells`), one ``remainder`` row.
    Shares are fractions of the image's LEE: per image and generator ``total`` over the rows other than
    ``image`` adds up to 1."""
    names = (
        "sample_pos",
        "generator",
        "kind",
        "layer",
        "layer_class",
        "call_index",
        "layer_kind",
        "grid_h",
        "grid_w",
        "total",
        "abs_total",
        "cells",
        "border_profile",
        "texture",
        "input_h",
        "input_w",
        "lee",
        "output",
        "interpolation",
    )
    cols: dict[str, list] = {k: [] for k in names}
    res = liecore.explain_all(
        model,
        x,
        config["generators"],
        output=config.get("output"),
        layouts=activation_layouts(model),
        interpolation=config.get("interpolation") or "cubic",
        mean=mean,
        std=std,
    )
    b = x.shape[0]
    texture = texture_cells(x)

    def add(i, gen, e, kind, layer, cls, idx, lkind, cells, profile=None, total=None, abs_total=None, texture=None):
        arr = None if cells is None else _np(cells)
        cols["sample_pos"].append(i)
        cols["generator"].append(gen)
        cols["kind"].append(kind)
        cols["layer"].append(layer)
        cols["layer_class"].append(cls)
        cols["call_index"].append(int(idx))
        cols["layer_kind"].append(lkind)
        cols["grid_h"].append(None if arr is None or arr.ndim != 2 else int(arr.shape[0]))
        cols["grid_w"].append(None if arr is None or arr.ndim != 2 else int(arr.shape[1]))
        cols["total"].append(float(arr.sum()) if total is None else float(total))
        cols["abs_total"].append(float(np.abs(arr).sum()) if abs_total is None else float(abs_total))
        cols["cells"].append(None if arr is None else arr.reshape(-1).tolist())
        cols["border_profile"].append(None if profile is None else profile.tolist())
        cols["texture"].append(None if texture is None else _np(texture).reshape(-1).tolist())
        cols["input_h"].append(int(x.shape[-2]))
        cols["input_w"].append(int(x.shape[-1]))
        cols["lee"].append(float(e.lee[i]))
        cols["output"].append(e.output)
        cols["interpolation"].append(config.get("interpolation") or "cubic")

    for gen, e in res.items():
        pooled = {n: pool_map(m) for n, m in e.layer_maps.items()}
        image = pool_map(e.image_map)
        for i in range(b):
            for n, (idx, cls, lkind) in sorted(e.layers.items(), key=lambda kv: kv[1][0]):
                if n in pooled:
                    add(
                        i,
                        gen,
                        e,
                        "layer",
                        n,
                        cls,
                        idx,
                        lkind,
                        pooled[n][i],
                        abs_total=float(e.layer_maps[n][i].abs().sum()),
                    )
                if n in e.special:
                    add(i, gen, e, "special", n, cls, idx, lkind, e.special[n][i])
            im = e.image_map[i]
            add(
                i,
                gen,
                e,
                "image",
                "<image>",
                "",
                -1,
                "image",
                image[i],
                profile=border_profile(_np(im)),
                abs_total=float(im.abs().sum()),
                texture=texture[i],
            )
            add(
                i,
                gen,
                e,
                "remainder",
                "<remainder>",
                "",
                -1,
                "remainder",
                None,
                total=float(e.remainder[i]),
                abs_total=abs(float(e.remainder[i])),
            )
    return cols


FAMILY_IMPLS: dict[str, Family] = {
    "lee": Family("lee", "lee", compute_lee),
    "alt": Family("alt", "alt", compute_alt, margin=alt_margin),
    "layerwise": Family("layerwise", "layerwise", compute_layerwise),
    "explain": Family("explain", "explain", compute_explain),
}
