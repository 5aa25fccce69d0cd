"""The results store on any fsspec filesystem: atomic unit writes, the ``runs`` table, cleanup.

See :mod:`pipelines.store.schema` for the layout and the visibility rule.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.store import objectstore, schema
from pipelines.store.integrity import Written, listing_stamp, parquet_bytes

__all__ = ["Store", "StoreError", "file_problem"]


def file_problem(fs: Any, path: str, *, full: bool = False) -> tuple[str | None, pa.Schema | None]:
    """Whether a Parquet file can be read: ``(None, its schema)``, or ``(the reason, None)``.

    Args:
        fs: The fsspec filesystem.
        path: The file's path on ``fs``.
        full: Read every row (``lee verify --full``), not only the footer.
    """
    try:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh, pre_buffer=False)
            if full:  # every row, on this thread: no dataset scan leaves Arrow threads running at exit
                return None, pf.read(use_threads=False).schema
            return None, pf.schema_arrow
    except FileNotFoundError:
        return "missing", None
    except Exception as exc:  # noqa: BLE001 - a damaged file raises anything (ArrowInvalid, OSError, ...)
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {text}".rstrip(": "), None


class StoreError(ValueError):
    """The output root cannot be reached or written."""


IN_PROCESS_PROTOCOLS = ("memory",)
"""fsspec protocols whose files live in one process: Ray actors would write to their own copies."""


class Store:
    """One results root (``./lee-results``, ``s3://bucket/lee``, ``memory://x``...)."""

    def __init__(self, root: str):
        self.uri = root
        try:
            # object stores: no listing cache, so a long-lived process (the driver, an actor) sees other writers
            fresh = {"use_listings_cache": False} if root.split("://", 1)[0] in objectstore.BUCKET_PROTOCOLS else {}
            self.fs, self.path = fsspec.core.url_to_fs(root, **fresh)
        except ImportError as exc:  # the filesystem's package (s3fs, gcsfs, ...) is not installed
            raise StoreError(
                f"output root {root!r} cannot be opened: {exc} (pip install 'lee-eval[cloud]' for s3:// and gs://)"
            ) from None
        except ValueError as exc:
            raise StoreError(f"output root {root!r} cannot be opened: {exc}") from None
        self.path = self.path.rstrip("/") or "/"
        self.unreadable: dict[str, str] = {}
        """file -> reason, for every file a read of this store skipped because it could not be read."""

    def __reduce__(self):  # ship the URI to actors, not an open filesystem
        return (Store, (self.uri,))

    @property
    def protocol(self) -> str:
        return self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]

    @property
    def in_process(self) -> bool:
        """Whether the root lives in this process only (``memory://``): actors cannot write to it."""
        return self.protocol in IN_PROCESS_PROTOCOLS

    @property
    def bucketed(self) -> bool:
        """Whether the root is in a bucket of an object store (``s3://``, ``gs://`` ...), never created by lee."""
        return self.protocol in objectstore.BUCKET_PROTOCOLS

    def missing_bucket(self) -> str | None:
        """Why the root's bucket cannot hold it: it does not exist (None when it does, or the root has no bucket).

        lee never creates a bucket: a mistyped name is an error naming it.
        """
        bucket = objectstore.missing_bucket(self.fs, self.path) if self.bucketed else None
        if bucket is None:
            return None
        return (
            f"root {self.uri!r}: bucket {bucket!r} does not exist (lee never creates buckets: create it, or check "
            "its name and the endpoint, AWS_ENDPOINT_URL)"
        )

    # ---- checks ----------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Create the root and write/delete a probe file; :class:`StoreError` naming the problem.

        An object store's bucket must exist: it is never created (a mistyped name is an error naming it).
        """
        probe = f"{self.path}/_probe-{uuid.uuid4().hex}"
        try:
            if (problem := self.missing_bucket()) is not None:
                raise StoreError(f"output {problem}")
            self._makedirs(self.path)
            with self.fs.open(probe, "wb") as fh:
                fh.write(b"ok")
            self.fs.rm(probe)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - any filesystem error means "not writable"
            raise StoreError(f"output root {self.uri!r} is not writable: {type(exc).__name__}: {exc}") from None

    # ---- writes ----------------------------------------------------------------------------------
    def _makedirs(self, directory: str) -> None:
        """Create ``directory`` where folders exist; object stores have none (and their makedirs would create a
        missing bucket)."""
        if not self.bucketed:
            self.fs.makedirs(directory, exist_ok=True)

    def _write_atomic(self, directory: str, table: pa.Table, name: str = "part-0.parquet") -> Written:
        """Write ``table`` to ``directory/name`` through a temporary file renamed over the old one.

        The old file is never deleted first: at every moment ``name`` is either the old complete
        file or the new complete one (``os.replace`` locally; object stores create the object whole).

        Returns:
            The file as written: the sha256 and size of the bytes written (hashed before they are written,
            no second read) and its listing stamp after the rename (:func:`pipelines.store.integrity.listing_stamp`).
        """
        self._makedirs(directory)
        final = f"{directory}/{name}"
        tmp = f"{directory}/_tmp-{uuid.uuid4().hex}.partial"  # ignored by *.parquet globs and pyarrow
        payload = parquet_bytes(table, compression="zstd")
        with self.fs.open(tmp, "wb") as fh:
            fh.write(payload)
        if self.protocol in ("file", "local"):
            os.replace(tmp, final)
        else:
            self.fs.mv(tmp, final)
        return Written(final, hashlib.sha256(payload).hexdigest(), len(payload), self._stamp(final))

    def _stamp(self, path: str) -> str | None:
        """The listing stamp of a file just written (None if the store cannot say)."""
        try:
            self.fs.invalidate_cache(path)
            return listing_stamp(self.fs.info(path))
        except Exception:  # noqa: BLE001 - no stamp only weakens the cheap check (the size stays)
            return None

    def _remove_partials(self, directory: str) -> None:
        """Remove the temporary files a killed :meth:`_write_atomic` left in ``directory``."""
        for f in self.fs.glob(f"{directory}/_tmp-*.partial"):
            self.fs.rm(f)

    def clear_partials(self, table: str, model: str, dataset: str, unit: str) -> None:
        """Remove temporary files a killed write of the unit left behind (never its data file)."""
        self._remove_partials(schema.data_path(self.path, table, model, dataset, unit))

    def write_data(self, table: str, model: str, dataset: str, unit: str, data: pa.Table) -> Written:
        """Write a unit's rows (already cast to the table schema), temp then rename over the old file.

        Returns what its ``runs`` row records of the file (:meth:`Written.columns`: ``data_sha256``,
        ``data_bytes``, ``data_stamp``).
        """
        return self._write_atomic(schema.data_path(self.path, table, model, dataset, unit), data)

    def _copy_atomic(self, src: str, directory: str, name: str = "part-0.parquet") -> str:
        """Copy the file ``src`` to ``directory/name`` (temporary file, then renamed), byte for byte."""
        self._makedirs(directory)
        final = f"{directory}/{name}"
        tmp = f"{directory}/_tmp-{uuid.uuid4().hex}.partial"
        self.fs.pipe_file(tmp, self.fs.cat_file(src))
        if self.protocol in ("file", "local"):
            os.replace(tmp, final)
        else:
            self.fs.mv(tmp, final)
        return final

    def keep_history(self, row: dict[str, Any], table: str) -> str:
        """Keep a done unit's data file and ``runs`` row under ``history/``, by its ``weights_sha256``.

        The data file is copied first and the ``runs`` row last (the visibility rule, as for the unit
        itself), both through temporary files; a copy that already exists for these weights is replaced.

        Returns:
            The directory of the kept ``runs`` row.
        """
        sha = row["weights_sha256"]
        data_dir = schema.history_data_path(self.path, table, row["model"], row["dataset"], row["unit"], sha)
        self._remove_partials(data_dir)
        self._copy_atomic(self.data_file(table, row["model"], row["dataset"], row["unit"]), data_dir)
        runs_dir = schema.history_runs_path(self.path, row["unit"], sha)
        self._remove_partials(runs_dir)
        self._write_atomic(runs_dir, pa.Table.from_pylist([row], schema=schema.RUNS.schema))
        return runs_dir

    def history_runs(self) -> pa.Table:
        """The ``runs`` rows kept under ``history/`` (empty table with the schema when there are none)."""
        files = self.fs.glob(f"{self.path}/{schema.HISTORY_DIR}/runs/unit=*/weights_sha256=*/part-0.parquet")
        tables = [t for t in (self._read(f, schema.RUNS.schema) for f in files) if t is not None]
        return pa.concat_tables(tables) if tables else schema.RUNS.schema.empty_table()

    def write_run(self, row: dict[str, Any]) -> Written:
        """Write (replace) the unit's single ``runs`` row; this is what makes its data visible."""
        t = pa.Table.from_pylist([row], schema=schema.RUNS.schema)
        d = schema.runs_path(self.path, row["unit"])
        self._remove_partials(d)
        return self._write_atomic(d, t)

    # ---- concurrent writers ------------------------------------------------------------------------
    @property
    def can_lock(self) -> bool:
        """Whether units can be locked here: local roots (``fcntl.flock``) and S3 roots (a lease object,
        :mod:`pipelines.store.objectstore`); other object stores cannot."""
        return self.leased or (self.protocol in ("file", "local") and hasattr(os, "O_CREAT"))

    @property
    def leased(self) -> bool:
        """Whether units are held through lease objects (S3 conditional writes) rather than ``flock``."""
        return self.protocol in objectstore.LEASE_PROTOCOLS

    def lock_path(self, unit: str) -> str:
        return f"{self.path}/_locks/{unit}.lock"

    @contextlib.contextmanager
    def unit_lock(self, unit: str, *, poll_s: float = 0.2) -> Iterator[bool]:
        """Hold the unit's lock while the body runs (waiting for another holder first); yields whether a
        lock was taken.

        Local roots: an exclusive ``fcntl.flock`` on ``_locks/<unit>.lock``, so two runs on one root never
        compute a unit at the same time; the kernel releases it when its process dies (a killed run never
        leaves a unit locked). The holder removes the file when done; a waiter that locked a file removed
        meanwhile tries again. S3 roots: a lease object at the same path, taken with a conditional write and
        renewed while the body runs (:func:`pipelines.store.objectstore.object_lease`; a killed holder's lease
        expires after ``LEE_LEASE_TTL_S``). Other filesystems (``gs://`` ...) have no such lock: nothing is
        locked (yields False) and the caller's re-read of the ``runs`` row is the only coordination.
        """
        if self.leased:
            with objectstore.object_lease(self.fs, self.lock_path(unit), poll_s=max(poll_s, 0.5)) as held:
                yield held
            return
        if not self.can_lock:
            yield False
            return
        import fcntl

        path = self.lock_path(unit)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        time.sleep(poll_s)
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)  # the holder removed the file after we opened it: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} pid {os.getpid()} since {time.time():.0f}\n".encode())
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)

    def lock_held(self, unit: str) -> bool:
        """Whether a process holds the unit's lock now (False where units cannot be locked)."""
        if self.leased:
            state = objectstore.lease_state(self.fs, self.lock_path(unit))
            return state is not None and not state.expired
        if not self.can_lock or not os.path.exists(self.lock_path(unit)):
            return False
        import fcntl

        try:
            fd = os.open(self.lock_path(unit), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def run_row(self, unit: str) -> dict[str, Any] | None:
        """The unit's stored ``runs`` row (None if it has none, or it cannot be read)."""
        path = f"{schema.runs_path(self.path, unit)}/part-0.parquet"
        try:
            exists = self.fs.exists(path)
        except OSError:
            return None
        t = self._read(path, schema.RUNS.schema) if exists else None
        return t.to_pylist()[0] if t is not None and t.num_rows else None

    # ---- reads -----------------------------------------------------------------------------------
    def runs(self) -> pa.Table:
        """All ``runs`` rows (empty table with the schema when there are none)."""
        files = self.fs.glob(f"{self.path}/runs/unit=*/part-0.parquet")
        if not files:
            return schema.RUNS.schema.empty_table()
        tables = [t for t in (self._read(f, schema.RUNS.schema) for f in files) if t is not None]
        if not tables:
            return schema.RUNS.schema.empty_table()
        return pa.concat_tables(tables)

    def _read(self, path: str, sch: pa.Schema) -> pa.Table | None:
        """One file read with ``sch`` (columns it lacks read as NULL); None, recorded in :attr:`unreadable`,
        when it cannot be read (truncated, damaged, deleted meanwhile)."""
        try:
            with self.fs.open(path, "rb") as fh:
                t = pq.read_table(fh)
        except Exception as exc:  # noqa: BLE001 - a damaged file raises anything
            text = str(exc).splitlines()[0] if str(exc) else ""
            self.unreadable[path] = f"{type(exc).__name__}: {text}".rstrip(": ")
            return None
        cols = [
            t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in sch
        ]
        return pa.Table.from_arrays(cols, schema=sch)

    def data_file(self, table: str, model: str, dataset: str, unit: str) -> str:
        """Path of a unit's data file."""
        return f"{schema.data_path(self.path, table, model, dataset, unit)}/part-0.parquet"

    def data_problem(self, table: str, model: str, dataset: str, unit: str) -> str | None:
        """None if the unit's data file can be read (its footer), else why not (``missing``, the error)."""
        problem, _ = file_problem(self.fs, self.data_file(table, model, dataset, unit))
        return problem

    def run_status(self, runs: pa.Table | None = None) -> dict[str, str]:
        """unit key -> status (of ``runs``, default all ``runs`` rows)."""
        t = self.runs() if runs is None else runs
        return dict(zip(t.column("unit").to_pylist(), t.column("status").to_pylist(), strict=True))

    def run_attempts(self, runs: pa.Table | None = None) -> dict[str, int]:
        """unit key -> ``attempt`` of its stored row (how many times it was started)."""
        t = self.runs() if runs is None else runs
        return {
            u: int(a or 0) for u, a in zip(t.column("unit").to_pylist(), t.column("attempt").to_pylist(), strict=True)
        }

    def read_table(self, table: str, units: list[str] | None = None, *, only_done: bool = True) -> pa.Table:
        """Rows of a data table, only for units whose ``runs`` row says ``done`` (the visibility rule)."""
        status = self.run_status()
        keep = {u for u, s in status.items() if s == "done" or not only_done}
        if units is not None:
            keep &= set(units)
        files = [
            f
            for f in self.fs.glob(f"{self.path}/{table}/model=*/dataset=*/unit=*/part-0.parquet")
            if f.rsplit("/", 2)[-2].removeprefix("unit=") in keep
        ]
        sch = schema.TABLES[table].schema
        if not files:
            return sch.empty_table()
        parts = [t for t in (self._read(f, sch) for f in files) if t is not None]
        if not parts:
            return sch.empty_table()
        return pa.concat_tables(parts)

    def local_path(self) -> str | None:
        """A local directory path when the root is on the local filesystem (for DuckDB globs)."""
        return self.path if self.protocol in ("file", "local") else None
