"""Weights that change under one name: their digest now, and the results of the earlier weights kept.

A unit's key names its checkpoint by path, not by content, so a checkpoint overwritten in place (or a hub
cache with another revision) keeps its unit keys. ``lee reevaluate`` tells such a change by comparing the
digest of the weights now (:func:`current_weights_sha256`) with ``runs.weights_sha256``, and redoes the
unit ("weights changed"). Before the unit's ``runs`` row and data are replaced, the runner keeps the done
attempt of the earlier weights under ``<root>/history/`` (:func:`keep_previous`, layout in
:mod:`pipelines.store.schema`), one per unit and weights sha256; the views show the latest, and ``runs_history`` /
``lee_history`` (``pipelines/sql/04_history.sql``) every weights a unit had.

Digests of files are cached by what the listing says (:class:`DigestCache`): a file whose size and
modification stamp (inode and ``mtime_ns`` locally, the ETag or modification time on object stores) are the
ones it had when it was hashed is not read again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any

import catalog
from pipelines.store.results import Store
from pipelines.store.units import spec_key_dict

__all__ = ["DigestCache", "HistoryError", "current_weights_sha256", "keep_previous", "listing_stamp", "loaded_before"]

SETTLE_S = 2.0
"""A file modified less than this long ago is hashed but its digest not cached (a second write within the
clock's resolution could keep the stamp)."""


def listing_stamp(uri: str) -> tuple[Any, ...] | None:
    """What the listing says of a file: ``(size, stamp)``; None when it cannot say (then always hash).

    Local files: size, inode and ``st_mtime_ns`` (a rewrite through a new file changes the inode, one in
    place the modification time). Object stores: size and the ETag, else the modification time.
    """
    import fsspec

    if uri.startswith("package://"):  # a file inside an installed package: small, hashed every time
        return None
    fs, path = fsspec.core.url_to_fs(uri)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        st = os.stat(path)
        if time.time() - st.st_mtime < SETTLE_S:
            return None
        return (st.st_size, st.st_ino, st.st_mtime_ns)
    info = fs.info(path)
    stamp = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or info.get("updated")
    if stamp is None or info.get("size") is None:
        return None
    if isinstance(stamp, _dt.datetime):
        stamp = stamp.isoformat()
        mtime = info.get("LastModified") or info.get("mtime")
        if isinstance(mtime, _dt.datetime) and (_dt.datetime.now(_dt.timezone.utc) - mtime).total_seconds() < SETTLE_S:
            return None
    return (int(info["size"]), str(stamp))


class DigestCache:
    """sha256 of checkpoint files by URI and listing stamp, kept in ``<cache_dir>/checkpoints/sha256.json``.

    A stale or unreadable cache file is never an error: the digest is computed again.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else catalog.cache_dir() / "checkpoints" / "sha256.json"
        try:
            self.entries: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False
        self.hashed = 0
        """How many files were read (not found in the cache) by this instance."""

    def sha256(self, uri: str) -> str:
        """The file's sha256, from the cache when its listing stamp is unchanged.

        Raises:
            catalog.CatalogError: The file cannot be read.
        """
        try:
            stamp = listing_stamp(uri)
        except Exception:  # noqa: BLE001 - no stamp: hash (a missing file fails there, named)
            stamp = None
        key = json.dumps(stamp) if stamp is not None else None
        hit = self.entries.get(uri)
        if key is not None and hit is not None and hit.get("stamp") == key:
            return hit["sha256"]
        sha = catalog.checkpoint_sha256(uri)
        self.hashed += 1
        if key is not None:
            self.entries[uri] = {"stamp": key, "sha256": sha}
            self.changed = True
        return sha

    def save(self) -> None:
        """Write the cache (temporary file, then renamed); a cache that cannot be written is skipped."""
        if not self.changed:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries, sort_keys=True))
            tmp.replace(self.path)
            self.changed = False


def current_weights_sha256(weights: str | None, spec, cache: DigestCache | None = None) -> str | None:
    """sha256 of the weights a unit would load now, computed as the runner records it; None if unknown.

    ``file``: the checkpoint's digest (the file is read, not loaded; with ``cache``, only when its listing
    changed). ``hub``: the digest the Hugging Face cache names the cached file by (cheap: nothing is read
    or downloaded); None when the weights are not cached or the cache does not name the file by its
    sha256. ``random``: None.
    """
    try:
        if weights == "file" and spec.checkpoint:
            return cache.sha256(spec.checkpoint) if cache is not None else catalog.checkpoint_sha256(spec.checkpoint)
        if weights == "hub":
            path = catalog.hub_cached_file(spec)
            return catalog.hub_blob_sha256(path) if path else None
    except Exception:  # noqa: BLE001 - a missing file or unknown hub entry is not a change we can tell
        return None
    return None


def loaded_before(specs: list, runs: list[dict[str, Any]], cache: DigestCache | None = None) -> set[str]:
    """Names of the ``file`` models whose checkpoint, as it is now, a done unit already loaded with this spec.

    Such a checkpoint exists, loads safely and fits (it did, with these very bytes: same sha256, same spec
    in the unit key, so the same key mapping), so a plan need not read and check it again; with ``cache``
    the comparison reads no file whose listing is unchanged. A nightly ``lee reevaluate`` over a folder
    of checkpoints then reads only the new and changed files.
    """
    done: dict[str, list[tuple[Any, str]]] = {}
    for r in runs:
        if r.get("status") == "done" and r.get("weights") == "file" and r.get("weights_sha256"):
            try:
                spec_json = json.loads(r["key_json"]).get("model")
            except (TypeError, ValueError):
                continue
            done.setdefault(r["model"], []).append((spec_json, r["weights_sha256"]))
    out = set()
    for spec in specs:
        rows = done.get(spec.name)
        if not rows or spec.source != "file" or not spec.checkpoint:
            continue
        mine = json.loads(json.dumps(spec_key_dict(spec), default=str))
        shas = {sha for spec_json, sha in rows if spec_json == mine}
        if shas and current_weights_sha256("file", spec, cache) in shas:
            out.add(spec.name)
    return out


def keep_previous(store: Store, unit, stored: dict[str, Any] | None) -> str | None:
    """Keep the unit's done attempt under ``history/`` when the weights it will load now differ from its own.

    Called by the runner under the unit's lock, before the unit's ``runs`` row is replaced. Nothing is kept
    when the stored attempt is not done, has no ``weights_sha256`` (random init), its data file cannot be
    read (a damaged unit), or the weights now are the same or cannot be told (a ``--force`` rerun).

    Returns:
        The directory of the kept ``runs`` row, or None when nothing was kept.

    Raises:
        HistoryError: They could not be copied (then the unit must not be redone).
    """
    if not stored or stored.get("status") != "done" or not stored.get("weights_sha256"):
        return None
    now = current_weights_sha256(stored.get("weights"), unit.model)
    if now is None or now == stored["weights_sha256"]:
        return None
    if store.data_problem(unit.table, stored["model"], stored["dataset"], unit.key) is not None:
        return None
    try:
        return store.keep_history(stored, unit.table)
    except Exception as exc:  # noqa: BLE001 - any filesystem error: the unit is not redone (its results stay)
        raise HistoryError(
            f"the results of the earlier weights ({stored['weights_sha256'][:12]}) could not be kept under "
            f"{store.uri}/history: {type(exc).__name__}: {exc}; the unit was not redone, its results are unchanged"
        ) from None


class HistoryError(OSError):
    """The earlier weights' results could not be kept: the unit is left as it was."""
