"""DuckDB views over a results root: the SQL files of ``pipelines/sql/`` plus the catalog's ``models`` table.

The views are plain SQL (``pipelines/sql/NN_*.sql``, run in file order). Two things depend on the
results root and are filled in when the script is built (:func:`views_script`, printed by ``lee sql``):

- ``{{source:<table>}}`` placeholders become the reader of that table's files (``{{history:<table>}}``:
  of the files kept under ``history/`` for earlier weights, with their ``weights_sha256`` partition)::

      SELECT * FROM read_parquet('<root>/<table>/model=*/dataset=*/unit=*/*.parquet',
                                 hive_partitioning = true, hive_types = {...} [, union_by_name = true])
      UNION ALL BY NAME SELECT <typed NULLs of pipelines.store.schema> WHERE false

  so every column of the current schema exists (NULL in older files), partition columns have pinned
  types and unknown newer columns are kept. ``union_by_name`` is on only when the table's files differ
  in schema (checked when the script is made): with it DuckDB reads every file's footer at every
  query, so a filter on ``model`` / ``dataset`` could not keep a query to that model's files. A table with no files yet
  becomes the typed empty SELECT
  alone (``read_parquet`` fails on a glob that matches nothing); run ``lee sql`` again once it has files.
- the ``models`` table: one row per model in the results (or the whole catalog), generated from the
  ``catalog`` package (plus user catalog files) as ``CREATE TABLE`` + ``INSERT ... VALUES``, so the
  script needs no extra file.

``done_units`` (and ``current_items``, derived from it) is a table, not a view: a snapshot of the done
units taken when the script runs, so every query joins the (small) unit list in memory and a sweep
writing meanwhile cannot make half a unit visible. Connect again (or rerun the script) to see units
that finished since. ``runs`` (every column, failed units too) stays a view over the files.

Every root that is not a local folder (``s3://``, ``gs://``, ``memory://`` ...) is read by DuckDB through the
root's own fsspec filesystem, registered with the connection (:func:`connect`): the endpoint and credentials
are fsspec's (``AWS_ENDPOINT_URL``, profiles ...), and DuckDB never installs or loads an extension (its
``httpfs`` is not needed; auto-install and auto-load are off). The script runs as is in the plain ``duckdb``
shell (``lee sql -r ROOT > views.sql; duckdb -init views.sql``) for local roots; for ``s3://`` / ``gs://`` roots
the shell reads the same paths with its own httpfs extension and settings.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import re
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

import catalog
from pipelines.analysis.sqltext import literal, quote
from pipelines.errors import UsageError
from pipelines.store import integrity, schema
from pipelines.store.integrity import Damage
from pipelines.store.results import Store, StoreError, file_problem

__all__ = [
    "MODEL_COLUMNS",
    "PRETRAIN_IMAGES",
    "ResultsRoot",
    "allowed_directories",
    "connect",
    "full_check_root",
    "model_rows",
    "restrict_to_root",
    "sql_files",
    "views_script",
]

PRETRAIN_IMAGES: dict[str, float] = {
    "in1k": 1.28e6,
    "in12k": 11.8e6,
    "in21k": 14.2e6,
    "in22k": 14.2e6,
    "yfcc100m": 100e6,
    "merged-30m": 30e6,
    "merged-38m": 38e6,
    "jft300m": 300e6,
    "openai-wit400m": 400e6,
    "ig1b": 1e9,
    "laion2b": 2.3e9,
    "webli": 10e9,
}
"""Approximate number of images of each pretraining set (catalog ``pretrain_data``), for scale trends."""

MODEL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "VARCHAR", "catalog model name (join key)"),
    ("arch", "VARCHAR", "timm architecture"),
    ("family", "VARCHAR", "architecture family (cnn, vit, mixer, hybrid, ...)"),
    ("module", "VARCHAR", "timm module"),
    ("source", "VARCHAR", "catalog weight source (hub, file, random)"),
    ("params_m", "DOUBLE", "parameters, millions"),
    ("pretrain_data", "VARCHAR", "data of the first training stage (in1k, in21k, laion2b, ...; zoo: digits, patches)"),
    (
        "pretrain_images",
        "DOUBLE",
        "images of the first training stage: the catalog's training metadata (zoo: "
        "train_n, of the pretrained model for a fine-tuned one), else the approximate "
        "size of pretrain_data (PRETRAIN_IMAGES)",
    ),
    (
        "train_images",
        "DOUBLE",
        "images of the model's own (last) training stage, from its training metadata "
        "(zoo train_n; NULL for catalog timm models)",
    ),
    ("model_kwargs", "VARCHAR", "the spec's model_kwargs as JSON (the zoo's width / depth of an arch); NULL if none"),
    ("recipe", "VARCHAR", "training recipe (pretrained tag part)"),
    ("anti_aliased", "BOOLEAN", "BlurPool-style anti-aliased architecture ('blur' in arch)"),
    ("img_size", "INTEGER", "evaluation input size of the spec"),
    ("top1", "DOUBLE", "top-1 %: ImageNet for timm models, the task's test set for zoo models"),
    ("top5", "DOUBLE", "ImageNet top-5 %"),
    ("top1_v2", "DOUBLE", "ImageNet-V2 top-1 %"),
    ("top1_sketch", "DOUBLE", "ImageNet-Sketch top-1 %"),
    ("top1_r", "DOUBLE", "ImageNet-R top-1 %"),
    ("top1_real", "DOUBLE", "ImageNet-ReaL top-1 %"),
    ("in_catalog", "BOOLEAN", "metadata found in the catalog"),
)

_PLACEHOLDER = re.compile(r"\{\{(source|history):([a-z_]+)\}\}")
HISTORY_PARTITION = "weights_sha256"
"""The extra partition of the results kept for earlier weights (``history/``, :mod:`pipelines.store.history`)."""
_DAMAGED = "{{damaged_units}}"


def sql_files() -> list[tuple[str, str]]:
    """``(file name, text)`` of the package's view files, in the order they run."""
    base = importlib.resources.files("pipelines") / "sql"
    names = sorted(p.name for p in base.iterdir() if p.name.endswith(".sql"))
    return [(n, (base / n).read_text()) for n in names]


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t):
        return f"{_duck_type(t.value_type)}[]"
    raise TypeError(f"no DuckDB type for {t}")


