"""Building a catalog model: timm architecture + weights + the eval preprocessing timm resolves for it.

timm (and torch) are imported here lazily, inside the functions, never when ``catalog`` is imported.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from catalog._checkpoint import check_fits, map_state_dict, read_checkpoint, sha256_file
from catalog._errors import CatalogError
from catalog._spec import WEIGHT_POLICIES, ModelSpec
from catalog._zoo import build_zoo_arch, is_zoo_arch

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image as PILImage
    from torch import nn

__all__ = [
    "LoadedModel",
    "build_model",
    "hub_cached_file",
    "resolve_data_config",
    "validate_checkpoint",
    "HubStatus",
    "auto_weights",
    "check_hub",
    "hub_endpoint",
    "zoo_data_config",
]

RANDOM_SEED = 0
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
HUB_CHECK_TIMEOUT_S = 3.0
_DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


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
    _margin_transforms: dict[int, Callable[[Any], torch.Tensor]] = field(default_factory=dict, init=False,
                                                                          repr=False, compare=False)
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
                    raise CatalogError(
                        f"image {i}: expected an (H, W, 3) uint8 array, got {img.dtype} {img.shape}"
                    )
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


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return flag.strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    """The Hugging Face hub endpoint: ``$HF_ENDPOINT`` (a mirror), else https://huggingface.co (read at each call)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class HubStatus:
    """Whether the Hugging Face hub answers: checked once (per sweep, on the driver) by :func:`check_hub`.

    Attributes:
        online: The endpoint answered (weights that are not cached can be downloaded).
        endpoint: The endpoint checked.
        reason: Why it is not online (``HF_HUB_OFFLINE`` set, the error or timeout); empty when online.
    """

    online: bool
    endpoint: str
    reason: str = ""

    def describe(self) -> str:
        """One phrase for messages: ``the hub (URL) is reachable`` or ``... is offline/unreachable (why)``."""
        if self.online:
            return f"the hub ({self.endpoint}) is reachable"
        return f"the hub ({self.endpoint}) is {self.reason}"


def check_hub(endpoint: str | None = None, timeout: float = HUB_CHECK_TIMEOUT_S) -> HubStatus:
    """Whether the hub answers, with one quick request; no request at all when ``HF_HUB_OFFLINE`` is set.

    A ``HEAD`` of the endpoint's root (through the ``HTTP(S)_PROXY`` of the environment): any HTTP answer
    below 500 counts as online; a connection error, a timeout after ``timeout`` seconds or a server error
    as unreachable.

    Args:
        endpoint: Default :func:`hub_endpoint` (``$HF_ENDPOINT``).
        timeout: Seconds to wait for the answer.

    Returns:
        The status, with the reason when offline.
    """
    import urllib.error
    import urllib.request

    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    if _hub_offline():
        return HubStatus(False, endpoint, "offline (HF_HUB_OFFLINE is set)")
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint + "/", method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            return HubStatus(False, endpoint, f"unreachable (it answered HTTP {exc.code})")
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections; ValueError: a malformed URL
        why = getattr(exc, "reason", None) or exc
        text = str(why) or type(why).__name__
        if isinstance(why, TimeoutError) or "timed out" in text:
            text = f"no answer within {timeout:g}s"
        return HubStatus(False, endpoint, f"unreachable ({text})")
    return HubStatus(True, endpoint)


def _timm_cfg(spec: ModelSpec) -> Any:
    """timm's PretrainedCfg for the spec's ``arch.tag`` (or the arch default), None if timm has none."""
    from timm.models import get_pretrained_cfg

    if spec.tag:
        try:
            return get_pretrained_cfg(spec.timm_name)
        except RuntimeError:  # a tag timm does not know (user-made name on a known arch)
            pass
    return get_pretrained_cfg(spec.arch)


def _hub_filenames(cfg: Any) -> list[str]:
    """The files timm would take from the spec's hub repo, in timm's order: the safetensors alternative first."""
    name = cfg.hf_hub_filename or "pytorch_model.bin"
    if name == "pytorch_model.bin":
        return ["model.safetensors", name]
    if name == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", name]
    if name.endswith(".bin"):
        return [name[:-4] + ".safetensors", name]
    return [name]


def hub_cached_file(spec: ModelSpec) -> str | None:
    """Path of the spec's pretrained weights in the local Hugging Face (or torch hub) cache, without network.

    Args:
        spec: A spec whose ``arch.tag`` timm knows.

    Returns:
        The cached file path, or None if the weights are not cached.
    """
    cfg = _timm_cfg(spec)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        for filename in _hub_filenames(cfg):
            found = try_to_load_from_cache(repo_id, filename, cache_dir=_hf_cache_dir(), revision=revision or None)
            if isinstance(found, str) and os.path.exists(found):
                return found
    if cfg.url:
        import torch.hub

        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url.split("?")[0]))
        if os.path.exists(path):
            return path
    return None


