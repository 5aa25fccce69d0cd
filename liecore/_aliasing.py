r"""Aliasing of pointwise non-linearities and its translation Lie derivative (Gruver et al. 2023, Sec. 6).

Setting (one channel; maps ``(..., H, W)`` are independent channels). A map on the periodic
grid :math:`n \in \mathbb Z_H \times \mathbb Z_W` is identified with its band-limited
(trigonometric) interpolant

.. math:: x(s) = \sum_{k \in \bar B} \hat x_k\, e^{2\pi i\, k \cdot s / N},
          \qquad k \cdot s / N = k_0 s_0 / H + k_1 s_1 / W,

over the grid's frequencies :math:`\bar B = [-H/2, H/2) \times [-W/2, W/2)` (a Nyquist
frequency of an even size is split evenly between :math:`\pm N/2`: the cosine convention,
whose derivative vanishes at the knots). A pointwise non-linearity :math:`\sigma` applied
in the continuum gives :math:`h(s) = \sigma(x(s)) = \sum_{k \in \mathbb Z^2} c_k
e^{2\pi i k\cdot s/N}`, with frequencies beyond the grid's. Applied on the grid it gives the
samples :math:`\sigma(x)[n] = h(n)`, on which :math:`e^{2\pi i k\cdot n/N}` is
indistinguishable from the folded frequency. Splitting the sum at the open band
:math:`B = \{|k_0| < H/2,\ |k_1| < W/2\}` gives the paper's equation (2):

.. math::

    \sigma(x)[n] = \sum_{k \in B} c_k\, e^{2\pi i\, k\cdot n/N} + \mathrm{Alias}(n),
    \qquad
    \mathrm{Alias}(n) = \sum_{k \notin B} c_k\, e^{2\pi i\, k\cdot n/N}
                      = \sum_{\kappa \in \bar B} \sum_{m \ne 0} c_{\kappa + N \odot m}\,
                        e^{2\pi i\, \kappa\cdot n/N},

the second form (:math:`N \odot m = (H m_0, W m_1)`) showing the frequencies above the grid's
Nyquist frequency folding back onto :math:`\kappa`. The first term is the band-limited part
:math:`P h` of the continuum activation: as a map of band-limited signals it commutes with
every translation, so only :math:`\mathrm{Alias}` breaks equivariance.

**Theorem 1** (translation Lie derivative of the aliasing operator). Let the group act by
:math:`(\rho(t) x)(s) = x(s + t e_a)` (the sign of :func:`liecore.transform`, content moving
by :math:`-t`) on inputs and outputs, and
:math:`L_a F(x) = \frac{d}{dt}\big|_0 \rho(-t) F(\rho(t) x)`. Then, per pixel,

.. math::

    L_a\, \sigma(x)[n] = L_a \mathrm{Alias}(n)
      = \sum_{k \in \mathbb Z^2} \frac{2\pi i\,(k_a - \varphi_{N_a}(k_a))}{N_a}\,
        c_k\, e^{2\pi i\, k\cdot n/N}
      = \sum_{\kappa \in \bar B} \sum_{m \ne 0} 2\pi i\, m_a\, c_{\kappa + N\odot m}\,
        e^{2\pi i\, \kappa\cdot n/N},

where :math:`\varphi_N(k)` is the representative of :math:`k \bmod N` in
:math:`(-N/2, N/2)` and :math:`\varphi_N(k) = 0` on the Nyquist class
:math:`k \equiv N/2` (cosine convention); the last form holds when no Nyquist class carries
energy (e.g. odd sizes). *Proof sketch.* :math:`\rho(t)` multiplies :math:`c_k` by
:math:`e^{2\pi i k_a t/N_a}`; sampling folds :math:`k` to :math:`\varphi(k)`; translating the
band-limited output back multiplies by :math:`e^{-2\pi i \varphi(k_a) t / N_a}`; differentiate
at :math:`t = 0`. In-band terms (:math:`\varphi(k) = k`) cancel, which is why
:math:`L_a (P h) = 0`. Hypothesis for the first equality (:math:`L_a P h = 0`): ``x`` has
no energy at an even size's Nyquist frequency (:func:`drop_nyquist`; always true for odd
sizes), since the grid cannot represent the translated Nyquist sine; the closed form for
:math:`L_a \sigma(x)` holds without it. In particular :math:`L_a \sigma(x) = 0` for affine :math:`\sigma`,
and for :math:`\sigma(z) = z^2` and :math:`x = \cos(2\pi k_0 n / N)` with
:math:`N/4 < k_0 < N/2`: :math:`L\,\sigma(x)[n] = -\pi \sin(4\pi k_0 n/N)`.

The paper states the result for vertical translations; here either axis. Normalized units
of :mod:`liecore` (a pixel is :math:`2/(N-1)`) multiply the per-pixel values by
:math:`(N-1)/2`; on liecore's whole-sample-symmetric grid with ``interpolation="spectral"``
(the DCT-I interpolant) the theorem applies to the even periodic extension of period
:math:`2(N-1)` (:func:`symmetric_extension`).

Numerics: :math:`c_k` are computed from :math:`\sigma` applied to the band-limited
interpolant sampled ``oversample`` times more densely (:func:`continuum_coefficients`);
frequencies beyond :math:`\pm`\ ``oversample``\ :math:`\cdot N/2` are lost. This is exact for
polynomial :math:`\sigma` of degree below ``oversample`` and spectrally accurate for
analytic :math:`\sigma` (tanh, GELU, softplus); for ReLU the coefficients decay slowly and
the result converges as ``oversample`` grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

__all__ = [
    "alias",
    "alias_lie_derivative",
    "bandlimited_part",
    "continuum_coefficients",
    "drop_nyquist",
    "fold_frequency",
    "fourier_translate",
    "fourier_upsample",
    "symmetric_extension",
]

Axis = Literal["x", "y"]


def _freqs(n: int, device=None) -> torch.Tensor:
    """Integer frequencies of an FFT of length ``n`` in FFT order, in ``[-n/2, n/2)``."""
    return torch.round(torch.fft.fftfreq(n, device=device, dtype=torch.float64) * n).long()


def fold_frequency(k: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Fold integer frequencies onto a grid of ``n`` points.

    Returns ``(phi, nyquist)``: :math:`\varphi_n(k)`, the representative of
    :math:`k \bmod n` in :math:`(-n/2, n/2)`, set to 0 on the Nyquist class
    :math:`k \equiv n/2` (even ``n``), flagged by the boolean ``nyquist``.
    """
    r = torch.remainder(k, n)
    nyq = (2 * r == n) if n % 2 == 0 else torch.zeros_like(r, dtype=torch.bool)
    phi = torch.where(2 * r > n, r - n, r)
    return torch.where(nyq, torch.zeros_like(phi), phi), nyq


