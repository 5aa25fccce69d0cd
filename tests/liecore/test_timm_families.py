"""Every timm family runs end to end through LEE and the layerwise decomposition.

Random-init models, shrunk by constructor arguments, on small inputs. Token models get
token grids of at least 4x4: on a 2x2 grid the cubic derivative (central differences with
the reflection boundary) is identically zero, so token layers would look invariant and the
token path would go untested. Layouts come from
the attributes timm declares (``num_prefix_tokens``, ``patch_embed.grid_size``,
``output_fmt``), as the catalog fills them in for real sweeps.
"""

from __future__ import annotations

import math

import pytest
import torch

import liecore
from liecore import ActivationLayouts, Layout

timm = pytest.importorskip("timm")


def _create(name: str, size: int, **kw):
    return lambda: (timm.create_model(name, pretrained=False, num_classes=10, **kw), size)


def _mixer(res: bool):
    from functools import partial

    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    def make():
        extra = dict(block_layer=partial(ResBlock, init_values=1e-4), norm_layer=Affine, mlp_ratio=4) if res else {}
        return MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=32, **extra), 32

    return make


def _convmixer():
    from timm.models.convmixer import ConvMixer

    return ConvMixer(dim=32, depth=2, kernel_size=3, patch_size=4, num_classes=10), 32


FAMILIES = {
    "resnet": _create("test_resnet", 32),
    "efficientnet": _create("test_efficientnet", 32),
    "nfnet": _create("test_nfnet", 32),
    "byobnet": _create("test_byobnet", 32),
    # at 32 px the zero-initialized residual branches leave the output depending on one
    # corner pixel of the stem, where every local Lie derivative but the stem's is 0
    "regnet": _create("regnetx_002", 64),
    "convnext": _create("test_convnext", 32),
    "convmixer": _convmixer,
    "vit": _create("test_vit", 64, img_size=64),
    "deit (distillation token)": _create("deit_tiny_distilled_patch16_224", 64, img_size=64, depth=2),
    "beit": _create("beit_base_patch16_224", 64, img_size=64, depth=1, embed_dim=64, num_heads=2),
    "eva02 (rope)": _create("eva02_tiny_patch14_224", 56, img_size=56, depth=1),
    "swin (NHWC)": _create(
        "swin_tiny_patch4_window7_224", 56, img_size=56, depths=(1, 1), num_heads=(1, 2), embed_dim=32
    ),
    "mlp-mixer": _mixer(res=False),
    "resmlp": _mixer(res=True),
    "coatnet (hybrid)": _create("test_coatnet", 64, img_size=64),
    "maxvit (hybrid)": _create("test_maxvit", 64, img_size=64),
    "vit-resnet hybrid": _create("vit_small_r26_s32_224", 128, img_size=128, depth=1),
}


def timm_layouts(model: torch.nn.Module) -> ActivationLayouts:
    """Activation layouts from what the timm model declares."""
    embed = getattr(model, "patch_embed", None) or getattr(model, "stem", None)
    grid = getattr(embed, "grid_size", None)
    tokens = ()
    if grid is not None:
        tokens = (Layout.tokens(tuple(grid), int(getattr(model, "num_prefix_tokens", 0) or 0)),)
    fmt = getattr(model, "output_fmt", "NCHW")
    fmt = getattr(fmt, "value", fmt)
    return ActivationLayouts(spatial=Layout.spatial(channels_last=fmt == "NHWC"), tokens=tokens)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_runs_end_to_end(name):
    torch.manual_seed(0)
    model, size = FAMILIES[name]()
    model.eval()
    with torch.no_grad():  # zero-initialized heads (MLP-Mixer) would make every Lie derivative 0
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and not mod.weight.any():
                mod.weight.normal_(0, 0.02)
    x = torch.randn(2, 3, size, size)
    res = liecore.lee(model, x, ["translate_x", "rotate", "contrast"], mean=[0.5] * 3, std=[0.5] * 3)
    assert res.values.shape == (2, 3)
    assert torch.isfinite(res.values).all() and (res.values > 0).all()
    lw = liecore.layerwise(model, x, "translate_x", layouts=timm_layouts(model))
    assert len(lw) > 3
    torch.testing.assert_close(lw.end_to_end, res["translate_x"], rtol=1e-4, atol=1e-12)
    # the shares always add up to the end-to-end value
    torch.testing.assert_close(lw.total_share(), lw.end_to_end, rtol=1e-3, atol=1e-12)
    assert all(math.isfinite(float(r.value.sum())) for r in lw.records)
    layouts = timm_layouts(model)
    if layouts.tokens:
        h, w = layouts.tokens[0].grid
        assert min(h, w) >= 4, (h, w)
        # a token-mixing layer after the patch embedding contributes (on a 2x2 grid none does)
        mixing = [r for r in lw.records if r.kind in ("attention", "mixer_block")]
        assert any(float(r.value.max()) > 0 for r in mixing), [(r.name, r.kind) for r in lw.records]
