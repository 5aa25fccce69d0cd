r"""Shift consistency of predicted classes (Zhang 2019, "Making convolutional networks shift-invariant again").

For an image :math:`x` of size :math:`H \times W` and a classifier :math:`f` returning
logits ``(B, K)``:

* :func:`shift_consistency`: draw two offsets :math:`o_1, o_2 \in \{0, \dots, s-1\}^2`
  (``max_shift`` :math:`s = 32` as in Zhang 2019, independently per axis, per image and per
  pair) and crop two windows of size :math:`(H - s) \times (W - s)` at those offsets;
  the pair is consistent when :math:`\arg\max f(\mathrm{crop}_{o_1} x) = \arg\max
  f(\mathrm{crop}_{o_2} x)`. The model sees inputs *smaller* than :math:`x`: it must accept
  them (timm CNNs and most hybrids accept any size divisible by their stride, e.g. 224
  crops of 256 images; ViTs need ``dynamic_img_size=True``).
* :func:`circular_shift_consistency`: the same with :math:`x` rolled circularly
  (``torch.roll``) by :math:`o_1` and by :math:`o_2` instead of cropped; the input size is
  unchanged. A model built from circular convolutions and global pooling is exactly
  consistent.

Per image the value is the percentage of its ``num_pairs`` pairs that are consistent
(:math:`\{0, 100/n, \dots, 100\}`), so the mean over images is the consistency in percent.
Higher is better. Ties of the argmax are broken by ``torch.argmax`` (first maximum).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._derivative import differentiable_mode
from ._result import MetricResult, Rng, make_rng, randint

__all__ = ["circular_shift_consistency", "shift_consistency"]


def _crop(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-image crops ``x[b, :, oy[b]:oy[b]+h, ox[b]:ox[b]+w]`` as ``(B, C, h, w)``."""
    b = x.shape[0]
    rows = oy.to(x.device)[:, None] + torch.arange(h, device=x.device)  # (B, h)
    cols = ox.to(x.device)[:, None] + torch.arange(w, device=x.device)  # (B, w)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, h, w, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _roll(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
    """Per-image ``torch.roll(x[b], (oy[b], ox[b]), dims=(-2, -1))``."""
    b, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device) - oy.to(x.device)[:, None]) % h
    cols = (torch.arange(w, device=x.device) - ox.to(x.device)[:, None]) % w
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def _consistency(
    name: str,
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    rng: Rng | None,
    seed: int | None,
    num_pairs: int,
    max_shift: int,
    circular: bool,
) -> MetricResult:
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    if num_pairs < 1 or max_shift < 1:
        raise ValueError("num_pairs and max_shift must be >= 1")
    b, _, h, w = x.shape
    if not circular and (h <= max_shift or w <= max_shift):
        raise ValueError(f"crops of ({h}-{max_shift}, {w}-{max_shift}) are empty; lower max_shift")
    gen = make_rng(rng, seed, b)
    agree = torch.zeros(b, dtype=torch.float64)
    with differentiable_mode(f):
        for _ in range(num_pairs):
            off = randint(gen, max_shift, 4, b)
            if circular:
                x1, x2 = _roll(x, off[0], off[1]), _roll(x, off[2], off[3])
            else:
                x1 = _crop(x, off[0], off[1], h - max_shift, w - max_shift)
                x2 = _crop(x, off[2], off[3], h - max_shift, w - max_shift)
            y1, y2 = f(x1), f(x2)
            if y1.ndim != 2:
                raise ValueError(f"shift consistency needs logits (B, K), got shape {tuple(y1.shape)}")
            agree += (y1.argmax(-1) == y2.argmax(-1)).cpu().to(torch.float64)
    return MetricResult(
        name=name,
        values=100.0 * agree / num_pairs,
        unit="percent",
        higher_is_better=True,
        params={
            "num_pairs": num_pairs,
            "max_shift": max_shift,
            "offsets": f"uniform integers in [0, {max_shift - 1}] per axis, per image and pair",
            "crop": None if circular else (h - max_shift, w - max_shift),
            "seed": None if rng is not None else seed,
        },
    )


def shift_consistency(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    rng: Rng | None = None,
    seed: int | None = 0,
    num_pairs: int = 5,
    max_shift: int = 32,
) -> MetricResult:
    r"""Zhang (2019) consistency: agreement of the argmax class on two random crops, in percent.

    Args:
        f: classifier mapping ``(B, C, h, w)`` images to logits ``(B, K)``; it receives
            crops of size ``(H - max_shift, W - max_shift)``.
        x: images ``(B, C, H, W)`` (e.g. 256 px for 224 crops).
        rng: a CPU ``torch.Generator``, or one per image (else one seeded with ``seed``).
        seed: seed used when ``rng`` is None.
        num_pairs: random pairs of crops per image.
        max_shift: offsets are drawn uniformly from ``0 .. max_shift - 1`` per axis.

    Returns:
        :class:`MetricResult` ``"shift_consistency"``, per-image percentage of consistent
        pairs (unit ``percent``, higher is better).
    """
    return _consistency("shift_consistency", f, x, rng, seed, num_pairs, max_shift, circular=False)


def circular_shift_consistency(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    rng: Rng | None = None,
    seed: int | None = 0,
    num_pairs: int = 5,
    max_shift: int = 32,
) -> MetricResult:
    r"""Circular variant of :func:`shift_consistency`: two ``torch.roll`` s of the full image.

    Offsets ``0 .. max_shift - 1`` per axis, per image and pair; 100% for a model that is
    invariant to circular shifts (circular convolutions + global pooling).
    """
    return _consistency("circular_shift_consistency", f, x, rng, seed, num_pairs, max_shift, circular=True)