def empty_select(table: str, history: bool = False) -> str:
    """A SELECT with no rows and every column of ``table`` in ``pipelines.store.schema``, typed (``history``: plus
    the ``weights_sha256`` partition of ``history/``, for data tables that do not store it)."""
    names = [c.name for c in schema.TABLES[table].columns]
    cols = [f'CAST(NULL AS {_duck_type(c.type)}) AS "{c.name}"' for c in schema.TABLES[table].columns]
    if history and HISTORY_PARTITION not in names:
        cols.append(f'CAST(NULL AS VARCHAR) AS "{HISTORY_PARTITION}"')
    return f"SELECT {', '.join(cols)} WHERE false"


class ResultsRoot:
    """A results root as DuckDB sees it: the glob prefix, and the fsspec filesystem to register, if any."""

    def __init__(self, uri: str, *, full_check: bool = False):
        self.full_check = full_check
        """Compare every done unit's data file with its recorded sha256 (:meth:`check_damage`; reads the whole
        store): what :func:`retry_with_full_check` does after a query failed on a file the listing did not flag."""
        try:
            self.store = Store(uri)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
        self.uri = uri
        self.damaged: list[tuple[str, str]] = []
        """``(file, reason)`` of every data file the views leave out: it cannot be read, or its done unit's file
        no longer matches what was recorded when it was written (:meth:`check_damage`)."""
        self.damaged_units: dict[str, Damage] | None = None
        """unit -> :class:`pipelines.store.integrity.Damage` of the done units left out (None: not checked yet)."""
        self._scans: dict[str, tuple[list[str] | None, int]] = {}
        fs = self.store.fs
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol = protocol
        self.local = self.store.local_path()
        self.register = None
        if self.local is not None:
            self.prefix = self.local
        else:  # s3://, gs://, memory://, ...: DuckDB reads them through the registered fsspec filesystem
            self.prefix = f"{protocol}://{self.store.path.lstrip('/')}"
            self.register = fs
        try:
            if (problem := self.store.missing_bucket()) is not None:
                raise UsageError(f"results {problem}")
            exists = fs.exists(self.store.path) and fs.exists(f"{self.store.path}/runs")
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable root: a usage error, not a traceback
            raise UsageError(f"results root {uri!r} cannot be read: {type(exc).__name__}: {exc}") from None
        if not exists:
            raise UsageError(
                f"no results under {uri!r} (no runs/ directory); run `lee eval -r {uri}` first or pass --results"
            )

    def glob(self, table: str, history: bool = False) -> str:
        """The files of ``table`` (``history``: those kept for earlier weights, one partition deeper)."""
        base = f"{self.prefix}/{schema.HISTORY_DIR}" if history else self.prefix
        extra = f"/{HISTORY_PARTITION}=*" if history else ""
        if table == "runs":
            return f"{base}/runs/unit=*{extra}/*.parquet"
        return f"{base}/{table}/model=*/dataset=*/unit=*{extra}/*.parquet"

    def has_files(self, table: str, history: bool = False) -> bool:
        """Whether ``table`` has at least one data file (depth-first, stops at the first one)."""
        depth = len(schema.TABLES[table].partition_by) + (1 if history else 0)
        fs = self.store.fs

        def search(path: str, level: int) -> bool:
            try:
                entries = fs.ls(path, detail=True)
            except FileNotFoundError:
                return False
            for e in entries:
                name = e["name"].rstrip("/").rsplit("/", 1)[-1]
                if level == depth:
                    if e["type"] == "file" and name.endswith(".parquet"):
                        return True
                elif e["type"] == "directory" and "=" in name and search(e["name"], level + 1):
                    return True
            return False

        return search(f"{self.store.path}/{schema.HISTORY_DIR}/{table}" if history else f"{self.store.path}/{table}", 0)

    def file_schemas(self, con: Any, table: str, history: bool = False) -> int:
        """How many different Parquet schemas (column names and types) the files of ``table`` have.

        Reads every file's footer once (DuckDB ``parquet_schema``); raises ``duckdb.Error`` when one cannot
        be read.
        """
        sql = (
            "SELECT count(DISTINCT cols) FROM (SELECT file_name, string_agg(name || ':' || coalesce(type, '') || ':' "
            "|| coalesce(CAST(logical_type AS VARCHAR), ''), ',' ORDER BY name) AS cols "
            "FROM parquet_schema(?) GROUP BY file_name)"
        )
        return int(con.execute(sql, [self.glob(table, history)]).fetchall()[0][0])

    def scan(self, table: str, con: Any = None, history: bool = False) -> tuple[list[str] | None, int]:
        """The readable files of ``table`` and how many schemas they have.

        Every file's Parquet footer is read once: by DuckDB (``parquet_schema`` over the glob, fast) when a
        connection is given and every footer reads; then the file list is None (the glob holds them all).
        Otherwise each footer is read through fsspec: a file whose footer cannot be read (truncated, damaged)
        is left out, recorded in :attr:`damaged` and named in a warning on stderr (``lee: warning: ...``), so
        one damaged file never takes down the views; the list names the readable files (as DuckDB opens them).
        """
        which = (table, history)
        if which in self._scans:
            return self._scans[which]
        skip = {f for f, _ in self.damaged}  # left out already (check_damage), with their warning
        n_schemas = None
        if con is not None:
            try:
                n_schemas = self.file_schemas(con, table, history)
                if not any(f.startswith(f"{self.prefix}/{table}/") for f in skip):
                    self._scans[which] = (None, n_schemas)
                    return self._scans[which]
            except duckdb.Error:
                pass  # a footer that does not read: find which, file by file
        fs = self.store.fs
        pattern = self.glob(table, history)[len(self.prefix) :]
        found = sorted(fs.glob(f"{self.store.path}{pattern}"))
        good, schemas = [], set()
        if n_schemas is not None:  # every footer read: only the damaged units' files are left out
            good = [p for p in map(self._duck_path, found) if p not in skip]
            self._scans[which] = (good, n_schemas)
            return self._scans[which]
        for path in found:
            if self._duck_path(path) in skip:
                continue
            problem, sch = file_problem(fs, path)
            if problem is not None:
                shown = self._duck_path(path)
                self.damaged.append((shown, problem))
                print(f"lee: warning: skipping unreadable {table} file {shown}: {problem}", file=sys.stderr)
                continue
            good.append(self._duck_path(path))
            schemas.add(tuple(sorted((f.name, str(f.type)) for f in sch)))
        self._scans[which] = (good, len(schemas))
        return self._scans[which]

    def check_damage(self, con: Any = None) -> dict[str, Damage]:
        """The done units whose data file is missing, unreadable or no longer the file they wrote
        (:func:`pipelines.store.integrity.check_store`: one listing, a checksum only of files written again since),
        found once per root. Each is left out of ``done_units`` (and its file out of the ``*_files`` views),
        recorded in :attr:`damaged` and named in one ``lee: warning:`` line on stderr.

        Args:
            con: A DuckDB connection to read the ``runs`` files with (default: pyarrow, file by file).
        """
        if self.damaged_units is not None:
            return self.damaged_units
        cols = ("unit", "status", "family", "model", "dataset", "data_sha256", "data_bytes", "data_stamp")
        rows: list[dict[str, Any]] = []
        if self.has_files("runs"):
            if con is not None:
                good, _ = self.scan("runs", con)
                src = self.source("runs", con)
                if good is None or good:
                    sql = f"SELECT {', '.join(cols)} FROM ({src}) WHERE status = 'done'"
                    rows = [dict(zip(cols, r, strict=True)) for r in con.execute(sql).fetchall()]
            else:
                rows = [r for r in self.store.runs().select(list(cols)).to_pylist() if r["status"] == "done"]
        self.damaged_units = integrity.check_store(self.store, rows, footers=False, full=self.full_check)
        for unit, d in sorted(self.damaged_units.items(), key=lambda kv: kv[1].path):
            shown = self._duck_path(d.path)
            table = d.path[len(self.store.path) :].lstrip("/").split("/", 1)[0]
            if d.kind == "data unreadable":
                msg = f"skipping unreadable {table} file {shown}: {d.detail}"
            elif d.kind == "data missing":
                msg = f"leaving out unit {unit}: it is done but its {table} file {shown} is missing"
            else:
                msg = f"skipping damaged {table} file {shown} of unit {unit}: not the file it wrote ({d.detail})"
            if d.kind != "data missing":
                self.damaged.append((shown, d.detail if d.kind == "data unreadable" else f"changed: {d.detail}"))
            verify = f"lee verify -r {self.uri}" + (" --full" if self.full_check else "")
            print(f"lee: warning: {msg}; `{verify}` lists it, `lee eval` redoes it", file=sys.stderr)
        return self.damaged_units

    def damaged_sql(self) -> str:
        """The ``{{damaged_units}}`` replacement: a SELECT of :meth:`check_damage`'s units (unit, kind, file,
        detail), typed and empty when there are none."""
        cols = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in ("unit", "kind", "file", "detail"))
        units = self.damaged_units or {}
        if not units:
            return f"SELECT {cols} WHERE false"
        values = ",\n    ".join(
            f"({literal(u)}, {literal(d.kind)}, {literal(self._duck_path(d.path))}, {literal(d.detail)})"
            for u, d in sorted(units.items())
        )
        return f"SELECT * FROM (VALUES\n    {values}\n) AS t(unit, kind, file, detail)"

    def _duck_path(self, path: str) -> str:
        """A path of :attr:`store`'s filesystem as DuckDB opens it (the prefix's spelling)."""
        rel = path[len(self.store.path) :] if path.startswith(self.store.path) else "/" + path.lstrip("/")
        return f"{self.prefix}{rel}"

    def source(self, table: str, con: Any = None, history: bool = False) -> str:
        """The ``{{source:<table>}}`` replacement for this root.

        With a connection, the files' schemas are compared first: when every file has the same one,
        ``union_by_name`` is left off, because with it DuckDB reads the footer of every file of the table
        at every query (to unify the schemas) instead of only the files left after partition pruning.
        Mixed schemas (a store written by several versions) keep ``union_by_name = true``.
        """
        empty = empty_select(table, history)
        what = f"{schema.HISTORY_DIR}/{table}" if history else table
        if not self.has_files(table, history):
            return f"{empty} /* no {what} files under {self.uri} yet */"
        good, n_schemas = self.scan(table, con, history)
        if good is not None and not good:
            return f"{empty} /* every {what} file under {self.uri} is unreadable (lee verify) */"
        parts = (*schema.TABLES[table].partition_by, *((HISTORY_PARTITION,) if history else ()))
        hive = ", ".join(f"'{p}': VARCHAR" for p in parts)
        uniform = con is not None and n_schemas <= 1
        union = (
            " /* every file had the same schema when this script was made; if newer files differ, DuckDB "
            "says 'schema mismatch': run `lee sql` again */"
            if uniform
            else ", union_by_name = true"
        )
        n_bad = sum(1 for f, _ in self.damaged if f.startswith(f"{self.prefix}/{what}/"))
        if good is not None and n_bad:  # name the readable files: the glob would reach the damaged ones
            files = "[" + ", ".join(quote(f) for f in good) + "]"
            note = f" /* {n_bad} unreadable {table} file(s) left out: lee verify -r {self.uri} */"
        else:
            files, note = quote(self.glob(table, history)), ""
        return (
            f"SELECT * FROM read_parquet({files}, hive_partitioning = true, "
            f"hive_types = {{{hive}}}{union}){note}\n    UNION ALL BY NAME {empty}"
        )


