"""The one error type of the catalog, with "did you mean" suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["CatalogError", "close_matches"]


class CatalogError(ValueError):
    """An unknown name, an invalid catalog file, or weights/data that cannot be used as asked."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates that look like ``name`` (difflib ratio, then substring hits).

    Args:
        name: The name that was not found.
        candidates: Known names.
        n: At most this many suggestions.

    Returns:
        Suggestions, best first.
    """
    pool = list(dict.fromkeys(candidates))
    found = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if len(found) < n:
        low = name.lower()
        found += [c for c in pool if low in c.lower() and c not in found][: n - len(found)]
    return found


def unknown_name_error(kind: str, name: str, candidates: Iterable[str]) -> CatalogError:
    """Build the error for an unknown ``kind`` called ``name``, listing close matches."""
    hints = close_matches(name, candidates)
    hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    return CatalogError(f"unknown {kind} {name!r}{hint}")
