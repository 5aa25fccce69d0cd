r"""Pixel grids, continuous interpolants and their spatial derivatives.

Conventions (every number depends on them):

* normalized coordinates :math:`u_j = -1 + 2j/(W-1)`, :math:`v_i = -1 + 2i/(H-1)`
  (``align_corners=True``); a single pixel sits at 0;
* the boundary is *whole-sample symmetric* reflection, :math:`x_{-j} = x_j` and
  :math:`x_{W-1+j} = x_{W-1-j}` (what ``grid_sample(padding_mode="reflection",
  align_corners=True)`` does to coordinates);
* derivatives are in normalized units: one pixel step is :math:`2/(W-1)`, so
  :math:`\partial_u = \tfrac{W-1}{2}\,\partial_j`.

Two interpolants are offered; each image derivative is the derivative at the knots of
the interpolant used to transform images, so Lie derivatives agree with finite
differences of the transformation:

``"cubic"`` (default)
    Keys' cubic convolution with :math:`a = -1/2` (Catmull-Rom). Its derivative at a knot
    is the central difference :math:`(x_{j+1} - x_{j-1})/2`.
``"spectral"``
    The trigonometric (DCT-I) interpolant of the symmetric extension, band-limited to the
    grid's Nyquist frequency. Its derivative is the spectral derivative; it is exact for
    sampled cosines below Nyquist.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch

__all__ = ["Interpolation", "coords", "d_dpixel", "gradient", "INTERPOLATIONS"]

Interpolation = Literal["cubic", "spectral"]
INTERPOLATIONS: tuple[str, ...] = ("cubic", "spectral")


def check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {INTERPOLATIONS}")


def coords(n: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Normalized pixel-centre coordinates of an axis of ``n`` pixels."""
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    return torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _dct1_basis_cpu(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B^{-1}) with B[j, k] = cos(pi k j / (n - 1)), in float64 on the CPU.

    A single pixel is a constant signal: B = B^{-1} = [[1]].
    """
    if n == 1:
        one = torch.ones(1, 1, dtype=torch.float64)
        return one, one.clone()
    j = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi * j[:, None] * j[None, :] / (n - 1))
    return basis, torch.linalg.inv(basis)


@functools.lru_cache(maxsize=64)
def _spectral_dpixel_cpu(n: int) -> torch.Tensor:
    """Matrix of the spectral derivative d/dj (per pixel) at the knots, float64."""
    if n == 1:
        return torch.zeros(1, 1, dtype=torch.float64)
    basis, inv = _dct1_basis_cpu(n)
    j = torch.arange(n, dtype=torch.float64)
    k = torch.arange(n, dtype=torch.float64)
    w = math.pi * k / (n - 1)
    dbasis = -w[None, :] * torch.sin(j[:, None] * w[None, :])
    return dbasis @ inv


def dct1_basis(n: int, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    basis, inv = _dct1_basis_cpu(n)
    return basis.to(dtype=dtype, device=device), inv.to(dtype=dtype, device=device)


def d_dpixel(x: torch.Tensor, dim: int, interpolation: Interpolation = "cubic") -> torch.Tensor:
    """Derivative per pixel step along ``dim`` of the interpolant of ``x`` at its knots."""
    n = x.shape[dim]
    if n == 1:
        return torch.zeros_like(x)
    if interpolation == "cubic":
        # whole-sample symmetric boundary: x[-1] = x[1], x[n] = x[n-2] -> derivative 0 there
        inner = (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) * 0.5
        zero = torch.zeros_like(x.narrow(dim, 0, 1))
        return torch.cat([zero, inner, zero], dim=dim)
    if interpolation == "spectral":
        mat = _spectral_dpixel_cpu(n).to(dtype=x.dtype, device=x.device)
        xt = x.movedim(dim, -1)
        return (xt @ mat.T).movedim(-1, dim)
    check_interpolation(interpolation)
    raise AssertionError("unreachable")


def gradient(img: torch.Tensor, interpolation: Interpolation = "cubic") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Spatial gradient :math:`(\partial_u, \partial_v)` of ``(..., H, W)`` maps in normalized units."""
    h, w = img.shape[-2:]
    du = d_dpixel(img, -1, interpolation) * ((w - 1) / 2.0)
    dv = d_dpixel(img, -2, interpolation) * ((h - 1) / 2.0)
    return du, dv


def vector_field(matrix, h: int, w: int, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Components :math:`(a_u, a_v)` of :math:`A \tilde p` on an ``h x w`` grid, each ``(h, w)``."""
    u = coords(w, dtype, device)[None, :]
    v = coords(h, dtype, device)[:, None]
    (a00, a01, a02), (a10, a11, a12) = matrix
    au = a00 * u + a01 * v + a02
    av = a10 * u + a11 * v + a12
    return au.expand(h, w), av.expand(h, w)


def spatial_tangent_nchw(img: torch.Tensor, matrix, interpolation: Interpolation = "cubic") -> torch.Tensor:
    r""":math:`T_A h = \partial_u h \, a_u + \partial_v h \, a_v` for ``(..., H, W)`` maps."""
    h, w = img.shape[-2:]
    au, av = vector_field(matrix, h, w, img.dtype, img.device)
    out = None
    # skip the derivative along an axis whose component vanishes (half the work for
    # translations, shears and stretches)
    if any(matrix[0]):
        out = d_dpixel(img, -1, interpolation) * ((w - 1) / 2.0) * au
    if any(matrix[1]):
        dv = d_dpixel(img, -2, interpolation) * ((h - 1) / 2.0) * av
        out = dv if out is None else out + dv
    return torch.zeros_like(img) if out is None else out
