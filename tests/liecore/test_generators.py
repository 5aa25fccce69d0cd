"""Generators, the group action and the image tangents."""

from __future__ import annotations

import math

import pytest
import torch

import liecore
from liecore import GENERATORS, Generator, input_tangent, transform
from liecore._grid import coords, d_dpixel

SPATIAL = [n for n, g in GENERATORS.items() if g.is_spatial]
COLOR = [n for n, g in GENERATORS.items() if g.is_color]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# the table: the vector field A p~ at (u, v)
TABLE = {
    "translate_x": lambda u, v: (1.0, 0.0),
    "translate_y": lambda u, v: (0.0, 1.0),
    "rotate": lambda u, v: (v, -u),
    "scale": lambda u, v: (-u, -v),
    "shear_x": lambda u, v: (v, 0.0),
    "shear_y": lambda u, v: (0.0, u),
    "stretch_x": lambda u, v: (u, 0.0),
    "stretch_y": lambda u, v: (0.0, v),
    "hyperbolic_rotate": lambda u, v: (v, u),
}


def smooth_image(h: int, w: int, c: int = 3, dtype=torch.float64) -> torch.Tensor:
    """A smooth image whose derivative vanishes at the border (consistent with reflection)."""
    u = coords(w, dtype)[None, :]
    v = coords(h, dtype)[:, None]
    chans = [
        torch.cos(math.pi * (u + 1) / 2 * k1) * torch.cos(math.pi * (v + 1) / 2 * k2) + 0.3 * k1
        for k1, k2 in [(1, 2), (2, 1), (3, 3)][:c]
    ]
    return torch.stack(chans)[None]


@pytest.mark.parametrize("name", SPATIAL)
def test_vector_fields_match_the_table(name):
    g = GENERATORS[name]
    a = g.matrix_tensor()
    for u, v in [(0.3, -0.7), (-1.0, 1.0), (0.0, 0.5)]:
        got = a @ torch.tensor([u, v, 1.0], dtype=torch.float64)
        assert got.tolist() == pytest.approx(TABLE[name](u, v))


def test_linear_combinations_and_names():
    g = 2 * GENERATORS["rotate"] - GENERATORS["translate_x"] + 0.5 * GENERATORS["contrast"]
    assert g.matrix == ((-0.0, 2.0, -1.0), (-2.0, -0.0, 0.0)) or g.matrix == ((0.0, 2.0, -1.0), (-2.0, 0.0, 0.0))
    assert g.color_coeffs == {"contrast": 0.5}
    with pytest.raises(ValueError, match="did you mean 'rotate'"):
        liecore.get_generator("rotat")
    with pytest.raises(ValueError, match="unknown colour"):
        Generator("x", color={"hue": 1.0})


def test_tangent_is_linear_in_the_generator():
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    a, b = GENERATORS["rotate"], GENERATORS["saturation"]
    c = 0.7 * a - 1.3 * b + GENERATORS["stretch_y"]
    lhs = input_tangent(x, c, mean=MEAN, std=STD)
    rhs = (
        0.7 * input_tangent(x, a, mean=MEAN, std=STD)
        - 1.3 * input_tangent(x, b, mean=MEAN, std=STD)
        + input_tangent(x, GENERATORS["stretch_y"])
    )
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-13)


@pytest.mark.parametrize("interpolation", ["cubic", "spectral"])
@pytest.mark.parametrize("name", list(GENERATORS))
def test_tangent_is_the_derivative_of_the_action(name, interpolation):
    """input_tangent = d/dt transform at t = 0, by finite differences in float64.

    The cubic interpolant is C^1 with a jump of its second derivative at the knots, so its
    central difference converges at O(h); one Richardson step removes that term.
    """
    x = torch.rand(2, 3, 10, 13, dtype=torch.float64)
    kw = dict(interpolation=interpolation, mean=MEAN, std=STD)

    def central(h):
        return (transform(x, name, h, **kw) - transform(x, name, -h, **kw)) / (2 * h)

    h = 1e-4
    fd = 2 * central(h / 2) - central(h)
    tangent = input_tangent(x, name, **kw)
    scale = tangent.abs().max()
    assert scale > 0.1
    assert (fd - tangent).abs().max() / scale < 1e-6