def _spectrum_resize(spec: torch.Tensor, n_in: int, n_out: int, dim: int) -> torch.Tensor:
    """Zero-pad a length-``n_in`` spectrum along ``dim`` to ``n_out >= n_in`` (cosine-convention Nyquist)."""
    if n_out == n_in:
        return spec
    k = _freqs(n_in, spec.device)
    out_shape = list(spec.shape)
    out_shape[dim] = n_out
    out = torch.zeros(out_shape, dtype=spec.dtype, device=spec.device)
    idx = torch.remainder(k, n_out)
    src = spec
    if n_in % 2 == 0:
        # split the Nyquist bin between -n/2 and +n/2
        nyq = n_in // 2
        half = spec.index_select(dim, torch.tensor([nyq], device=spec.device)) / 2
        src = spec.index_copy(dim, torch.tensor([nyq], device=spec.device), half)
        out = out.index_add(dim, torch.tensor([nyq % n_out], device=spec.device), half)
    return out.index_add(dim, idx, src)


def fourier_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    r"""Samples of the band-limited periodic interpolant of ``x`` ``(..., H, W)`` on a grid ``factor`` times denser.

    Returns ``(..., factor*H, factor*W)``; every ``factor``-th sample is ``x`` itself.
    """
    if factor < 1:
        raise ValueError("factor must be >= 1")
    h, w = x.shape[-2:]
    spec = torch.fft.fft2(x.to(torch.complex128) if not x.is_complex() else x)
    spec = _spectrum_resize(spec, h, factor * h, -2)
    spec = _spectrum_resize(spec, w, factor * w, -1)
    up = torch.fft.ifft2(spec) * (factor * factor)
    return up.real.to(x.dtype) if not x.is_complex() else up


