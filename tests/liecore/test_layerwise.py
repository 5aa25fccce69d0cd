"""Layerwise decomposition of the Lie derivative."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import liecore
from liecore import ActivationLayouts, Layout, layerwise

from .test_lee import FusedFlagNet, inplace_net, train_mode_bn_net


class ResidualCNN(nn.Module):
    """Only leaf layers and residual additions: the decomposition must be complete."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.relu(self.bn(self.conv1(x)))
        h = h + self.relu(self.conv2(h))  # the same ReLU called twice: two entries
        return self.fc(self.pool(self.down(h)).flatten(1))


class MeanMix(nn.Module):
    """Token mixing by a leaf layer (no children, so it is recorded)."""

    def forward(self, t):
        return t + t.mean(1, keepdim=True)


class TinyViT(nn.Module):
    """Patch embedding, a learned position embedding (not equivariant) and a class token."""

    def __init__(self, pos: bool):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.pos = nn.Parameter(torch.randn(1, 1 + 36, 16) * (1.0 if pos else 0.0))
        self.mix = MeanMix()
        self.norm = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1) + self.pos
        t = t + self.fc2(self.act(self.fc1(self.norm(self.mix(t)))))
        return self.head(t[:, 0])


def _model():
    torch.manual_seed(0)
    m = ResidualCNN().double().eval()
    m.bn.running_mean.normal_()
    m.bn.running_var.uniform_(0.5, 2.0)
    return m


def test_contributions_add_up_for_a_leaf_only_cnn():
    m = _model()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    res = layerwise(m, x, "rotate")
    names = [r.name for r in res.records]
    assert names == ["conv1", "bn", "relu", "conv2", "relu", "down", "pool", "fc"]
    assert [r.index for r in res.records] == list(range(8))
    assert {r.kind for r in res.records} >= {"convolution", "normalization", "activation", "downsampling", "linear"}
    # the end-to-end value comes from its own JVP
    e2e = liecore.lee(m, x, "rotate").values[:, 0]
    torch.testing.assert_close(res.end_to_end, e2e)
    assert (res.unattributed < 1e-20 * res.end_to_end.max()).all(), res.unattributed
    torch.testing.assert_close(res.total_share(), res.end_to_end, rtol=1e-9, atol=0)
    # conv1/conv2 (stride 1, padding 1) alias only at the border; ReLU and the strided conv dominate
    values = {r.index: float(r.value.mean()) for r in res.records}
    assert values[7] == 0.0  # invariant -> invariant layer
    assert values[2] > 0 and values[5] > 0
    # nothing is left on the modules
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks


def test_unattributed_part_shows_non_equivariant_glue():
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    layouts = ActivationLayouts(tokens=(Layout.tokens((6, 6), num_prefix_tokens=1),))
    torch.manual_seed(0)
    with_pos = layerwise(TinyViT(pos=True).double(), x, "translate_x", layouts=layouts)
    torch.manual_seed(0)
    without = layerwise(TinyViT(pos=False).double(), x, "translate_x", layouts=layouts)
    assert (with_pos.unattributed > 1e-2 * with_pos.end_to_end).all()
    # without the position embedding all glue is equivariant (class token concatenation,
    # residual addition, class-token readout)
    assert (without.unattributed < 1e-20 * without.end_to_end).all(), without.unattributed
    assert (without.end_to_end > 1e-9).all()
    for res in (with_pos, without):
        torch.testing.assert_close(res.total_share(), res.end_to_end, rtol=1e-9, atol=1e-30)


def test_exact_and_stochastic_agree_within_their_error():
    m = _model()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    exact = layerwise(m, x, "translate_x", method="exact")
    stoch = layerwise(m, x, "translate_x", method="stochastic", num_probes=300, seed=1)
    assert stoch.num_probes == 300
    checked = 0
    for a, b in zip(exact.records, stoch.records, strict=True):
        assert a.name == b.name
        for i in range(2):
            if a.value[i] > 0:
                z = abs(float(b.value[i] - a.value[i])) / float(b.stderr[i])
                assert z < 5, (a.name, float(a.value[i]), float(b.value[i]), float(b.stderr[i]))
                checked += 1
    assert checked >= 8
    with pytest.raises(ValueError, match="method"):
        layerwise(m, x, "rotate", method="magic")


def test_undeclared_token_layout_is_a_clear_error():
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="declared token layout"):
        layerwise(TinyViT(pos=True).double(), x, "rotate")


