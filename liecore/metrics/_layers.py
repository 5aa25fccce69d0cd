"""What the per-layer metrics share: their arguments, accumulators, result and recorded calls.

Used by :func:`liecore.metrics.eq_layerwise` and :func:`liecore.metrics.sampled_layerwise`;
the hooks are those of :class:`liecore._recorder.LayerRecorder`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._layout import Layout
from .._recorder import LayerCall, LayerRecorder
from ._result import MetricResult

__all__ = ["LayerErrors", "LayerwiseEQResult", "layer_specs", "named_calls", "named_units", "ratio"]


def ratio(sse: torch.Tensor, cnt: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``sse / cnt ** power``, NaN where nothing was valid (``cnt == 0``: the error is undefined, not 0)."""
    return torch.where(cnt > 0, sse / cnt.clamp_min(1) ** power, torch.full_like(sse, math.nan))


@dataclass(frozen=True)
class LayerwiseEQResult:
    r"""Per-image, per-layer EQ errors of one transformation family.

    Attributes:
        metric: ``"eq_t"``, ``"eq_t_frac"`` or ``"eq_r"``.
        mode: ``"local"`` (each layer on its own recorded input) or ``"cumulative"``
            (activations of the whole model on :math:`Tx` against :math:`T` of those on
            :math:`x`).
        layers: qualified module names, in column order.
        sse: ``(B, L)`` float64, squared error summed over valid elements, averaged over draws.
        count: ``(B, L)`` float64, number of valid elements :math:`N`, averaged over draws.
        per_element: ``(B, L)``, :math:`\mathbb E_T[\mathrm{SSE}/N]` (NaN if some draw had
            :math:`N = 0`, an empty mask).
        per_sqrt_element: ``(B, L)``, :math:`\mathbb E_T[\mathrm{SSE}/\sqrt N]` (likewise).
        params: the parameters used.
    """

    metric: str
    mode: str
    layers: tuple[str, ...]
    sse: torch.Tensor
    count: torch.Tensor
    per_element: torch.Tensor
    per_sqrt_element: torch.Tensor
    params: Mapping[str, Any] = field(default_factory=dict)

    NORMALIZATIONS = ("n", "sqrt_n")

    def result(self, layer: str, normalization: str = "n") -> MetricResult:
        """The :class:`MetricResult` of one layer, normalized per ``"n"`` or ``"sqrt_n"`` elements."""
        i = self.layers.index(layer)
        if normalization == "n":
            vals, unit = self.per_element[:, i], "mse"
        elif normalization == "sqrt_n":
            vals, unit = self.per_sqrt_element[:, i], "sse/sqrt(n)"
        else:
            raise ValueError(f"normalization must be one of {self.NORMALIZATIONS}, got {normalization!r}")
        return MetricResult(
            name=f"{self.metric}_layer",
            values=vals,
            unit=unit,
            higher_is_better=False,
            params={**self.params, "layer": layer, "normalization": normalization, "mode": self.mode},
        )

    def summary(self) -> dict[str, dict[str, float]]:
        """``{layer: {"n": mean, "sqrt_n": mean}}`` over images."""
        return {
            name: {"n": float(self.per_element[:, i].mean()), "sqrt_n": float(self.per_sqrt_element[:, i].mean())}
            for i, name in enumerate(self.layers)
        }


def layer_specs(layers: Mapping[str, Layout | tuple[Layout, Layout]], mode: str, x: torch.Tensor):
    """``(names, {name: (input layout, output layout)})`` of a per-layer metric, arguments checked."""
    if mode not in ("local", "cumulative"):
        raise ValueError(f"mode must be 'local' or 'cumulative', got {mode!r}")
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    return list(layers), {n: (v if isinstance(v, tuple) else (v, v)) for n, v in layers.items()}


class LayerErrors:
    """Per-image, per-layer squared errors summed over draws, with both normalizations."""

    def __init__(self, b: int, num_layers: int):
        self.sse, self.cnt, self.per_n, self.per_sqrt = (
            torch.zeros(b, num_layers, dtype=torch.float64) for _ in range(4)
        )

    def add(self, i: int, s: torch.Tensor, c: torch.Tensor) -> None:
        """Add one draw's ``(B,)`` squared-error sums ``s`` over ``c`` valid elements to layer ``i``."""
        s, c = s.cpu(), c.cpu()
        self.sse[:, i] += s
        self.cnt[:, i] += c
        self.per_n[:, i] += ratio(s, c)
        self.per_sqrt[:, i] += ratio(s, c, 0.5)

    def result(self, metric: str, mode: str, names: list[str], num_samples: int, params) -> LayerwiseEQResult:
        k = float(num_samples)
        return LayerwiseEQResult(
            metric, mode, tuple(names), self.sse / k, self.cnt / k, self.per_n / k, self.per_sqrt / k, params
        )


def named_units(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Module]]:
    """``(name, submodule)`` of the declared layers, for a :class:`~liecore._recorder.LayerRecorder`."""
    return [(n, model.get_submodule(n)) for n in names]


def named_calls(rec: LayerRecorder, names: list[str], x: torch.Tensor) -> dict[str, LayerCall]:
    """Run ``rec.model`` on ``x`` and return the one call of each declared layer, by name.

    Each layer must be called exactly once and return a tensor; the call's ``x`` is a copy of
    its input (None when ``rec`` keeps no inputs or the input was not a tensor), ``y`` a copy
    of its output, ``is_input`` whether its input was ``x`` itself.
    """
    _, calls = rec.record(rec.model, x)
    out: dict[str, LayerCall] = {}
    for c in calls:
        if c.name in out:
            raise RuntimeError(f"layer {c.name!r} was called twice in one forward pass; hook a distinct module")
        if not isinstance(c.y, torch.Tensor):
            raise TypeError(f"layer {c.name!r} returned {type(c.y).__name__}; a tensor is needed")
        out[c.name] = c
    missing = [n for n in names if n not in out]
    if missing:
        raise RuntimeError(f"layers not called in the forward pass: {missing}")
    return out
