r"""Alternative equivariance metrics, all behind one signature.

.. code-block:: python

    metric(f, x, *, rng=None, seed=0, **params) -> MetricResult

``rng`` is a CPU ``torch.Generator``, or a sequence of them, one per image, which makes each
image's draws (and value) independent of the batch it is in (else one is seeded with ``seed``); results hold
per-image values ``(B,)`` in float64 with the metric's name, unit, ``higher_is_better``,
mean/stderr and the parameters used. :data:`METRICS` maps names to the callables.

* :func:`shift_consistency`, :func:`circular_shift_consistency` (Zhang 2019), percent;
* :func:`eq_t`, :func:`eq_t_frac`, :func:`eq_r` (Karras et al. 2021), PSNR in dB per image
  and pooled as StyleGAN3 reports it, with StyleGAN3's transformations and masks
  (:func:`integer_translate`, :func:`fractional_translate`, :func:`rotate`,
  :func:`pseudo_rotate`, built on :func:`upfirdn2d` and :func:`bandlimit_filter`), and
  :func:`eq_layerwise` per layer (normalized per :math:`N` and per :math:`\sqrt N`);
  :func:`lanczos_rotate` is a cheaper separable Lanczos rotation, not EQ-R's;
* :func:`sampled_equivariance_error`, :math:`\mathbb E_t\|\rho(t)^{-1}f(\rho(t)x)-f(x)\|^2/\dim`, and
  :func:`sampled_layerwise` per layer (normalized per :math:`N` and per :math:`\sqrt N`, as
  :func:`eq_layerwise`).
"""

from collections.abc import Callable

from ._consistency import circular_shift_consistency, shift_consistency
from ._eq import EQ_KINDS, POOLED_DEFINITION, LayerwiseEQResult, eq_layerwise, eq_r, eq_t, eq_t_frac
from ._resample import (
    bandlimit_filter,
    fractional_translate,
    integer_translate,
    lanczos,
    lanczos_rotate,
    pseudo_rotate,
    psnr,
    resample,
    rotate,
    upfirdn2d,
)
from ._result import MetricResult
from ._sampled import sampled_equivariance_error, sampled_layerwise

METRICS: dict[str, Callable[..., MetricResult]] = {
    "shift_consistency": shift_consistency,
    "circular_shift_consistency": circular_shift_consistency,
    "eq_t": eq_t,
    "eq_t_frac": eq_t_frac,
    "eq_r": eq_r,
    "sampled_equivariance_error": sampled_equivariance_error,
}
"""Registry: metric name -> callable ``metric(f, x, *, rng, seed, ...) -> MetricResult``."""

__all__ = [
    "EQ_KINDS",
    "METRICS",
    "POOLED_DEFINITION",
    "LayerwiseEQResult",
    "MetricResult",
    "bandlimit_filter",
    "circular_shift_consistency",
    "eq_layerwise",
    "eq_r",
    "eq_t",
    "eq_t_frac",
    "fractional_translate",
    "integer_translate",
    "lanczos",
    "lanczos_rotate",
    "pseudo_rotate",
    "psnr",
    "resample",
    "rotate",
    "sampled_equivariance_error",
    "sampled_layerwise",
    "shift_consistency",
    "upfirdn2d",
]
