"""Lie derivatives: finite differences, equivariant functions, controls, aliasing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import liecore
from liecore import GENERATORS, Layout, lie_derivative, lie_derivatives, transform

from .test_generators import MEAN, SPATIAL, STD


def smooth_cnn(out: str) -> nn.Module:
    """A small network with smooth activations (so finite differences are well defined)."""
    torch.manual_seed(1)
    layers = [nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 5, 3, padding=1, padding_mode="reflect")]
    if out == "invariant":
        layers += [nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 7)]
    return nn.Sequential(*layers).double()


def fd_lie_derivative(f, x, name, out_layout, interpolation="cubic", h=2e-5):
    """Central differences of t -> rho_out(t)^-1 f(rho_in(t) x), one Richardson step."""
    kw = dict(interpolation=interpolation, mean=MEAN, std=STD)
    gen = GENERATORS[name]

    def g(t):
        y = f(transform(x, gen, t, **kw))
        if out_layout.moves and gen.is_spatial:
            spatial_part = liecore.Generator(gen.name, gen.matrix)  # outputs carry no colour
            y = transform(y, spatial_part, -t, interpolation=interpolation)
        return y

    def central(s):
        return (g(s) - g(-s)) / (2 * s)

    with torch.no_grad():
        return 2 * central(h / 2) - central(h)


@pytest.mark.parametrize("interpolation", ["cubic", "spectral"])
@pytest.mark.parametrize("out", ["invariant", "spatial"])
def test_matches_finite_differences_for_every_generator(out, interpolation):
    f = smooth_cnn(out)
    x = torch.rand(2, 3, 12, 14, dtype=torch.float64)
    layout = Layout.invariant() if out == "invariant" else Layout.spatial()
    names = list(GENERATORS)
    _, d = lie_derivatives(f, x, names, out_layout=layout, interpolation=interpolation, mean=MEAN, std=STD)
    for i, name in enumerate(names):
        fd = fd_lie_derivative(f, x, name, layout, interpolation)
        scale = d[i].abs().max()
        assert scale > 1e-4, name
        assert (d[i] - fd).abs().max() / scale < 1e-6, (name, float((d[i] - fd).abs().max() / scale))


def test_token_outputs_follow_their_grid():
    """A token output with an invariant prefix: the prefix gets no -T term, the grid does."""
    conv = nn.Conv2d(3, 4, 1).double()
    cls = torch.randn(1, 2, 4, dtype=torch.float64)

    def f(x):
        t = conv(x).flatten(2).transpose(1, 2)
        return torch.cat([cls.expand(x.shape[0], -1, -1), t], 1)

    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    layout = Layout.tokens((6, 5), num_prefix_tokens=2)
    _, d = lie_derivatives(f, x, SPATIAL, out_layout=layout)
    assert d.abs().max() < 1e-13  # pointwise map into tokens: exactly equivariant
    with pytest.raises(ValueError, match="prefix tokens"):
        lie_derivatives(f, x, "rotate", out_layout=Layout.tokens((6, 5), num_prefix_tokens=1))


def test_linear_in_the_generator():
    f = smooth_cnn("invariant")
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    a, b, c = GENERATORS["rotate"], GENERATORS["shear_y"], GENERATORS["contrast"]
    combo = 0.5 * a - 2.0 * b + 3.0 * c
    _, d = lie_derivatives(f, x, [a, b, c, combo], mean=MEAN, std=STD)
    torch.testing.assert_close(d[3], 0.5 * d[0] - 2.0 * d[1] + 3.0 * d[2], rtol=0, atol=1e-12)


EQUIVARIANT = {"identity": nn.Identity, "1x1 conv": lambda: nn.Conv2d(3, 5, 1)}


@pytest.mark.parametrize("kind", ["identity", "1x1 conv", "channel mixing"])
def test_pointwise_linear_maps_are_equivariant(kind, dtype):
    if kind == "channel mixing":
        w = torch.randn(4, 3, dtype=dtype)

        def f(x):
            return torch.einsum("oc,bchw->bohw", w, x) + 0.5

    else:
        f = EQUIVARIANT[kind]().to(dtype)
    x = torch.rand(3, 3, 16, 16, dtype=dtype)
    res = liecore.lee(f, x, SPATIAL, out_layout=Layout.spatial())
    floor = 1e-24 if dtype == torch.float64 else 1e-9
    assert res.values.max() < floor, res.summary()


def test_controls_are_not_equivariant():
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    torch.manual_seed(0)
    strided = nn.Conv2d(3, 4, 3, stride=2).double()
    weight = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)[None, None, None, :]
    for f in (strided, lambda z: z * weight):
        res = liecore.lee(f, x, ["translate_x", "rotate"], out_layout=Layout.spatial())
        assert res.values.min() > 1e-3, res.summary()


@pytest.mark.parametrize("act", [F.relu, F.gelu])
def test_pointwise_nonlinearity_aliases_less_on_smoother_inputs(act):
    """sigma is equivariant in the continuum but not on the grid (the paper's aliasing):
    its Lie derivative is non-zero and shrinks as the input is upsampled (band-limited)."""
    torch.manual_seed(0)
    base = torch.randn(1, 4, 12, 12, dtype=torch.float64)
    ratios = []
    for factor in (1, 2, 4, 8):
        n = 12 * factor
        # band-limited upsampling: evaluate the trigonometric interpolant on a finer grid
        q = torch.linspace(0, 11, n, dtype=torch.float64)
        x = liecore.sample(base, q[:, None].expand(n, n), q[None, :].expand(n, n), "spectral")
        d = lie_derivative(act, x, "translate_x", out_layout=Layout.spatial())
        tx = liecore.input_tangent(x, "translate_x")
        ratios.append(float(d.square().sum() / tx.square().sum()))
    assert ratios[0] > 1e-3
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False)), ratios
    assert ratios[-1] < ratios[0] / 10, ratios


def test_keeps_device_dtype_and_rejects_bad_input():
    f = nn.Conv2d(3, 2, 3).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    d = lie_derivative(f, x, "rotate", out_layout=Layout.spatial())
    assert d.dtype == torch.float64 and d.shape == f(x).shape
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        lie_derivative(f, x[0], "rotate")
    with pytest.raises(ValueError, match="unknown generator"):
        lie_derivative(f, x, "spin")
    with pytest.raises(ValueError, match="declared spatial"):
        lie_derivative(lambda z: z.mean((2, 3)), x, "rotate", out_layout=Layout.spatial())


def test_modules_are_restored():
    """Eval mode and fused attention are switched only while differentiating."""
    m = smooth_cnn("invariant").train()
    m.fused_attn = True
    lie_derivative(m, torch.rand(1, 3, 8, 8, dtype=torch.float64), "rotate")
    assert m.training and m.fused_attn is True
