"""The one error type of the catalog, with "did you mean" suggestions (:mod:`lee_names`)."""

from __future__ import annotations

from collections.abc import Iterable

from lee_names import close_matches, did_you_mean

__all__ = ["CatalogError", "close_matches", "unknown_name_error"]


class CatalogError(ValueError):
    """An unknown name, an invalid catalog file, or weights/data that cannot be used as asked."""


def unknown_name_error(kind: str, name: str, candidates: Iterable[str]) -> CatalogError:
    """Build the error for an unknown ``kind`` called ``name``, listing close matches."""
    return CatalogError(f"unknown {kind} {name!r}{did_you_mean(name, candidates)}")
