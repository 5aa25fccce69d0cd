"""Hub access: where the Hugging Face hub is, whether it answers, which pretrained weights are cached, and the
download of a spec's hub weights (through timm's checkpoint filters).

Nothing here decides which weights a model gets: that is :func:`catalog._weights.resolve_weights`. timm, torch
and huggingface_hub are imported lazily, inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catalog._checkpoint import sha256_file
from catalog._spec import ModelSpec

__all__ = [
    "DEFAULT_HUB_ENDPOINT",
    "HUB_CHECK_TIMEOUT_S",
    "HubStatus",
    "auto_weights",
    "check_hub",
    "download_hub_weights",
    "hf_cache_dir",
    "hub_cached_file",
    "hub_endpoint",
    "hub_offline",
    "timm_pretrained_cfg",
]

DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
HUB_CHECK_TIMEOUT_S = 3.0


def hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def hub_offline() -> bool:
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
    if hub_offline():
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


def timm_pretrained_cfg(spec: ModelSpec) -> Any:
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
    cfg = timm_pretrained_cfg(spec)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        for filename in _hub_filenames(cfg):
            found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir(), revision=revision or None)
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
    cfg = timm_pretrained_cfg(spec)
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
    return "random", f"not in the local cache ({hf_cache_dir()}) and {status.describe()}"


def download_hub_weights(spec: ModelSpec, name: str, overlay: dict[str, Any]) -> tuple[Any, str | None]:
    """(model, sha256) with the spec's hub weights downloaded into the local cache from :func:`hub_endpoint`.

    Hub repos are fetched with ``hf_hub_download`` (the cache folder and endpoint of the environment read
    now); the downloaded file is then loaded like a cached one, through timm's checkpoint filters. Weights
    timm has only as a URL are left to timm's own download.
    """
    import timm

    cfg = timm_pretrained_cfg(spec)
    if cfg is None or not cfg.hf_hub_id:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        cached = hub_cached_file(spec)
        return model, (sha256_file(cached) if cached else None)
    # One quick request first: huggingface_hub retries a refused or unreachable endpoint for about 23 s
    # (5 tries, backing off) before it gives up; an unreachable hub is said at once instead.
    status = check_hub()
    if not status.online:
        raise ConnectionError(status.describe())
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    names = _hub_filenames(cfg)
    for i, filename in enumerate(names):
        try:
            path = hf_hub_download(
                repo_id, filename, revision=revision or None, cache_dir=hf_cache_dir(), endpoint=hub_endpoint()
            )
            break
        except RemoteEntryNotFoundError:
            if i == len(names) - 1:
                raise
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={**overlay, "file": path, "source": None})
    return model, sha256_file(path)
