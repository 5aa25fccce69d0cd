"""``lee verify``: check a results root and list what is damaged.

Examples::

    lee verify                      # ./lee-results: every file's footer, every done unit's data file
    lee verify -r s3://bucket/lee --full

What counts as damage (exit code 1):

* ``runs unreadable``: a ``runs`` file that cannot be read (its unit counts as never started);
* ``data missing``: a ``done`` unit without its data file;
* ``data unreadable``: a data file that cannot be read (truncated, damaged; ``--full`` reads every row,
  not only the footer);
* ``row count``: a ``done`` unit whose data file has another number of rows than ``runs.n_rows``;
* ``data changed``: a ``done`` unit whose data file reads but is not the file its unit wrote: another size
  than recorded, or written again since (the listing's ETag / modification time differs) and another
  sha256; ``--full`` compares every file's sha256, which also finds changes that kept the size and the
  modification time (bit rot). Units written before schema 6 recorded nothing: their files are only read.

Noted, not damage: temporary files of killed writes (``_tmp-*.partial``, removed by the unit's next
write), data files without a ``runs`` row (a unit still being written, or never finished), and lock
files of units being computed (see README, "Concurrent runs").

``lee eval`` / ``lee reevaluate`` with the same flags redo done units whose data is missing or
unreadable (reason ``data unreadable``) or changed (``data damaged``) and rewrite an unreadable ``runs`` file;
views, ``lee query`` and ``lee report`` leave such units out with a warning line each (docs/integrity.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from pipelines.commands.args import add_root
from pipelines.errors import UsageError
from pipelines.running.progress import format_table

DAMAGE = ("runs unreadable", "data missing", "data unreadable", "row count", "data changed")
NOTES = ("temporary file", "no runs row", "lock")
RUNS_COLUMNS = ("unit", "status", "family", "model", "dataset", "n_rows", "data_sha256", "data_bytes", "data_stamp")
"""The ``runs`` columns verify reads (no timestamps: converting them to Python would import pandas)."""


@dataclass(frozen=True)
class Finding:
    """One problem: its kind (:data:`DAMAGE` or :data:`NOTES`), the file, the unit and what is wrong."""

    kind: str
    path: str
    unit: str
    detail: str

    @property
    def damage(self) -> bool:
        return self.kind in DAMAGE


def verify_root(uri: str, *, full: bool = False) -> tuple[list[Finding], int]:
    """Check every file of a results root: ``(findings, number of files checked)``.

    Args:
        uri: The results root (any fsspec URI).
        full: Read every row of every file, not only its Parquet footer.

    Raises:
        pipelines.errors.UsageError: The root cannot be opened or has no ``runs/``.
    """
    import pyarrow.parquet as pq

    from pipelines.store import integrity, schema
    from pipelines.store.results import Store, StoreError, file_problem

    try:
        store = Store(uri)
        fs = store.fs
        if (problem := store.missing_bucket()) is not None:
            raise UsageError(f"results {problem}")
        if not fs.exists(f"{store.path}/runs"):
            raise UsageError(f"no results under {uri!r} (no runs/ directory)")
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable root
        raise UsageError(f"results root {uri!r} cannot be read: {type(exc).__name__}: {exc}") from None

    findings: list[Finding] = []
    checked = 0
    runs: dict[str, dict] = {}
    for path in sorted(fs.glob(f"{store.path}/runs/unit=*/*.parquet")):
        checked += 1
        unit = path.rsplit("/", 2)[-2].removeprefix("unit=")
        problem, _ = file_problem(fs, path, full=full)
        if problem is not None:
            findings.append(Finding("runs unreadable", path, unit, problem))
            continue
        with fs.open(path, "rb") as fh:  # on this thread (no dataset scan: its threads can abort the exit)
            pf = pq.ParquetFile(fh, pre_buffer=False)
            cols = [c for c in RUNS_COLUMNS if c in pf.schema_arrow.names]  # data_*: schema 6 on
            for row in pf.read(columns=cols, use_threads=False).to_pylist():
                runs[row["unit"]] = row
    data_units: set[str] = set()
    readable: list[dict] = []  # done units whose file reads and has its rows: compared with their record
    for table in (t for t in schema.TABLES if t != "runs"):
        for path in sorted(fs.glob(f"{store.path}/{table}/model=*/dataset=*/unit=*/*.parquet")):
            checked += 1
            unit = path.rsplit("/", 2)[-2].removeprefix("unit=")
            data_units.add(unit)
            row = runs.get(unit)
            problem, _ = file_problem(fs, path, full=full)
            if problem is not None:
                findings.append(Finding("data unreadable", path, unit, problem))
                continue
            if row is None:
                findings.append(
                    Finding(
                        "no runs row",
                        path,
                        unit,
                        "data file without a runs row (still being written, or never finished): not visible",
                    )
                )
            elif row["status"] == "done":
                with fs.open(path, "rb") as fh:
                    n = pq.ParquetFile(fh, pre_buffer=False).metadata.num_rows
                if row["n_rows"] is not None and n != row["n_rows"]:
                    findings.append(Finding("row count", path, unit, f"{n} rows, runs.n_rows says {row['n_rows']}"))
                else:
                    readable.append(row)
    tables = sorted({r["family"] for r in readable})
    changed = integrity.check_units(
        fs, integrity.expected_of(store, readable), integrity.listing(fs, store.path, tables), full=full
    )
    findings += [
        Finding(d.kind, d.path, unit, d.detail) for unit, d in sorted(changed.items()) if d.kind == "data changed"
    ]
    for unit, row in sorted(runs.items()):
        if row["status"] == "done" and unit not in data_units:
            path = store.data_file(row["family"], row["model"], row["dataset"], unit)
            findings.append(Finding("data missing", path, unit, "the unit is done but has no data file"))
    for path in sorted(fs.glob(f"{store.path}/**/_tmp-*.partial")):
        findings.append(
            Finding(
                "temporary file",
                path,
                path.rsplit("/", 2)[-2].removeprefix("unit="),
                "left by a killed write; removed by the unit's next write",
            )
        )
    for path in sorted(fs.glob(f"{store.path}/_locks/*.lock")):
        unit = path.rsplit("/", 1)[-1].removesuffix(".lock")
        held = store.lock_held(unit)
        findings.append(
            Finding(
                "lock",
                path,
                unit,
                "held: the unit is being computed now"
                if held
                else "not held: left by a process that died; harmless, removed by the unit's next run",
            )
        )
    findings.sort(key=lambda f: (not f.damage, f.kind, f.path))
    return findings, checked


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lee verify``."""
    p = subparsers.add_parser(
        "verify",
        help="check a results root and list what is damaged",
        description="Check every file of a results root (runs rows, data files, done units without data, row "
        "counts) and list what is damaged; exit code 1 when something is.",
        epilog=(__doc__ or "").split("\n\n", 2)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_root(p)
    p.add_argument(
        "--full",
        action="store_true",
        help="read every row of every file and compare every data file's sha256 with its record",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    findings, checked = verify_root(args.results, full=args.full)
    damaged = [f for f in findings if f.damage]
    if findings:
        rows = [
            {
                "state": "DAMAGED" if f.damage else "note",
                "kind": f.kind,
                "unit": f.unit,
                "path": f.path,
                "detail": f.detail,
            }
            for f in findings
        ]
        print(
            format_table(
                rows, [("state", "state"), ("kind", "kind"), ("unit", "unit"), ("path", "file"), ("detail", "problem")]
            )
        )
    how = " (every row, every sha256)" if args.full else " (footers; sizes and listing stamps against the records)"
    print(
        f"{checked} files checked{how}: {len(damaged)} damaged, {len(findings) - len(damaged)} notes ({args.results})",
        file=sys.stderr,
    )
    if damaged:
        print(
            "repair: `lee eval` (or `lee reevaluate`) with the sweep's flags redoes the done units whose data is "
            "missing, unreadable or changed and rewrites unreadable runs files",
            file=sys.stderr,
        )
    return 1 if damaged else 0
