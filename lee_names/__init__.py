"""Close matches for an unknown name: the one "did you mean" of liecore, catalog and pipelines.

It lives in a package of its own because it is the only layer that all three may import: liecore imports
only torch, numpy and the standard library, catalog must not import liecore (torch) at import time, and
neither may depend on the pipelines package. This module imports only the standard library (``tests/test_imports.py``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "did_you_mean"]


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to ``n`` candidates that look like ``name`` (difflib ratio, then substring hits).

    Args:
        name: The name that was not found.
        candidates: Known names (duplicates are ignored).
        n: At most this many suggestions.

    Returns:
        Suggestions, best first.
    """
    pool = list(dict.fromkeys(str(c) for c in candidates))
    name = str(name)
    found = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if len(found) < n:
        low = name.lower()
        found += [c for c in pool if low in c.lower() and c not in found][: n - len(found)]
    return found


def did_you_mean(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """The hint to append to an "unknown ..." message: ``"; did you mean 'a', 'b'?"``, or ``""`` if nothing
    looks like ``name``.

    Args:
        name: The name that was not found.
        candidates: Known names.
        n: At most this many suggestions (:func:`close_matches`).
    """
    hints = close_matches(name, candidates, n)
    return f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