def fourier_translate(x: torch.Tensor, t: float | torch.Tensor, axis: Axis = "x") -> torch.Tensor:
    r"""Exact translation of the band-limited periodic interpolant: :math:`(\rho(t)x)(n) = x(n + t e_a)`.

    ``t`` in pixels (a scalar or a 0-dim tensor, differentiable). The Nyquist bin of an even
    size is multiplied by :math:`\cos(\pi t)` (cosine convention). Group law
    :math:`\rho(s)\rho(t) = \rho(s+t)` holds exactly away from the Nyquist bin.
    """
    dim = -1 if axis == "x" else -2
    n = x.shape[dim]
    k = _freqs(n, x.device).to(torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    phase = torch.exp(2j * math.pi * k * t / n)
    if n % 2 == 0:
        phase = torch.where(k == -(n // 2), torch.cos(math.pi * t).to(phase.dtype), phase)
    shape = [1] * x.ndim
    shape[dim] = n
    spec = torch.fft.fft(x.to(torch.complex128), dim=dim) * phase.reshape(shape)
    return torch.fft.ifft(spec, dim=dim).real.to(x.dtype)


def continuum_coefficients(
    x: torch.Tensor, sigma: Callable[[torch.Tensor], torch.Tensor], *, oversample: int = 16
) -> torch.Tensor:
    r"""Fourier coefficients :math:`c_k` of :math:`h(s) = \sigma(x(s))`, :math:`|k_a| \le` ``oversample`` :math:`N_a/2`.

    Args:
        x: real maps ``(..., H, W)`` (float64 recommended).
        sigma: the pointwise non-linearity.
        oversample: density of the sampling of :math:`x(s)` used to compute :math:`c_k`.

    Returns:
        complex ``(..., L H, L W)`` coefficients in FFT order; the frequency of index
        :math:`j` along an axis of ``L N`` entries is ``fftfreq(L N) * L N``.
    """
    h = sigma(fourier_upsample(x, oversample))
    return torch.fft.fft2(h.to(torch.complex128)) / (h.shape[-1] * h.shape[-2])


def _fold_to_grid(a: torch.Tensor, h: int, w: int) -> torch.Tensor:
    r""":math:`\sum_k a_k e^{2\pi i k\cdot n/N}` on the ``h x w`` grid for dense coefficients ``a`` ``(..., L h, L
    w)``.
    """
    lh, lw = a.shape[-2:]
    folded = a.reshape(*a.shape[:-2], lh // h, h, lw // w, w).sum(dim=(-4, -2))
    return (torch.fft.ifft2(folded) * (h * w)).real


def _band_masks(lh: int, lw: int, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ky = _freqs(lh, device)[:, None]
    kx = _freqs(lw, device)[None, :]
    inband = (2 * ky.abs() < h) & (2 * kx.abs() < w)
    return ky, kx, inband


def alias(x: torch.Tensor, sigma: Callable[[torch.Tensor], torch.Tensor], *, oversample: int = 16) -> torch.Tensor:
    r"""The aliasing operator :math:`\mathrm{Alias}(n) = \sum_{k \notin B} c_k e^{2\pi i k\cdot n/N}` (equation 2).

    ``x`` ``(..., H, W)`` real; returns the real map ``(..., H, W)``. By construction
    :math:`\sigma(x) = P h + \mathrm{Alias}` on the grid (:func:`bandlimited_part`), and
    :math:`\mathrm{Alias} = 0` for affine :math:`\sigma`.
    """
    h, w = x.shape[-2:]
    c = continuum_coefficients(x, sigma, oversample=oversample)
    _, _, inband = _band_masks(*c.shape[-2:], h, w, x.device)
    return _fold_to_grid(c * (~inband), h, w).to(x.dtype)


def bandlimited_part(
    x: torch.Tensor, sigma: Callable[[torch.Tensor], torch.Tensor], *, oversample: int = 16
) -> torch.Tensor:
    r"""The band-limited part :math:`(P h)(n) = \sum_{k \in B} c_k e^{2\pi i k\cdot n/N}` of the continuum activation.

    Equivariant: :math:`\rho(t)^{-1} P h[\rho(t) x] = P h[x]` for all :math:`t`.
    """
    h, w = x.shape[-2:]
    c = continuum_coefficients(x, sigma, oversample=oversample)
    _, _, inband = _band_masks(*c.shape[-2:], h, w, x.device)
    return _fold_to_grid(c * inband, h, w).to(x.dtype)


def alias_lie_derivative(
    x: torch.Tensor,
    sigma: Callable[[torch.Tensor], torch.Tensor],
    axis: Axis = "x",
    *,
    oversample: int = 16,
) -> torch.Tensor:
    r"""Theorem 1: the closed-form translation Lie derivative :math:`L_a \mathrm{Alias} = L_a \sigma(x)`, per pixel.

    .. math:: L_a \mathrm{Alias}(n) = \sum_k \frac{2\pi i\,(k_a - \varphi_{N_a}(k_a))}{N_a}\,
              c_k\, e^{2\pi i\, k\cdot n/N}.

    Args:
        x: real maps ``(..., H, W)`` on a periodic grid.
        sigma: the pointwise non-linearity.
        axis: ``"x"`` (along ``W``, liecore's ``translate_x``) or ``"y"`` (along ``H``).
        oversample: see :func:`continuum_coefficients`.

    Returns:
        ``(..., H, W)`` real, in units of the activation per pixel of translation, with the
        sign convention :math:`(\rho(t)x)(s) = x(s + t e_a)`.
    """
    h, w = x.shape[-2:]
    c = continuum_coefficients(x, sigma, oversample=oversample)
    ky, kx, _ = _band_masks(*c.shape[-2:], h, w, x.device)
    k, n = (kx, w) if axis == "x" else (ky, h)
    phi, _ = fold_frequency(k, n)
    weight = (2j * math.pi / n) * (k - phi).to(torch.float64)
    return _fold_to_grid(c * weight, h, w).to(x.dtype)


def drop_nyquist(x: torch.Tensor) -> torch.Tensor:
    r"""Remove the Nyquist frequency of even sizes from real maps ``(..., H, W)`` (a no-op for odd sizes)."""
    h, w = x.shape[-2:]
    spec = torch.fft.fft2(x.to(torch.complex128))
    if h % 2 == 0:
        spec[..., h // 2, :] = 0
    if w % 2 == 0:
        spec[..., :, w // 2] = 0
    return torch.fft.ifft2(spec).real.to(x.dtype)


def symmetric_extension(x: torch.Tensor) -> torch.Tensor:
    r"""Whole-sample symmetric extension ``(..., H, W)`` -> ``(..., 2(H-1), 2(W-1))``.

    The periodic trigonometric interpolant of the extension (cosine-convention Nyquist) is
    the DCT-I interpolant that :mod:`liecore` uses with ``interpolation="spectral"``, so
    Theorem 1 on the extension, restricted to ``[:H, :W]``, gives liecore's spectral Lie
    derivative of a pointwise layer (times :math:`(N-1)/2` for normalized units).
    """
    h, w = x.shape[-2:]
    if h > 1:
        x = torch.cat([x, x[..., 1 : h - 1, :].flip(-2)], dim=-2)
    if w > 1:
        x = torch.cat([x, x[..., :, 1 : w - 1].flip(-1)], dim=-1)
    return x
