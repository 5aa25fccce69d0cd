"""Integrity of a results store: what is recorded of each data file when its unit is written, and the
check that finds done units whose file no longer matches (damaged).

Recorded in the unit's ``runs`` row (schema 6) by :meth:`pipelines.store.results.Store.write_data`:

* ``data_sha256``: sha256 of the bytes written (hashed in memory as they are written: no second read);
* ``data_bytes``: their number;
* ``data_stamp``: what the store's listing says of the file just after the write (``etag:...`` on object
  stores, ``mtime:...`` on local disks), see :func:`listing_stamp`.

:func:`check_units` compares a listing of the store (one ``find`` per table: a few requests on an object store,
a ``stat`` per file locally) with the recorded values:

* the file is not listed: ``data missing``;
* its size differs: ``data unreadable`` when its Parquet footer does not read, else ``data changed``;
* its stamp differs (the file was written again since): its sha256 is computed and compared; a different
  checksum is ``data changed`` (same content, e.g. a copied store: fine);
* ``full=True`` (``lee verify --full``): every file's sha256 is compared, which also catches changes that keep
  the size and the stamp (bit rot, a rewrite that restored the modification time).

Units written before schema 6 have no record (null): only their footer is read (``data unreadable``), as
before; they are never redone for lack of a checksum. See ``docs/integrity.md``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "Damage",
    "Expected",
    "Written",
    "check_store",
    "check_units",
    "expected_of",
    "file_sha256",
    "footer_problem",
    "listing",
    "listing_stamp",
    "parquet_bytes",
]

HASH_CHUNK = 1 << 20
"""Bytes read at a time when a stored file is hashed."""


@dataclass(frozen=True)
class Written:
    """One file as written: its path, the sha256 and size of the bytes written, and its listing stamp."""

    path: str
    sha256: str
    size: int
    stamp: str | None

    def columns(self) -> dict[str, Any]:
        """The ``runs`` columns that record it."""
        return {"data_sha256": self.sha256, "data_bytes": self.size, "data_stamp": self.stamp}


@dataclass(frozen=True)
class Expected:
    """A done unit's data file and what was recorded of it (None: not recorded, a row before schema 6)."""

    unit: str
    path: str
    sha256: str | None = None
    size: int | None = None
    stamp: str | None = None


@dataclass(frozen=True)
class Damage:
    """Why a done unit's data file cannot be trusted: ``kind`` (``data missing``, ``data unreadable`` or
    ``data changed``), the file and the detail."""

    kind: str
    path: str
    detail: str


def parquet_bytes(table: pa.Table, **kwargs: Any) -> bytes:
    """``table`` as the bytes of a Parquet file (``pq.write_table`` into memory)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **kwargs)
    return sink.getvalue().to_pybytes()


def listing_stamp(info: dict[str, Any]) -> str | None:
    """What a listing (fsspec ``info`` / ``find(detail=True)``) says changes whenever the file is written again:
    ``etag:<ETag>`` (object stores), else ``mtime:<seconds>``; None if it gives neither."""
    for key in ("ETag", "etag", "Etag"):
        if info.get(key):
            return "etag:" + str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, _dt.datetime):
            value = value.timestamp()
        try:
            return f"mtime:{float(value)!r}"
        except (TypeError, ValueError):
            return f"mtime:{value}"
    return None


def listing(fs: Any, root: str, tables: Iterable[str]) -> dict[str, dict[str, Any]]:
    """path -> listing entry of every data file of ``tables`` under ``root`` (one ``find`` per table)."""
    out: dict[str, dict[str, Any]] = {}
    for table in tables:
        try:
            fs.invalidate_cache(f"{root}/{table}")  # a listing cached by this process may predate a change
            found = fs.find(f"{root}/{table}", detail=True)
        except FileNotFoundError:
            continue
        out.update({p.rstrip("/"): info for p, info in found.items() if p.endswith(".parquet")})
    return out


def file_sha256(fs: Any, path: str) -> str:
    """sha256 (hex) of a stored file, read in chunks."""
    h = hashlib.sha256()
    fs.invalidate_cache(path)  # open what is stored now, not what a cached listing said (s3fs checks the ETag)
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def footer_problem(fs: Any, path: str) -> str | None:
    """None if the file's Parquet footer reads, else why not."""
    try:
        fs.invalidate_cache(path)
        with fs.open(path, "rb") as fh:
            pq.ParquetFile(fh).schema_arrow  # noqa: B018 - reading it is the check
    except FileNotFoundError:
        return "missing"
    except Exception as exc:  # noqa: BLE001 - a damaged file raises anything (ArrowInvalid, OSError, ...)
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {text}".rstrip(": ")
    return None


