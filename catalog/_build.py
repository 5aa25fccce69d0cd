"""Building a catalog model: timm (or zoo) architecture + the resolved weights + timm's eval preprocessing.

Which weights is decided by :func:`catalog._weights.resolve_weights`, where the hub is by :mod:`catalog._hub`,
the preprocessing by :mod:`catalog._data_config`. timm (and torch) are imported here lazily, inside the
functions, never when ``catalog`` is imported.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from catalog._checkpoint import check_fits, map_state_dict, read_checkpoint, sha256_file
from catalog._data_config import DATA_CONFIG_KEYS, margin_data_config, spec_overlay, zoo_data_config
from catalog._errors import CatalogError
from catalog._hub import (
    HubStatus,
    download_hub_weights,
    hf_cache_dir,
    hub_cached_file,
    hub_endpoint,
    hub_offline,
    timm_pretrained_cfg,
)
from catalog._spec import ModelSpec
from catalog._weights import resolve_weights
from catalog._zoo import build_zoo_arch, is_zoo_arch

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image as PILImage
    from torch import nn

__all__ = ["RANDOM_SEED", "LoadedModel", "build_model", "validate_checkpoint"]

RANDOM_SEED = 0


@dataclass
class LoadedModel:
    """A built model in eval mode, with what was loaded into it and how its inputs are prepared.

    Attributes:
        model: The ``nn.Module``, in eval mode.
        spec: The catalog spec it was built from.
        weights: What was actually loaded: ``hub``, ``file`` or ``random`` (seeded init).
        weights_sha256: sha256 of the checkpoint file (hub or file); None for random weights.
        data_config: timm's resolved eval data config: input_size, interpolation, mean, std, crop_pct,
            crop_mode. Record it with every result: the numbers depend on it.
        num_prefix_tokens: Class/register/distillation tokens before the patch tokens (model attribute; 0 if none).
        key_mapping: How a ``file`` checkpoint's keys were mapped onto the model (``rename``,
            ``timm_filter``, ``by_order``; see ``catalog._checkpoint.map_state_dict``); None if they fit as stored.
    """

    model: nn.Module
    spec: ModelSpec
    weights: str
    weights_sha256: str | None
    data_config: dict[str, Any]
    num_prefix_tokens: int
    transform: Callable[[Any], torch.Tensor] = field(repr=False)
    key_mapping: dict[str, Any] | None = None
    fallback: str | None = None
    """Why ``auto`` fell back to random init (hub offline or unreachable, weights not cached); else None."""
    _margin_transforms: dict[int, Callable[[Any], torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """The eval transforms of :meth:`preprocess` with a margin, built once per margin."""

    def preprocess(self, images: Sequence[np.ndarray | PILImage.Image], *, margin: int = 0) -> torch.Tensor:
        """Apply timm's eval transform (resize, centre crop, to tensor, normalize) to each image.

        Args:
            images: ``(H, W, 3)`` uint8 RGB arrays or PIL images.
            margin: Pixels per axis to keep around the model's input: the centre crop is ``H + margin`` by
                ``W + margin`` at the eval transform's scale (:func:`margin_data_config`), so windows of the
                model's input size can be cut from it at ``margin`` offsets (Zhang 2019's shift consistency:
                224-pixel windows of a 256-pixel crop).

        Returns:
            ``(B, 3, H' + margin, W' + margin)`` float32 batch, on the CPU.
        """
        import numpy as np
        import timm.data
        import torch
        from PIL import Image

        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        transform = self.transform
        if margin:
            if margin not in self._margin_transforms:
                config = margin_data_config(self.data_config, margin)
                self._margin_transforms[margin] = timm.data.create_transform(**config, is_training=False)
            transform = self._margin_transforms[margin]
        out = []
        for i, img in enumerate(images):
            if isinstance(img, np.ndarray):
                if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                    raise CatalogError(f"image {i}: expected an (H, W, 3) uint8 array, got {img.dtype} {img.shape}")
                img = Image.fromarray(img, mode="RGB")
            elif img.mode != "RGB":
                img = img.convert("RGB")
            out.append(transform(img))
        return torch.stack(out).to(torch.float32)

    def provenance(self) -> dict[str, Any]:
        """What a result must record about this model: spec, weights, hash and preprocessing."""
        return {
            "model": self.spec.name,
            "arch": self.spec.arch,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "checkpoint": self.spec.checkpoint if self.weights == "file" else None,
            "key_mapping": self.key_mapping,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "spec_version": self.spec.version,
        }


def _num_prefix_tokens(model: nn.Module) -> int:
    """Class/register/distillation tokens before the patch tokens (the model's attribute; 0 if none)."""
    return int(getattr(model, "num_prefix_tokens", 0) or 0)


def _build_zoo(spec: ModelSpec, source: str, device: str | torch.device | None) -> LoadedModel:
    """``build_model`` for a zoo architecture: the named builder, the spec's kwargs, ``file`` or ``random`` weights."""
    import timm.data
    import torch

    if spec.num_classes is None:
        raise CatalogError(f"model {spec.name!r}: a zoo architecture needs num_classes")
    sha: str | None = None
    mapping: dict[str, Any] | None = None
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        torch.manual_seed(RANDOM_SEED)
        model = build_zoo_arch(
            spec.arch,
            num_classes=spec.num_classes,
            in_chans=spec.in_chans or 3,
            model_kwargs=spec.model_kwargs,
            name=spec.name,
        )
        if source == "file":
            sha, mapping = _load_file(model, spec)
    device = torch.device(device) if device is not None else torch.device("cpu")
    model = model.to(device).eval()
    data_config = zoo_data_config(spec)
    transform = timm.data.create_transform(**data_config, is_training=False)
    return LoadedModel(
        model=model,
        spec=spec,
        weights=source,
        weights_sha256=sha,
        data_config=data_config,
        num_prefix_tokens=_num_prefix_tokens(model),
        transform=transform,
        key_mapping=mapping,
    )


def _load_file(model: nn.Module, spec: ModelSpec) -> tuple[str, dict[str, Any] | None]:
    """Load ``spec.checkpoint`` into ``model`` through the spec's key mapping; (sha256, mapping applied)."""
    state, sha = read_checkpoint(spec.checkpoint)
    state, mapping = map_state_dict(state, model, spec.key_map, spec.arch, spec.checkpoint, spec.name)
    check_fits(model, state, spec.checkpoint, spec.arch, spec.name)
    model.load_state_dict(state, strict=True)
    return sha, mapping


def validate_checkpoint(spec: ModelSpec | str, weights: str | None = None) -> dict[str, Any] | None:
    """Check, without building real weights, that a ``file`` checkpoint exists, loads safely and fits.

    The architecture is built on the ``meta`` device (no memory, no initialization), the checkpoint read
    and mapped as :func:`build_model` would; nothing is returned for specs that load no checkpoint.

    Args:
        spec: Spec or catalog name.
        weights: The weights policy (:func:`catalog.resolve_weights`; one that resolves to ``file`` loads the
            checkpoint).

    Returns:
        The key mapping that will be applied (None if none, or no checkpoint).

    Raises:
        CatalogError: Missing or unreadable file, unsafe content, keys or shapes that do not fit (naming the
            first mismatches and the fix).
    """
    import timm
    import torch

    if isinstance(spec, str):
        from catalog._registry import get_model

        spec = get_model(spec)
    # No hub check: whether auto gives a hub model hub weights or random init, it loads no checkpoint.
    resolved = resolve_weights(spec, weights, hub=HubStatus(False, hub_endpoint(), "not checked"))
    if resolved.source != "file":
        return None
    spec = resolved.spec
    state, _ = read_checkpoint(spec.checkpoint)
    if is_zoo_arch(spec.arch) and spec.num_classes is None:
        raise CatalogError(f"model {spec.name!r}: a zoo architecture needs num_classes")

    def skeleton() -> nn.Module:
        if is_zoo_arch(spec.arch):
            return build_zoo_arch(
                spec.arch,
                num_classes=spec.num_classes,
                in_chans=spec.in_chans or 3,
                model_kwargs=spec.model_kwargs,
                name=spec.name,
            )
        cfg = timm_pretrained_cfg(spec)
        name = spec.timm_name if cfg is not None and cfg.tag == spec.tag else spec.arch
        return timm.create_model(name, pretrained=False, pretrained_cfg_overlay=spec_overlay(spec))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                model = skeleton()
        except (NotImplementedError, RuntimeError):  # a builder that reads tensor values (e2cnn's bases)
            with torch.random.fork_rng(devices=[]):
                model = skeleton()
    state, mapping = map_state_dict(state, model, spec.key_map, spec.arch, spec.checkpoint, spec.name)
    check_fits(model, state, spec.checkpoint, spec.arch, spec.name)
    return mapping


def build_model(
    spec: ModelSpec | str,
    *,
    weights: str | None = None,
    device: str | torch.device | None = None,
    hub: HubStatus | None = None,
) -> LoadedModel:
    """Build a catalog model in eval mode, with its weights and timm's eval preprocessing.

    Args:
        spec: Spec or catalog name.
        weights: The weights policy, resolved by :func:`catalog.resolve_weights`: ``hub`` (cached, else
            downloaded), ``file``, ``random``, ``auto`` (a hub model's hub weights: cached, or downloaded when
            the hub answers; random init only when the hub is offline or unreachable and the weights are not
            cached: ``LoadedModel.weights`` says which and ``LoadedModel.fallback`` why; other models: their
            own source), a checkpoint path/URI (implies ``file``), or None (the spec's ``source``).
        device: Device for the model (default CPU).
        hub: The hub's status for ``auto`` (a sweep checks it once, :func:`check_hub`); default: checked
            here when the weights are not cached.

    Returns:
        The loaded model with its provenance and layout.

    Raises:
        CatalogError: Hub weights not cached while offline (or not downloadable), unreadable checkpoint,
            or a checkpoint that does not fit the architecture.
    """
    import timm
    import torch

    if isinstance(spec, str):
        from catalog._registry import get_model

        spec = get_model(spec)
    resolved = resolve_weights(spec, weights, hub=hub)
    spec, source = resolved.spec, resolved.source
    if is_zoo_arch(spec.arch):
        return _build_zoo(spec, source, device)
    cfg = timm_pretrained_cfg(spec)
    name = spec.timm_name if cfg is not None and cfg.tag == spec.tag else spec.arch
    overlay = spec_overlay(spec)
    cached = hub_cached_file(spec) if source == "hub" else None
    sha: str | None = None
    mapping: dict[str, Any] | None = None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if source == "hub":
            if cached:
                # Load the cached file directly: no network round trip, timm's checkpoint filters still apply.
                model = timm.create_model(
                    name, pretrained=True, pretrained_cfg_overlay={**overlay, "file": cached, "source": None}
                )
                sha = sha256_file(cached)
            elif hub_offline():
                raise CatalogError(
                    f"pretrained weights of {spec.name!r} are not cached locally ({hf_cache_dir()}) and the hub is "
                    f"offline (HF_HUB_OFFLINE); download them once online, or use --weights random (weights='random')"
                )
            else:
                try:
                    model, sha = download_hub_weights(spec, name, overlay)
                except Exception as exc:
                    raise CatalogError(
                        f"pretrained weights of {spec.name!r} are not cached locally and could not be downloaded "
                        f"from {hub_endpoint()} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"use --weights random (weights='random') for a smoke run"
                    ) from exc
        elif source == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=overlay)
        else:  # file
            model = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=overlay)
            sha, mapping = _load_file(model, spec)

    device = torch.device(device) if device is not None else torch.device("cpu")
    model = model.to(device).eval()
    data_config = {k: v for k, v in timm.data.resolve_model_data_config(model).items() if k in DATA_CONFIG_KEYS}
    transform = timm.data.create_transform(**data_config, is_training=False)
    return LoadedModel(
        model=model,
        spec=spec,
        weights=source,
        weights_sha256=sha,
        data_config=data_config,
        num_prefix_tokens=_num_prefix_tokens(model),
        transform=transform,
        key_mapping=mapping,
        fallback=resolved.fallback,
    )
