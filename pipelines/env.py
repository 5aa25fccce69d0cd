"""Provenance of a run: package versions, git revision, host and device."""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import subprocess
from importlib import metadata

__all__ = ["git_revision", "hardware", "hostname", "package_versions"]

_PACKAGES = ("torch", "timm", "ray", "pyarrow", "duckdb", "fsspec", "numpy")


@functools.cache
def package_versions() -> str:
    """JSON object of the versions that can change a number (sorted keys)."""
    import liecore

    out = {"python": platform.python_version(), "liecore": liecore.__version__}
    try:
        dist = metadata.version("lee-eval")
    except metadata.PackageNotFoundError:
        dist = None
    out["lee-eval"] = dist
    # catalog and pipelines ship in the lee-eval distribution: its version unless they declare their own
    for name in ("catalog", "pipelines"):
        try:
            mod = __import__(name)
        except ImportError:  # pragma: no cover
            mod = None
        out[name] = getattr(mod, "__version__", None) or dist
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import torch

        out["torch"] = torch.__version__  # includes the build (+cu130, +cpu)
    except ImportError:  # pragma: no cover
        pass
    return json.dumps(out, sort_keys=True)


@functools.cache
def git_revision() -> str | None:
    """``LEE_GIT_REV`` when set (``lee submit`` sets it for Ray Jobs, whose working dir has no ``.git``),
    else ``HEAD`` of the checkout this code lives in (``-dirty`` if modified); None outside git."""
    if os.environ.get("LEE_GIT_REV"):
        return os.environ["LEE_GIT_REV"]
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "") if rev else None


def hostname() -> str:
    return socket.gethostname()


def hardware(device) -> str:
    """Human-readable device: ``cuda: NVIDIA H100 ...`` or ``cpu (N threads)``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