@functools.lru_cache(maxsize=1)
def _zoo_specs() -> dict[str, Any]:
    try:
        return {s.name: s for s in catalog.load_models("zoo")}
    except Exception:  # noqa: BLE001 - no trained zoo: zoo models simply have no metadata
        return {}


def _spec(name: str):
    try:
        return catalog.get_model(name)
    except catalog.CatalogError:
        return _zoo_specs().get(name)


def _user_specs(catalogs: Sequence[str | Path]) -> dict[str, Any]:
    """name -> spec of the models in user catalog files (``lee eval -m my-models.yaml``)."""
    specs: dict[str, Any] = {}
    for path in catalogs:
        try:
            specs.update({s.name: s for s in catalog.load_models(str(path))})
        except catalog.CatalogError as exc:
            raise UsageError(str(exc)) from None
    return specs


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _trained_spec(key: str, user: dict[str, Any]) -> Any:
    """The spec whose training metadata has ``key`` (a fine-tuned zoo model's ``training.pretrain``)."""
    for spec in [*user.values(), *_zoo_specs().values()]:
        if (spec.training or {}).get("key") == key:
            return spec
    return None


def model_rows(names: Iterable[str] | None, catalogs: Sequence[str | Path] = ()) -> list[dict[str, Any]]:
    """One metadata record per model (``MODEL_COLUMNS``).

    Args:
        names: Model names (the models of a results root); None: the whole ``all`` + ``tiny`` catalog.
        catalogs: User catalog files to look names up in first (models evaluated from a catalog file
            whose names the built-in catalogs do not know: their family, parameters, top-1 ...).
    """
    user = _user_specs(catalogs)
    if names is None:
        specs = {s.name: s for s in catalog.load_models("all")}
        specs.update({s.name: s for s in catalog.load_models("tiny")})
        specs.update(user)
        names = list(specs)
        lookup = specs.get
    else:
        names = sorted(set(names))

        def lookup(name: str) -> Any:
            return user.get(name) or _spec(name)

    rows = []
    for name in names:
        spec = lookup(name)
        if spec is None:
            rows.append({"model": name, "in_catalog": False})
            continue
        t = spec.training or {}
        top1 = spec.top1
        if top1 is None and t.get("test_acc") is not None:
            top1 = 100.0 * float(t["test_acc"])
        params_m = spec.params_m
        if params_m is None and t.get("params") is not None:
            params_m = float(t["params"]) / 1e6
        pretrain = spec.pretrain_data or (t.get("pretrain") if isinstance(t.get("pretrain"), str) else None)
        train_images = _number(t.get("train_n"))
        pretrain_images = train_images
        if t.get("pretrain"):  # fine-tuned: the first stage is the pretrained model's training set
            pre = _trained_spec(t["pretrain"], user)
            pretrain_images = _number((pre.training or {}).get("train_n")) if pre is not None else None
        if pretrain_images is None:
            pretrain_images = PRETRAIN_IMAGES.get(pretrain or "")
        kwargs = json.dumps(spec.model_kwargs, sort_keys=True, default=str) if spec.model_kwargs else None
        rows.append(
            {
                "model": name,
                "arch": spec.arch,
                "family": spec.family,
                "module": spec.module,
                "source": spec.source,
                "params_m": params_m,
                "pretrain_data": pretrain,
                "pretrain_images": pretrain_images,
                "train_images": train_images,
                "model_kwargs": kwargs,
                "recipe": spec.recipe or t.get("recipe"),
                "anti_aliased": "blur" in spec.arch.lower(),
                "img_size": spec.img_size,
                "top1": top1,
                "top5": spec.top5,
                "top1_v2": spec.top1_v2,
                "top1_sketch": spec.top1_sketch,
                "top1_r": spec.top1_r,
                "top1_real": spec.top1_real,
                "in_catalog": True,
            }
        )
    return rows


