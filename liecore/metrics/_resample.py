r"""Transformations of Karras et al. (2021): integer and fractional translation, rotation.

All act on maps ``(B, C, H, W)`` with *per-image* parameters and return the transformed
map together with a validity mask ``(B, 1, H, W)`` (1 where the result does not depend on
values outside the map, 0 elsewhere; outside values are taken as 0).

Coordinates are pixel indices ``(i, j)`` (row, column). A transformation :math:`T` is
defined by where each output pixel :math:`p` samples its input, :math:`(Tx)(p) = x(q(p))`:

* integer translation by :math:`d \in \mathbb Z^2`: :math:`q = p - d` (content moves by
  :math:`+d`), exact copy, valid where :math:`p - d` lies in the map;
* fractional translation by :math:`d \in \mathbb R^2`: :math:`q = p - d`;
* rotation by :math:`\theta` about the map centre :math:`c = ((H-1)/2, (W-1)/2)`:
  :math:`q = c + R(-\theta)(p - c)` (content turns by :math:`+\theta`, counter-clockwise
  with rows pointing down, i.e. clockwise on screen).

The last two evaluate the separable *Lanczos* (windowed-sinc) interpolant

.. math:: x(q) = \sum_{k, l} x_{kl}\, L_a(q_0 - k)\, L_a(q_1 - l),
          \qquad L_a(s) = \operatorname{sinc}(s)\operatorname{sinc}(s/a)\,[|s| < a],

with :math:`a = 3` by default and the :math:`2a` weights of each axis normalized to sum to
one. A pixel is valid when all :math:`2a \times 2a` taps lie inside the map. Properties:
the identity transformation returns the map exactly; the interpolant reproduces constants
exactly and band-limited signals well below Nyquist to good accuracy (it is the standard
approximation of the ideal band-limited shift used by Karras et al.).
"""

from __future__ import annotations

import math

import torch

from .._layout import Layout

__all__ = [
    "lanczos",
    "resample",
    "integer_translate",
    "fractional_translate",
    "rotate",
    "apply_to_layout",
]


def lanczos(s: torch.Tensor, a: int = 3) -> torch.Tensor:
    r"""The Lanczos window :math:`L_a(s) = \operatorname{sinc}(s)\operatorname{sinc}(s/a)` on :math:`|s| < a`, 0 outside."""
    out = torch.sinc(s) * torch.sinc(s / a)
    return torch.where(s.abs() < a, out, torch.zeros_like(out))


def resample(img: torch.Tensor, qy: torch.Tensor, qx: torch.Tensor, a: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Evaluate the Lanczos interpolant of ``img`` at per-image positions.

    Args:
        img: ``(B, C, H, W)``.
        qy, qx: ``(B, Ho, Wo)`` sample positions in pixel units (row, column).
        a: the Lanczos order (``2a`` taps per axis).

    Returns:
        ``(out, mask)``: ``out`` ``(B, C, Ho, Wo)`` with zero outside the map, ``mask``
        ``(B, 1, Ho, Wo)`` in ``img.dtype``, 1 where every tap is inside the map.
    """
    b, c, h, w = img.shape
    ho, wo = qy.shape[-2:]
    qy = qy.to(img.dtype)
    qx = qx.to(img.dtype)
    y0 = torch.floor(qy)
    x0 = torch.floor(qx)
    taps = torch.arange(-a + 1, a + 1, device=img.device)
    # (B, Ho, Wo, 2a) tap indices and normalized weights per axis
    iy = y0.long()[..., None] + taps
    ix = x0.long()[..., None] + taps
    wy = lanczos((qy - y0)[..., None] - taps.to(img.dtype), a)
    wx = lanczos((qx - x0)[..., None] - taps.to(img.dtype), a)
    wy = wy / wy.sum(-1, keepdim=True)
    wx = wx / wx.sum(-1, keepdim=True)
    iny = (iy >= 0) & (iy < h)
    inx = (ix >= 0) & (ix < w)
    wy = wy * iny
    wx = wx * inx
    iyc = iy.clamp(0, h - 1)
    ixc = ix.clamp(0, w - 1)
    flat = img.reshape(b, c, h * w)
    out = torch.zeros(b, c, ho * wo, dtype=img.dtype, device=img.device)
    for ky in range(2 * a):
        row = iyc[..., ky] * w  # (B, Ho, Wo)
        for kx in range(2 * a):
            idx = (row + ixc[..., kx]).reshape(b, 1, -1).expand(b, c, -1)
            wgt = (wy[..., ky] * wx[..., kx]).reshape(b, 1, -1)
            out = out + torch.gather(flat, 2, idx) * wgt
    mask = (iny.all(-1) & inx.all(-1)).to(img.dtype).unsqueeze(1)
    return out.reshape(b, c, ho, wo), mask


def _pixel_grid(b: int, h: int, w: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    py = torch.arange(h, dtype=dtype, device=device)[:, None].expand(h, w)
    px = torch.arange(w, dtype=dtype, device=device)[None, :].expand(h, w)
    return py.expand(b, h, w), px.expand(b, h, w)


def integer_translate(img: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Translate by integer pixels ``(dy, dx)`` (each ``(B,)`` integer), zero fill.

    :math:`(Tx)(p) = x(p - d)`; mask 1 where :math:`p - d` is inside the map. Exact.
    """
    b, c, h, w = img.shape
    dy = torch.as_tensor(dy, device=img.device).long().reshape(b, 1, 1)
    dx = torch.as_tensor(dx, device=img.device).long().reshape(b, 1, 1)
    py, px = _pixel_grid(b, h, w, torch.long, img.device)
    sy, sx = py - dy, px - dx
    valid = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    idx = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)).reshape(b, 1, -1).expand(b, c, -1)
    out = torch.gather(img.reshape(b, c, h * w), 2, idx).reshape(b, c, h, w)
    mask = valid.to(img.dtype).unsqueeze(1)
    return out * mask, mask


