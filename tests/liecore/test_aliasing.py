"""Alias(n) (equation 2) and Theorem 1 of Gruver et al. (2023) against numerical Lie derivatives."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import jvp

import liecore
from liecore._aliasing import (
    alias,
    alias_lie_derivative,
    bandlimited_part,
    drop_nyquist,
    fold_frequency,
    fourier_translate,
    fourier_upsample,
    symmetric_extension,
)

F64 = torch.float64
SIGMAS = {
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    "cube": lambda z: z**3,
}


def _maps(h: int, w: int, seed: int = 0, b: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return drop_nyquist(0.8 * torch.randn(b, h, w, generator=g, dtype=F64))


def _conjugated(op, x: torch.Tensor, axis: str):
    """t -> rho(-t) op(rho(t) x) with the exact periodic band-limited translation."""
    return lambda t: fourier_translate(op(fourier_translate(x, t, axis)), -t, axis)


def _jvp_at_zero(fn) -> torch.Tensor:
    zero, one = torch.zeros((), dtype=F64), torch.ones((), dtype=F64)
    return jvp(fn, (zero,), (one,))[1]


def test_fold_frequency():
    k = torch.arange(-12, 13)
    phi, nyq = fold_frequency(k, 8)
    assert torch.equal(torch.remainder(phi[~nyq] - k[~nyq], 8), torch.zeros_like(phi[~nyq]))
    assert bool((phi.abs() < 4).all())
    assert set(k[nyq].tolist()) == {-12, -4, 4, 12}
    assert bool((phi[nyq] == 0).all())
    phi, nyq = fold_frequency(k, 7)
    assert not bool(nyq.any()) and bool((2 * phi.abs() < 7).all())


def test_upsample_keeps_samples_and_translation_group_law():
    x = _maps(10, 9, seed=1)
    up = fourier_upsample(x, 4)
    torch.testing.assert_close(up[..., ::4, ::4], x, atol=1e-13, rtol=0)
    # integer translation is a roll; group law rho(s) rho(t) = rho(s + t)
    torch.testing.assert_close(fourier_translate(x, 3.0, "x"), torch.roll(x, -3, -1), atol=1e-13, rtol=0)
    torch.testing.assert_close(
        fourier_translate(fourier_translate(x, 0.3, "y"), 0.45, "y"),
        fourier_translate(x, 0.75, "y"),
        atol=1e-13,
        rtol=0,
    )


@pytest.mark.parametrize("size", [(13, 15), (12, 16)])
def test_equation_2_split(size):
    """sigma(x)[n] = (P h)(n) + Alias(n) on the grid; Alias vanishes for affine sigma, not for tanh."""
    x = _maps(*size)
    for sigma in SIGMAS.values():
        torch.testing.assert_close(sigma(x), bandlimited_part(x, sigma) + alias(x, sigma), atol=1e-12, rtol=0)
    assert alias(x, lambda z: 2.0 * z + 1.0).abs().max() < 1e-12
    assert alias(x, torch.tanh).abs().max() > 1e-2


@pytest.mark.parametrize("size", [(13, 15), (12, 16)])
@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("name", sorted(SIGMAS))
def test_theorem_1_matches_numerical_lie_derivative_of_alias(size, axis, name):
    """Theorem 1 = d/dt rho(-t) Alias(rho(t) x) at 0 (forward AD and central differences)."""
    sigma = SIGMAS[name]
    x = _maps(*size, seed=3)
    closed = alias_lie_derivative(x, sigma, axis, oversample=32)
    fn = _conjugated(lambda z: alias(z, sigma, oversample=32), x, axis)
    scale = closed.abs().max()
    assert scale > 0.1  # the aliasing operator is far from equivariant here
    torch.testing.assert_close(_jvp_at_zero(fn), closed, atol=1e-9 * scale, rtol=0)
    eps = 1e-4
    fd = (fn(torch.tensor(eps, dtype=F64)) - fn(torch.tensor(-eps, dtype=F64))) / (2 * eps)
    torch.testing.assert_close(fd, closed, atol=1e-6 * scale, rtol=0)
    # the layer itself has the same Lie derivative: the band-limited part is equivariant
    lp = _jvp_at_zero(_conjugated(lambda z: bandlimited_part(z, sigma, oversample=32), x, axis))
    assert lp.abs().max() < 1e-10 * scale
    ls = _jvp_at_zero(_conjugated(sigma, x, axis))
    torch.testing.assert_close(ls, closed, atol=1e-9 * scale, rtol=0)


def test_theorem_1_analytic_square():
    """sigma(z) = z^2, x = cos(2 pi k0 n / N), N/4 < k0 < N/2: L sigma(x) = -pi sin(4 pi k0 n / N)."""
    n_pix, k0 = 16, 5
    n = torch.arange(n_pix, dtype=F64)
    x = torch.cos(2 * math.pi * k0 * n / n_pix).expand(3, n_pix).clone()
    got = alias_lie_derivative(x, lambda z: z**2, "x", oversample=4)
    torch.testing.assert_close(
        got, (-math.pi * torch.sin(4 * math.pi * k0 * n / n_pix)).expand(3, n_pix), atol=1e-12, rtol=0
    )
    # k0 < N/4: x^2 stays below Nyquist, no aliasing, zero Lie derivative
    x = torch.cos(2 * math.pi * 3 * n / n_pix).expand(3, n_pix).clone()
    assert alias_lie_derivative(x, lambda z: z**2, "x", oversample=4).abs().max() < 1e-12


def test_theorem_1_is_liecore_spectral_lie_derivative():
    """On liecore's symmetric grid, Theorem 1 on the even extension = lie_derivative(sigma, spectral)."""
    g = torch.Generator().manual_seed(5)
    x = 0.8 * torch.randn(2, 2, 9, 13, generator=g, dtype=F64)
    ext = symmetric_extension(x)
    for gen, axis, n in (("translate_x", "x", 13), ("translate_y", "y", 9)):
        for sigma in (torch.tanh, torch.nn.functional.gelu):
            lie = liecore.lie_derivative(sigma, x, gen, out_layout=liecore.Layout.spatial(), interpolation="spectral")
            closed = alias_lie_derivative(ext, sigma, axis, oversample=32)[..., :9, :13] * ((n - 1) / 2)
            assert lie.abs().max() > 1.0
            torch.testing.assert_close(lie, closed, atol=1e-9 * lie.abs().max(), rtol=0)
    # negative control: an affine "non-linearity" has zero spectral Lie derivative and zero aliasing
    lie = liecore.lie_derivative(
        lambda z: 3 * z - 1, x, "translate_x", out_layout=liecore.Layout.spatial(), interpolation="spectral"
    )
    assert lie.abs().max() < 1e-10