@pytest.mark.parametrize("interpolation", ["cubic", "spectral"])
def test_identity_and_inverse_flow(interpolation):
    x = smooth_image(32, 40)
    for name in GENERATORS:
        out = transform(x, name, 0.0, interpolation=interpolation, mean=MEAN, std=STD)
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)
    # e^{tX} then e^{-tX}: identity up to interpolation error on a smooth image, away from
    # the border where the reflection boundary decides
    for name in ["rotate", "scale", "shear_x", "translate_y"]:
        back = transform(
            transform(x, name, 0.05, interpolation=interpolation), name, -0.05, interpolation=interpolation
        )
        inner = (back - x)[..., 6:-6, 6:-6]
        assert inner.abs().max() < 2e-3


def test_flows_compose():
    g = GENERATORS["rotate"] + 0.3 * GENERATORS["translate_x"]
    torch.testing.assert_close(g.flow(0.2) @ g.flow(0.3), g.flow(0.5))
    # rotation by pi/2 is exact on a square grid: a rotated pixel lattice lands on the
    # lattice. Sampling at e^{tA} p with A = rotate moves content by -t, i.e. clockwise in
    # (row, column) display coordinates.
    x = torch.rand(1, 1, 7, 7, dtype=torch.float64)
    rot = transform(x, "rotate", math.pi / 2)
    torch.testing.assert_close(rot, torch.rot90(x, k=-1, dims=(-2, -1)), rtol=0, atol=1e-12)


def test_bracket_matches_commutator_of_tangents():
    """[T_X, T_Y] = T_[X,Y] in the continuum; on a fine grid the discrete operators agree
    in the interior up to O(1/W^2)."""
    x = smooth_image(129, 129, c=1)
    pairs = [
        ("rotate", "translate_x"),
        ("scale", "translate_y"),
        ("stretch_x", "hyperbolic_rotate"),
        ("shear_x", "shear_y"),
    ]
    for a, b in pairs:
        ga, gb = GENERATORS[a], GENERATORS[b]
        br = ga.bracket(gb)
        lhs = input_tangent(input_tangent(x, gb), ga) - input_tangent(input_tangent(x, ga), gb)
        rhs = input_tangent(x, br)
        inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
        err = (lhs - rhs)[inner].abs().max() / rhs[inner].abs().max()
        assert err < 2e-3, (a, b, float(err))
    # structure constants of the affine algebra, e.g. [rotate, translate_x] = translate_y
    assert GENERATORS["rotate"].bracket(GENERATORS["translate_x"]).matrix == GENERATORS["translate_y"].matrix


@pytest.mark.parametrize("interpolation,order", [("cubic", 2), ("spectral", None)])
def test_derivative_of_smooth_images_converges(interpolation, order):
    """Image derivatives of sampled cosines converge to the analytic derivative."""
    errors = []
    for n in (16, 32, 64, 128):
        u = coords(n, torch.float64)
        k = 3
        f = torch.cos(math.pi * k * (u + 1) / 2)
        exact = -math.pi * k / 2 * torch.sin(math.pi * k * (u + 1) / 2)
        got = d_dpixel(f, -1, interpolation) * ((n - 1) / 2)
        errors.append(float((got - exact).abs().max()))
    if order is None:
        assert max(errors) < 1e-9
    else:
        rates = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
        assert min(rates) > order - 0.2, rates


