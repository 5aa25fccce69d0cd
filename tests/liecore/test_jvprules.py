"""liecore's tangent rules (linear, layer norm, softmax, GELU, SiLU) against PyTorch's own, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp, vmap

import liecore
from liecore._derivative import batched_jvp
from liecore._jvprules import TangentRules

from .test_timm_families import FAMILIES

timm = pytest.importorskip("timm")


def reference(f, x, tangents):
    """PyTorch's rules: vmap(jvp(f)) with no mode."""
    with torch.no_grad():
        return vmap(lambda t: jvp(f, (x.clone(),), (t,)), out_dims=(None, 0))(tangents)


def with_rules(f, x, tangents):
    with torch.no_grad(), TangentRules() as rules:
        y, d = vmap(lambda t: jvp(f, (x.clone(),), (t,)), out_dims=(None, 0))(tangents)
    return y, d, rules.rerouted


def _params(*shape):
    return nn.Parameter(torch.randn(*shape, dtype=torch.float64))


W, B, G, H = _params(7, 5), _params(7), _params(4, 5), _params(4, 5)
LN = nn.LayerNorm(5, dtype=torch.float64)
with torch.no_grad():
    LN.weight.normal_()
    LN.bias.normal_()

# (function of x (2, 3, 4, 5), the rule it must take, how many calls)
RULED = {
    "nn.Linear": (lambda x: F.linear(x, W, B), "linear", 1),
    "linear, no bias": (lambda x: F.linear(x, W), "linear", 1),
    "linear, bias keyword": (lambda x: F.linear(x, W, bias=B), "linear", 1),
    "linear, bias computed in f": (lambda x: F.linear(x, W, torch.cat([B[:3], B[3:]])), "linear", 1),
    "nn.LayerNorm": (LN, "layer_norm", 1),
    "layer norm, no affine": (lambda x: F.layer_norm(x, (5,)), "layer_norm", 1),
    "layer norm over two dims": (lambda x: F.layer_norm(x, (4, 5), G, H, eps=1e-3), "layer_norm", 1),
    "layer norm, list shape": (lambda x: F.layer_norm(x, [5], LN.weight, None), "layer_norm", 1),
    "F.softmax": (lambda x: F.softmax(x, dim=1), "softmax", 1),
    "torch.softmax": (lambda x: torch.softmax(x, -1), "softmax", 1),
    "Tensor.softmax": (lambda x: (3 * x).softmax(dim=2), "softmax", 1),
    "gelu": (F.gelu, "gelu", 1),
    "gelu tanh": (lambda x: F.gelu(x, approximate="tanh"), "gelu", 1),
    "nn.GELU": (nn.GELU(), "gelu", 1),
    "silu": (F.silu, "silu", 1),
    "nn.SiLU": (nn.SiLU(), "silu", 1),
    "chain": (lambda x: F.linear(F.gelu(LN(x)), W).softmax(-1), None, 4),
}

# calls that must keep PyTorch's rule (a parameter computed from the input or inside f, ...)
KEPT = {
    "weight from the input": lambda x: F.linear(x, x[0, 0, :1, :].expand(5, 5).T * 0.3),
    "bias from the input": lambda x: F.linear(x, W, torch.cat([x[0, 0, 0], x[0, 0, 1, :2]])),
    "layer-norm weight from the input": lambda x: F.layer_norm(x, (5,), x[0, 0, 0]),
    "softmax with dtype": lambda x: F.softmax(x, dim=-1, dtype=torch.float64),
    "silu in place": lambda x: F.silu(x * 1.0, inplace=True),
}


@pytest.mark.parametrize("name", list(RULED))
def test_rules_match_pytorch_in_float64(name):
    f, rule, calls = RULED[name]
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    tangents = torch.randn(6, *x.shape, dtype=torch.float64)
    y0, d0 = reference(f, x, tangents)
    y1, d1, rerouted = with_rules(f, x, tangents)
    assert sum(rerouted.values()) == calls and (rule is None or rerouted[rule] == calls), rerouted
    torch.testing.assert_close(y1, y0, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(d1, d0, rtol=1e-12, atol=1e-13)
    assert d1.abs().max() > 1e-3  # a real tangent, not zeros on both sides


@pytest.mark.parametrize("name", list(KEPT))
def test_calls_that_do_not_qualify_keep_pytorchs_rule(name):
    f = KEPT[name]
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    tangents = torch.randn(3, *x.shape, dtype=torch.float64)
    _, d0 = reference(f, x, tangents)
    _, d1, rerouted = with_rules(f, x, tangents)
    assert sum(rerouted.values()) == 0, rerouted
    torch.testing.assert_close(d1, d0, rtol=1e-12, atol=1e-13)


def test_single_tangent_and_reverse_mode():
    f = RULED["chain"][0]
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    t = torch.randn_like(x)
    with torch.no_grad(), TangentRules() as rules:
        _, d = jvp(f, (x,), (t,))
    assert rules.rerouted.total() == 4
    torch.testing.assert_close(d, jvp(f, (x,), (t,))[1], rtol=1e-12, atol=1e-13)
    # grad mode on: nothing is rerouted, reverse mode works as without the rules
    xg = x.clone().requires_grad_()
    with TangentRules() as rules:
        (g,) = torch.autograd.grad(f(xg).square().sum(), xg)
    assert rules.rerouted.total() == 0
    (g0,) = torch.autograd.grad(f(xg).square().sum(), xg)
    torch.testing.assert_close(g, g0, rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, kw, size",
    [
        ("test_vit", dict(img_size=32), 32),
        ("test_convnext", {}, 32),
        # computes its qkv bias in forward (a tensor made inside the transforms)
        ("beit_base_patch16_224", dict(img_size=32, depth=1, embed_dim=32, num_heads=2), 32),
    ],
)
def test_timm_models_lie_derivatives_equal_pytorchs_rules(name, kw, size):
    model = timm.create_model(name, pretrained=False, num_classes=10, **kw).double().eval()
    f = liecore.with_output(model, "probs")
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    tangents = torch.stack(
        [liecore.input_tangent(x, g, mean=[0.5] * 3, std=[0.5] * 3) for g in ("translate_x", "rotate", "contrast")]
    )
    with liecore.differentiable_mode(f):
        y0, d0 = reference(f, x, tangents)
        y1, d1 = batched_jvp(f, x, tangents)
        _, _, rerouted = with_rules(f, x, tangents)
    assert rerouted["linear"] > 0 and rerouted["gelu"] > 0 and rerouted["layer_norm"] > 0, rerouted
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(d1, d0, rtol=1e-10, atol=1e-14)
    assert d0.abs().max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_with_rules_matches_pytorchs_rules(name):
    model, size = FAMILIES[name]()
    model = model.double().eval()
    with torch.no_grad():  # zero-initialized heads would make every tangent 0
        for mod in model.modules():
            if isinstance(mod, nn.Linear) and not mod.weight.any():
                mod.weight.normal_(0, 0.02)
    f = liecore.with_output(model, "probs")
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    tangents = torch.stack([liecore.input_tangent(x, g) for g in ("translate_x", "rotate")])
    with liecore.differentiable_mode(f):
        _, d0 = reference(f, x, tangents)
        _, d1, rerouted = with_rules(f, x, tangents)
    assert rerouted["linear"] >= 1 and rerouted["softmax"] >= 1, rerouted
    assert d0.abs().max() > 1e-4
    torch.testing.assert_close(d1, d0, rtol=1e-10, atol=1e-12 * float(d0.abs().max()))