def _check_one(fs: Any, e: Expected, info: dict[str, Any] | None, full: bool, footers: bool) -> Damage | None:
    if info is None:
        return Damage("data missing", e.path, "the unit is done but has no data file")
    if e.size is None:  # written before schema 6: nothing recorded, only the footer can be checked
        problem = footer_problem(fs, e.path) if footers else None
        return Damage("data unreadable", e.path, problem) if problem else None
    size = int(info.get("size") or 0)
    if size != e.size:
        problem = footer_problem(fs, e.path)
        if problem:
            return Damage("data unreadable", e.path, problem)
        return Damage("data changed", e.path, f"{size} bytes, {e.size} when written")
    stamp = listing_stamp(info)
    if e.sha256 and (full or (e.stamp is not None and stamp != e.stamp)):
        try:
            sha = file_sha256(fs, e.path)
        except FileNotFoundError:
            return Damage("data missing", e.path, "the unit is done but has no data file")
        if sha != e.sha256:
            why = "" if full and stamp == e.stamp else f" (written again since: {stamp}, {e.stamp} when written)"
            return Damage("data changed", e.path, f"sha256 {sha[:12]}..., {e.sha256[:12]}... when written{why}")
    return None


def check_units(
    fs: Any,
    expected: list[Expected],
    files: dict[str, dict[str, Any]],
    *,
    full: bool = False,
    footers: bool = True,
    threads: int = 16,
) -> dict[str, Damage]:
    """unit -> :class:`Damage` for every done unit of ``expected`` whose data file does not match its record.

    Args:
        fs: The store's fsspec filesystem.
        expected: The done units, their files and what their ``runs`` rows recorded.
        files: The store's listing (:func:`listing`): path -> entry with ``size`` and the stamp's field.
        full: Hash every file that has a recorded checksum (``lee verify --full``), not only those the
            listing says were written again.
        footers: Read the footer of the files of units that recorded nothing (before schema 6); False when the
            caller reads every footer anyway (the views).
        threads: Files read at once (footers of old units, checksums): object stores are slow per request.
    """
    if not expected:
        return {}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = list(pool.map(lambda e: _check_one(fs, e, files.get(e.path), full, footers), expected))
    return {e.unit: d for e, d in zip(expected, found, strict=True) if d is not None}


def expected_of(store: Any, rows: Iterable[dict[str, Any]]) -> list[Expected]:
    """The :class:`Expected` file of every ``done`` row of ``rows`` (``runs`` rows as dicts; rows before
    schema 6 lack the record columns: not recorded)."""
    out = []
    for r in rows:
        if r.get("status") != "done":
            continue
        size = r.get("data_bytes")
        out.append(
            Expected(
                r["unit"],
                store.data_file(r["family"], r["model"], r["dataset"], r["unit"]),
                r.get("data_sha256"),
                None if size is None else int(size),
                r.get("data_stamp"),
            )
        )
    return out


def check_store(
    store: Any, rows: Iterable[dict[str, Any]], *, full: bool = False, footers: bool = True
) -> dict[str, Damage]:
    """unit -> :class:`Damage` of the done units of ``rows`` (their ``runs`` rows) on ``store``
    (a :class:`pipelines.store.results.Store`): one listing of the tables they belong to, then :func:`check_units`."""
    rows = list(rows)
    expected = expected_of(store, rows)
    if not expected:
        return {}
    tables = sorted({r["family"] for r in rows if r.get("status") == "done"})
    return check_units(store.fs, expected, listing(store.fs, store.path, tables), full=full, footers=footers)
