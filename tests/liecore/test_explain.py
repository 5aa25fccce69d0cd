"""Exact spatial maps of the equivariance error (liecore.explain), in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import liecore
from liecore import ActivationLayouts, Layout, explain, explain_all, layerwise
from liecore._grid import spatial_tangent_nchw

from .test_layerwise import TinyViT, _model


def _check_against_layerwise(e, res, names):
    """Each layer's map (plus its unlocated part) sums to its layerwise share over the LEE."""
    shares = e.layer_shares()
    for rec, n in zip(res.records, names, strict=True):
        want = rec.share / res.end_to_end
        got = shares.get(n, torch.zeros_like(want))
        assert (got - want).abs().max() < 1e-10, (n, got, want)
    assert (e.remainder - res.unattributed_share / res.end_to_end).abs().max() < 1e-10
    assert (e.total() - 1).abs().max() < 1e-10
    torch.testing.assert_close(e.lee, res.end_to_end, rtol=1e-10, atol=0)


@pytest.mark.parametrize("gen", ["rotate", "translate_x", "scale"])
def test_layer_maps_sum_to_layerwise_shares_cnn(gen):
    m = _model()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    e = explain(m, x, gen)
    res = layerwise(m, x, gen)
    names = ["conv1", "bn", "relu", "conv2", "relu#1", "down", "pool", "fc"]
    _check_against_layerwise(e, res, names)
    # the strided conv's map is on its own 8x8 grid, the pool's on its 1x1 grid
    assert e.layer_maps["down"].shape == (3, 8, 8)
    assert e.layer_maps["pool"].shape == (3, 1, 1) and not e.special
    # the image map keeps every located map's total
    located = sum(v.sum((1, 2)) for v in e.layer_maps.values())
    assert (e.image_map.sum((1, 2)) - located).abs().max() < 1e-12
    assert e.image_map.shape == (3, 16, 16)


def test_token_layouts_patch_grid_and_prefix_apart():
    layouts = ActivationLayouts(tokens=(Layout.tokens((6, 6), num_prefix_tokens=1),))
    torch.manual_seed(0)
    v = TinyViT(pos=True).double()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    e = explain(v, x, "translate_x", layouts=layouts, output="logits")
    res = layerwise(v, x, "translate_x", layouts=layouts, output="logits")
    _check_against_layerwise(e, res, [r.name for r in res.records])
    assert e.layer_maps["mix"].shape == (2, 6, 6)
    assert e.special["mix"].shape == (2, 1)  # the class token
    # the position embedding is glue between layers: its share is the remainder, and large
    assert (e.remainder.abs() > 0.05).all()


def test_several_generators_equal_one_at_a_time():
    m = _model()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    both = explain_all(m, x, ["rotate", "translate_y"], output="logits")
    assert list(both) == ["rotate", "translate_y"]
    for g, e in both.items():
        one = explain(m, x, g, output="logits")
        torch.testing.assert_close(e.image_map, one.image_map, rtol=1e-12, atol=1e-14)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.Tanh()
        self.down = nn.Conv2d(3, 2, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.down(self.act(self.conv(x))).flatten(1))


@pytest.mark.parametrize("gen", ["rotate", "translate_x"])
def test_raw_maps_equal_full_jacobian_brute_force(gen):
    torch.manual_seed(1)
    m = _Tiny().double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    e = explain(m, x, gen, output="logits")
    f = m
    g = liecore.get_generator(gen)
    mat = g.matrix
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        # L = J_f T x, with the full Jacobian of the network
        jf = torch.autograd.functional.jacobian(f, xi).reshape(3, -1)
        tx = liecore.input_tangent(xi, g)
        lvec = jf @ tx.reshape(-1)
        norm2 = lvec.square().sum()
        # the layer inputs and outputs
        a0 = xi
        a1 = m.conv(a0)
        a2 = m.act(a1)
        a3 = m.down(a2)
        layers = {"conv": (m.conv, a0, a1, True), "act": (m.act, a1, a2, False), "down": (m.down, a2, a3, False)}
        rest = {
            "conv": lambda t: m.fc(m.down(m.act(t)).flatten(1)),
            "act": lambda t: m.fc(m.down(t).flatten(1)),
            "down": lambda t: m.fc(t.flatten(1)),
        }
        for name, (mod, a_in, a_out, is_input) in layers.items():
            t_in = tx if is_input else spatial_tangent_nchw(a_in, mat)
            j_layer = torch.autograd.functional.jacobian(mod, a_in).reshape(a_out.numel(), a_in.numel())
            e_i = (j_layer @ t_in.reshape(-1)) - spatial_tangent_nchw(a_out, mat).reshape(-1)
            j_rest = torch.autograd.functional.jacobian(rest[name], a_out).reshape(3, -1)
            g_i = j_rest.T @ lvec
            b = (g_i * e_i).detach().reshape(a_out.shape[1:]).sum(0) / norm2
            got = e.layer_maps[name][i].detach() if name in e.layer_maps else torch.zeros_like(b)
            assert (got - b).abs().max() < 1e-10 * max(1.0, float(b.abs().max())), name
            if name in ("act", "down"):
                assert b.abs().max() > 1e-6  # a non-trivial map is checked


# --- the planted control ------------------------------------------------------------------
N = 32
R = (6, 16, 14, 26)  # rows [6, 16), cols [14, 26)
R_MOVED = (18, 28, 4, 14)


