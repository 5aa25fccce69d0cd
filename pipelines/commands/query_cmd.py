"""``lee query``: SQL against the analysis views, or one of the paper's named analyses.

Examples::

    lee query "SELECT model, generator, mean_lee, se_lee, n FROM lee_summary ORDER BY mean_lee"
    lee query -r s3://bucket/lee "FROM layer_type_shares WHERE generator = 'rotate'" --format csv
    lee query - < my-query.sql --format parquet --out result.parquet
    lee query --analysis accuracy --generator translate_x,rotate
    lee query --analysis gap --weights any --format json --out gap.json

Views: see ``lee sql`` / README "Analysis". Named analyses: ``pipelines.analysis.analyses.ANALYSES``.

Read-only by default: the DuckDB connection may open files only under the results root
(``allowed_directories``, ``enable_external_access = false``, ``lock_configuration = true``), and only
queries run (``COPY``, ``EXPORT``, ``ATTACH``, ``INSTALL``, ``LOAD``, ``SET``, ``PRAGMA``, ``CALL`` ... are
refused); results are written with ``--out``. ``--unrestricted`` lifts both, for SQL you trust.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import decimal
import io
import json
import math
import sys
from typing import Any

from pipelines.commands.args import (
    add_datasets,
    add_generators,
    add_results_arguments,
    add_stat,
    add_weights_filter,
)
from pipelines.errors import UsageError

ANALYSIS_NAMES = (
    "accuracy",
    "scale",
    "gap",
    "layerwise",
    "agreement",
    "border_share",
    "layer_location",
    "texture",
)  # = analyses.ANALYSES (checked in tests)
FORMATS = ("table", "csv", "json", "parquet")
MAX_CELL = 60

EPILOG = """examples:
  lee query "SELECT model, generator, mean_lee, se_lee, n FROM lee_summary ORDER BY mean_lee"
  lee query -r s3://bucket/lee "FROM layer_type_shares WHERE generator = 'rotate'" --format csv
  lee query - --format parquet --out result.parquet < my-query.sql
  lee query --analysis accuracy --generator translate_x,rotate
  lee query --analysis gap --weights any --format json --out gap.json

analyses: accuracy (LEE vs top-1: correlations, regression on family), scale (size, pretraining data,
recipe, anti-aliasing), gap (train / test / OOD ratios), layerwise (cumulative and by layer type),
agreement (rank correlation of LEE with the alternative metrics), border_share / layer_location / texture
(where the explain family places the LEE: image border, layers and cells, textured cells).