def models_sql(rows: list[dict[str, Any]]) -> str:
    """``CREATE TABLE models`` + ``INSERT`` of ``rows``."""
    cols = ",\n    ".join(f"{n} {t}" for n, t, _ in MODEL_COLUMNS)
    out = [
        "-- models: catalog metadata of the models in these results (generated from the catalog package).",
        f"CREATE OR REPLACE TABLE models (\n    {cols}\n);",
    ]
    if rows:
        values = ",\n".join("(" + ", ".join(literal(r.get(n)) for n, _, _ in MODEL_COLUMNS) + ")" for r in rows)
        out.append(f"INSERT INTO models VALUES\n{values};")
    return "\n".join(out)


def _fill(text: str, root: ResultsRoot, con: Any = None) -> str:
    if _DAMAGED in text:
        root.check_damage(con)
        text = text.replace(_DAMAGED, root.damaged_sql())
    return _PLACEHOLDER.sub(lambda m: root.source(m.group(2), con, history=m.group(1) == "history"), text)


def _execute(con: Any, sql: str, where: str) -> None:
    """Run one part of the script; a DuckDB error names the part (a usage error, not a traceback)."""
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        raise UsageError(f"cannot build the views ({where}): {exc}") from None


def _build(con: Any, root: ResultsRoot, models: str, catalogs: Sequence[str | Path] = ()) -> str:
    """Run the view script on ``con`` part by part and return its text.

    The ``models`` table comes after ``01_visible.sql`` so that its rows can be the models of the
    ``done_units`` snapshot, and before the views that join it (DuckDB binds views when they are created).
    """
    if models not in ("results", "all"):
        raise ValueError(f"models must be 'results' or 'all', got {models!r}")
    parts = [
        f"-- lee analysis views over {root.uri} (generated by `lee sql`; pipelines/sql/*.sql).",
        "-- Load: duckdb -init views.sql   (or .read views.sql in the duckdb shell)",
    ]
    files = sql_files()
    split = next((i for i, (n, _) in enumerate(files) if n > "01_visible.sql"), len(files))
    for name, text in files[:split]:
        sql = _fill(text, root, con)
        _execute(con, sql, name)
        parts.append(f"-- ==== {name} ====\n{sql}")
    names = None
    if models == "results":
        names = [r[0] for r in con.execute("SELECT DISTINCT model FROM done_units WHERE model IS NOT NULL").fetchall()]
    sql = models_sql(model_rows(names, catalogs))
    _execute(con, sql, "models table")
    parts.append(sql)
    for name, text in files[split:]:
        sql = _fill(text, root, con)
        _execute(con, sql, name)
        parts.append(f"-- ==== {name} ====\n{sql}")
    return "\n\n".join(parts) + "\n"


