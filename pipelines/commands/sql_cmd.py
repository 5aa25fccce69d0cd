"""``lee sql``: print the analysis views over a results root as one DuckDB script.

Examples::

    lee sql > views.sql && duckdb -init views.sql            # the plain duckdb shell, default ./lee-results
    lee sql --results s3://bucket/lee --models all > views.sql
    lee sql -r results --catalog my-models.yaml | duckdb -c ".read /dev/stdin" -c "FROM lee_summary"

The script (``pipelines/sql/*.sql`` with the root's file globs filled in, plus a ``models`` table of
catalog metadata) is run once in a throwaway connection before it is printed, so what you get loads.
"""

from __future__ import annotations

import argparse

from pipelines.commands.args import add_results_arguments

EPILOG = """examples:
  lee sql > views.sql && duckdb -init views.sql
  lee sql --results s3://bucket/lee --models all > views.sql
  lee sql -r results --catalog my-models.yaml > views.sql"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lee sql``."""
    p = subparsers.add_parser(
        "sql",
        help="print the DuckDB analysis views over a results root as one script",
        description="Print the analysis views (only completed work units, catalog metadata joined) as one "
        "DuckDB SQL script for the duckdb shell or any DuckDB client.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_results_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.analysis.views import views_script

    print(views_script(args.results, models=args.model_rows, catalogs=args.catalog), end="")
    return 0
