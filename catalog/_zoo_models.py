"""Architectures of the offline model zoo, built by name (a spec's ``arch``) with the spec's ``model_kwargs``.

The zoo (``lee zoo train``) trains small classifiers on 32x32 images; their catalog entries name one of the
builders below, never code. Every builder returns an ``nn.Module`` that maps ``(B, 3, 32, 32)`` normalized
images to ``(B, num_classes)`` logits and has ``forward_features`` / ``forward_head`` like timm models, so
the catalog reads its layout the same way.

- ``zoo_cnn``: a plain CNN (conv 5x5, conv 3x3, conv 3x3; batch norm, ReLU, 2x2 max pooling after the first
  two, global average pooling, linear head).
- ``zoo_e2cnn_c8``: the same layout as ``zoo_cnn`` with C8-steerable convolutions (e2cnn, Weiler & Cesa
  2019): regular-representation fields, group pooling, then spatial average pooling: invariant to the
  rotations by multiples of 90 degrees that map the pixel grid onto itself, and only approximately to
  the other elements of C8 (filters sampled on the grid), so not infinitesimally rotation invariant.
- ``zoo_vit``: timm's ``VisionTransformer`` (kwargs: patch_size, embed_dim, depth, num_heads, mlp_ratio ...).
- ``zoo_mixer``: timm's ``MlpMixer`` (kwargs: patch_size, num_blocks, embed_dim, mlp_ratio ...).

torch, timm and e2cnn are imported inside the builders only, so importing ``catalog`` loads none of them.
``catalog.build_model`` calls :func:`build_zoo_arch` for a spec whose ``arch`` is one of :data:`ZOO_ARCHS`; the
zoo's training (``lee zoo train``) builds its models with the same function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from catalog._errors import CatalogError, unknown_name_error

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ZOO_ARCHS", "build_zoo_arch"]


class _AvgPoolHead:
    """What the zoo's CNNs share after their features: spatial average, then the linear ``head`` (timm's
    ``forward_head`` / ``forward`` / ``reset_classifier``). Mixed in before ``nn.Module``."""

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, n: int) -> None:
        from torch import nn

        self.num_classes = n
        self.head = nn.Linear(self.head.in_features, n)


def _cnn(num_classes: int, in_chans: int = 3, width: int = 32, **kwargs: Any) -> nn.Module:
    from torch import nn

    if kwargs:
        raise TypeError(f"zoo_cnn got unknown kwargs {sorted(kwargs)}")
    w = (width, 2 * width, 4 * width)

    class ZooCNN(_AvgPoolHead, nn.Module):
        """Plain CNN: [conv5-bn-relu-pool2] [conv3-bn-relu-pool2] [conv3-bn-relu] avgpool linear."""

        def __init__(self) -> None:
            super().__init__()
            self.num_classes = num_classes
            self.features = nn.Sequential(
                nn.Conv2d(in_chans, w[0], 5, padding=2, bias=False),
                nn.BatchNorm2d(w[0]),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(w[0], w[1], 3, padding=1, bias=False),
                nn.BatchNorm2d(w[1]),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(w[1], w[2], 3, padding=1, bias=False),
                nn.BatchNorm2d(w[2]),
                nn.ReLU(),
            )
            self.head = nn.Linear(w[2], num_classes)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    return ZooCNN()


def _e2cnn_c8(num_classes: int, in_chans: int = 3, width: int = 32, **kwargs: Any) -> nn.Module:
    from e2cnn import gspaces
    from e2cnn import nn as enn
    from torch import nn

    if kwargs:
        raise TypeError(f"zoo_e2cnn_c8 got unknown kwargs {sorted(kwargs)}")
    order = 8
    if width % order:
        raise TypeError(f"zoo_e2cnn_c8: width must be a multiple of {order} (channels = fields x {order})")
    space = gspaces.Rot2dOnR2(N=order)
    fin = enn.FieldType(space, in_chans * [space.trivial_repr])
    # Same channel counts as zoo_cnn of the same width: width // 8 regular fields of 8 channels each.
    f = [enn.FieldType(space, (c // order) * [space.regular_repr]) for c in (width, 2 * width, 4 * width)]

    class ZooE2CNN(_AvgPoolHead, nn.Module):
        """C8-steerable CNN with zoo_cnn's layout; group pooling then spatial average: C4-invariant logits."""

        def __init__(self) -> None:
            super().__init__()
            self.num_classes = num_classes
            self.in_type = fin
            self.features = enn.SequentialModule(
                enn.R2Conv(fin, f[0], 5, padding=2, bias=False),
                enn.InnerBatchNorm(f[0]),
                enn.ReLU(f[0]),
                enn.PointwiseMaxPool(f[0], 2),
                enn.R2Conv(f[0], f[1], 3, padding=1, bias=False),
                enn.InnerBatchNorm(f[1]),
                enn.ReLU(f[1]),
                enn.PointwiseMaxPool(f[1], 2),
                enn.R2Conv(f[1], f[2], 3, padding=1, bias=False),
                enn.InnerBatchNorm(f[2]),
                enn.ReLU(f[2]),
            )
            self.head = nn.Linear(len(f[2]), num_classes)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            # Group pooling: max over the 8 channels of each regular field (e2cnn's GroupPooling computes the
            # same but always returns float32, which would cap float64 checks at float32 precision).
            y = self.features(enn.GeometricTensor(x, self.in_type)).tensor
            b, c, h, w = y.shape
            return y.view(b, c // order, order, h, w).amax(2)

    # e2cnn caches basis-expansion modules globally and shares them between the layers of every model it
    # builds, so ``.double()`` on one model would change the dtype inside all later ones: own a private copy.
    return copy.deepcopy(ZooE2CNN())


def _vit(num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    kwargs.setdefault("img_size", 32)
    return VisionTransformer(num_classes=num_classes, in_chans=in_chans, **kwargs)


def _mixer(num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    from timm.models.mlp_mixer import MlpMixer

    kwargs.setdefault("img_size", 32)
    return MlpMixer(num_classes=num_classes, in_chans=in_chans, **kwargs)


ZOO_ARCHS: dict[str, Callable[..., nn.Module]] = {
    "zoo_cnn": _cnn,
    "zoo_e2cnn_c8": _e2cnn_c8,
    "zoo_vit": _vit,
    "zoo_mixer": _mixer,
}


def build_zoo_arch(
    arch: str, *, num_classes: int, in_chans: int = 3, model_kwargs: dict[str, Any] | None = None, name: str = "?"
) -> nn.Module:
    """Build a zoo architecture with random weights.

    Args:
        arch: Builder name (``zoo_cnn``, ``zoo_e2cnn_c8``, ``zoo_vit``, ``zoo_mixer``).
        num_classes: Number of output logits.
        in_chans: Input channels.
        model_kwargs: Architecture hyperparameters (``width``; timm constructor kwargs for vit/mixer).
        name: Catalog name, for error messages.

    Returns:
        The module (train mode, random init from the current torch RNG).

    Raises:
        CatalogError: Unknown builder, bad kwargs, or e2cnn not installed.
    """
    if arch not in ZOO_ARCHS:
        raise unknown_name_error("zoo architecture", arch, ZOO_ARCHS)
    try:
        return ZOO_ARCHS[arch](num_classes=num_classes, in_chans=in_chans, **dict(model_kwargs or {}))
    except ModuleNotFoundError as exc:
        raise CatalogError(
            f"model {name!r} (arch {arch!r}) needs the package {exc.name!r}: pip install {exc.name}"
        ) from None
    except TypeError as exc:
        raise CatalogError(f"model {name!r}: bad model_kwargs for {arch!r}: {exc}") from None
