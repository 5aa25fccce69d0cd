"""Data config: the eval preprocessing of a catalog model (input size, interpolation, mean/std, crop) as
timm resolves it for a spec, without building the model; the zoo's from its spec; and the enlarged crop of a
margin.

timm is imported lazily, inside the functions.
"""

from __future__ import annotations

import math
from typing import Any

from catalog._hub import timm_pretrained_cfg
from catalog._spec import ModelSpec
from catalog._zoo import is_zoo_arch

__all__ = ["DATA_CONFIG_KEYS", "margin_data_config", "resolve_data_config", "spec_overlay", "zoo_data_config"]

DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def spec_overlay(spec: ModelSpec) -> dict[str, Any]:
    overlay: dict[str, Any] = {}
    if spec.img_size is not None:
        overlay["input_size"] = (3, spec.img_size, spec.img_size)
    for key in ("crop_pct", "interpolation", "mean", "std"):
        if getattr(spec, key) is not None:
            overlay[key] = getattr(spec, key)
    return overlay


def margin_data_config(data_config: dict[str, Any], margin: int) -> dict[str, Any]:
    """The eval data config whose centre crop is ``margin`` pixels larger per axis, at the same scale.

    timm's eval transform resizes the shorter side to ``S = floor(H / crop_pct)`` and crops ``H``; this one crops
    ``H + margin`` from the same resize (``crop_pct = (H + margin) / (S + 1/2)``, so that timm's ``floor`` gives
    ``S`` back), and the centre ``H`` of it is exactly the eval transform's input when ``margin`` is a multiple of
    4. When the resize leaves less than ``margin`` around the crop (``H + margin > S``), the image is resized to
    ``H + margin`` (``crop_pct = 1``): a scale ``(H + margin) / S`` larger. For a non-square input the scale is
    set by its height.
    """
    _, h, w = data_config["input_size"]
    crop_pct = data_config.get("crop_pct") or 0.875  # timm's DEFAULT_CROP_PCT
    scale = math.floor(h / crop_pct)
    enlarged = h + margin
    return {
        **data_config,
        "input_size": (3, enlarged, w + margin),
        "crop_pct": enlarged / (scale + 0.5) if enlarged <= scale else 1.0,
    }


def resolve_data_config(spec: ModelSpec | str) -> dict[str, Any]:
    """The eval data config timm resolves for a spec, without building the model.

    Args:
        spec: Spec or catalog name.

    Returns:
        input_size, interpolation, mean, std, crop_pct, crop_mode.
    """
    import timm.data

    if isinstance(spec, str):
        from catalog._registry import get_model

        spec = get_model(spec)
    if is_zoo_arch(spec.arch):
        return zoo_data_config(spec)
    cfg = timm_pretrained_cfg(spec)
    base = cfg.to_dict() if cfg is not None else {}
    base.update(spec_overlay(spec))
    resolved = timm.data.resolve_data_config(pretrained_cfg=base)
    return {k: resolved[k] for k in DATA_CONFIG_KEYS if k in resolved}


def zoo_data_config(spec: ModelSpec) -> dict[str, Any]:
    """The eval data config of a zoo spec, read from the spec (zoo models have no timm pretrained config).

    Zoo images are 32x32; grayscale digits are stored replicated to RGB, so every zoo model takes
    ``in_chans`` = 3 (the default) and normalizes with the spec's mean/std.
    """
    size = spec.img_size or 32
    return {
        "input_size": (spec.in_chans or 3, size, size),
        "interpolation": spec.interpolation or "bilinear",
        "mean": tuple(spec.mean or (0.5, 0.5, 0.5)),
        "std": tuple(spec.std or (0.5, 0.5, 0.5)),
        "crop_pct": spec.crop_pct or 1.0,
        "crop_mode": "center",
    }
