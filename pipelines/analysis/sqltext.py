"""SQL text for DuckDB: identifiers, bound values, and the one place values are written as literals.

- A query that takes user values (model, dataset, generator, metric names, thresholds) binds them as
  parameters: its filters are :class:`Condition` s (SQL text with ``?`` placeholders and their values, in
  order), composed with ``&`` and run with ``con.sql(text, params=condition.params)``.
- Every identifier (column, table alias, view) written into SQL text goes through :func:`ident`.
- Views (``CREATE VIEW``) and ``SET allowed_directories`` are SQL text that DuckDB cannot bind parameters
  into; every value that goes into such text goes through :func:`literal` (or :func:`quote`), never through
  an f-string of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["TRUE", "Condition", "equals", "ident", "is_in", "literal", "quote"]


def ident(*parts: str) -> str:
    """A quoted SQL identifier: ``ident("l", "model")`` is ``"l"."model"`` (double quotes doubled)."""
    if not parts or any(not str(p) for p in parts):
        raise ValueError(f"an identifier needs non-empty parts, got {parts!r}")
    return ".".join('"' + str(p).replace('"', '""') + '"' for p in parts)


@dataclass(frozen=True)
class Condition:
    """A SQL predicate whose values are bound parameters: ``sql`` has one ``?`` per item of ``params``, in order.

    ``a & b`` is ``a AND b`` with the parameters of both, in order; ``TRUE`` is no condition.
    """

    sql: str
    params: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.sql.count("?") != len(self.params):
            raise ValueError(f"{self.sql!r} has {self.sql.count('?')} placeholders for {len(self.params)} values")

    def __and__(self, other: Condition) -> Condition:
        if self.sql == "true":
            return other
        if other.sql == "true":
            return self
        return Condition(f"{self.sql} AND {other.sql}", self.params + other.params)


TRUE = Condition("true")
"""No condition (every row passes)."""


def is_in(column: str | tuple[str, ...], values: Iterable[Any] | None) -> Condition:
    """``column IN (?, ?)`` with ``values`` bound; :data:`TRUE` for None (no filter) and ``false`` for no values
    (nothing passes).

    Args:
        column: A column name, or ``(alias, column)``: quoted with :func:`ident`.
        values: The values to keep.
    """
    if values is None:
        return TRUE
    values = tuple(values)
    if not values:
        return Condition("false")
    name = ident(*column) if isinstance(column, tuple) else ident(column)
    return Condition(f"{name} IN ({', '.join('?' * len(values))})", values)


def equals(column: str | tuple[str, ...], value: Any) -> Condition:
    """``column = ?`` with ``value`` bound (``column`` as for :func:`is_in`)."""
    name = ident(*column) if isinstance(column, tuple) else ident(column)
    return Condition(f"{name} = ?", (value,))


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
