r"""The group action on images and its tangent (the input side of a Lie derivative).

For a generator :math:`X` with affine part :math:`A` and colour part :math:`C`,

.. math:: (\rho(e^{tX}) x)(p) = \Phi^C_t\big(x(e^{t\hat A}\tilde p)\big),

where :math:`\Phi^C_t` is the (pointwise, affine in raw intensities) colour flow. Images are
``(B, C, H, W)`` tensors of *normalized* intensities :math:`x = (r - \mu)/\sigma`; colour
generators act on raw intensities :math:`r`, so they need the model's ``mean``/``std``
(``contrast`` alone does not). In raw colour space each colour generator is an affine
vector field:

* ``brightness``: :math:`r \mapsto r`  (the flow multiplies raw intensities by :math:`e^t`),
* ``contrast``: :math:`r \mapsto r - \mu` (the flow multiplies the normalized image by :math:`e^t`),
* ``saturation``: :math:`r \mapsto r - g(r)\mathbf 1` with the luma
  :math:`g = 0.299 r_R + 0.587 r_G + 0.114 r_B` (the flow is :math:`g + e^t (r - g)`).

Sampling uses the interpolant named by ``interpolation`` (see :mod:`liecore._grid`) on the
whole-sample symmetric extension of the image; the tangent :func:`input_tangent` is the
exact :math:`t`-derivative of :func:`transform` at :math:`t = 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._generators import Generator, get_generator
from ._grid import Interpolation, check_interpolation, coords, dct1_basis, spatial_tangent_nchw

__all__ = ["input_tangent", "transform", "sample", "LUMA"]

LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601 luma weights, the grey value of ``saturation`` (as torchvision's ``rgb_to_grayscale``)."""


# --- colour ------------------------------------------------------------------------------
def _norm_stats(x: torch.Tensor, mean, std, need: bool, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    if mean is None or std is None:
        if need:
            raise ValueError(
                f"the {what} generator acts on raw intensities: pass the model's normalization "
                f"mean= and std= (per channel)"
            )
        mean, std = [0.0] * c, [1.0] * c
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    if m.numel() == 1:
        m = m.expand(c)
    if s.numel() == 1:
        s = s.expand(c)
    if m.numel() != c or s.numel() != c:
        raise ValueError(f"mean/std have {m.numel()}/{s.numel()} entries for an image with {c} channels")
    return m.reshape(1, c, 1, 1), s.reshape(1, c, 1, 1)


def _color_field(gen: Generator, x: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, c, raw): the raw-space vector field r -> M r + c of the colour part, and raw r."""
    coeff = gen.color_coeffs
    need = bool(coeff.get("brightness") or coeff.get("saturation"))
    m, s = _norm_stats(x, mean, std, need, "/".join(coeff))
    c = x.shape[1]
    if coeff.get("saturation") and c != 3:
        raise ValueError(f"saturation needs RGB images (3 channels), got {c}")
    eye = torch.eye(c, dtype=x.dtype, device=x.device)
    mat = torch.zeros(c, c, dtype=x.dtype, device=x.device)
    off = torch.zeros(c, dtype=x.dtype, device=x.device)
    if coeff.get("brightness"):
        mat = mat + coeff["brightness"] * eye
    if coeff.get("contrast"):
        mat = mat + coeff["contrast"] * eye
        off = off - coeff["contrast"] * m.reshape(c)
    if coeff.get("saturation"):
        luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device)
        mat = mat + coeff["saturation"] * (eye - torch.ones(c, 1, dtype=x.dtype, device=x.device) * luma[None, :])
    raw = x * s + m
    return mat, off, raw


def _color_tangent(gen: Generator, x: torch.Tensor, mean, std) -> torch.Tensor:
    mat, off, raw = _color_field(gen, x, mean, std)
    _, s = _norm_stats(x, mean, std, False, "")
    v = torch.einsum("ij,bjhw->bihw", mat, raw) + off.reshape(1, -1, 1, 1)
    return v / s


def _color_flow(gen: Generator, x: torch.Tensor, t: float, mean, std) -> torch.Tensor:
    mat, off, raw = _color_field(gen, x, mean, std)
    c = x.shape[1]
    big = torch.zeros(c + 1, c + 1, dtype=torch.float64, device=x.device)
    big[:c, :c] = mat.to(torch.float64)
    big[:c, c] = off.to(torch.float64)
    flow = torch.linalg.matrix_exp(t * big).to(x.dtype)
    raw_t = torch.einsum("ij,bjhw->bihw", flow[:c, :c], raw) + flow[:c, c].reshape(1, -1, 1, 1)
    m, s = _norm_stats(x, mean, std, False, "")
    return (raw_t - m) / s


# --- tangent -----------------------------------------------------------------------------
def input_tangent(
    x: torch.Tensor,
    generator: str | Generator,
    *,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""Tangent :math:`\frac{d}{dt}\big|_0 \rho(e^{tX}) x` of a batch of images ``(B, C, H, W)``.

    Spatial part :math:`T_A x = \partial_u x\, a_u + \partial_v x\, a_v` (derivatives of the
    stated interpolant, normalized units); colour part :math:`(M r + c)/\sigma`.
    Linear in the generator.
    """
    gen = get_generator(generator)
    check_interpolation(interpolation)
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    out = spatial_tangent_nchw(x, gen.matrix, interpolation) if gen.is_spatial else torch.zeros_like(x)
    if gen.is_color:
        out = out + _color_tangent(gen, x, mean, std)
    return out


# --- sampling ----------------------------------------------------------------------------
def _keys_weights(s: torch.Tensor, a: float = -0.5) -> list[torch.Tensor]:
    """Keys cubic-convolution weights of taps j0-1, j0, j0+1, j0+2 for offsets s in [0, 1)."""

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(1 + s), near(s), near(1 - s), far(2 - s)]


