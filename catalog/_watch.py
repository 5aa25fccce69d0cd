"""Checkpoints found by a folder or a glob: one catalog entry, one model per file.

A catalog entry with ``checkpoints:`` (instead of ``name:`` + ``checkpoint:``) names a folder or a glob,
local or any fsspec URI::

    models:
      - checkpoints: s3://team/ckpts/resnet50-*.safetensors   # or a folder: ./ckpts
        arch: resnet50
        name: "{arch}@{stem}"                                  # the default
        key_map: {rename: [['^backbone\\.', '']]}              # optional, as for one checkpoint

A folder stands for the files directly in it whose suffix is a checkpoint's (:data:`CHECKPOINT_SUFFIXES`);
a glob (``*``, ``?``, ``[...]``; ``**`` crosses folders) for every file it matches. Each file is one
``file`` model named by the entry's ``name`` template (:data:`DEFAULT_NAME_TEMPLATE`). Listing happens when
the catalog is loaded, so a file added to the folder is a new model at the next ``lee eval`` or
``lee reevaluate``. Each model's ``checkpoint`` is spelled as the pattern is (a relative folder stays
relative), so its unit keys do not depend on where the listing ran.
"""

from __future__ import annotations

import posixpath
import re
import string
from typing import Any

from catalog._errors import CatalogError

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DEFAULT_NAME_TEMPLATE",
    "NAME_FIELDS",
    "checkpoint_name",
    "empty_reason",
    "is_glob",
    "list_checkpoints",
    "watches",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
"""Suffixes of the files a *folder* stands for (a glob takes whatever it matches)."""
DEFAULT_NAME_TEMPLATE = "{arch}@{stem}"
"""Model name of each file, in the form ``lee eval --checkpoint FILE --arch ARCH`` names its model."""
NAME_FIELDS = ("stem", "arch", "parent")
"""Placeholders of a name template: the file name without its last suffix, the entry's arch, the name of
the folder holding the file."""


def is_glob(text: str) -> bool:
    """Whether ``text`` has fsspec glob characters."""
    return any(ch in text for ch in "*?[")


def _fs(uri: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(uri)


def _problem(pattern: str, exc: BaseException) -> CatalogError:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ImportError):
        return CatalogError(
            f"checkpoints {pattern!r} cannot be listed: the filesystem needs a package that is not "
            f"installed ({text}); pip install 'lee-eval[cloud]' (s3fs, gcsfs) or its fsspec package"
        )
    return CatalogError(f"checkpoints {pattern!r} cannot be listed: {type(exc).__name__}: {text}".rstrip(": "))


def _spelled(root: str, fs_root: str, path: str, fs: Any) -> str:
    """``path`` (as ``fs`` lists it) spelled under ``root`` (the pattern's own spelling of ``fs_root``)."""
    fs_root = fs_root.rstrip("/")
    if root and path.startswith(fs_root + "/"):
        return root + path[len(fs_root) + 1 :]
    return fs.unstrip_protocol(path) if "://" in root else path


def list_checkpoints(pattern: str) -> list[str]:
    """The checkpoint files a folder or glob names now, sorted, each spelled as ``pattern`` is.

    Args:
        pattern: A folder (its files with a :data:`CHECKPOINT_SUFFIXES` suffix, not recursive), a glob
            (every file it matches) or one file; local or any fsspec URI.

    Returns:
        The files' paths or URIs; empty when nothing matches (a missing folder included).

    Raises:
        CatalogError: The location cannot be listed (missing filesystem package, credentials, ...).
    """
    if not pattern or not pattern.strip():
        raise CatalogError("checkpoints: expected a folder or a glob, got an empty string")
    try:
        if is_glob(pattern):
            first = min(i for i, ch in enumerate(pattern) if ch in "*?[")
            root = pattern[: pattern.rfind("/", 0, first) + 1]  # the static part, as the user spelled it
            fs, path = _fs(pattern)
            fs_root = _fs(root or ".")[1]
            found = fs.glob(path, detail=True)
            files = [p for p, info in found.items() if info.get("type") == "file"]
        else:
            fs, path = _fs(pattern)
            root = pattern.rstrip("/") + "/"
            fs_root = path
            if fs.isfile(path):
                return [pattern]
            if not fs.isdir(path):
                return []
            files = [
                e["name"]
                for e in fs.ls(path, detail=True)
                if e.get("type") == "file" and e["name"].lower().endswith(CHECKPOINT_SUFFIXES)
            ]
    except CatalogError:
        raise
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001 - filesystems raise anything (missing package, credentials)
        raise _problem(pattern, exc) from None
    return sorted(_spelled(root, fs_root, p, fs) for p in files)


def empty_reason(pattern: str) -> str:
    """Why :func:`list_checkpoints` found no file for ``pattern``, in a few words."""
    if is_glob(pattern):
        return "the glob matches nothing"
    try:
        fs, path = _fs(pattern)
        exists = fs.isdir(path)
    except Exception:  # noqa: BLE001 - the listing worked; say what is known
        exists = False
    if not exists:
        return "no such folder"
    return f"the folder has no {'/'.join(CHECKPOINT_SUFFIXES)} file"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """fsspec's glob semantics as a regex: ``*`` and ``?`` stay within a folder, ``**`` crosses folders."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):  # "**/" also matches no folder at all
                out[-1] = "(?:.*/)?"
                i += 1
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def watches(pattern: str, checkpoint: str) -> bool:
    """Whether ``pattern`` (a folder or glob of a ``checkpoints:`` entry) would list ``checkpoint`` if the file
    existed, both spelled as in the catalog (no filesystem access): how ``lee reevaluate`` tells a file
    that was evaluated and is gone from the folder."""
    if is_glob(pattern):
        return bool(_glob_regex(pattern).match(checkpoint))
    folder = pattern.rstrip("/")
    return checkpoint == pattern or (
        posixpath.dirname(checkpoint) == folder and checkpoint.lower().endswith(CHECKPOINT_SUFFIXES)
    )


def _stem(checkpoint: str) -> str:
    base = posixpath.basename(checkpoint.rstrip("/"))
    return base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base


def checkpoint_name(template: str, checkpoint: str, arch: str, where: str) -> str:
    """The model name of one file: ``template`` with ``{stem}``, ``{arch}`` and ``{parent}`` filled in.

    Raises:
        CatalogError: The template has another placeholder, or yields an empty name.
    """
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    bad = [f for f in fields if f not in NAME_FIELDS]
    if bad:
        raise CatalogError(
            f"{where}: name template {template!r} has unknown placeholder(s) "
            f"{', '.join('{' + f + '}' for f in bad)}; allowed: "
            f"{', '.join('{' + f + '}' for f in NAME_FIELDS)}"
        )
    parent = posixpath.basename(posixpath.dirname(checkpoint.rstrip("/")))
    name = template.format(stem=_stem(checkpoint), arch=arch, parent=parent)
    if not name.strip():
        raise CatalogError(f"{where}: name template {template!r} gives an empty name for {checkpoint!r}")
    return name
