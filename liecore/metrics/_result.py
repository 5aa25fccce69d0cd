r"""The result type shared by every alternative metric.

Every metric in :mod:`liecore.metrics` has the signature

.. code-block:: python

    metric(f, x, *, rng=None, seed=0, **params) -> MetricResult

and returns per-image values ``(B,)`` (float64, CPU), so that results from several
batches can be concatenated and aggregated the same way as :class:`liecore.LEEResult`:
the mean over images and its standard error (sample standard deviation, ``ddof = 1``,
over :math:`\sqrt n`). A metric whose published figure pools over the whole run (EQ-T,
EQ-T_frac, EQ-R: StyleGAN3's PSNR of the total squared error over the total count) also
gives that figure for the batch (:attr:`MetricResult.pooled`) and the per-image sums behind
it (``extras``), named apart from the per-image ``values``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["MetricResult", "Rng", "make_rng", "rand", "randint", "randn"]

Rng = torch.Generator | Sequence[torch.Generator]
"""One CPU generator for the batch, or one per image (then image ``i`` draws only from ``rng[i]``,
so its draws, and its value, do not depend on which other images share the batch)."""


def _check_cpu(g: object) -> torch.Generator:
    if not isinstance(g, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator or a sequence of them, got {type(g).__name__}")
    if g.device.type != "cpu":
        raise ValueError("rng must be a CPU torch.Generator (draws are made on the CPU)")
    return g


def make_rng(rng: Rng | None, seed: int | None, b: int | None = None) -> Rng:
    """The CPU random generator(s) a metric draws from: ``rng`` itself, else one seeded with ``seed``.

    Draws are made on the CPU so that a seed gives the same transformations on every
    device. A sequence of ``b`` generators (one per image) is returned as a list.
    """
    if rng is not None:
        if isinstance(rng, torch.Generator):
            return _check_cpu(rng)
        gens = [_check_cpu(g) for g in rng]
        if b is not None and len(gens) != b:
            raise ValueError(f"rng holds {len(gens)} generators for a batch of {b} images")
        return gens
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


def rand(gen: Rng, rows: int, b: int) -> torch.Tensor:
    """``(rows, b)`` float64 uniform draws in ``[0, 1)``; column ``i`` from ``gen[i]`` for per-image generators."""
    if isinstance(gen, torch.Generator):
        return torch.rand(rows, b, generator=gen, dtype=torch.float64)
    return torch.stack([torch.rand(rows, generator=g, dtype=torch.float64) for g in gen], dim=1)


def randint(gen: Rng, high: int, rows: int, b: int) -> torch.Tensor:
    """``(rows, b)`` integers uniform in ``[0, high)``; column ``i`` from ``gen[i]`` for per-image generators."""
    if isinstance(gen, torch.Generator):
        return torch.randint(0, high, (rows, b), generator=gen)
    return torch.stack([torch.randint(0, high, (rows,), generator=g) for g in gen], dim=1)


def randn(gen: Rng, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``shape = (b, ...)`` standard normal draws on the CPU; slice ``i`` from ``gen[i]`` for per-image generators."""
    if isinstance(gen, torch.Generator):
        return torch.randn(tuple(shape), generator=gen, dtype=dtype)
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in gen])


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
        extras: further per-image ``(B,)`` float64 tensors. The EQ metrics keep
            ``"mse"`` (the per-image MSE behind ``values``, averaged over draws), ``"sse"``
            (squared error summed over valid elements and draws) and ``"count"`` (valid
            elements summed over draws), so that batches can be pooled.
        pooled: the metric computed on data pooled over all images and draws, where that
            differs from the mean of per-image values, as :attr:`pooled_definition`
            says; ``None`` otherwise. For the EQ metrics it is StyleGAN3's statistic:
            the PSNR of ``sum(sse) / sum(count)``.
        pooled_definition: how :attr:`pooled` is computed, in words (``None`` without it).
    """

    name: str
    values: torch.Tensor
    unit: str
    higher_is_better: bool
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)
    pooled: float | None = None
    pooled_definition: str | None = None

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