def _reflect(idx: torch.Tensor, n: int) -> torch.Tensor:
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    m = torch.remainder(idx, period)
    return torch.where(m > n - 1, period - m, m)


def sample(
    img: torch.Tensor, qy: torch.Tensor, qx: torch.Tensor, interpolation: Interpolation = "cubic"
) -> torch.Tensor:
    """Evaluate the interpolant of ``img`` ``(B, C, H, W)`` at pixel positions ``(qy, qx)``.

    ``qy``, ``qx`` are float tensors of one shape ``S`` (pixel units, ``0 .. H-1``; outside
    that range the symmetric extension applies). Returns ``(B, C, *S)``.
    """
    check_interpolation(interpolation)
    h, w = img.shape[-2:]
    if interpolation == "cubic":
        y0 = torch.floor(qy)
        x0 = torch.floor(qx)
        wy = _keys_weights(qy - y0)
        wx = _keys_weights(qx - x0)
        y0 = y0.long()
        x0 = x0.long()
        iy = [_reflect(y0 + k - 1, h) for k in range(4)]
        ix = [_reflect(x0 + k - 1, w) for k in range(4)]
        out = None
        for a in range(4):
            row = None
            for b in range(4):
                term = img[..., iy[a], ix[b]] * wx[b]
                row = term if row is None else row + term
            term = row * wy[a]
            out = term if out is None else out + term
        return out
    # spectral: DCT-I series of the symmetric extension, evaluated at arbitrary points
    _, inv_h = dct1_basis(h, img.dtype, img.device)
    _, inv_w = dct1_basis(w, img.dtype, img.device)
    coef = inv_h @ img @ inv_w.T  # (B, C, H, W) coefficients
    kh = torch.arange(h, dtype=img.dtype, device=img.device)
    kw = torch.arange(w, dtype=img.dtype, device=img.device)
    shape = qy.shape
    by = (
        torch.cos(math.pi * qy.reshape(-1, 1) * kh / max(h - 1, 1))
        if h > 1
        else torch.ones(qy.numel(), 1, dtype=img.dtype, device=img.device)
    )
    bx = (
        torch.cos(math.pi * qx.reshape(-1, 1) * kw / max(w - 1, 1))
        if w > 1
        else torch.ones(qx.numel(), 1, dtype=img.dtype, device=img.device)
    )
    tmp = torch.einsum("ph,bchw->bcpw", by, coef)
    return (tmp * bx).sum(-1).reshape(*img.shape[:2], *shape)


def warp(img: torch.Tensor, flow: torch.Tensor, interpolation: Interpolation = "cubic") -> torch.Tensor:
    r"""Sample ``img`` at :math:`F \tilde p` for every pixel centre :math:`p` (``F``: 3x3 affine)."""
    h, w = img.shape[-2:]
    dtype = img.dtype
    f = flow.to(dtype=torch.float64, device=img.device)
    u = coords(w, torch.float64, img.device)[None, :]
    v = coords(h, torch.float64, img.device)[:, None]
    eye = torch.eye(3, dtype=torch.float64, device=img.device)
    d = f - eye
    # displacement in normalized units, added to the exact integer pixel index so that the
    # identity flow samples the knots exactly
    du = d[0, 0] * u + d[0, 1] * v + d[0, 2]
    dv = d[1, 0] * u + d[1, 1] * v + d[1, 2]
    jx = torch.arange(w, dtype=torch.float64, device=img.device)[None, :]
    jy = torch.arange(h, dtype=torch.float64, device=img.device)[:, None]
    qx = (jx + du * ((w - 1) / 2.0)).expand(h, w)
    qy = (jy + dv * ((h - 1) / 2.0)).expand(h, w)
    return sample(img, qy.to(dtype), qx.to(dtype), interpolation)


def transform(
    x: torch.Tensor,
    generator: str | Generator,
    t: float,
    *,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""The finite transformation :math:`\rho(e^{tX}) x` of images ``(B, C, H, W)``.

    Spatial part: sample at :math:`e^{t\hat A}\tilde p` with the stated interpolant and the
    reflection boundary; colour part: the exact colour flow. The two commute (interpolation
    weights sum to one and the colour flow is pointwise affine).
    """
    gen = get_generator(generator)
    check_interpolation(interpolation)
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    out = x
    if gen.is_spatial:
        out = warp(out, gen.flow(float(t), device=x.device), interpolation)
    if gen.is_color:
        out = _color_flow(gen, out, float(t), mean, std)
    return out
