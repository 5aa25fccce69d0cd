"""Reading catalog files safely: a safe YAML loader (or JSON), then key-by-key validation."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from catalog._errors import CatalogError

__all__ = ["PACKAGE_DIR", "read_catalog_file", "check_keys"]

PACKAGE_DIR = Path(__file__).resolve().parent


def read_catalog_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (safe loader only: no tags, no code) or JSON file into a mapping.

    Args:
        path: File path or fsspec URI (``s3://bucket/models.yaml``; ``.yaml``, ``.yml`` or ``.json``).

    Returns:
        The top-level mapping.

    Raises:
        CatalogError: Missing file, parse error, or a top level that is not a mapping.
    """
    uri = str(path) if "://" in str(path) else None  # an fsspec URI (s3://...), named as given
    path = uri or Path(path)
    try:
        if uri:
            import fsspec

            with fsspec.open(uri, "r", encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = Path(path).read_text(encoding="utf-8")
    except ImportError as exc:  # the filesystem's package (s3fs, gcsfs, ...) is not installed
        raise CatalogError(f"cannot read catalog file {uri!r}: {exc}") from None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {str(path)!r}: {exc.strerror or exc}") from None
    suffix = PurePosixPath(str(path)).suffix
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, never yaml.Loader
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise CatalogError(f"{path}: not valid {'JSON' if suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str, required: tuple[str, ...] = ()) -> None:
    """Raise a CatalogError naming every unknown or missing key of ``data``."""
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise CatalogError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(dict.fromkeys(allowed))}"
        )
    missing = [k for k in required if k not in data]
    if missing:
        raise CatalogError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
