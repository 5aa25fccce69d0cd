"""SQL text for DuckDB: the one place values are written into SQL as literals.

Views (``CREATE VIEW``), ``SET allowed_directories`` and the filters the analyses and the report compose
from fragments are SQL text, which DuckDB cannot take as bound parameters; every value that goes into such
text goes through :func:`literal` (or :func:`in_list`), never through an f-string of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["in_list", "literal", "quote"]


def quote(value: Any) -> str:
    """``value`` as a SQL string literal: ``'it''s'`` (quotes doubled; the text of ``str(value)``)."""
    return "'" + str(value).replace("'", "''") + "'"


def literal(value: Any) -> str:
    """A typed SQL literal: ``NULL`` (None and float NaN), ``true``/``false``, an integer, a float
    (``repr``: round-trips), else a string literal (:func:`quote`)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NULL" if math.isnan(value) else repr(value)
    return quote(value)


def in_list(column: str, values: Iterable[Any] | None) -> str:
    """``column IN ('a', 'b')`` (values as string literals); ``true`` for None (no filter) and ``false`` for
    no values (nothing passes)."""
    if values is None:
        return "true"
    values = list(values)
    if not values:
        return "false"
    return f"{column} IN ({', '.join(quote(v) for v in values)})"