def _connection(root: ResultsRoot, threads: int | None):
    """A fresh in-memory connection for ``root``: nothing downloaded, temporary files outside the working folder.

    Extensions are never installed or loaded automatically (a non-local root is read through its registered
    fsspec filesystem, not httpfs). DuckDB's temporary folder (default ``./.tmp`` of the current folder, which a
    restricted connection could then read) is a fresh private folder, removed with the connection.
    """
    tmp = tempfile.mkdtemp(prefix="lee-duckdb-")
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False, "temp_directory": tmp}
    )
    weakref.finalize(con, shutil.rmtree, tmp, True)
    con.execute("SET enable_progress_bar = false")  # no progress bar on stderr of `lee query` / reports
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if root.register is not None:
        con.register_filesystem(root.register)
    return con


def allowed_directories(root: ResultsRoot) -> list[str]:
    """The directory prefixes DuckDB may open for ``root`` (``allowed_directories``), each ending in ``/``.

    A local root is listed as given and as its real path; an fsspec root (``s3://``, ``memory://``) in both
    spellings DuckDB uses for it (``memory://`` globs expand to ``memory:///path``).
    """
    if root.local is not None:
        paths = {os.path.abspath(root.local), os.path.realpath(root.local)}
        return sorted(p.rstrip("/") + "/" for p in paths)
    path = root.store.path.strip("/")
    return [f"{root.protocol}://{path}/", f"{root.protocol}:///{path}/"]