def generic_smooth_image(n: int):
    """``exp(0.5u + 0.3v) sin(1.3u - 0.7v + 0.4)`` on an ``n x n`` grid with its analytic
    gradient; unlike :func:`smooth_image` its derivative does not vanish at the border."""
    u = coords(n, torch.float64)[None, :].expand(n, n)
    v = coords(n, torch.float64)[:, None].expand(n, n)
    a = 1.3 * u - 0.7 * v + 0.4
    e = torch.exp(0.5 * u + 0.3 * v)
    f = e * torch.sin(a)
    fu = e * (0.5 * torch.sin(a) + 1.3 * torch.cos(a))
    fv = e * (0.3 * torch.sin(a) - 0.7 * torch.cos(a))
    return f[None, None], fu, fv, u, v


@pytest.mark.parametrize("name", ["rotate", "scale"])
def test_tangent_of_a_smooth_image_converges(name):
    """input_tangent -> the analytic tangent in the interior: cubic at O(1/N^2); spectral
    only at O(1/N), since the symmetric extension has a kink at the border."""
    errors: dict[str, list[float]] = {"cubic": [], "spectral": []}
    for n in (17, 33, 65, 129):
        f, fu, fv, u, v = generic_smooth_image(n)
        au, av = TABLE[name](u, v)
        exact = au * fu + av * fv
        inner = (u.abs() <= 0.5) & (v.abs() <= 0.5)
        for interpolation, errs in errors.items():
            got = input_tangent(f, name, interpolation=interpolation)[0, 0]
            errs.append(float((got - exact)[inner].abs().max()))
    for interpolation, (lo, hi) in {"cubic": (1.9, 2.1), "spectral": (0.7, 1.2)}.items():
        errs = errors[interpolation]
        rates = [math.log2(a / b) for a, b in zip(errs, errs[1:], strict=False)]
        assert all(lo < r < hi for r in rates), (interpolation, errs, rates)
    assert errors["cubic"][-1] < 1e-4


def test_colour_generators():
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    raw = x * torch.tensor(STD).reshape(1, 3, 1, 1) + torch.tensor(MEAN).reshape(1, 3, 1, 1)
    t = 0.3
    b = transform(x, "brightness", t, mean=MEAN, std=STD)
    torch.testing.assert_close(
        b * torch.tensor(STD).reshape(1, 3, 1, 1) + torch.tensor(MEAN).reshape(1, 3, 1, 1), raw * math.exp(t)
    )
    torch.testing.assert_close(transform(x, "contrast", t), x * math.exp(t))
    s = transform(x, "saturation", t, mean=MEAN, std=STD)
    grey = (raw * torch.tensor(liecore.LUMA, dtype=torch.float64).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
    expect = grey + math.exp(t) * (raw - grey)
    torch.testing.assert_close(
        s * torch.tensor(STD).reshape(1, 3, 1, 1) + torch.tensor(MEAN).reshape(1, 3, 1, 1), expect
    )
    with pytest.raises(ValueError, match="mean= and std="):
        input_tangent(x, "brightness")


@pytest.mark.parametrize("interpolation", ["cubic", "spectral"])
def test_one_pixel_axis(interpolation):
    """A 1-pixel axis is a constant signal along it: finite, and the same as two equal rows."""
    x = torch.rand(2, 3, 1, 7, dtype=torch.float64)
    two = x.expand(-1, -1, 2, -1)
    for name in ["translate_x", "translate_y", "rotate", "scale", "shear_x"]:
        out = transform(x, name, 0.1, interpolation=interpolation)
        assert torch.isfinite(out).all(), name
    torch.testing.assert_close(transform(x, "translate_y", 0.3, interpolation=interpolation), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        transform(x, "translate_x", 0.3, interpolation=interpolation),
        transform(two, "translate_x", 0.3, interpolation=interpolation)[:, :, :1],
        rtol=0,
        atol=1e-12,
    )
    xt = x.transpose(-1, -2)  # (B, C, 7, 1)
    torch.testing.assert_close(
        transform(xt, "translate_y", 0.3, interpolation=interpolation),
        transform(x, "translate_x", 0.3, interpolation=interpolation).transpose(-1, -2),
        rtol=0,
        atol=1e-12,
    )
