"""The one SQL-literal helper (``pipelines.analysis.sqltext``), checked by DuckDB itself."""

from __future__ import annotations

import math
import pathlib

import duckdb
import pytest

from pipelines.analysis.sqltext import in_list, literal, quote

TRICKY = ["plain", "it's", "''", "a'; DROP TABLE t; --", "back\\slash", "ünï", ""]


@pytest.fixture()
def con():
    c = duckdb.connect()
    c.execute("CREATE TABLE t (x VARCHAR)")
    c.executemany("INSERT INTO t VALUES (?)", [[v] for v in [*TRICKY, "other"]])
    yield c
    c.close()


def test_quote_round_trips_through_duckdb(con):
    for value in TRICKY:
        assert con.execute(f"SELECT {quote(value)}").fetchone()[0] == value


def test_literal_keeps_the_type():
    c = duckdb.connect()
    values = [None, True, False, 0, -7, 2**40, 0.1, -1.5e-300, "x'y"]
    got = c.execute("SELECT " + ", ".join(literal(v) for v in values)).fetchone()
    assert [g for g, v in zip(got, values, strict=True) if not isinstance(v, float)] == [
        v for v in values if not isinstance(v, float)]
    # floats come back exactly (DuckDB reads 0.1 as a DECIMAL, which is exact), the rest with their type
    assert all(float(g) == v if isinstance(v, float) else type(g) is type(v) for g, v in zip(got, values, strict=True))
    assert c.execute(f"SELECT {literal(math.nan)}").fetchone()[0] is None  # NaN is stored as NULL


@pytest.mark.parametrize("values, expected", [
    (None, sorted([*TRICKY, "other"])),  # no filter
    ([], []),  # nothing passes
    (["it's", "a'; DROP TABLE t; --"], sorted(["it's", "a'; DROP TABLE t; --"])),
    (("",), [""]),
])
def test_in_list_filters_like_python(con, values, expected):
    rows = con.execute(f"SELECT x FROM t WHERE {in_list('x', values)} ORDER BY x").fetchall()
    assert [r[0] for r in rows] == expected


def test_no_other_module_quotes_sql_itself():
    """Every SQL literal goes through sqltext: no module doubles quotes on its own."""
    import pipelines

    root = pathlib.Path(pipelines.__file__).parent
    offenders = [p.relative_to(root) for p in root.rglob("*.py")
                 if p.name != "sqltext.py" and """replace("'", "''")""" in p.read_text()]
    assert not offenders, offenders