def _smooth_bump(n: int, lo: float, hi: float) -> torch.Tensor:
    """A C-infinity bump on the pixel axis, positive exactly on (lo, hi)."""
    t = torch.arange(n, dtype=torch.float64)
    s = (2 * t - (lo + hi)) / (hi - lo)
    out = torch.zeros(n, dtype=torch.float64)
    inside = s.abs() < 1
    out[inside] = torch.exp(1 - 1 / (1 - s[inside] ** 2))
    return out


class Multiply(nn.Module):
    """Multiplies its features by a fixed weight map ``1 + eps * bump``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, h):
        return h * self.weight


class Planted(nn.Module):
    """conv, multiply by ``1 + eps * bump`` (bump inside R), conv, global average pool, linear head.

    3x3 convolutions commute with translations on an image that is zero near the border;
    for rotations (a vector field that varies in space) only 1x1 convolutions do."""

    def __init__(self, eps: float = 0.3, kernel: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, kernel, padding=kernel // 2, bias=False)
        r0, r1, c0, c1 = R
        # the bump is strictly inside R, 3 px from its edges (the central difference reaches 1 px)
        bump = _smooth_bump(N, r0 + 2, r1 - 3)[:, None] * _smooth_bump(N, c0 + 2, c1 - 3)[None, :]
        self.mult = Multiply(1 + eps * bump)
        self.conv2 = nn.Conv2d(4, 4, kernel, padding=kernel // 2, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return self.head(self.pool(self.conv2(self.mult(self.conv1(x)))).flatten(1))


def _planted_input(b: int) -> torch.Tensor:
    """Smooth images, zero within 4 px of the border."""
    torch.manual_seed(3)
    env = _smooth_bump(N, 3, N - 4)[:, None] * _smooth_bump(N, 3, N - 4)[None, :]
    t = torch.arange(N, dtype=torch.float64)
    imgs = []
    for _ in range(b):
        fy, fx, p = torch.rand(3, dtype=torch.float64) * torch.tensor([0.4, 0.4, 6.0], dtype=torch.float64)
        imgs.append(env * (1.5 + torch.sin(fy * t[:, None] + fx * t[None, :] + p)))
    return torch.stack(imgs)[:, None]


def _region_fractions(e, region) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction of |image_map| inside ``region``, fraction of the absolute total in ``mult``)."""
    r0, r1, c0, c1 = region
    a = e.image_map.abs()
    inside = a[:, r0:r1, c0:c1].sum((1, 2)) / a.sum((1, 2))
    abs_total = sum(v.abs().sum((1, 2)) for v in e.layer_maps.values())
    abs_total = abs_total + sum(v.abs().sum(1) for v in e.special.values())
    in_mult = e.layer_maps["mult"].abs().sum((1, 2)) / abs_total
    return inside, in_mult


def _satisfies(e, region) -> bool:
    inside, in_mult = _region_fractions(e, region)
    return bool((inside >= 0.99).all() and (in_mult >= 0.99).all())


CONTROLS = [("translate_x", 3), ("translate_y", 3), ("rotate", 1)]


@pytest.mark.parametrize("gen, kernel", CONTROLS)
def test_planted_region_control(gen, kernel):
    m = Planted(kernel=kernel).double().eval()
    x = _planted_input(2)
    e = explain(m, x, gen, output="logits")
    inside, in_mult = _region_fractions(e, R)
    assert (inside >= 0.99).all(), inside
    assert (in_mult >= 0.99).all(), in_mult
    assert _satisfies(e, R)
    assert (e.total() - 1).abs().max() < 1e-10
    assert (e.lee > 1e-12).all()  # the planted error is not negligible


@pytest.mark.parametrize("gen, kernel", CONTROLS)
def test_planted_region_control_fails_for_a_moved_region(gen, kernel):
    """The same criterion with R moved must fail: the control can tell where the error is."""
    m = Planted(kernel=kernel).double().eval()
    e = explain(m, _planted_input(2), gen, output="logits")
    inside, _ = _region_fractions(e, R_MOVED)
    assert (inside < 0.01).all(), inside
    assert not _satisfies(e, R_MOVED)


def test_planted_control_without_the_bump_has_no_located_error():
    """eps = 0: every layer is equivariant on this input, the LEE is zero to rounding."""
    m = Planted(eps=0.0).double().eval()
    e = explain(m, _planted_input(1), "translate_x", output="logits")
    assert float(e.lee.max()) < 1e-25


def test_area_matrix_keeps_mass_and_bad_input_is_clear():
    a = liecore.area_matrix(7, 3)
    torch.testing.assert_close(a.sum(0), torch.ones(3, dtype=torch.float64))
    m = torch.rand(2, 3, 5, dtype=torch.float64)
    r = liecore.resample_mass(m, (7, 11))
    torch.testing.assert_close(r.sum((1, 2)), m.sum((1, 2)))
    # an integer ratio spreads each cell uniformly over its block
    r2 = liecore.resample_mass(m, (6, 10))
    torch.testing.assert_close(r2[:, ::2, ::2] * 4, m)
    with pytest.raises(ValueError, match="images must be"):
        explain(_model(), torch.rand(3, 16, 16, dtype=torch.float64), "rotate")
    with pytest.raises(TypeError, match="nn.Module"):
        explain(lambda t: t, torch.rand(1, 3, 8, 8), "rotate")
