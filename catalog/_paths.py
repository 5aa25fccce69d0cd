"""Where the catalog caches what it materializes (never inside the package)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "zoo_catalog_path", "zoo_dir"]


def cache_dir() -> Path:
    """``$LEE_CACHE_DIR``, else ``$XDG_CACHE_HOME/lee``, else ``~/.cache/lee``."""
    if os.environ.get("LEE_CACHE_DIR"):
        return Path(os.environ["LEE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "lee"


def zoo_dir() -> Path:
    """Where ``lee zoo train`` writes by default: ``<cache_dir()>/zoo``."""
    return cache_dir() / "zoo"


def zoo_catalog_path() -> Path:
    """The catalog file the catalog name ``zoo`` resolves to: ``<zoo_dir()>/zoo.yaml``."""
    return zoo_dir() / "zoo.yaml"