@pytest.mark.parametrize("method", ["exact", "stochastic"])
def test_eval_mode_and_fused_attention_off_through_probs(method):
    """The end-to-end JVP of the default output (softmax) runs in eval mode with fused
    attention off too, and the modules are restored."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    m = train_mode_bn_net()
    stats = [t.clone() for t in m[1].buffers()]
    res = layerwise(m, x, "rotate", method=method, num_probes=20)
    assert m.training and m[1].training
    assert all(torch.equal(a, b) for a, b in zip(stats, m[1].buffers(), strict=True))
    torch.testing.assert_close(res.end_to_end, liecore.lee(m, x, "rotate").values[:, 0], rtol=1e-12, atol=0)
    f = FusedFlagNet().double()
    res = layerwise(f, x, "rotate", method=method, num_probes=20)
    assert f.fused_attn is True and (res.end_to_end > 0).all()


def test_layers_writing_into_the_input():
    """In-place first layers: the caller's tensor is untouched and every pass (record,
    push-forward, end-to-end JVP, probes) sees the original input."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    x0 = x.clone()
    ref = layerwise(inplace_net(False), x, "translate_x")
    net = inplace_net(True)
    exact = layerwise(net, x, "translate_x")
    stoch = layerwise(net, x, "translate_x", method="stochastic", num_probes=20)
    assert torch.equal(x, x0)
    for res in (exact, stoch):
        torch.testing.assert_close(res.end_to_end, liecore.lee(inplace_net(False), x, "translate_x").values[:, 0])
        torch.testing.assert_close(res.total_share(), res.end_to_end, rtol=1e-9, atol=0)
        for a, b in zip(ref.records, res.records, strict=True):
            torch.testing.assert_close(b.share, a.share, rtol=1e-9, atol=1e-30)
    for a, b in zip(ref.records, exact.records, strict=True):
        torch.testing.assert_close(b.value, a.value, rtol=1e-9, atol=1e-30)
    assert (exact.unattributed < 1e-20 * exact.end_to_end).all()


def test_stochastic_table_adds_up_and_shares_are_exact():
    m = _model()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    exact = layerwise(m, x, "translate_x")
    stoch = layerwise(m, x, "translate_x", method="stochastic", num_probes=50)
    torch.testing.assert_close(stoch.total_share(), stoch.end_to_end, rtol=1e-9, atol=0)
    torch.testing.assert_close(
        stoch.unattributed_share, exact.unattributed_share, rtol=0, atol=1e-9 * float(exact.end_to_end.max())
    )
    for a, b in zip(exact.records, stoch.records, strict=True):
        torch.testing.assert_close(b.share, a.share, rtol=1e-9, atol=1e-30)
    with pytest.raises(ValueError, match="num_probes"):
        layerwise(m, x, "translate_x", method="stochastic", num_probes=0)


class KeywordNet(nn.Module):
    """Calls a layer with its input by keyword (``conv(input=h)``)."""

    def __init__(self, keyword: bool):
        super().__init__()
        self.keyword = keyword
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Tanh()
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        h = self.act(self.c1(x))
        h = self.c2(input=h) if self.keyword else self.c2(h)
        return self.fc(self.pool(self.act(h)).flatten(1))


@pytest.mark.parametrize("method", ["exact", "stochastic"])
def test_layer_called_with_its_input_by_keyword(method):
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    torch.manual_seed(0)
    kw = KeywordNet(keyword=True).double()
    pos = KeywordNet(keyword=False).double()
    pos.load_state_dict(kw.state_dict())
    a = layerwise(pos, x, "rotate", method=method, num_probes=20)
    b = layerwise(kw, x, "rotate", method=method, num_probes=20)
    assert [r.name for r in b.records] == ["c1", "act", "c2", "act", "pool", "fc"]
    assert [r.name for r in a.records] == [r.name for r in b.records]
    for ra, rb in zip(a.records, b.records, strict=True):
        torch.testing.assert_close(rb.value, ra.value, rtol=1e-9, atol=1e-30)
        torch.testing.assert_close(rb.share, ra.share, rtol=1e-9, atol=1e-30)
    assert float(b.records[2].value.min()) > 0  # the strided convolution is not equivariant
    if method == "exact":
        assert (b.unattributed < 1e-20 * b.end_to_end).all(), b.unattributed