def restrict_to_root(con: Any, root: ResultsRoot) -> None:
    """Let ``con`` open files only under the results root, and lock that.

    ``allowed_directories`` is set to the root, ``enable_external_access`` turned off (nothing outside the
    allowed directories can be read or written; no extension can be installed or loaded; no database
    attached) and ``lock_configuration`` turned on (no ``SET`` can undo it). Writes *inside* the root are
    still possible for DuckDB (``COPY ... TO``), so :mod:`pipelines.commands.query_cmd` also refuses
    statements other than queries.
    """
    dirs = ", ".join(quote(d) for d in allowed_directories(root))
    con.execute(f"SET allowed_directories = [{dirs}]")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def views_script(results: str | ResultsRoot, *, models: str = "results", catalogs: Sequence[str | Path] = ()) -> str:
    """The whole view script for a results root, for the plain duckdb shell or any client.

    The script is checked by running it once (in a throwaway in-memory connection), so what it
    prints is what :func:`connect` runs.

    Args:
        results: Results root URI (or a resolved :class:`ResultsRoot`).
        models: ``results`` (catalog metadata of the models with visible results) or ``all`` (the whole
            catalog).
        catalogs: User catalog files with the metadata of models the built-in catalogs do not know.

    Raises:
        pipelines.cli.UsageError: The root has no results (no ``runs/``) or cannot be read.
    """
    root = results if isinstance(results, ResultsRoot) else ResultsRoot(results)
    con = _connection(root, threads=None)
    try:
        return _build(con, root, models, catalogs)
    finally:
        con.close()