read-only: the SQL may read only the results root, and COPY, ATTACH, INSTALL, LOAD, SET ... are refused;
write results with --out. --unrestricted lifts this (only for SQL you trust)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lee query``."""
    p = subparsers.add_parser(
        "query",
        help="run SQL against the analysis views, or a named analysis",
        description="Run SQL against the analysis views of a results root (see `lee sql`), or one of the "
        "paper's analyses with its statistics (--analysis), and print the result.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sql", nargs="?", metavar="SQL", help="the query ('-': read it from stdin)")
    add_results_arguments(p)
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument(
        "-o", "--out", metavar="FILE", help="write to FILE (any fsspec URI) instead of stdout; required for parquet"
    )
    a = p.add_argument_group("named analyses")
    a.add_argument(
        "--analysis",
        choices=ANALYSIS_NAMES,
        metavar="NAME",
        help=f"run a named analysis instead of SQL: {', '.join(ANALYSIS_NAMES)}",
    )
    add_weights_filter(a)
    add_datasets(a)
    add_generators(a)
    a.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    a.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    a.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    add_stat(
        p,
        help="instead of SQL: the LEE summary per model, weights, dataset, generator and output "
        "configuration by this per-image statistic: lee (mean of squares) or mean_abs (mean_c "
        "|L_X f(x)_c|, the paper's tables' statistic), mean and standard error over the images, "
        "named as such in the header (-d/-g filter it)",
    )
    p.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    p.add_argument(
        "--unrestricted",
        action="store_true",
        help="lift the read-only sandbox: let the SQL read and write any file, attach databases, "
        "install and load extensions (COPY, ATTACH, INSTALL, LOAD, SET ...); only for SQL you "
        "trust",
    )
    p.set_defaults(func=run)


ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN", "CREATE", "DROP", "INSERT", "UPDATE", "DELETE")
"""Statement types ``lee query`` runs by default: queries, and changes to the in-memory database only."""


def check_statements(sql: str) -> None:
    """Refuse any statement that is not a query or a change of the in-memory database (read-only mode).

    ``COPY``, ``EXPORT``, ``ATTACH``/``DETACH``, ``INSTALL``/``LOAD``, ``SET``/``RESET``, ``PRAGMA``, ``CALL``
    and the rest are refused by type (parsed by DuckDB, not matched as text); a SQL that does not parse is
    left to DuckDB's own error.

    Raises:
        UsageError: Naming the statement and the flag that allows it.
    """
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return  # the query itself reports the syntax error
    for st in statements:
        kind = st.type.name
        if kind not in ALLOWED_STATEMENTS:
            first = st.query.split()[0].upper() if st.query.split() else ""
            verb = first if first.isalpha() else kind  # INSTALL and LOAD are both DuckDB's LOAD type
            raise UsageError(
                f"lee query is read-only: {verb} is refused ({' '.join(st.query.split()[:3])!r} ...); it runs queries "
                f"({', '.join(ALLOWED_STATEMENTS)} on the in-memory views) and reads only the results root. "
                "Write a result with --format/--out, or pass --unrestricted for SQL you trust"
            )


def run(args: argparse.Namespace) -> int:
    from pipelines.analysis.views import full_check_root

    if args.format == "parquet" and not args.out:
        raise UsageError("--format parquet needs --out FILE")
    if not 0 < args.level < 1:
        raise UsageError(f"--level must be between 0 and 1, got {args.level}")
    if args.n_boot < 1:
        raise UsageError(f"--n-boot must be positive, got {args.n_boot}")
    if args.stat:
        if args.sql or args.analysis:
            raise UsageError("--stat is a summary of its own: give it without SQL and without --analysis")
        args.sql, params = stat_summary_sql(args.stat, args.datasets, args.generators)
    else:
        params = []
    if args.analysis and args.sql:
        raise UsageError("give either SQL or --analysis, not both")
    if not args.analysis and not args.sql:
        raise UsageError("no query: give SQL (or '-' to read it from stdin) or --analysis NAME")
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    if sql is not None and not sql.strip():
        raise UsageError("empty query")

    if sql is not None and not args.unrestricted:
        check_statements(sql)
    try:
        return _run_query(args, sql, params)
    except _QueryFailed as failed:  # a file damaged in a way its listing does not show: find it, leave it out
        root = full_check_root(args.results, failed.error)
        try:
            return _run_query(args, sql, params, root)
        except _QueryFailed as again:
            raise UsageError(f"query failed: {again.error}") from None


def _query_errors() -> tuple[type[Exception], ...]:
    """DuckDB's errors of the query text itself: no file is to blame (imported here: ``lee --help`` stays light)."""
    import duckdb

    return (
        duckdb.ParserException,
        duckdb.BinderException,
        duckdb.CatalogException,
        duckdb.SyntaxException,
        duckdb.ConversionException,
        duckdb.OutOfRangeException,
        duckdb.NotImplementedException,
        duckdb.InterruptException,
        duckdb.TypeMismatchException,
    )