def fractional_translate(
    img: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, a: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Translate by real pixel offsets ``(dy, dx)`` (each ``(B,)``) with the Lanczos-``a`` interpolant."""
    b, _, h, w = img.shape
    py, px = _pixel_grid(b, h, w, img.dtype, img.device)
    dy = torch.as_tensor(dy, device=img.device).to(img.dtype).reshape(b, 1, 1)
    dx = torch.as_tensor(dx, device=img.device).to(img.dtype).reshape(b, 1, 1)
    return resample(img, py - dy, px - dx, a)


def rotate(img: torch.Tensor, angle: torch.Tensor, a: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rotate by ``angle`` (radians, ``(B,)``) about the map centre with the Lanczos-``a`` interpolant.

    The mask is additionally restricted to the disc inscribed in the map shrunk by ``a``
    pixels (as Karras et al.'s circular mask), so that the valid region does not depend on
    the angle's quadrant.
    """
    b, _, h, w = img.shape
    py, px = _pixel_grid(b, h, w, img.dtype, img.device)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    th = torch.as_tensor(angle, device=img.device).to(img.dtype).reshape(b, 1, 1)
    cos, sin = torch.cos(th), torch.sin(th)
    ry, rx = py - cy, px - cx
    # q = c + R(-theta)(p - c), in (row, col) = (y, x) coordinates
    qy = cy + cos * ry - sin * rx
    qx = cx + sin * ry + cos * rx
    out, mask = resample(img, qy, qx, a)
    radius = min(h, w) / 2.0 - a
    disc = ((ry.square() + rx.square()) <= max(radius, 0.0) ** 2).to(img.dtype).unsqueeze(1)
    return out, mask * disc


def apply_to_layout(
    y: torch.Tensor, layout: Layout, fn
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    r"""Split ``y`` by its declared layout and transform the moving part.

    Returns ``(prefix, grid_t, mask)``: the invariant part of ``y`` (``None`` if there is
    none), the transformed ``(B, C, h, w)`` map of its spatial part and its mask (both
    ``None`` for an invariant layout). ``fn`` maps ``(B, C, h, w)`` to ``(map, mask)``.
    """
    layout.check(y, "output")
    prefix, grid = layout.to_nchw(y)
    if grid is None:
        return prefix, None, None
    out, mask = fn(grid)
    return prefix, out, mask


def masked_sq_error(
    y_t: torch.Tensor, ty: torch.Tensor, layout: Layout, fn
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sum of squared errors between ``y_t = f(T x)`` and ``T f(x)`` over valid elements, and their count.

    ``ty`` is ``f(x)``; ``fn`` applies :math:`T` to a ``(B, C, h, w)`` map and returns
    ``(map, mask)``. Invariant parts (prefix tokens, logits) are compared directly and all
    count as valid. Returns ``(sse, count)``, each ``(B,)`` float64.
    """
    prefix_t, grid_t = layout.to_nchw(y_t)
    prefix, grid_tf, mask = apply_to_layout(ty, layout, fn)
    b = y_t.shape[0]
    sse = torch.zeros(b, dtype=torch.float64, device=y_t.device)
    cnt = torch.zeros(b, dtype=torch.float64, device=y_t.device)
    if prefix is not None:
        d = (prefix_t - prefix).to(torch.float64).reshape(b, -1)
        sse = sse + d.square().sum(-1)
        cnt = cnt + d.shape[-1]
    if grid_tf is not None:
        m = mask.to(torch.float64)
        d = (grid_t.to(torch.float64) - grid_tf.to(torch.float64)) * m
        sse = sse + d.square().reshape(b, -1).sum(-1)
        cnt = cnt + m.reshape(b, -1).sum(-1) * grid_t.shape[1]
    return sse, cnt


def psnr(mse: torch.Tensor, peak_to_peak: float = 2.0) -> torch.Tensor:
    r""":math:`\mathrm{PSNR} = 20 \log_{10}(\mathrm{peak\_to\_peak}) - 10 \log_{10}(\mathrm{MSE})` in dB (``inf`` at MSE 0)."""
    return 20.0 * math.log10(peak_to_peak) - 10.0 * torch.log10(mse)
