r"""The result type shared by every alternative metric.

Every metric in :mod:`liecore.metrics` has the signature

.. code-block:: python

    metric(f, x, *, rng=None, seed=0, **params) -> MetricResult

and returns per-image values ``(B,)`` (float64, CPU), so that results from several
batches can be concatenated and aggregated the same way as :class:`liecore.LEEResult`:
the mean over images and its standard error (sample standard deviation, ``ddof = 1``,
over :math:`\sqrt n`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["MetricResult", "make_rng"]


def make_rng(rng: torch.Generator | None, seed: int | None) -> torch.Generator:
    """The CPU random generator a metric draws from: ``rng`` itself, else one seeded with ``seed``.

    Draws are made on the CPU so that a seed gives the same transformations on every
    device.
    """
    if rng is not None:
        if not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
        if rng.device.type != "cpu":
            raise ValueError("rng must be a CPU torch.Generator (draws are made on the CPU)")
        return rng
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


@dataclass(frozen=True)
class MetricResult:
    r"""Per-image values of one alternative metric.

    Attributes:
        name: the metric's registry name (``"eq_t"``, ``"shift_consistency"``, ...).
        values: ``(B,)`` float64 on the CPU, one value per image (may hold ``inf``, e.g. the
            PSNR of an exactly equivariant model).
        unit: ``"percent"``, ``"dB"``, ``"mse"``, ...
        higher_is_better: whether larger values mean more equivariance/consistency.
        params: the parameters used (ranges, number of draws, layout, seed, ...).
        extras: further per-image ``(B,)`` float64 tensors (e.g. ``"mse"`` behind a PSNR).
        pooled: the metric computed on data pooled over all images and draws, where that
            differs from the mean of per-image values (Karras et al. report the PSNR of the
            pooled MSE); ``None`` otherwise.
    """

    name: str
    values: torch.Tensor
    unit: str
    higher_is_better: bool
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)
    pooled: float | None = None

    def __post_init__(self) -> None:
        v = torch.as_tensor(self.values).detach().to(device="cpu", dtype=torch.float64)
        if v.ndim != 1:
            raise ValueError(f"values must be (B,), got shape {tuple(v.shape)}")
        object.__setattr__(self, "values", v)
        extras = {
            k: torch.as_tensor(e).detach().to(device="cpu", dtype=torch.float64) for k, e in dict(self.extras).items()
        }
        for k, e in extras.items():
            if e.shape != v.shape:
                raise ValueError(f"extra {k!r} has shape {tuple(e.shape)}, values {tuple(v.shape)}")
        object.__setattr__(self, "extras", extras)
        object.__setattr__(self, "params", dict(self.params))

    @property
    def n(self) -> int:
        """Number of images."""
        return int(self.values.shape[0])

    @property
    def mean(self) -> float:
        """Mean of the per-image values (``inf`` if any value is)."""
        return float(self.values.mean()) if self.n else math.nan

    @property
    def stderr(self) -> float:
        """Standard error of :attr:`mean` (``ddof = 1``); NaN for fewer than two images or infinite values."""
        if self.n < 2 or not bool(torch.isfinite(self.values).all()):
            return math.nan
        return float(self.values.std(unbiased=True)) / math.sqrt(self.n)

    def summary(self) -> dict[str, Any]:
        """``{"metric", "unit", "higher_is_better", "mean", "stderr", "n", "pooled"}``."""
        return {
            "metric": self.name,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "mean": self.mean,
            "stderr": self.stderr,
            "n": self.n,
            "pooled": self.pooled,
        }