def _image_rngs(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_stochastic_probes_of_each_image_come_from_its_own_generator():
    """With one CPU generator per image, a batch's stochastic values are those of each image
    alone with its own generator, and those of the image alone with that seed (the device
    generator of ``seed=`` on the CPU draws the same probes)."""
    m = _model()
    x = torch.rand(5, 3, 16, 16, dtype=torch.float64)
    seeds = [11, 7, 2024, 3, 11]
    kw = dict(method="stochastic", num_probes=6)
    batch = layerwise(m, x, "translate_x", rng=_image_rngs(seeds), **kw)
    assert batch.num_probes == 6
    for i, s in enumerate(seeds):
        alone = layerwise(m, x[i : i + 1], "translate_x", rng=_image_rngs([s]), **kw)
        by_seed = layerwise(m, x[i : i + 1], "translate_x", seed=s, **kw)
        for ref in (alone, by_seed):
            for a, b in zip(ref.records, batch.records, strict=True):
                assert a.name == b.name
                for field in ("value", "stderr", "share"):
                    where = f"{a.name}.{field}, image {i}"
                    torch.testing.assert_close(
                        getattr(b, field)[i : i + 1],
                        getattr(a, field),
                        rtol=1e-10,
                        atol=0,
                        msg=lambda s, w=where: f"{w}: {s}",
                    )
            # unattributed parts are rounding here (a leaf-only network): compared on the end-to-end scale
            scale = float(ref.end_to_end[0])
            for field in ("end_to_end", "unattributed", "unattributed_share"):
                torch.testing.assert_close(
                    getattr(batch, field)[i : i + 1],
                    getattr(ref, field),
                    rtol=1e-10,
                    atol=1e-12 * scale,
                    msg=lambda s, f=field: f"{f}, image {i}: {s}",
                )
        torch.testing.assert_close(batch.total_share(), batch.end_to_end, rtol=1e-9, atol=0)
    # the control: the same image with another generator gets other probes, so other values
    other = layerwise(m, x[:1], "translate_x", rng=_image_rngs([12]), **kw)
    pairs = zip(other.records, batch.records, strict=True)
    assert any(not torch.allclose(a.value, b.value[:1], rtol=1e-6) for a, b in pairs if float(a.value[0]) > 0)


def test_stochastic_rng_forms():
    m = _model()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    kw = dict(method="stochastic", num_probes=4)
    a = layerwise(m, x, "rotate", rng=5, **kw)
    b = layerwise(m, x, "rotate", rng=torch.Generator().manual_seed(5), **kw)
    c = layerwise(m, x, "rotate", seed=5, **kw)  # the CPU device generator: the same draws
    for ra, rb, rc in zip(a.records, b.records, c.records, strict=True):
        torch.testing.assert_close(rb.value, ra.value, rtol=0, atol=0)
        torch.testing.assert_close(rc.value, ra.value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="2 images"):
        layerwise(m, x, "rotate", rng=_image_rngs([1, 2, 3]), **kw)
    with pytest.raises(TypeError, match="rng"):
        layerwise(m, x, "rotate", rng=[1, 2], **kw)


def test_layer_recorder_records_injects_and_leaves_no_hooks():
    """The one hook recorder, driven only through its methods: record() returns every layer call in
    order (copies of input and output, the network input flagged), inject() adds scale * v to the
    chosen call's output and nothing else, and leaving the context removes every hook."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    with liecore.LayerwiseRecorder(model) as rec:
        y, calls = rec.record(model, x)
        assert [c.name for c in calls] == ["0", "1", "2"] and [c.is_input for c in calls] == [True, False, False]
        h = model[0](x)
        torch.testing.assert_close(calls[1].x, h, rtol=0, atol=0)  # copied before ReLU wrote into it
        torch.testing.assert_close(calls[1].y, h.clamp_min(0), rtol=0, atol=0)
        v = torch.randn(5, 4, dtype=torch.float64)
        assert rec.set_vectors([None, v, None]) == 1
        out = rec.inject(model, x.clone(), torch.tensor([2.0], dtype=torch.float64))
        torch.testing.assert_close(out, model[2](h.clamp_min(0) + 2 * v), rtol=0, atol=0)
        torch.testing.assert_close(model(x.clone()), y, rtol=0, atol=0)  # hooks idle outside record/inject
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_layer_kind_files_timms_fused_norm_activation_layers_apart():
    """timm's BatchNormAct2d (batch norm then ReLU6 in one module, recorded as one layer) is not plain normalization:
    its contribution is mostly the nonlinearity's."""
    import timm.layers

    from liecore import layer_kind

    for cls in (
        timm.layers.BatchNormAct2d,
        timm.layers.GroupNormAct,
        timm.layers.LayerNormAct2d,
        timm.layers.FrozenBatchNormAct2d,
        timm.layers.EvoNorm2dS0,
    ):
        assert layer_kind(cls.__name__) == "normalization_activation", cls
    assert layer_kind("BatchNorm2d") == layer_kind("LayerNorm") == "normalization"
    assert layer_kind("ReLU6") == "activation"
