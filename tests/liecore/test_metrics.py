"""Alternative metrics: shift consistency, EQ-T / EQ-T_frac / EQ-R (end to end and per layer), sampled error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import liecore
from liecore.metrics import (
    METRICS,
    POOLED_DEFINITION,
    MetricResult,
    bandlimit_filter,
    circular_shift_consistency,
    eq_layerwise,
    eq_r,
    eq_t,
    eq_t_frac,
    fractional_translate,
    integer_translate,
    lanczos_rotate,
    pseudo_rotate,
    rotate,
    sampled_equivariance_error,
    sampled_layerwise,
    shift_consistency,
    upfirdn2d,
)

F64 = torch.float64
SPATIAL = liecore.Layout.spatial()


def _images(b: int = 3, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g, dtype=F64)


def _smooth_images(b: int = 3, c: int = 3, n: int = 32, seed: int = 0) -> torch.Tensor:
    """Low-pass random images (cubic upsampling of an 8x8 field): smooth at the pixel scale."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randn(b, c, 8, 8, generator=g, dtype=F64)
    return nn.functional.interpolate(small, size=(n, n), mode="bicubic", align_corners=True)


class Weighting(nn.Module):
    """Multiplies the map by a fixed random spatial weight: not translation equivariant."""

    def __init__(self, c: int, h: int, w: int, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.rand(1, c, h, w, generator=g, dtype=F64) + 0.5)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.weight