class _QueryFailed(Exception):
    """A DuckDB error while the query ran (not while the views were built)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _run_query(args: argparse.Namespace, sql: str | None, params: list[Any], root=None) -> int:
    """Run ``sql`` (its ``?`` bound to ``params``) or ``--analysis`` and write the result."""
    import duckdb
    import pyarrow as pa

    from pipelines.analysis import analyses
    from pipelines.analysis.views import connect

    con = connect(
        root or args.results,
        models=args.model_rows,
        catalogs=args.catalog,
        threads=args.threads,
        read_only=not args.unrestricted,
    )
    try:
        header: list[str] = []
        if args.analysis:
            df = analyses.run_analysis(
                con,
                args.analysis,
                weights=args.weights,
                dataset=args.datasets,
                generator=args.generators,
                n_boot=args.n_boot,
                seed=args.seed,
                level=args.level,
            )
            table = pa.Table.from_pandas(df, preserve_index=False)
            if df.attrs.get("note"):
                header.append(f"note: {df.attrs['note']}")
        else:
            try:
                rel = con.sql(sql, params=params or None)
                table = rel.to_arrow_table() if rel is not None else None
            except duckdb.PermissionException as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UsageError(
                    f"query refused: {first} (lee query reads only the results root "
                    f"{args.results!r}; --unrestricted lifts this for SQL you trust)"
                ) from None
            except _query_errors() as exc:  # the query's own mistake: no file to blame
                raise UsageError(f"query failed: {exc}") from None
            except duckdb.Error as exc:  # reading a file failed (or another error at run time)
                raise _QueryFailed(exc) from None
    finally:
        con.close()
    if table is None:  # a statement without a result (CREATE VIEW ...)
        return 0
    write(table, args.format, args.out, analysis=bool(args.analysis), header=header)
    return 0


def stat_summary_sql(stat: str, datasets: list[str] | None, generators: list[str] | None) -> tuple[str, list[Any]]:
    """SQL of ``lee query --stat`` and its parameters (the dataset and generator names): mean and standard error
    of ``stat`` (a ``lee`` view column) per model, weights, dataset, generator and output configuration, the
    columns named after the statistic."""
    from pipelines.analysis.sqltext import ident, is_in

    col = ident("value" if stat == "lee" else "mean_abs")
    where = is_in("dataset", datasets) & is_in("generator", generators)
    sql = (
        f"SELECT model, weights, dataset, generator, output, interpolation, avg({col}) AS {ident('mean_' + stat)}, "
        f"stddev_samp({col}) / sqrt(count(*)) AS {ident('se_' + stat)}, count(*) AS n FROM lee "
        f"WHERE {where.sql} "
        "GROUP BY ALL ORDER BY model, weights, dataset, generator, output, interpolation"
    )
    return sql, list(where.params)


# ---- output ----------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A JSON-able value: NaN -> None, timestamps -> ISO text, nested lists/dicts kept."""
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    """A value as a table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(_plain(value), default=str)
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def format_table(table, *, analysis: bool = False) -> str:
    """Aligned text columns; numbers to 4 significant digits, long text cut at MAX_CELL characters.

    For analysis tables, columns with one value in every row (weights, level, method ...) are printed
    once above the table instead of in every row.
    """
    names = list(table.column_names)
    rows = table.to_pylist()
    top: list[str] = []
    if analysis and len(rows) > 1:
        keep = []
        for n in names:
            values = {json.dumps(_plain(r[n]), default=str) for r in rows}
            if len(values) == 1:
                v = rows[0][n]
                if v is not None and not (isinstance(v, float) and math.isnan(v)) and v != "":
                    top.append(f"{n}: {v if isinstance(v, str) else _cell(v)}")
            else:
                keep.append(n)
        names = keep
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n), *(len(c[i]) for c in cells)]) for i, n in enumerate(names)]
    numeric = [all(_is_number(r[n]) for r in rows) and bool(rows) for n in names]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = top + [line(names), line(["-" * w for w in widths])] + [line(c) for c in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def format_csv(table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.column_names)
    for r in table.to_pylist():
        w.writerow(
            [
                "" if v is None else json.dumps(_plain(v), default=str) if isinstance(v, (list, dict)) else _plain(v)
                for v in r.values()
            ]
        )
    return buf.getvalue()


def format_json(table) -> str:
    return json.dumps([_plain(r) for r in table.to_pylist()], default=str, indent=1, allow_nan=False) + "\n"


def write(table, fmt: str, out: str | None, *, analysis: bool = False, header: list[str] | None = None) -> None:
    """Write an Arrow table as ``fmt`` to ``out`` (fsspec URI) or stdout; notes in ``header`` go to stderr."""
    import fsspec
    import pyarrow.parquet as pq

    for line in header or []:
        print(line, file=sys.stderr)
    try:
        if fmt == "parquet":
            with fsspec.open(out, "wb") as fh:
                pq.write_table(table, fh)
            return
        text = {
            "table": lambda: format_table(table, analysis=analysis),
            "csv": lambda: format_csv(table),
            "json": lambda: format_json(table),
        }[fmt]()
        if out:
            with fsspec.open(out, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot write {out or 'stdout'}: {type(exc).__name__}: {exc}") from None