def _has_hub_weights(spec: ModelSpec) -> bool:
    """Whether timm names pretrained weights for the spec (a hub repo or a URL)."""
    cfg = _timm_cfg(spec)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url)


def auto_weights(spec: ModelSpec, hub: HubStatus | Callable[[], HubStatus] | None = None) -> tuple[str, str | None]:
    """What ``weights='auto'`` loads for a hub spec: ``hub`` when the weights are cached or the hub answers,
    else ``random``, with the reason.

    Args:
        spec: A timm spec.
        hub: The hub's status, or a function giving it (called only when the weights are not cached);
            default: :func:`check_hub` now.

    Returns:
        (``hub`` or ``random``, why random: None for ``hub``).
    """
    if hub_cached_file(spec):
        return "hub", None
    if not _has_hub_weights(spec):
        return "random", f"timm has no pretrained weights for {spec.timm_name!r}"
    status = hub() if callable(hub) else (hub or check_hub())
    if status.online:
        return "hub", None
    return "random", f"not in the local cache ({_hf_cache_dir()}) and {status.describe()}"


def _download_hub_weights(spec: ModelSpec, name: str, overlay: dict[str, Any]) -> tuple[Any, str | None]:
    """(model, sha256) with the spec's hub weights downloaded into the local cache from :func:`hub_endpoint`.

    Hub repos are fetched with ``hf_hub_download`` (the cache folder and endpoint of the environment read
    now); the downloaded file is then loaded like a cached one, through timm's checkpoint filters. Weights
    timm has only as a URL are left to timm's own download.
    """
    import timm

    cfg = _timm_cfg(spec)
    if cfg is None or not cfg.hf_hub_id:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        cached = hub_cached_file(spec)
        return model, (sha256_file(cached) if cached else None)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    names = _hub_filenames(cfg)
    for i, filename in enumerate(names):
        try:
            path = hf_hub_download(repo_id, filename, revision=revision or None, cache_dir=_hf_cache_dir(),
                                   endpoint=hub_endpoint())
            break
        except RemoteEntryNotFoundError:
            if i == len(names) - 1:
                raise
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={**overlay, "file": path, "source": None})
    return model, sha256_file(path)


def _overlay(spec: ModelSpec) -> dict[str, Any]:
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
    return {**data_config, "input_size": (3, enlarged, w + margin),
            "crop_pct": enlarged / (scale + 0.5) if enlarged <= scale else 1.0}


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
    cfg = _timm_cfg(spec)
    base = cfg.to_dict() if cfg is not None else {}
    base.update(_overlay(spec))
    resolved = timm.data.resolve_data_config(pretrained_cfg=base)
    return {k: resolved[k] for k in _DATA_CONFIG_KEYS if k in resolved}


def _num_prefix_tokens(model: nn.Module) -> int:
    """Class/register/distillation tokens before the patch tokens (the model's attribute; 0 if none)."""
    return int(getattr(model, "num_prefix_tokens", 0) or 0)


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


def _build_zoo(spec: ModelSpec, policy: str, device: str | torch.device | None) -> LoadedModel:
    """``build_model`` for a zoo architecture: the named builder, the spec's kwargs, ``file`` or ``random`` weights."""
    import timm.data
    import torch

    if policy == "auto":
        policy = "file" if spec.checkpoint else "random"
    if policy == "hub":
        raise CatalogError(f"model {spec.name!r} (zoo architecture {spec.arch!r}) has no hub weights; "
                           f"use its checkpoint (weights 'file') or weights 'random'")
    if spec.num_classes is None:
        raise CatalogError(f"model {spec.name!r}: a zoo architecture needs num_classes")
    sha: str | None = None
    mapping: dict[str, Any] | None = None
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore")
        torch.manual_seed(RANDOM_SEED)
        model = build_zoo_arch(spec.arch, num_classes=spec.num_classes, in_chans=spec.in_chans or 3,
                               model_kwargs=spec.model_kwargs, name=spec.name)
        if policy == "file":
            sha, mapping = _load_file(model, spec)
    device = torch.device(device) if device is not None else torch.device("cpu")
    model = model.to(device).eval()
    data_config = zoo_data_config(spec)
    transform = timm.data.create_transform(**data_config, is_training=False)
    return LoadedModel(model=model, spec=spec, weights=policy, weights_sha256=sha, data_config=data_config,
                       num_prefix_tokens=_num_prefix_tokens(model), transform=transform, key_mapping=mapping)