class SpatialLinear(nn.Module):
    """Logits = <x, W_k> with a fixed spatial template per class: clearly not shift invariant."""

    def __init__(self, c: int, h: int, w: int, k: int = 10, seed: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(k, c, h, w, generator=g, dtype=F64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", z, self.weight)


class Ramp(nn.Module):
    """Multiplies by a smooth ramp along the width: smooth, not translation equivariant."""

    def __init__(self, ramp: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("ramp", ramp)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.ramp


class CircularNet(nn.Module):
    """Circular convolutions + global average pool + linear: invariant to circular shifts."""

    def __init__(self, c: int = 3, k: int = 10) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(c, 8, 3, padding=1, padding_mode="circular")
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular")
        self.head = nn.Linear(8, k)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.conv2(torch.relu(self.conv1(z))))
        return self.head(z.mean((-2, -1)))


class Tokens(nn.Module):
    """(B, C, H, W) -> (B, 1 + H W, C) with a constant class token in front."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        seq = z.flatten(2).transpose(1, 2)
        return torch.cat([torch.ones_like(seq[:, :1]), seq], dim=1)


def _pointwise(c_in: int = 3, c_out: int = 4, act: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(4)
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers).double()


# --- result type and registry -----------------------------------------------------------
def test_registry_signature_and_results():
    x = _images(b=2, h=40, w=40)
    model = CircularNet().double()
    for name, metric in METRICS.items():
        kwargs = {"num_pairs": 2, "max_shift": 8} if "consistency" in name else {"num_samples": 2}
        res = metric(model, x, seed=7, **kwargs)
        assert isinstance(res, MetricResult) and res.name == name
        assert res.values.shape == (2,) and res.values.dtype == F64 and res.values.device.type == "cpu"
        again = metric(model, x, rng=torch.Generator().manual_seed(7), **kwargs)
        torch.testing.assert_close(res.values, again.values)  # seed == generator seeded alike
        s = res.summary()
        assert s["unit"] == res.unit and s["n"] == 2 and isinstance(res.higher_is_better, bool)
    with pytest.raises(TypeError):
        eq_t(model, x, rng=123)  # type: ignore[arg-type]


def test_metric_result_stats():
    r = MetricResult("m", torch.tensor([1.0, 2.0, 3.0, 4.0]), "mse", False)
    assert r.mean == 2.5 and math.isclose(r.stderr, math.sqrt(5 / 3) / 2)
    assert math.isnan(MetricResult("m", torch.tensor([1.0]), "mse", False).stderr)
    with pytest.raises(ValueError):
        MetricResult("m", torch.zeros(2, 2), "mse", False)


# --- the transformations: StyleGAN3's, against outputs of their code -----------------------
REF = Path(__file__).parent / "data" / "stylegan3_equivariance_vectors.npz"


@pytest.fixture(scope="module")
def sg3() -> dict[str, torch.Tensor]:
    """StyleGAN3's reference vectors (float64 runs of their transform functions; see data/README.md)."""
    with np.load(REF) as d:
        return {k: torch.from_numpy(d[k]) for k in d.files}


def _sg3_transform(kind: str, x: torch.Tensor, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our transform with StyleGAN3's parameters: ``param`` per image, an angle or ``(ty, tx)`` fractions."""
    h, w = x.shape[-2:]
    if kind == "rot":
        return rotate(x, param)
    dy, dx = param[:, 0] * h, param[:, 1] * w
    if kind == "frac":
        return fractional_translate(x, dy, dx)
    return integer_translate(x, torch.round(dy), torch.round(dx))  # apply_integer_translation's rounding


def _sg3_param(sg3, kind: str, i: int) -> torch.Tensor:
    return sg3[f"rot{i}_angle"].reshape(1) if kind == "rot" else sg3[f"{kind}{i}_shift"].reshape(1, 2)


@pytest.mark.parametrize("kind", ["int", "frac", "rot"])
@pytest.mark.parametrize("i", range(4))
def test_transforms_equal_stylegan3(sg3, kind, i):
    """Images to 1e-10 and masks exactly, for every vector; also with a different parameter per image."""
    x = sg3["x"]
    p = _sg3_param(sg3, kind, i)
    out, mask = _sg3_transform(kind, x, p.expand(2, *p.shape[1:]))
    assert out.dtype == F64 and mask.shape == (2, 1, 64, 64)
    torch.testing.assert_close(out, sg3[f"{kind}{i}_out"], atol=1e-10, rtol=0)
    assert torch.equal(mask == 1, sg3[f"{kind}{i}_mask"]) and bool(((mask == 0) | (mask == 1)).all())
    # per-image parameters: image 0 with vector i, image 1 with vector i + 1
    j = (i + 1) % 4
    out, mask = _sg3_transform(kind, x, torch.cat([p, _sg3_param(sg3, kind, j)]))
    torch.testing.assert_close(out[0], sg3[f"{kind}{i}_out"][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(out[1], sg3[f"{kind}{j}_out"][1], atol=1e-10, rtol=0)
    assert torch.equal(mask[0] == 1, sg3[f"{kind}{i}_mask"][0]) and torch.equal(mask[1] == 1, sg3[f"{kind}{j}_mask"][1])


def test_reference_vectors_cover_whole_pixel_fractional_shifts(sg3):
    """frac1 and frac3 are whole-pixel shifts: StyleGAN3 keeps its fractional mask there, not the copy's."""
    for i, whole in ((1, (-8, 8)), (3, (-4, None))):
        ty, tx = (sg3[f"frac{i}_shift"] * 64).tolist()
        assert ty == whole[0] and (whole[1] is None or tx == whole[1])
    # shift (-8, +8) px: n + 3 <= p < 64 + min(n - 2, 0) gives rows 0 .. 53 and columns 11 .. 63, not the
    # all-taps-inside footprint of an exact copy (taps p - n - 2 .. p - n + 3: rows 0 .. 52, columns 10 .. 63)
    want = torch.zeros(64, 64, dtype=torch.bool)
    want[:54, 11:] = True
    assert torch.equal(sg3["frac1_mask"][0, 0], want)
    out, mask = fractional_translate(sg3["x"], torch.full((2,), -8.0, dtype=F64), torch.full((2,), 8.0, dtype=F64))
    assert torch.equal(mask[0, 0] == 1, want)
    torch.testing.assert_close(out * mask, sg3["int1_out"] * mask, atol=1e-15, rtol=0)  # a copy where valid


def test_lanczos_rotation_is_not_stylegan3s(sg3):
    """Negative control: the separable Lanczos rotation misses the reference by far more than 1e-10."""
    x = sg3["x"]
    for i in range(4):
        angle = sg3[f"rot{i}_angle"].expand(2)
        out, mask = lanczos_rotate(x, angle)
        both = mask * sg3[f"rot{i}_mask"]
        err = float(((out - sg3[f"rot{i}_out"]) * both).abs().max())
        assert err > 1e-3, err  # the same sense of rotation, another filter
        assert not torch.equal(mask == 1, sg3[f"rot{i}_mask"])  # a disc, not the rotated square
        wrong = float(((lanczos_rotate(x, -angle)[0] - sg3[f"rot{i}_out"]) * both).abs().max())
        assert wrong > 10 * err or i == 3 and wrong > 1e-2


def test_rotation_sense_and_exact_cases():
    x = _smooth_images(b=2, c=2, n=33)
    zero = torch.zeros(2, dtype=F64)
    out, mask = fractional_translate(x, zero, zero)
    torch.testing.assert_close(out, x, atol=1e-15, rtol=0)
    assert int(mask.sum()) == 2 * 28 * 28  # StyleGAN3's mask: rows and columns 3 .. 30
    out, mask = integer_translate(x, torch.tensor([2, -3]), torch.tensor([0, 5]))
    torch.testing.assert_close(out[0, :, 2:], x[0, :, :-2])
    assert mask[0, 0, :2].sum() == 0 and mask[0, 0, 2:].min() == 1
    out, mask = fractional_translate(x, torch.tensor([40.5, -2.0], dtype=F64), torch.tensor([0.0, -70.0], dtype=F64))
    assert not out.any() and not mask.any()  # shifted off the map: nothing left, nothing valid
    # a quarter turn: content turns counter-clockwise on screen, torch.rot90(k=1), up to the filter
    out, mask = rotate(x, torch.full((2,), math.pi / 2, dtype=F64))
    assert mask.sum() > 0.3 * mask.numel()
    ccw = float(((out - torch.rot90(x, 1, (-2, -1))) * mask).abs().max())
    cw = float(((out - torch.rot90(x, -1, (-2, -1))) * mask).abs().max())
    assert ccw < 0.02 * x.abs().max() < cw
    # rotation by 0 is a band-limited near-identity, not an exact one (StyleGAN3's filter)
    out, mask = rotate(x, zero)
    assert 1e-8 < float(((out - x) * mask).abs().max()) < 1e-2


def test_pseudo_rotation():
    """R*_0 is the identity; R*_theta has the period pi/2 of the square grid and its mirror symmetry."""
    x = _smooth_images(b=2, n=48)
    zero = torch.zeros(2, dtype=F64)
    out, mask = pseudo_rotate(x, zero)
    torch.testing.assert_close(out, x, atol=1e-13, rtol=0)
    assert torch.equal(mask[0, 0, 5:-5, 5:-5], torch.ones(38, 38, dtype=F64)) and int(mask.sum()) == 2 * 38 * 38
    th = torch.tensor([0.3, -1.1], dtype=F64)
    torch.testing.assert_close(pseudo_rotate(x, th)[0], pseudo_rotate(x, th + math.pi / 2)[0], atol=1e-13, rtol=0)
    # mirror symmetry: the band limit for -theta is that for theta with rows and columns swapped
    xt = x.transpose(-2, -1)
    torch.testing.assert_close(pseudo_rotate(x, -th)[0], pseudo_rotate(xt, th)[0].transpose(-2, -1), atol=1e-13, rtol=0)
    noise = _images(b=2, h=48, w=48)
    out, mask = pseudo_rotate(noise, th)
    assert float(((out - noise) * mask).square().mean()) > 1e-3  # it removes what the rotated grid cannot hold


def _upfirdn2d_by_definition(x, f, up, padding, gain):
    """Zero insertion, zero padding (negative: crop), true convolution: the definition, literally."""
    b, c, h, w = x.shape
    px0, px1, py0, py1 = padding
    u = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    u = nn.functional.pad(u, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    u = u[:, :, max(-py0, 0) : u.shape[2] - max(-py1, 0), max(-px0, 0) : u.shape[3] - max(-px1, 0)]
    fl = (f * gain).flip(-2, -1)
    if fl.ndim == 2:
        fl = fl.expand(b, *fl.shape)
    return torch.stack([nn.functional.conv2d(u[i : i + 1].transpose(0, 1), fl[i][None, None])[:, 0] for i in range(b)])


@pytest.mark.parametrize(
    ("up", "padding", "shape"),
    [(1, (2, 3, 0, 0), (1, 6)), (4, (25, 21, 25, 21), (7, 7)), (4, (10, -3, 4, 0), (9, 6)), (2, (0, 0, 1, 1), (3, 3))],
)
def test_upfirdn2d_matches_its_definition(up, padding, shape):
    g = torch.Generator().manual_seed(up + shape[0])
    x = torch.randn(2, 3, 9, 8, generator=g, dtype=F64)
    for f in (torch.randn(*shape, generator=g, dtype=F64), torch.randn(2, *shape, generator=g, dtype=F64)):
        got = upfirdn2d(x, f, up, padding, gain=1.5)
        torch.testing.assert_close(got, _upfirdn2d_by_definition(x, f, up, padding, 1.5), atol=1e-13, rtol=0)


def test_bandlimit_filter_structure():
    """Each of the up^2 polyphase components sums to 1/up^2; a rotation by pi/2 gives the transposed filter."""
    c, s = math.cos(0.4), math.sin(0.4)
    f = bandlimit_filter(torch.tensor([[c, s], [-s, c]]), a=3, amax=6, up=4)
    assert f.shape == (47, 47) and f.dtype == F64
    fp = nn.functional.pad(f, [0, 1, 0, 1]).reshape(12, 4, 12, 4).sum((0, 2))
    torch.testing.assert_close(fp, torch.full((4, 4), 1 / 16, dtype=F64), atol=1e-15, rtol=0)
    eye = bandlimit_filter(torch.eye(2), a=3, amax=6, up=4)
    torch.testing.assert_close(eye, eye.T, atol=1e-15, rtol=0)
    quarter = bandlimit_filter(torch.tensor([[0.0, 1.0], [-1.0, 0.0]]), a=3, amax=6, up=4)
    torch.testing.assert_close(quarter, eye, atol=1e-12, rtol=0)


def test_fractional_round_trip_of_band_limited_signal():
    """Lanczos-3 shift and back reproduces a smooth signal in the valid interior, not white noise."""
    d = torch.tensor([0.37, -0.61], dtype=F64)
    smooth = _smooth_images(b=2, n=48)
    noise = _images(b=2, h=48, w=48)
    errs = []
    for x in (smooth, noise):
        there, m1 = fractional_translate(x, d, -d)
        back, m2 = fractional_translate(there, -d, d)
        m = m2 * integer_translate(m1, torch.zeros(2), torch.zeros(2))[0]
        errs.append(float(((back - x) * m).square().sum() / (m.sum() * x.shape[1]) / x.square().mean()))
    assert errs[0] < 1e-4 < errs[1]


# --- EQ-T / EQ-T_frac / EQ-R end to end ---------------------------------------------------
def test_eq_identity_and_pointwise_are_exact_for_integer_shifts():
    x = _images()
    assert torch.isinf(eq_t(lambda z: z, x, out_layout=SPATIAL, num_samples=3).values).all()
    for act in (None, nn.GELU(), nn.ReLU()):
        res = eq_t(_pointwise(act=act), x, out_layout=SPATIAL, num_samples=3)
        assert res.unit == "dB" and res.higher_is_better
        assert bool((res.values > 200).all()), res.values
    bad = eq_t(Weighting(3, 32, 32), x, out_layout=SPATIAL, num_samples=3)
    assert bool((bad.values < 20).all()), bad.values
    pooled = 20 * math.log10(2) - 10 * math.log10(float(bad.extras["sse"].sum() / bad.extras["count"].sum()))
    assert bad.pooled is not None and math.isclose(bad.pooled, pooled, rel_tol=1e-12)


def test_eq_statistics_per_image_and_pooled_as_stylegan3():
    """Per image: PSNR of the draws' mean MSE; pooled: PSNR of total squared error over total count (StyleGAN3)."""
    x = _images(b=3, h=24, w=24) * torch.tensor([0.2, 1.0, 3.0], dtype=F64)[:, None, None, None]
    f = Weighting(3, 24, 24)
    res = eq_r(f, x, out_layout=SPATIAL, num_samples=2, seed=5)
    # the same draws by hand: per sample, rand(3, B) from the seeded generator, angle from its third row
    g = torch.Generator().manual_seed(5)
    sse, cnt, mse = (torch.zeros(3, dtype=F64) for _ in range(3))
    for _ in range(2):
        angle = (torch.rand(3, 3, generator=g, dtype=F64)[2] * 2 - 1) * math.pi
        ref, m = rotate(f(x), angle)
        e = ((f(rotate(x, angle)[0]) - ref) * m).square().sum((1, 2, 3))
        n = m.sum((1, 2, 3)) * 3  # valid pixels times channels, as StyleGAN3's per-channel mask
        sse, cnt, mse = sse + e, cnt + n, mse + e / n / 2
    torch.testing.assert_close(res.extras["sse"], sse, rtol=1e-12, atol=0)
    assert torch.equal(res.extras["count"], cnt) and len(set(cnt.tolist())) > 1  # masks differ in size
    torch.testing.assert_close(res.extras["mse"], mse, rtol=1e-12, atol=0)
    torch.testing.assert_close(res.values, 20 * math.log10(2) - 10 * torch.log10(mse), rtol=1e-12, atol=0)
    assert math.isclose(res.pooled, 20 * math.log10(2) - 10 * math.log10(float(sse.sum() / cnt.sum())), rel_tol=1e-12)
    mean_mse = 20 * math.log10(2) - 10 * math.log10(float(mse.mean()))  # the old 'pooled': another number
    assert abs(res.pooled - mean_mse) > 1e-3, (res.pooled, mean_mse)
    assert res.pooled_definition == POOLED_DEFINITION and res.params["peak_to_peak"] == 2.0
    assert res.params["mask"] == "stylegan3-rotated-square" and not res.params["pseudo_rotation"]
    one = eq_r(f, x, out_layout=SPATIAL, num_samples=2, seed=5, peak_to_peak=1.0)
    torch.testing.assert_close(one.values, res.values - 20 * math.log10(2), rtol=0, atol=1e-12)


def test_eq_r_on_a_map_too_small_for_the_mask_is_nan_not_exact():
    """StyleGAN3's rotation mask is empty on maps of 12 px or less: no valid element, no value (not inf)."""
    f = Weighting(3, 12, 12)
    small = eq_r(f, _images(b=2, h=12, w=12), out_layout=SPATIAL, num_samples=1)
    assert torch.isnan(small.values).all() and math.isnan(small.pooled) and (small.extras["count"] == 0).all()
    res = eq_r(Weighting(3, 13, 13), _images(b=2, h=13, w=13), out_layout=SPATIAL, num_samples=1)
    assert bool(torch.isfinite(res.values).all()) and (res.extras["count"] == 3).all()  # one pixel, 3 channels
    lay = eq_layerwise(nn.Sequential(f), _images(b=2, h=12, w=12), {"0": SPATIAL}, metric="eq_r")
    assert torch.isnan(lay.per_element).all() and torch.isnan(lay.per_sqrt_element).all()


def test_eq_r_pseudo_rotation_option():
    """StyleGAN3 also band-limits f(Tx) by R*: off by default, since then even the identity is inexact."""
    x = _smooth_images(b=2, n=40)
    exact = eq_r(lambda z: z, x, out_layout=SPATIAL, num_samples=2, seed=1)
    pseudo = eq_r(lambda z: z, x, out_layout=SPATIAL, num_samples=2, seed=1, pseudo_rotation=True)
    assert torch.isinf(exact.values).all() and bool((pseudo.values > 30).all() & torch.isfinite(pseudo.values).all())
    assert bool((pseudo.extras["count"] < exact.extras["count"]).all()) and pseudo.params["pseudo_rotation"]


def test_eq_t_frac_sees_aliasing_of_pointwise_nonlinearity():
    """A 1x1 conv commutes with the Lanczos shift; a ReLU after it does not (it aliases)."""
    x = _images()
    linear = eq_t_frac(_pointwise(), x, out_layout=SPATIAL, num_samples=3)
    relu = eq_t_frac(_pointwise(act=nn.ReLU()), x, out_layout=SPATIAL, num_samples=3)
    weighting = eq_t_frac(Weighting(3, 32, 32), x, out_layout=SPATIAL, num_samples=3)
    assert bool((linear.values > 200).all())
    assert bool((relu.values < 60).all()) and bool((relu.values > weighting.values).all())
    assert linear.params["interpolation"] == "lanczos3"


def test_eq_r_controls():
    x = _images(h=33, w=33)
    assert bool((eq_r(_pointwise(), x, out_layout=SPATIAL, num_samples=3).values > 200).all())
    bad = eq_r(Weighting(3, 33, 33), x, out_layout=SPATIAL, num_samples=3)
    assert bool((bad.values < 20).all())


def test_eq_invariant_and_token_outputs():
    x = _images()
    const = eq_t(lambda z: torch.zeros(z.shape[0], 5, dtype=z.dtype), x, num_samples=2)
    assert const.params["output"] == "probs" and torch.isinf(const.values).all()
    assert bool((eq_t(SpatialLinear(3, 32, 32), x, output="logits", num_samples=2).values < 20).all())
    tokens = liecore.Layout.tokens((32, 32), num_prefix_tokens=1)
    assert torch.isinf(eq_t(Tokens(), x, out_layout=tokens, num_samples=2).values).all()
    assert bool((eq_t_frac(Tokens(), x, out_layout=tokens, num_samples=2).values > 200).all())


# --- per layer ----------------------------------------------------------------------------
class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.mix = nn.Conv2d(3, 4, 1)
        self.act = nn.GELU()
        self.pool = nn.AvgPool2d(2)
        self.weigh = Weighting(4, 16, 16)
        self.tokens = Tokens()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.weigh(self.pool(self.act(self.mix(z)))))


LAYERS = {
    "mix": SPATIAL,
    "act": SPATIAL,
    "pool": SPATIAL,
    "weigh": SPATIAL,
    "tokens": (SPATIAL, liecore.Layout.tokens((16, 16), num_prefix_tokens=1)),
}


def test_eq_layerwise_local_attribution_and_normalizations():
    model = Stack().double()
    x = _images()
    res = eq_layerwise(model, x, LAYERS, metric="eq_t", num_samples=2, seed=1)
    ln = dict(zip(res.layers, res.per_element.mean(0).tolist(), strict=True))
    assert max(ln["mix"], ln["act"], ln["pool"], ln["tokens"]) < 1e-25 < 1e-2 < ln["weigh"]
    # both normalizations, named; SSE/sqrt(N) = (SSE/N) sqrt(N) draw by draw
    one = eq_layerwise(model, x, LAYERS, metric="eq_t", num_samples=1, seed=1)
    torch.testing.assert_close(one.per_sqrt_element, one.per_element * one.count.sqrt())
    r = res.result("weigh", "sqrt_n")
    assert r.params["normalization"] == "sqrt_n" and r.values.shape == (3,) and not r.higher_is_better
    frac = eq_layerwise(model, x, LAYERS, metric="eq_t_frac", num_samples=2, seed=1)
    lf = dict(zip(frac.layers, frac.per_element.mean(0).tolist(), strict=True))
    assert lf["mix"] < 1e-20 < 1e-6 < lf["act"]  # the non-linearity aliases, the 1x1 conv does not
    assert not any(len(model.get_submodule(n)._forward_hooks) for n in LAYERS)  # hooks removed


def test_eq_layerwise_cumulative():
    model = Stack().double()
    x = _images()
    res = eq_layerwise(model, x, LAYERS, metric="eq_t", mode="cumulative", num_samples=2, seed=2)
    ln = dict(zip(res.layers, res.per_element.mean(0).tolist(), strict=True))
    assert max(ln["mix"], ln["act"], ln["pool"]) < 1e-25 < 1e-2 < min(ln["weigh"], ln["tokens"])


@pytest.mark.slow
def test_eq_layerwise_timm_resnet():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10).double().eval()
    layers = {"conv1": SPATIAL, "act1": SPATIAL, "layer1": SPATIAL}
    res = eq_layerwise(model, _images(b=2, h=64, w=64), layers, metric="eq_t_frac", seed=0)
    assert res.per_element.shape == (2, 3) and bool(torch.isfinite(res.per_element).all())
    assert res.summary()["act1"]["n"] > 0


# --- shift consistency --------------------------------------------------------------------
def test_circular_consistency_of_circular_model_is_100():
    x = _images(b=4)
    model = CircularNet().double()
    res = circular_shift_consistency(model, x, num_pairs=4)
    assert res.unit == "percent" and bool((res.values == 100).all())
    bad = circular_shift_consistency(SpatialLinear(3, 32, 32), _images(b=8), num_pairs=4)
    assert bad.mean < 60


def test_crop_consistency_controls():
    x = _images(b=8, h=48, w=48)
    const = shift_consistency(
        lambda z: torch.arange(10, dtype=z.dtype).expand(z.shape[0], 10), x, num_pairs=3, max_shift=16
    )
    assert bool((const.values == 100).all()) and const.params["crop"] == (32, 32)
    bad = shift_consistency(SpatialLinear(3, 32, 32), x, num_pairs=4, max_shift=16)
    assert bad.mean < 60
    vals = set(bad.values.tolist())
    assert vals <= {0.0, 25.0, 50.0, 75.0, 100.0}


@pytest.mark.slow
def test_shift_consistency_timm_model_on_crops():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    res = shift_consistency(model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), num_pairs=2)
    assert res.values.shape == (2,) and bool(((res.values >= 0) & (res.values <= 100)).all())


# --- sampled equivariance error -----------------------------------------------------------
def test_sampled_error_zero_for_invariant_function():
    x = _images()
    normalized = lambda z: z.flatten(1) / z.flatten(1).norm(dim=1, keepdim=True)  # noqa: E731
    inv = sampled_equivariance_error(normalized, x, "contrast", output="logits", t_max=0.5)
    assert inv.values.max() < 1e-28
    assert inv.params["generator"] == "contrast" and inv.params["t_range"] == (-0.5, 0.5)
    raw = sampled_equivariance_error(lambda z: z.flatten(1), x, "contrast", output="logits", t_max=0.5)
    assert raw.values.min() > 1e-2


def test_sampled_error_is_t_squared_lee():
    """E_t ||f(rho(t)x) - f(x)||^2/dim ~ (t_max^2/3) LEE, and error/t^2 -> LEE, for small t."""
    x = _smooth_images(b=2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), Weighting(4, 32, 32)).double()
    f = lambda z: model(z).mean((-2, -1))  # noqa: E731
    lee = liecore.lee(f, x, "translate_x", output="logits").values[:, 0]
    small = sampled_equivariance_error(f, x, "translate_x", output="logits", t_max=0.01, num_samples=8)
    torch.testing.assert_close(small.extras["lee_estimate"], lee, rtol=0.1, atol=0)
    ratio = small.values / (0.01**2 / 3 * lee)
    assert bool(((ratio > 0.3) & (ratio < 2.0)).all())  # a U[-a, a] draw of t^2 is noisy with 8 samples
    big = sampled_equivariance_error(f, x, "translate_x", output="logits", t_max=0.02, num_samples=8)
    torch.testing.assert_close(big.extras["lee_estimate"], lee, rtol=0.1, atol=0)
    assert bool((big.values > small.values).all())
    # spatial output (smooth, so that the output's own interpolation error stays small):
    # rho_out^{-1} is applied; error/t^2 -> LEE of the spatial map
    ramp = 1.0 + 0.5 * liecore.coords(32, F64)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh()).double()
    model.append(Ramp(ramp))
    lee_sp = liecore.lee(model, x, "translate_x", out_layout=SPATIAL).values[:, 0]
    for t_max, rtol in ((0.01, 0.5), (0.001, 0.05)):  # converges as t_max -> 0
        spatial = sampled_equivariance_error(model, x, "translate_x", out_layout=SPATIAL, t_max=t_max, num_samples=4)
        torch.testing.assert_close(spatial.extras["lee_estimate"], lee_sp, rtol=rtol, atol=0)


def test_sampled_layerwise_matches_end_to_end_and_localizes():
    x = _smooth_images(b=2)
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Tanh(), Weighting(4, 32, 32), SpatialLinear(4, 32, 32)).double()
    layers = {"0": SPATIAL, "1": SPATIAL, "2": SPATIAL, "3": (SPATIAL, liecore.Layout.invariant())}
    kw = dict(num_samples=3, t_max=0.05, seed=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    for gen in ("rotate", "brightness"):
        # cumulative: the last layer is the model's output, with the end-to-end draws of t
        cum = sampled_layerwise(model, x, layers, gen, mode="cumulative", **kw)
        e2e = sampled_equivariance_error(model, x, gen, output="logits", **kw)
        torch.testing.assert_close(cum.per_element[:, 3], e2e.values, rtol=1e-12, atol=0)
        # local: the first layer sees the network input (full action, colour included)
        loc = sampled_layerwise(model, x, layers, gen, **kw)
        first = sampled_equivariance_error(model[0], x, gen, out_layout=SPATIAL, **kw)
        torch.testing.assert_close(loc.per_element[:, 0], first.values, rtol=1e-12, atol=0)
    assert loc.metric == "sampled_equivariance_error" and loc.params["generator"] == "brightness"
    assert loc.count[0].tolist() == [4 * 32 * 32] * 3 + [10]
    torch.testing.assert_close(loc.per_sqrt_element, loc.per_element * loc.count.sqrt())
    # rotation, layer by layer, small t: the 1x1 convolution only shows the round trip of the
    # interpolation (its square vanishes faster than t^2), the fixed spatial weighting and
    # the spatial template are not equivariant (t^2 LEE)
    rot = sampled_layerwise(model, x, layers, "rotate", num_samples=3, t_max=0.005, seed=3).summary()
    assert rot["0"]["n"] < 2e-2 * rot["2"]["n"] and rot["0"]["n"] < 1e-4 * rot["3"]["n"], rot
    with pytest.raises(ValueError, match="mode"):
        sampled_layerwise(model, x, layers, mode="global")
    assert not any(len(m._forward_hooks) for m in model.modules())


def test_layers_writing_into_the_input_change_neither_the_caller_nor_the_metrics():
    from .test_lee import inplace_net

    x = _images(b=2, h=40, w=40)
    x0 = x.clone()
    for name, metric in METRICS.items():
        got = metric(inplace_net(True), x, seed=0)
        assert torch.equal(x, x0), name
        torch.testing.assert_close(got.values, metric(inplace_net(False), x, seed=0).values, rtol=1e-12, atol=0)
    layers = {"2": SPATIAL, "5": liecore.Layout.invariant()}
    got = eq_layerwise(inplace_net(True), x, layers, metric="eq_t_frac", mode="cumulative")
    assert torch.equal(x, x0)
    torch.testing.assert_close(
        got.per_element, eq_layerwise(inplace_net(False), x, layers, metric="eq_t_frac", mode="cumulative").per_element
    )


def _inplace_inside(inplace: bool) -> nn.Module:
    """In-place layers after hooked ones: a ReLU and an ``x += 1`` (or their out-of-place twins)."""
    from .test_lee import AddOne, AddOneInPlace

    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(4, 4, 3, padding=1),
            AddOneInPlace() if inplace else AddOne(),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 5),
        )
        .double()
        .eval()
    )


@pytest.mark.parametrize("mode", ["local", "cumulative"])
@pytest.mark.parametrize("metric", ["eq_t_frac", "eq_r", "sampled"])
def test_layerwise_metrics_record_in_place_layers_as_called(metric, mode):
    # "0" and "2" are followed by layers that write into their outputs; "1" and "3" write
    # into their own inputs: records must hold the values as each layer saw and made them
    x = _images(b=2, h=24, w=24)
    layers = {"0": SPATIAL, "1": SPATIAL, "2": SPATIAL, "3": SPATIAL, "7": liecore.Layout.invariant()}

    def run(inplace):
        model = _inplace_inside(inplace)
        if metric == "sampled":
            res = sampled_layerwise(model, x, layers, "rotate", mode=mode, num_samples=2, t_max=0.05, seed=1)
        else:
            res = eq_layerwise(model, x, layers, metric=metric, mode=mode, num_samples=2, seed=1)
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        return res

    got, ref = run(True), run(False)
    assert (ref.per_element[:, 1] > 0).all()  # the ReLU aliases: a real, non-zero local error
    torch.testing.assert_close(got.per_element, ref.per_element, rtol=1e-12, atol=0)
