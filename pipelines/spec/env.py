"""Provenance of a run: package versions, git revision, host and device."""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata

__all__ = ["git_head", "git_revision", "hardware", "hostname", "node_id", "package_versions"]

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


def git_head(directory: str) -> str | None:
    """``HEAD`` of the git checkout containing ``directory`` (``-dirty`` if tracked files are modified)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "") if rev else None


@functools.cache
def git_revision() -> str | None:
    """The revision of the code that runs, however it was started.

    In order: ``LEE_GIT_REV`` (``lee submit`` sets it: a Ray Job's copy of the project has no
    ``.git``); ``HEAD`` of the working directory's git checkout; of the checkout this package lives
    in (``-dirty`` if modified); ``lee-eval==<version>``, the installed distribution's recorded
    version (``ray job submit ... python -m pipelines ...`` without ``LEE_GIT_REV``). None if none.
    """
    if os.environ.get("LEE_GIT_REV"):
        return os.environ["LEE_GIT_REV"]
    here = os.path.dirname(os.path.abspath(__file__))
    for directory in dict.fromkeys((os.getcwd(), here)):
        rev = git_head(directory)
        if rev:
            return rev
    try:
        return f"lee-eval=={metadata.version('lee-eval')}"
    except metadata.PackageNotFoundError:
        return None


def node_id() -> str | None:
    """The Ray node id (hex) of this process's node; None outside Ray."""
    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def hostname() -> str:
    return socket.gethostname()


def hardware(device) -> str:
    """Human-readable device: ``cuda: NVIDIA H100 ...`` or ``cpu (N threads)``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