def _load_file(model: nn.Module, spec: ModelSpec) -> tuple[str, dict[str, Any] | None]:
    """Load ``spec.checkpoint`` into ``model`` through the spec's key mapping; (sha256, mapping applied)."""
    if not spec.checkpoint:
        raise CatalogError(f"model {spec.name!r}: weights 'file' needs a checkpoint path or URI")
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
        weights: The sweep's weights policy (``file`` and ``auto`` load the spec's checkpoint when it has one).

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
    policy = weights or spec.source
    if policy not in WEIGHT_POLICIES:
        spec, policy = spec.replace(source="file", checkpoint=policy), "file"
    loads_file = policy == "file" or (policy == "auto" and spec.source == "file")
    if not loads_file or not spec.checkpoint:
        if policy == "file" and not spec.checkpoint:
            raise CatalogError(f"model {spec.name!r}: weights 'file' needs a checkpoint path or URI")
        return None
    state, _ = read_checkpoint(spec.checkpoint)
    if is_zoo_arch(spec.arch) and spec.num_classes is None:
        raise CatalogError(f"model {spec.name!r}: a zoo architecture needs num_classes")

    def skeleton() -> nn.Module:
        if is_zoo_arch(spec.arch):
            return build_zoo_arch(spec.arch, num_classes=spec.num_classes, in_chans=spec.in_chans or 3,
                                  model_kwargs=spec.model_kwargs, name=spec.name)
        cfg = _timm_cfg(spec)
        name = spec.timm_name if cfg is not None and cfg.tag == spec.tag else spec.arch
        return timm.create_model(name, pretrained=False, pretrained_cfg_overlay=_overlay(spec))

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
        weights: Override ``spec.source``: ``hub`` (cached, else downloaded), ``file``, ``random``, ``auto``
            (the hub weights: cached, or downloaded when the hub answers; random init only when the hub is
            offline or unreachable and the weights are not cached: ``LoadedModel.weights`` says which and
            ``LoadedModel.fallback`` why), or a checkpoint path/URI (implies ``file``).
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
    policy = weights or spec.source
    if policy not in WEIGHT_POLICIES:
        spec, policy = spec.replace(source="file", checkpoint=policy), "file"
    if is_zoo_arch(spec.arch):
        return _build_zoo(spec, policy, device)
    if policy == "auto" and spec.source == "file" and spec.checkpoint:
        policy = "file"  # a spec that names its checkpoint: auto means that checkpoint
    cfg = _timm_cfg(spec)
    name = spec.timm_name if cfg is not None and cfg.tag == spec.tag else spec.arch
    overlay = _overlay(spec)
    fallback = None
    if policy == "auto":
        policy, fallback = auto_weights(spec, hub)
    cached = hub_cached_file(spec) if policy == "hub" else None
    sha: str | None = None
    mapping: dict[str, Any] | None = None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if policy == "hub":
            if cached:
                # Load the cached file directly: no network round trip, timm's checkpoint filters still apply.
                model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={**overlay, "file": cached,
                                                                                          "source": None})
                sha = sha256_file(cached)
            elif _hub_offline():
                raise CatalogError(
                    f"pretrained weights of {spec.name!r} are not cached locally ({_hf_cache_dir()}) and the hub is "
                    f"offline (HF_HUB_OFFLINE); download them once online, or use --weights random (weights='random')"
                )
            else:
                try:
                    model, sha = _download_hub_weights(spec, name, overlay)
                except Exception as exc:
                    raise CatalogError(
                        f"pretrained weights of {spec.name!r} are not cached locally and could not be downloaded "
                        f"from {hub_endpoint()} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); "
                        f"use --weights random (weights='random') for a smoke run"
                    ) from exc
        elif policy == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=overlay)
        else:  # file
            model = timm.create_model(name, pretrained=False, pretrained_cfg_overlay=overlay)
            sha, mapping = _load_file(model, spec)

    device = torch.device(device) if device is not None else torch.device("cpu")
    model = model.to(device).eval()
    data_config = {k: v for k, v in timm.data.resolve_model_data_config(model).items() if k in _DATA_CONFIG_KEYS}
    transform = timm.data.create_transform(**data_config, is_training=False)
    return LoadedModel(
        model=model,
        spec=spec,
        weights=policy,
        weights_sha256=sha,
        data_config=data_config,
        num_prefix_tokens=_num_prefix_tokens(model),
        transform=transform,
        key_mapping=mapping,
        fallback=fallback,
    )