def connect(
    results: str | ResultsRoot,
    *,
    models: str = "results",
    catalogs: Sequence[str | Path] = (),
    threads: int | None = None,
    read_only: bool = False,
):
    """An in-memory DuckDB connection with the views of :func:`views_script` over ``results``.

    ``done_units`` in it is a snapshot taken now: units that finish later are not visible until you
    connect again.

    Args:
        results: Results root URI: a local directory or any fsspec URI (``memory://``, ``s3://`` ...).
        models: ``results`` or ``all``, as in :func:`views_script`.
        catalogs: User catalog files, as in :func:`views_script`.
        threads: DuckDB threads (default: DuckDB's, the number of cores).
        read_only: After the views are built, let the connection open files only under the results root
            (:func:`restrict_to_root`: ``lee query``'s default).

    Raises:
        pipelines.cli.UsageError: The root has no results (no ``runs/``) or cannot be read.
    """
    root = results if isinstance(results, ResultsRoot) else ResultsRoot(results)
    con = _connection(root, threads)
    try:
        _build(con, root, models, catalogs)
        if read_only:
            restrict_to_root(con, root)
    except BaseException:
        con.close()
        raise
    return con


def full_check_root(uri: str, exc: BaseException) -> ResultsRoot:
    """After a query on ``uri`` failed with ``exc`` (a DuckDB error): the root again, with every done unit's
    data file compared with its recorded sha256, so that a file damaged in a way its listing does not show
    (same size and modification time: bit rot) is found and left out.

    Raises:
        pipelines.errors.UsageError: Nothing is damaged that way: the query's own error, with the way to check.
    """
    print(
        f"lee: a query failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): comparing "
        "every data file with its recorded sha256",
        file=sys.stderr,
    )
    root = ResultsRoot(uri, full_check=True)
    con = _connection(root, threads=None)
    try:
        root.check_damage(con)
    finally:
        con.close()
    if not root.damaged_units:
        raise UsageError(
            f"query failed: {exc} (no data file differs from its recorded sha256; units written "
            f"before schema 6 recorded none: `lee verify -r {uri} --full` reads every row)"
        )
    return root
