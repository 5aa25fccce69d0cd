"""Reading weights safely: safetensors or ``torch.load(weights_only=True)``, from any fsspec URI."""

from __future__ import annotations

import hashlib
import io
import os
import re
from typing import TYPE_CHECKING, Any

from catalog._errors import CatalogError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["check_fits", "checkpoint_sha256", "hub_blob_sha256", "read_checkpoint", "sha256_file"]

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net")
_PREFIXES = ("module.", "_orig_mod.", "model.")


def sha256_file(path: str) -> str:
    """sha256 hex digest of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(uri: str) -> str:
    """sha256 hex digest of a checkpoint at a local path or fsspec URI, streamed.

    The same digest as :func:`read_checkpoint` returns (and ``runs.weights_sha256`` records for
    ``file`` weights), without loading the weights.

    Raises:
        CatalogError: The file cannot be read.
    """
    import fsspec

    digest = hashlib.sha256()
    try:
        with fsspec.open(uri, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read checkpoint {uri!r}: {exc}") from None
    return digest.hexdigest()


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def hub_blob_sha256(path: str) -> str | None:
    """sha256 of a file in the Hugging Face hub cache, read from its blob name (the file is not read).

    The hub cache stores each Git LFS file (every weights file) as ``blobs/<sha256 of the content>``,
    and a snapshot's file is a link to it; so this equals :func:`sha256_file` of the path. None when
    the path does not resolve to such a blob (a small non-LFS file, or a file outside the hub cache).
    """
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if os.path.basename(os.path.dirname(real)) == "blobs" and _SHA256_HEX.fullmatch(name):
        return name
    return None


def _unwrap(obj: Any, uri: str) -> dict[str, torch.Tensor]:
    import torch

    for _ in range(3):  # {'model': {'state_dict': ...}} at most a few levels deep
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CatalogError(
            f"checkpoint {uri!r} holds no state dict (expected a mapping of tensors, possibly under one of "
            f"{', '.join(_WRAPPER_KEYS)})"
        )
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


_UNSAFE_HINT = re.compile(r"weights_only[`'\"]?\s*(?:set to|=)\s*[`'\"]?False", re.IGNORECASE)
_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL|Unsupported operand)\s+([^\s]+)")

CONVERT_HINT = (
    "convert it once, where you trust the file, to a plain state dict of tensors: load it there, then "
    "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')` (or "
    "`torch.save(model.state_dict(), 'model.pt')`), and point the catalog's `checkpoint:` at the new file"
)
"""How to make a refused checkpoint loadable without ever unpickling it here."""


def _refusal(uri: str, exc: Exception) -> str:
    """The project's message for a checkpoint that cannot be read as weights only.

    PyTorch's own text for a refused pickle advises re-running ``torch.load`` with
    ``weights_only=False``, which would run the file's code; it is never passed on. A refused
    pickle says why (the global that is not a tensor type) and how to convert the file safely.
    """
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = _GLOBAL.search(text)
        if found and "GLOBAL" in found.group(0):
            return (
                f"checkpoint {uri!r} was refused: it is a pickle that holds Python objects other than tensors "
                f"({found.group(0).rstrip('.')}), and loading those could run code from the file, so lee reads "
                f"weights only (torch.load(weights_only=True) or safetensors). To use it, {CONVERT_HINT}"
            )
        why = f" ({found.group(0).rstrip('.')})" if found else ""
        return (
            f"checkpoint {uri!r} was refused: the weights-only reader (torch.load(weights_only=True)) could not "
            f"read it{why}; it is damaged, not a torch.save file, or holds content other than tensors. "
            f"To use it, {CONVERT_HINT}"
        )
    first = next((line for line in text.splitlines() if line.strip() and not _UNSAFE_HINT.search(line)), "")
    if _UNSAFE_HINT.search(first):
        first = ""
    return (
        f"cannot load checkpoint {uri!r} as weights only (safetensors or torch.load(weights_only=True)): "
        f"{type(exc).__name__}: {first}".rstrip(": ")
    )


def read_checkpoint(uri: str) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state dict from a local path or fsspec URI, never running code from the file.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. Common wrappers (``state_dict``, ``model``, ...) and the
    ``module.`` / ``_orig_mod.`` prefixes of DDP and ``torch.compile`` are removed.

    Args:
        uri: Path or URI (``memory://``, ``s3://``, ...).

    Returns:
        The state dict and the sha256 of the checkpoint file.

    Raises:
        CatalogError: Missing file, unreadable or unsafe content, no state dict inside.
    """
    import fsspec
    import torch

    try:
        with fsspec.open(uri, "rb") as fh:
            data = fh.read()
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read checkpoint {uri!r}: {exc}") from None
    sha = hashlib.sha256(data).hexdigest()
    try:
        if uri.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            obj: Any = load_safetensors(data)
        else:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors errors, UnpicklingError for non-weights content, zip errors
        raise CatalogError(_refusal(uri, exc)) from None
    return _unwrap(obj, uri), sha


def _few(items: list[str], k: int = 4) -> str:
    return ", ".join(items[:k]) + (f", ... ({len(items)} in all)" if len(items) > k else "")


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], uri: str, arch: str, name: str) -> None:
    """Raise a CatalogError naming the checkpoint and the architecture unless ``state`` fits ``model`` exactly.

    Args:
        model: The freshly built model.
        state: The checkpoint's state dict.
        uri: Checkpoint path or URI (for the message).
        arch: timm architecture (for the message).
        name: Catalog name (for the message).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = sorted(k for k in state if k not in expected)  # safetensors' key order varies by process
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (checkpoint vs model): {_few(shapes)}")
        raise CatalogError(
            f"checkpoint {uri!r} does not fit architecture {arch!r} (model {name!r}): " + "; ".join(parts)
        )
