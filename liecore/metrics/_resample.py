r"""The transformations of Karras et al. (2021): integer and fractional translation, rotation.

All act on maps ``(B, C, H, W)`` with *per-image* parameters and return the transformed
map together with a validity mask ``(B, 1, H, W)`` in the map's dtype (1 where the result
is compared, 0 elsewhere; values outside the map are taken as 0). They follow StyleGAN3's
own definitions (NVlabs/stylegan3, ``metrics/equivariance.py``: ``apply_integer_translation``,
``apply_fractional_translation``, ``apply_fractional_rotation``,
``apply_fractional_pseudo_rotation``), reimplemented in plain torch (the filtering runs
through :func:`upfirdn2d`, this module's own reference implementation of their ``upfirdn2d``
semantics). In float64 they reproduce the float64 outputs of StyleGAN3's code to about
``1e-15`` and its masks exactly (tested against vectors made with their code,
``tests/liecore/data/stylegan3_equivariance_vectors.npz``).

Coordinates are pixel indices ``(i, j)`` (row, column); content moves by :math:`+d` for a
shift :math:`d` (output pixel :math:`p` takes the input at :math:`p - d`).

* :func:`integer_translate`: exact copy by whole pixels, zero fill; mask 1 where
  :math:`p - d` is inside the map.
* :func:`fractional_translate`: with :math:`d = n + \delta`, :math:`n = \lfloor d \rfloor`,
  the separable Lanczos-:math:`a` interpolant over the :math:`2a` taps
  :math:`p - n - k`, :math:`k = -(a-1), \dots, a`, with weights
  :math:`L_a(k - \delta)` normalized to sum to one per axis. The mask is the pixels
  whose :math:`2a` taps lie inside the map *for a strictly fractional shift*:
  :math:`n + a \le p < \mathrm{size} + \min(n - a + 1, 0)` per axis, also when
  :math:`\delta = 0` (StyleGAN3 keeps its fractional mask on whole-pixel shifts).
* :func:`rotate`: rotation by :math:`\theta` about the map centre: output pixel
  :math:`p` samples :math:`c + R(\theta)(p - c)` in (column, row) coordinates, so content
  turns by :math:`\theta` counter-clockwise on screen (``torch.rot90(x, 1, (-2, -1))``
  for a quarter turn, up to the filter). The map is upsampled :math:`4\times` with an *oriented band-limited filter*
  (:func:`bandlimit_filter`: the convolution of the ideal low-pass filters of the input
  grid and of the rotated output grid, windowed by the convolution of the two oriented
  Lanczos windows, :math:`a = 3` taps, support :math:`2a` input pixels per side), then
  sampled bilinearly at the rotated output grid (``torch.nn.functional.grid_sample``).
  The mask is the square of the upsampled map that lies at least one filter width inside
  it, rotated (nearest sampling): a *rotated square*, not a disc.
* :func:`pseudo_rotate`: StyleGAN3's :math:`R^*_\theta`, the same band limit as the
  rotation by :math:`\theta` applied without rotating (the filter at :math:`1\times`,
  :math:`11 \times 11` taps); mask the map less a 5-pixel border.

:func:`lanczos_rotate` is the cheaper separable Lanczos-:math:`a` rotation (with a disc
mask) that this package used for EQ-R before; it is *not* StyleGAN3's and is kept as a
named option only.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .._layout import Layout

__all__ = [
    "apply_to_layout",
    "bandlimit_filter",
    "fractional_translate",
    "integer_translate",
    "lanczos",
    "lanczos_rotate",
    "masked_sq_error",
    "pseudo_rotate",
    "psnr",
    "resample",
    "rotate",
    "upfirdn2d",
]


def lanczos(s: torch.Tensor, a: int = 3) -> torch.Tensor:
    r"""The Lanczos window :math:`L_a(s) = \operatorname{sinc}(s)\operatorname{sinc}(s/a)` on :math:`|s| < a`, 0
    outside.
    """
    out = torch.sinc(s) * torch.sinc(s / a)
    return torch.where(s.abs() < a, out, torch.zeros_like(out))


def _window(s: torch.Tensor, a: int) -> torch.Tensor:
    """The Lanczos window alone: ``sinc(s / a)`` on ``|s| < a``, 0 outside."""
    u = s.abs() / a
    return torch.where(u < 1, torch.sinc(u), torch.zeros_like(u))


# --- FIR filtering ------------------------------------------------------------------------
def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    r"""Upsample by zero insertion, pad, and convolve with a 2-D FIR filter (StyleGAN3's ``upfirdn2d``, ``down = 1``).

    Per channel: insert ``up - 1`` zeros after each pixel, pad with zeros by ``padding =
    (x_before, x_after, y_before, y_after)`` (negative values crop), convolve (a true
    convolution: the filter is flipped) keeping the outputs whose footprint lies inside
    the padded map. Output size ``H up + y_before + y_after - f_h + 1`` (rows), likewise
    columns. Computed as the full convolution of the zero-stuffed map (one ordinary
    convolution per phase of the filter, interleaved by ``pixel_shuffle``), then cropped or
    zero-padded to that window.

    Args:
        x: ``(B, C, H, W)``.
        f: ``(f_h, f_w)`` for every image, or ``(B, f_h, f_w)`` one per image.
        up: the upsampling factor (both axes).
        padding: ``(x_before, x_after, y_before, y_after)`` on the upsampled map.
        gain: factor on the filter.

    Returns:
        ``(B, C, H_out, W_out)`` in ``x.dtype``.
    """
    b, c, h, w = x.shape
    if f.ndim == 2:
        f = f.expand(b, *f.shape)
    if f.ndim != 3 or f.shape[0] != b:
        raise ValueError(f"filter must be (f_h, f_w) or ({b}, f_h, f_w), got shape {tuple(f.shape)}")
    fh, fw = f.shape[-2:]
    px0, px1, py0, py1 = padding
    oh, ow = h * up + py0 + py1 - fh + 1, w * up + px0 + px1 - fw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {fh}x{fw} filter leaves no output of a {h}x{w} map upsampled {up}x with padding {padding}")
    # full[k] = sum_i u[i] f[k - i], u the zero-stuffed map (the full convolution, zero beyond
    # length (H - 1) up + f_h), by phases: full[q up + r] = sum_i x[i] f[(q - i) up + r] is the
    # full convolution of x with the phase-r taps f[j up + r]; pixel_shuffle interleaves them
    j = -(-max(fh, fw) // up)  # taps per phase and axis
    fp = F.pad(f.to(x.dtype) * gain, [0, j * up - fw, 0, j * up - fh])
    phases = fp.reshape(b, j, up, j, up).permute(0, 2, 4, 1, 3).reshape(b, up * up, 1, j, j).flip(-2, -1)
    shared = bool((f == f[:1]).all())
    if shared:  # one convolution for the whole batch
        full = F.conv2d(x.reshape(b * c, 1, h, w), phases[0], padding=j - 1)
    else:
        full = torch.cat([F.conv2d(x[i].reshape(c, 1, h, w), phases[i], padding=j - 1) for i in range(b)])
    full = F.pixel_shuffle(full, up)  # (B C, 1, (H + j - 1) up, (W + j - 1) up)
    # the padded convolution's output m is full[m + f_h - 1 - y_before] (zero outside)
    oy, ox = fh - 1 - py0, fw - 1 - px0
    out = F.pad(full, [-ox, ox + ow - full.shape[-1], -oy, oy + oh - full.shape[-2]])
    return out.reshape(b, c, oh, ow)


def _filter2d(x: torch.Tensor, f: torch.Tensor, padding: tuple[int, int, int, int] = (0, 0, 0, 0)) -> torch.Tensor:
    """Filter keeping the map's size (``padding`` on top of that): StyleGAN3's ``filter2d``."""
    fh, fw = f.shape[-2:]
    px0, px1, py0, py1 = padding
    return upfirdn2d(x, f, 1, (px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2))


def _upsample2d(x: torch.Tensor, f: torch.Tensor, up: int, padding: int) -> torch.Tensor:
    """Upsample ``up`` times to ``H up + 2 padding`` rows (likewise columns): StyleGAN3's ``upsample2d``."""
    fh, fw = f.shape[-2:]
    p = (padding + (fw + up - 1) // 2, padding + (fw - up) // 2, padding + (fh + up - 1) // 2, padding + (fh - up) // 2)
    return upfirdn2d(x, f, up, p, gain=up * up)


def bandlimit_filter(
    mat: torch.Tensor,
    a: int = 3,
    amax: int = 16,
    aflt: int = 64,
    up: int = 4,
    cutoff_in: float = 1.0,
    cutoff_out: float = 1.0,
) -> torch.Tensor:
    r"""StyleGAN3's oriented low-pass filter for an affine map ``mat`` (``construct_affine_bandlimit_filter``).

    On the grid of step :math:`1/\mathrm{up}` over :math:`[-a_{flt}, a_{flt}]^2` (in input
    pixels, periodic), with :math:`(x_o, y_o) = M (x_i, y_i)`: the circular convolution of
    :math:`\operatorname{sinc}(c_{in} x_i)\operatorname{sinc}(c_{in} y_i)` with
    :math:`\operatorname{sinc}(c_{out} x_o)\operatorname{sinc}(c_{out} y_o)` (the band
    limits of input and output grid), times the circular convolution of the two
    separable Lanczos windows of width :math:`a` in the same coordinates; cut to
    :math:`|x|, |y| < a_{max}`, and each of the :math:`\mathrm{up}^2` polyphase components
    normalized to sum to :math:`1/\mathrm{up}^2`. Computed in float64 (on the CPU, cached
    per matrix).

    Args:
        mat: ``(2, 2)`` or ``(B, 2, 2)``, the linear part of the map (StyleGAN3's
            ``mat[:2, :2]``: ``(x_o, y_o) = mat @ (x_i, y_i)``, :math:`x` the column).
        a: Lanczos window width (input pixels).
        amax: filter half-size (input pixels).
        aflt: half-size of the periodic design grid.
        up: upsampling factor the filter is made for.
        cutoff_in, cutoff_out: band limits of input and output grid (cycles per 2 pixels).

    Returns:
        ``(2 amax up - 1)`` square taps, ``(B, k, k)`` (or ``(k, k)`` for a single ``mat``), float64.
    """
    if not a <= amax < aflt:
        raise ValueError(f"need a <= amax < aflt, got a={a}, amax={amax}, aflt={aflt}")
    m = torch.as_tensor(mat, dtype=torch.float64)
    single = m.ndim == 2
    m = m.reshape(-1, 2, 2)
    f = torch.stack(
        [
            _bandlimit_filter(tuple(mi.reshape(-1).tolist()), a, amax, aflt, up, float(cutoff_in), float(cutoff_out))
            for mi in m.cpu()
        ]
    ).to(m.device)
    return f[0] if single else f


def _design_grid(aflt: int, up: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The periodic design grid in FFT order: ``(y_i, x_i)``, each ``(n, n)``, ``n = 2 aflt up - 1``."""
    n = 2 * aflt * up - 1
    t = ((torch.arange(n, dtype=torch.float64) + 1) / up - aflt).roll(1 - aflt * up)
    return t[:, None].expand(n, n), t[None, :].expand(n, n)


@functools.lru_cache(maxsize=8)
def _input_spectra(a: int, aflt: int, up: int, cutoff_in: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectra of the input grid's ideal low-pass and Lanczos window (they do not depend on the map)."""
    yi, xi = _design_grid(aflt, up)
    ideal = torch.sinc(xi * cutoff_in) * torch.sinc(yi * cutoff_in)
    return torch.fft.rfft2(ideal), torch.fft.rfft2(_window(xi, a) * _window(yi, a))


@functools.lru_cache(maxsize=256)
def _bandlimit_filter(
    mat: tuple[float, ...], a: int, amax: int, aflt: int, up: int, cutoff_in: float, cutoff_out: float
) -> torch.Tensor:
    """:func:`bandlimit_filter` of one map (cached: one draw serves the input and every layer)."""
    yi, xi = _design_grid(aflt, up)
    n = xi.shape[-1]
    m00, m01, m10, m11 = mat
    xo = xi * m00 + yi * m01
    yo = xi * m10 + yi * m11
    ideal_in, window_in = _input_spectra(a, aflt, up, cutoff_in)
    # circular convolutions on the design grid: input band limit * output band limit, and the two windows
    ideal = torch.fft.irfft2(
        ideal_in * torch.fft.rfft2(torch.sinc(xo * cutoff_out) * torch.sinc(yo * cutoff_out)), s=(n, n)
    )
    window = torch.fft.irfft2(window_in * torch.fft.rfft2(_window(xo, a) * _window(yo, a)), s=(n, n))
    f = ideal * window
    c = (aflt - amax) * up
    f = f.roll((aflt * up - 1, aflt * up - 1), dims=(-2, -1))[c:-c, c:-c]
    k = 2 * amax * up
    f = F.pad(f, [0, 1, 0, 1]).reshape(2 * amax, up, 2 * amax, up)
    f = f / f.sum((0, 2), keepdim=True) / up**2
    return f.reshape(k, k)[:-1, :-1]


# --- the transformations ----------------------------------------------------------------
def _per_image(v, b: int, device) -> torch.Tensor:
    return torch.as_tensor(v, device=device).to(torch.float64).reshape(b)


def integer_translate(img: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Translate by integer pixels ``(dy, dx)`` (each ``(B,)`` integer), zero fill.

    :math:`(Tx)(p) = x(p - d)`; mask 1 where :math:`p - d` is inside the map. Exact
    (StyleGAN3's ``apply_integer_translation`` with ``round(t * size)`` pixels).
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
    r"""Translate by real pixel offsets ``(dy, dx)`` (each ``(B,)``), StyleGAN3's ``apply_fractional_translation``.

    Separable Lanczos-``a`` interpolation with zero fill; the mask keeps the pixels whose
    taps all lie inside the map for the shift's fractional-shift footprint (see the module
    docstring; on a whole-pixel shift it is StyleGAN3's, one pixel off the exact copy's
    footprint).
    """
    b, c, h, w = img.shape
    lo = a - 1  # taps k = -lo .. a
    taps = torch.arange(2 * a, dtype=torch.float64, device=img.device) - lo
    out_axes, masks = [], []
    for d, size in ((_per_image(dy, b, img.device), h), (_per_image(dx, b, img.device), w)):
        n = torch.floor(d)
        s = taps - (d - n)[:, None]  # (B, 2a)
        filt = torch.sinc(s) * torch.sinc(s / a)
        out_axes.append((n.long(), filt / filt.sum(-1, keepdim=True)))
        p = torch.arange(size, device=img.device)
        masks.append((p >= n.long()[:, None] + a) & (p < size + torch.clamp(n.long() - lo, max=0)[:, None]))
    (ny, fy), (nx, fx) = out_axes
    y = _filter2d(img, fx[:, None, :], (lo, a, 0, 0))  # (B, C, H, W + 2a - 1)
    y = _filter2d(y, fy[:, :, None], (0, 0, lo, a))  # (B, C, H + 2a - 1, W + 2a - 1)
    # output pixel p is entry p - n + lo of the filtered map (zero beyond it)
    out = _shift_crop(y, ny - lo, nx - lo, h, w)
    mask = (masks[0][:, :, None] & masks[1][:, None, :]).to(img.dtype).unsqueeze(1)
    return out, mask


def _shift_crop(y: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``out[i, :, p, q] = y[i, :, p - sy[i], q - sx[i]]`` on an ``h x w`` grid, zero where that is outside ``y``."""
    hy, wy = y.shape[-2:]
    out = y.new_zeros(y.shape[0], y.shape[1], h, w)
    for i, (dy, dx) in enumerate(zip(sy.tolist(), sx.tolist(), strict=True)):
        r0, r1 = max(0, -dy), min(hy, h - dy)  # source rows landing on the grid
        c0, c1 = max(0, -dx), min(wy, w - dx)
        if r0 < r1 and c0 < c1:
            out[i, :, r0 + dy : r1 + dy, c0 + dx : c1 + dx] = y[i, :, r0:r1, c0:c1]
    return out


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    """StyleGAN3's ``rotation_matrix``: ``[[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]]`` per angle, float64."""
    cos, sin = angle.cos(), angle.sin()
    mat = torch.zeros(angle.shape[0], 3, 3, dtype=torch.float64, device=angle.device)
    mat[:, 0, 0], mat[:, 0, 1], mat[:, 1, 0], mat[:, 1, 1], mat[:, 2, 2] = cos, sin, -sin, cos, 1.0
    return mat


def rotate(img: torch.Tensor, angle: torch.Tensor, a: int = 3, up: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rotate by ``angle`` (radians, ``(B,)``) about the map centre: StyleGAN3's ``apply_fractional_rotation``.

    The map is upsampled ``up`` times with :func:`bandlimit_filter` (``a`` window taps,
    half-size ``2a``, the filter of each image's angle), sampled bilinearly at the rotated
    output grid, zero outside; the mask is the rotated square (see the module docstring).
    """
    b, c, h, w = img.shape
    mat = _rotation(_per_image(angle, b, img.device))
    f = bandlimit_filter(mat[:, :2, :2], a=a, amax=2 * a, up=up)
    p = f.shape[-1] // 2
    # output pixel -> position on the upsampled, padded map, in affine_grid's [-1, 1] units
    theta = torch.linalg.inv(mat)
    theta[:, :2, 2] *= 2
    theta[:, 0, 2] += 1 / up / w
    theta[:, 1, 2] += 1 / up / h
    theta[:, 0, :] *= w / (w + p / up * 2)
    theta[:, 1, :] *= h / (h + p / up * 2)
    grid = F.affine_grid(theta[:, :2, :].to(img.dtype), [b, c, h, w], align_corners=False)
    y = _upsample2d(img, f, up, p)
    out = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inner = torch.zeros(b, 1, *y.shape[-2:], dtype=img.dtype, device=img.device)
    e = 2 * p + 1
    inner[:, :, e:-e, e:-e] = 1
    mask = F.grid_sample(inner, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, mask


def pseudo_rotate(img: torch.Tensor, angle: torch.Tensor, a: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    r"""StyleGAN3's ``apply_fractional_pseudo_rotation``: the band limit of :func:`rotate` by ``angle``, unrotated.

    Filters with :func:`bandlimit_filter` of the rotation by ``-angle`` at ``up = 1``
    (``(4a - 1)`` square taps); the mask drops a border of ``2a - 1`` pixels.
    """
    b = img.shape[0]
    f = bandlimit_filter(_rotation(-_per_image(angle, b, img.device))[:, :2, :2], a=a, amax=2 * a, up=1)
    out = _filter2d(img, f)
    e = f.shape[-1] // 2
    mask = torch.zeros(b, 1, *img.shape[-2:], dtype=img.dtype, device=img.device)
    mask[:, :, e:-e, e:-e] = 1
    return out, mask


# --- the Lanczos rotation (a named option, not StyleGAN3's) -------------------------------
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


def _pixel_grid(b: int, h: int, w: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    py = torch.arange(h, dtype=dtype, device=device)[:, None].expand(h, w)
    px = torch.arange(w, dtype=dtype, device=device)[None, :].expand(h, w)
    return py.expand(b, h, w), px.expand(b, h, w)


def lanczos_rotate(img: torch.Tensor, angle: torch.Tensor, a: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rotate by ``angle`` (radians, ``(B,)``) with the separable Lanczos-``a`` interpolant (not StyleGAN3's).

    Samples :math:`q = c + R(\theta)(p - c)` (in (column, row) coordinates, :math:`c`
    the map centre) with :func:`resample`: the same sense of rotation as :func:`rotate`. The mask is the
    all-taps-inside mask times the disc inscribed in the map shrunk by ``a`` pixels (this
    package's choice, not StyleGAN3's). Cheaper than :func:`rotate`, but not band-limited
    in the rotated frame: it is not EQ-R's transformation.
    """
    b, _, h, w = img.shape
    py, px = _pixel_grid(b, h, w, img.dtype, img.device)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    th = torch.as_tensor(angle, device=img.device).to(img.dtype).reshape(b, 1, 1)
    cos, sin = torch.cos(th), torch.sin(th)
    ry, rx = py - cy, px - cx
    # q = c + R(theta)(p - c) in (x, y) = (col, row) coordinates, as rotate
    qy = cy + cos * ry + sin * rx
    qx = cx - sin * ry + cos * rx
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
    y_t: torch.Tensor, ty: torch.Tensor, layout: Layout, fn, fn_t=None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sum of squared errors between ``y_t = f(T x)`` and ``T f(x)`` over valid elements, and their count.

    ``ty`` is ``f(x)``; ``fn`` applies :math:`T` to a ``(B, C, h, w)`` map and returns
    ``(map, mask)``; ``fn_t``, if given, is applied to the map of ``y_t`` likewise (StyleGAN3's
    pseudo-rotation :math:`R^*`) and its mask multiplies ``fn``'s. Invariant parts (prefix
    tokens, logits) are compared directly and all count as valid. The count is per element
    (valid pixels times channels), as StyleGAN3's mask. Returns ``(sse, count)``, each
    ``(B,)`` float64.
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
        if fn_t is not None:
            grid_t, mask_t = fn_t(grid_t)
            mask = mask * mask_t
        m = mask.to(torch.float64)
        d = (grid_t.to(torch.float64) - grid_tf.to(torch.float64)) * m
        sse = sse + d.square().reshape(b, -1).sum(-1)
        cnt = cnt + m.reshape(b, -1).sum(-1) * grid_t.shape[1]
    return sse, cnt


def psnr(mse: torch.Tensor, peak_to_peak: float = 2.0) -> torch.Tensor:
    r""":math:`\mathrm{PSNR} = 20 \log_{10}(\mathrm{peak\_to\_peak}) - 10 \log_{10}(\mathrm{MSE})` in dB (``inf`` at
    MSE 0).
    """
    return 20.0 * math.log10(peak_to_peak) - 10.0 * torch.log10(mse)
