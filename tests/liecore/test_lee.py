"""The LEE statistic and its result object."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import liecore
from liecore import Layout, lie_derivatives

from .test_derivative import smooth_cnn


def test_values_are_squared_norm_over_dim_with_mean_and_stderr():
    f = smooth_cnn("invariant")
    x = torch.rand(5, 3, 10, 10, dtype=torch.float64)
    res = liecore.lee(f, x, ["rotate", "translate_y"], output="logits")
    _, d = lie_derivatives(f, x, ["rotate", "translate_y"])
    expect = d.square().mean(-1).T  # (B, G): ||L f||^2 / dim(out)
    torch.testing.assert_close(res.values, expect)
    torch.testing.assert_close(res.mean_abs, d.abs().mean(-1).T)
    torch.testing.assert_close(res.mean, expect.mean(0))
    torch.testing.assert_close(res.stderr, expect.std(0) / math.sqrt(5))
    torch.testing.assert_close(res["rotate"], expect[:, 0])
    s = res.summary()["translate_y"]
    assert s["n"] == 5 and s["lee"] == pytest.approx(float(expect[:, 1].mean()))


def test_default_output_is_softmax_probabilities():
    f = smooth_cnn("invariant")
    x = torch.rand(3, 3, 10, 10, dtype=torch.float64)
    probs = liecore.lee(f, x, "rotate")
    manual = liecore.lee(lambda z: torch.softmax(f(z), -1), x, "rotate", output="logits")
    assert probs.output == "probs"
    torch.testing.assert_close(probs.values, manual.values)
    assert not torch.allclose(probs.values, liecore.lee(f, x, "rotate", output="logits").values)
    with pytest.raises(ValueError, match="classifiers"):
        liecore.lee(nn.Identity(), x, "rotate", output="probs", out_layout=Layout.spatial())


def test_batching_does_not_change_values():
    f = smooth_cnn("invariant")
    x = torch.rand(5, 3, 10, 10, dtype=torch.float64)
    a = liecore.lee(f, x, None, mean=[0.5] * 3, std=[0.25] * 3)
    b = liecore.lee(f, x, None, mean=[0.5] * 3, std=[0.25] * 3, batch_size=2, chunk_size=3)
    assert a.generators == liecore.PAPER_GENERATORS
    torch.testing.assert_close(a.values, b.values, rtol=1e-10, atol=1e-20)


def test_cpu_passes_are_capped_in_tangent_pixels(monkeypatch):
    f = smooth_cnn("invariant")
    calls = []

    def counted(z):
        calls.append(z.shape[0])
        return f(z)

    x = torch.rand(5, 3, 10, 10, dtype=torch.float64)
    big = liecore.lee(counted, x, ["rotate", "translate_x"], output="logits")
    assert calls == [5]  # 5 x 2 x 100 tangent pixels: under the default cap, one pass
    calls.clear()
    monkeypatch.setattr("liecore._lee.CPU_PIXELS_PER_PASS", 2 * 2 * 100)  # two images per pass
    small = liecore.lee(counted, x, ["rotate", "translate_x"], output="logits", batch_size=4)
    assert calls == [2, 2, 1]
    torch.testing.assert_close(small.values, big.values, rtol=1e-12, atol=1e-30)


def test_assert_equivariant_passes_and_fails():
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    liecore.assert_equivariant(nn.Conv2d(3, 2, 1).double(), x, ["rotate", "scale"], out_layout=Layout.spatial())
    with pytest.raises(AssertionError, match="not equivariant"):
        liecore.assert_equivariant(nn.Conv2d(3, 2, 3).double(), x, ["rotate"], out_layout=Layout.spatial())


def test_readme_worked_example():
    x = torch.arange(5.0, dtype=torch.float64).reshape(1, 1, 1, 5)
    assert liecore.input_tangent(x, "translate_x").flatten().tolist() == [0.0, 2.0, 2.0, 2.0, 0.0]
    assert liecore.lee(nn.Identity(), x, "translate_x", out_layout=Layout.spatial()).values.item() == 0.0
    res = liecore.lee(lambda z: z.mean((1, 2, 3))[:, None], x, "translate_x", output="logits")
    assert res.values.item() == pytest.approx(1.44)


class FusedFlagNet(nn.Module):
    """A classifier with timm's ``fused_attn`` flag whose forward refuses to run with it on."""

    def __init__(self):
        super().__init__()
        self.fused_attn = True
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        assert not self.fused_attn, "differentiated with fused attention on"
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


def train_mode_bn_net() -> nn.Module:
    """A classifier with batch norm, left in train mode (batch statistics, in-place counter)."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).double()
    m[1].running_mean.normal_()
    m[1].running_var.uniform_(0.5, 2.0)
    return m.train()


@pytest.mark.parametrize("output", ["probs", "logits"])
def test_eval_mode_and_fused_attention_off_for_every_output(output):
    """The softmax wrapper of output="probs" must not hide the model from eval mode and the
    fused-attention switch."""
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    m = train_mode_bn_net()
    stats = [t.clone() for t in m[1].buffers()]
    res = liecore.lee(m, x, ["rotate", "translate_x"], output=output)
    assert m.training and m[1].training
    assert all(torch.equal(a, b) for a, b in zip(stats, m[1].buffers(), strict=True))  # no batch statistics
    m.eval()
    post = (lambda z: torch.softmax(m(z), -1)) if output == "probs" else m
    expect = liecore.lee(post, x, ["rotate", "translate_x"], output="logits")
    torch.testing.assert_close(res.values, expect.values, rtol=1e-12, atol=0)

    f = FusedFlagNet().double()
    res = liecore.lee(f, x, "rotate", output=output)
    assert f.fused_attn is True and (res.values > 0).all()


class AddOneInPlace(nn.Module):
    """Writes into its input: ``x += 1`` (not idempotent, unlike an in-place ReLU)."""

    def forward(self, x):
        return x.add_(1.0)


class AddOne(nn.Module):
    def forward(self, x):
        return x + 1.0


def inplace_net(inplace: bool) -> nn.Module:
    """In-place first layers (or their out-of-place twins) before a small classifier."""
    torch.manual_seed(0)
    first = [nn.ReLU(inplace=True), AddOneInPlace()] if inplace else [nn.ReLU(), AddOne()]
    rest = [nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)]
    return nn.Sequential(*first, *rest).double().eval()


def test_layers_writing_into_the_input_change_neither_the_caller_nor_the_result():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    x0 = x.clone()
    gens = ["translate_x", "rotate", "scale"]
    ref = lie_derivatives(inplace_net(False), x, gens)[1]
    net = inplace_net(True)
    for chunk in (None, 1):  # one primal pass per chunk: each needs the untouched input
        got = lie_derivatives(net, x, gens, chunk_size=chunk)[1]
        assert torch.equal(x, x0)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(liecore.lie_derivative(net, x, "rotate"), ref[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(
        liecore.lee(net, x, gens, batch_size=1).values, liecore.lee(inplace_net(False), x, gens).values
    )
    assert torch.equal(x, x0)
