"""Metric families: what one work unit computes on a batch, and the table it fills.

Each family turns ``(model, images)`` into long-format columns for its table in
:mod:`pipelines.schema`; the runner adds the key columns (unit, model, dataset, sample).
``lee`` uses :func:`liecore.lee`; ``alt`` uses ``liecore.metrics.METRICS``; ``layerwise`` uses
``liecore.layerwise``. A family's ``version`` goes into the unit key, so a new metric version
makes ``lee reevaluate`` redo the units it affects.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["FAMILY_IMPLS", "Family", "available_alt_metrics", "family_version"]

Columns = dict[str, list[Any] | np.ndarray]


@dataclass(frozen=True)
class Family:
    name: str
    table: str
    compute: Callable[..., Columns]


def _liecore_version() -> str:
    import liecore

    return liecore.__version__


def family_version(name: str, config: dict[str, Any] | None = None) -> str:
    """Version string of a family's implementation (part of the unit key)."""
    base = f"liecore-{_liecore_version()}"
    if name == "alt":
        import liecore.metrics as m

        versions = {k: str(getattr(v, "version", getattr(m, "__version__", "1"))) for k, v in m.METRICS.items()}
        names = (config or {}).get("metrics") or sorted(versions)
        return base + "/alt:" + ",".join(f"{n}={versions.get(n, '?')}" for n in names)
    if name == "layerwise":
        return base + "/layerwise"
    return base + "/lee"


def available_alt_metrics() -> list[str]:
    import liecore.metrics as m

    return sorted(m.METRICS)


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


def compute_lee(model, x: torch.Tensor, *, config: dict[str, Any], mean, std, seed: int) -> Columns:
    """``lee`` rows for one batch: one per (image, generator)."""
    import liecore

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


def compute_alt(model, x: torch.Tensor, *, config: dict[str, Any], mean, std, seed: int) -> Columns:
    """``alt`` rows for one batch: one per (image, metric)."""
    import liecore.metrics as m

    cols: dict[str, list] = {k: [] for k in ("sample_pos", "metric", "value", "value_unit", "higher_is_better", "seed")}
    offered = {
        "mean": mean,
        "std": std,
        "seed": seed,
        "interpolation": config.get("interpolation"),
        "output": config.get("output"),
    }
    for name in config["metrics"]:
        fn = m.METRICS[name]
        res = fn(model, x, **_kwargs_for(fn, offered))
        vals = _np(res.values).reshape(-1)
        n = len(vals)
        cols["sample_pos"].extend(range(n))
        cols["metric"].extend([getattr(res, "name", name)] * n)
        cols["value"].extend(vals.tolist())
        cols["value_unit"].extend([str(getattr(res, "unit", ""))] * n)
        cols["higher_is_better"].extend([bool(getattr(res, "higher_is_better", False))] * n)
        cols["seed"].extend([seed] * n)
    return cols


def compute_layerwise(model, x: torch.Tensor, *, config: dict[str, Any], mean, std, seed: int) -> Columns:
    """``layerwise`` rows for one batch: one per (image, generator, layer call) + end-to-end + unattributed."""
    import liecore

    cols: dict[str, list] = {
        k: []
        for k in ("sample_pos", "generator", "method", "num_probes", "kind", "layer", "layer_class", "call_index", "value")
    }
    method = config["method"]
    probes = config.get("num_probes") if method == "stochastic" else None

    def add(gen, kind, layer, cls, idx, values):
        vals = _np(values).reshape(-1)
        n = len(vals)
        cols["sample_pos"].extend(range(n))
        cols["generator"].extend([gen] * n)
        cols["method"].extend([method] * n)
        cols["num_probes"].extend([probes] * n)
        cols["kind"].extend([kind] * n)
        cols["layer"].extend([layer] * n)
        cols["layer_class"].extend([cls] * n)
        cols["call_index"].extend([int(idx)] * n)
        cols["value"].extend(vals.tolist())

    for gen in config["generators"]:
        torch.manual_seed(seed)
        offered = {
            "method": method,
            "num_probes": config.get("num_probes"),
            "mean": mean,
            "std": std,
            "seed": seed,
            "interpolation": config.get("interpolation"),
            "output": config.get("output"),
        }
        fn = liecore.layerwise
        res = fn(model, x, gen, **_kwargs_for(fn, offered))
        for rec in _layer_records(res):
            add(gen, "layer", rec[0], rec[1], rec[2], rec[3])
        add(gen, "end_to_end", "<end_to_end>", "", -1, _first_attr(res, ("end_to_end", "total", "lee")))
        add(gen, "unattributed", "<unattributed>", "", -1, _first_attr(res, ("unattributed_share", "unattributed")))
    return cols


def _first_attr(obj, names):
    for n in names:
        if hasattr(obj, n):
            return getattr(obj, n)
    raise AttributeError(f"{type(obj).__name__} has none of {names}")


def _layer_records(res):
    """(qualified name, class, call index, values) per layer call, whatever the record type calls them."""
    records = _first_attr(res, ("records", "layers", "calls"))
    for r in records:
        name = _first_attr(r, ("name", "qualified_name", "qualname", "layer"))
        cls = _first_attr(r, ("cls", "class_name", "layer_class", "module_class", "type"))
        idx = _first_attr(r, ("call_index", "index", "order", "call"))
        vals = _first_attr(r, ("share", "values", "contribution", "value"))  # additive share first
        yield str(name), str(getattr(cls, "__name__", cls)), int(idx), vals


FAMILY_IMPLS: dict[str, Family] = {
    "lee": Family("lee", "lee", compute_lee),
    "alt": Family("alt", "alt", compute_alt),
    "layerwise": Family("layerwise", "layerwise", compute_layerwise),
}
