"""The SQL helpers (``pipelines.analysis.sqltext``: bound values, quoted identifiers, literals), checked by DuckDB
itself, and hostile names treated as data by the analyses, the report and ``lee query --stat``."""

from __future__ import annotations

import math
import pathlib

import duckdb
import pytest

from pipelines.analysis.sqltext import TRUE, Condition, equals, ident, is_in, literal, quote

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
        v for v in values if not isinstance(v, float)
    ]
    # floats come back exactly (DuckDB reads 0.1 as a DECIMAL, which is exact), the rest with their type
    assert all(float(g) == v if isinstance(v, float) else type(g) is type(v) for g, v in zip(got, values, strict=True))
    assert c.execute(f"SELECT {literal(math.nan)}").fetchone()[0] is None  # NaN is stored as NULL


@pytest.mark.parametrize(
    "values, expected",
    [
        (None, sorted([*TRICKY, "other"])),  # no filter
        ([], []),  # nothing passes
        (["it's", "a'; DROP TABLE t; --"], sorted(["it's", "a'; DROP TABLE t; --"])),
        (("",), [""]),
    ],
)
def test_is_in_binds_values_and_filters_like_python(con, values, expected):
    where = is_in("x", values)
    assert "'" not in where.sql  # the values are parameters, never SQL text
    rows = con.execute(f"SELECT x FROM t WHERE {where.sql} ORDER BY x", list(where.params)).fetchall()
    assert [r[0] for r in rows] == expected
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == len(TRICKY) + 1  # t is still there


def test_conditions_compose_with_their_parameters_in_order(con):
    where = is_in("x", ["it's", "plain"]) & TRUE & equals(("t", "x"), "it's")
    assert where.sql == '"x" IN (?, ?) AND "t"."x" = ?' and where.params == ("it's", "plain", "it's")
    assert con.execute(f"SELECT x FROM t WHERE {where.sql}", list(where.params)).fetchall() == [("it's",)]
    assert (TRUE & TRUE) is TRUE
    with pytest.raises(ValueError, match="placeholders"):
        Condition("x = ?", ())


def test_ident_quotes_any_name():
    c = duckdb.connect()
    names = ["plain", 'with "quotes"', "a b; DROP TABLE t; --", "ünï"]
    c.execute(f"CREATE TABLE {ident('odd table')} ({', '.join(ident(n) + ' INTEGER' for n in names)})")
    c.execute(f"INSERT INTO {ident('odd table')} VALUES (1, 2, 3, 4)")
    assert c.execute(f"SELECT {ident('odd table', names[1])} FROM {ident('odd table')}").fetchone() == (2,)
    assert [d[0] for d in c.execute(f"SELECT * FROM {ident('odd table')}").description] == names
    with pytest.raises(ValueError):
        ident("")


def test_no_other_module_quotes_sql_itself():
    """Every SQL literal goes through sqltext: no module doubles quotes on its own."""
    import pipelines

    root = pathlib.Path(pipelines.__file__).parent
    offenders = [
        p.relative_to(root)
        for p in root.rglob("*.py")
        if p.name != "sqltext.py" and """replace("'", "''")""" in p.read_text()
    ]
    assert not offenders, offenders


HOSTILE = "evil'; DROP TABLE runs; --"
"""A model name that would end the statement if it were pasted into SQL."""


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory) -> str:
    """Two models on the same 6 images: ``plain``, and one named :data:`HOSTILE`."""
    import numpy as np

    from pipelines.store.results import Store

    from .conftest import lee_columns, write_unit

    root = str(tmp_path_factory.mktemp("hostile") / "results")
    store = Store(root)
    rng = np.random.default_rng(0)
    for model in ("plain", HOSTILE):
        write_unit(
            store,
            "lee",
            model,
            "synth-test",
            "test",
            lee_columns(np.exp(rng.normal(-8, 0.3, (6, 1))), ["rotate"]),
            config={"generators": ["rotate"], "output": "probs", "interpolation": "cubic"},
        )
    return root


def test_hostile_names_are_data_not_sql(hostile_root):
    from pipelines.analysis.analyses import scale
    from pipelines.analysis.report import Selection
    from pipelines.analysis.views import connect
    from pipelines.commands.query_cmd import stat_summary_sql

    con = connect(hostile_root, threads=1)
    try:
        # the hostile name as a filter value: it matches its own rows, and nothing else
        got = scale(con, weights="any", n_boot=20, pairs=[(HOSTILE, "plain")])
        ratio = got[got["statistic"] == "ratio"]
        assert list(ratio["model"]) == [HOSTILE] and list(ratio["reference"]) == ["plain"]
        assert ratio["n"].iloc[0] == 6
        # a filter that would match every row if it were SQL text matches none
        assert scale(con, weights="any", n_boot=20, dataset=["x' OR 'a'='a"], pairs=[(HOSTILE, "plain")]).empty
        where = Selection(weights="any", datasets=(HOSTILE,), generators=("rotate') OR ('a'='a",)).where()
        assert con.execute(f"SELECT count(*) FROM lee WHERE {where.sql}", list(where.params)).fetchone() == (0,)
        sql, params = stat_summary_sql("lee", ["synth-test"], None)
        rows = con.execute(sql, params).fetchall()
        assert sorted(r[0] for r in rows) == sorted(["plain", HOSTILE]) and {r[-1] for r in rows} == {6}
        sql, params = stat_summary_sql("lee", [HOSTILE], ["rotate"])
        assert con.execute(sql, params).fetchall() == []
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)  # nothing was dropped
    finally:
        con.close()
