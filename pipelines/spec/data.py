"""Read and decode each dataset once with Ray Data; hand the model actors its blocks.

The driver lists the dataset's seeded subset (ids, labels, where each encoded image lives: a file,
or a row of a Parquet file) exactly as :func:`catalog.load_dataset` selects it, and builds a Ray
Data dataset from that list: one Arrow block per batch of images to decode. ``map_batches`` of
:func:`read_decode` reads the encoded bytes (Parquet row groups or files, through fsspec), hashes
them and decodes them with the catalog's decoder (mode conversion; a bad image becomes an error
for that image, never for the dataset). The result is materialized once per dataset and sweep;
each model actor gets the block object refs (:class:`Shard`) and applies its model's own
preprocessing to them. Nothing is decoded per model.

Only the images a sweep uses are decoded: the first ``n`` of the subset (``--images`` /
``--limit``); every image of the subset is read and hashed, because the dataset fingerprint
covers them all. When some of the first ``n`` cannot be decoded, as many of the next ones (and a
batch more) are decoded in another pass, until ``n`` are decoded or none are left, so the images (the first ``n``
decodable ones in id order), their number and the fingerprint are
those of :func:`catalog.load_dataset`, and unit keys do not depend on how the data was loaded.

``driver=True`` runs the same :func:`read_decode` in this process (dry runs: no Ray needed).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import catalog
from catalog import CatalogError, DecodeError, decode_image

__all__ = ["DatasetInfo", "LoadedDataset", "Shard", "load_dataset", "read_decode", "resolve_shard", "select_items"]

_HASH_ONLY_BLOCK = 256  # images per block that are only read and hashed, not decoded


@dataclass(frozen=True)
class DatasetInfo:
    """A loaded dataset's identity, what a unit's key uses (:mod:`pipelines.store.units`): the same whether it was
    loaded here or by :func:`catalog.load_dataset`."""

    name: str
    role: str | None
    version: str | None
    fingerprint: str
    n_images: int
    skipped: tuple[tuple[str, str], ...] = ()
    """``(image_id, reason)`` of the images of the subset that could not be read or decoded (not in the key:
    the fingerprint covers them)."""


@dataclass(frozen=True)
class Shard:
    """Decoded images a unit uses from one Ray Data block: the block's ref and the kept positions."""

    ref: Any  # ray.ObjectRef[pyarrow.Table]
    keep: tuple[int, ...]


@dataclass
class LoadedDataset:
    """One dataset of a sweep, read and decoded once.

    Attributes:
        info: What the units' keys use (name, version, fingerprint, number of images).
        errors: ``(image_id, message)`` of each image of the subset that could not be read, or that
            was needed and could not be decoded (skipped, as :func:`catalog.load_dataset` does).
        shards: :class:`Shard` per Ray Data block (``driver=False``), or dicts ``{ids, labels, images}``.
        decoded: How many images were decoded (the first ``n``, more if some failed).
    """

    info: DatasetInfo
    errors: list[tuple[str, str]]
    shards: list[Any] = field(repr=False)
    decoded: int = 0
    _keep_alive: list[Any] = field(default_factory=list, repr=False)  # the materialized datasets

    def arrays(self) -> list[np.ndarray]:
        """The decoded ``(H, W, 3)`` uint8 images, in order (fetched from the object store)."""
        return [im for s in self.shards for im in resolve_shard(s)["images"]]


# ------------------------------------------------------------------------------------- the listing
def _selected_items(spec) -> list[dict[str, Any]]:
    """The seeded subset of a dataset as rows to read: the catalog's own listing and selection."""
    items = catalog.list_items(spec)  # the catalog's one listing and selection, not a copy
    rows = []
    for pos, item in enumerate(catalog.select_items(items, spec.n, spec.seed)):
        # an in-process filesystem: Ray workers cannot see it
        inline = fsspec.core.split_protocol(item.source)[0] == "memory"
        file_uri, row = item.source, -1
        if spec.format == "parquet":
            file_uri, _, r = item.source.rpartition("#")
            row = int(r)
        data, read_error = None, ""
        if inline:
            try:
                data = item.read()
            except (OSError, DecodeError) as exc:
                read_error = str(exc) or type(exc).__name__
        rows.append(
            {
                "pos": pos,
                "image_id": item.image_id,
                "label": json.dumps(item.label),
                "source": item.source,
                "uri": file_uri,
                "row": row,
                "column": spec.image_column or "",
                "data": data,
                "read_error": read_error,
            }
        )
    return rows


_ITEM_SCHEMA = pa.schema(
    [
        ("pos", pa.int64()),
        ("image_id", pa.string()),
        ("label", pa.string()),
        ("source", pa.string()),
        ("uri", pa.string()),
        ("row", pa.int64()),
        ("column", pa.string()),
        ("data", pa.binary()),
        ("read_error", pa.string()),
        ("decode", pa.bool_()),
    ]
)


def _blocks(rows: list[dict], decode: set[int], batch_size: int) -> list[pa.Table]:
    """Arrow blocks: batches of ``batch_size`` images to decode, then larger blocks only hashed."""
    todo = [r for r in rows if r["pos"] in decode]
    rest = [r for r in rows if r["pos"] not in decode]
    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    chunks += [rest[i : i + _HASH_ONLY_BLOCK] for i in range(0, len(rest), _HASH_ONLY_BLOCK)]
    return [
        pa.Table.from_pylist([{**r, "decode": r["pos"] in decode} for r in chunk], schema=_ITEM_SCHEMA)
        for chunk in chunks
    ]


# --------------------------------------------------------------------------- the Ray Data function
def _read_payloads(batch: dict[str, np.ndarray]) -> list[bytes | Exception]:
    """Encoded bytes of each row (or the exception that reading it raised), Parquet files read once."""
    n = len(batch["pos"])
    out: list[bytes | Exception] = [OSError("not read")] * n
    by_file: dict[str, list[int]] = defaultdict(list)
    for i in range(n):
        if batch["read_error"][i]:
            out[i] = OSError(batch["read_error"][i])
        elif batch["data"][i] is not None:
            out[i] = bytes(batch["data"][i])
        elif int(batch["row"][i]) < 0:
            try:
                fs, path = fsspec.core.url_to_fs(str(batch["uri"][i]))
                out[i] = fs.cat_file(path)
            except OSError as exc:
                out[i] = exc
        else:
            by_file[str(batch["uri"][i])].append(i)
    for uri, idx in by_file.items():
        column = str(batch["column"][idx[0]])
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            with fs.open(path, "rb") as fh:
                pfile = pq.ParquetFile(fh)
                starts = np.cumsum([0] + [pfile.metadata.row_group(g).num_rows for g in range(pfile.num_row_groups)])
                rows = [int(batch["row"][i]) for i in idx]
                groups = sorted({int(np.searchsorted(starts, r, side="right")) - 1 for r in rows})
                values = pfile.read_row_groups(groups, columns=[column]).column(0)
            offsets, at = {}, 0
            for g in groups:
                offsets[g] = at
                at += int(starts[g + 1] - starts[g])
        except OSError as exc:
            for i in idx:
                out[i] = exc
            continue
        for i, r in zip(idx, rows, strict=True):
            g = int(np.searchsorted(starts, r, side="right")) - 1
            value = values[offsets[g] + r - int(starts[g])].as_py()
            if isinstance(value, dict):  # Hugging Face image struct {bytes, path}
                value = value.get("bytes")
            if isinstance(value, (bytes, bytearray)):
                out[i] = bytes(value)
            else:
                out[i] = DecodeError(f"column {column!r} holds {type(value).__name__}, not encoded image bytes")
    return out


def read_decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data batch function: read, hash and (where ``decode``) decode a batch of dataset items.

    Args:
        batch: Columns ``pos, image_id, label, source, uri, row, column, data, read_error, decode``.

    Returns:
        Columns ``pos, image_id, label, sha256`` (hex of the encoded bytes, ``""`` if unreadable),
        ``error`` (``""`` if none), ``decoded`` (bool), ``pixels`` (the ``(H, W, 3)`` uint8 image as
        bytes), ``height``, ``width``.
    """
    n = len(batch["pos"])
    sha = np.empty(n, dtype=object)
    error = np.empty(n, dtype=object)
    pixels = np.empty(n, dtype=object)
    height = np.zeros(n, dtype=np.int32)
    width = np.zeros(n, dtype=np.int32)
    decoded = np.zeros(n, dtype=bool)
    for i, payload in enumerate(_read_payloads(batch)):
        source = str(batch["source"][i])
        sha[i], error[i], pixels[i] = "", "", b""
        if isinstance(payload, Exception):
            error[i] = f"{source}: cannot read: {payload}"
            continue
        sha[i] = hashlib.sha256(payload).hexdigest()
        if not batch["decode"][i]:
            continue
        try:
            arr = decode_image(payload)
        except DecodeError as exc:
            error[i] = f"{source}: {exc}"
            continue
        pixels[i], (height[i], width[i]), decoded[i] = arr.tobytes(), arr.shape[:2], True
    return {
        "pos": np.asarray(batch["pos"], dtype=np.int64),
        "image_id": np.asarray(batch["image_id"], dtype=object),
        "label": np.asarray(batch["label"], dtype=object),
        "sha256": sha,
        "error": error,
        "decoded": decoded,
        "pixels": pixels,
        "height": height,
        "width": width,
    }


_META_COLUMNS = ("pos", "image_id", "sha256", "error", "decoded")


def _meta(block: pa.Table) -> dict[str, list]:
    return {c: block.column(c).to_pylist() for c in _META_COLUMNS}


def _as_arrow(block: Any) -> pa.Table:
    """A Ray Data block as an Arrow table (they are Arrow already; ray.data is imported only otherwise)."""
    if isinstance(block, pa.Table):
        return block
    from ray.data.block import BlockAccessor

    return BlockAccessor.for_block(block).to_arrow()


def _block_meta(*blocks: Any) -> list[dict[str, list]]:
    """The small columns of materialized blocks (runs next to the data, not on the driver)."""
    return [_meta(_as_arrow(b)) for b in blocks]


def _rows(table: pa.Table, keep: set[int] | None = None) -> dict[str, list]:
    """``{ids, labels, images}`` of a decoded block, rows ordered by position (``keep``: only those)."""
    pos = table.column("pos").to_pylist()
    order = sorted((p, i) for i, p in enumerate(pos) if keep is None or p in keep)
    ids = table.column("image_id").to_pylist()
    labels = table.column("label").to_pylist()
    h, w = table.column("height").to_numpy(), table.column("width").to_numpy()
    px = table.column("pixels")
    images = [np.frombuffer(px[i].as_buffer(), dtype=np.uint8).reshape(int(h[i]), int(w[i]), 3) for _, i in order]
    return {"ids": [ids[i] for _, i in order], "labels": [json.loads(labels[i]) for _, i in order], "images": images}


def resolve_shard(shard: Any) -> dict[str, list]:
    """A shard as ``{ids, labels, images}``: a :class:`Shard` (Ray Data block), an object ref or a dict."""
    if isinstance(shard, Shard):
        import ray

        return _rows(_as_arrow(ray.get(shard.ref)), set(shard.keep))
    try:
        import ray

        if isinstance(shard, ray.ObjectRef):
            return ray.get(shard)
    except ImportError:  # pragma: no cover
        pass
    return shard


# ------------------------------------------------------------------------------------------ loading
def _configure_ray_data() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.execution_options.preserve_order = True  # blocks come back in id order
    ctx.execution_options.verbose_progress = False
    import logging

    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _run_ray(blocks: list[pa.Table], keep_alive: list) -> tuple[list[Any], list[dict[str, list]]]:
    """Materialize ``read_decode`` over ``blocks``: (block refs, their small columns)."""
    import ray
    import ray.data

    _configure_ray_data()
    ds = ray.data.from_arrow(blocks).map_batches(read_decode, batch_size=None, batch_format="numpy")
    mds = ds.materialize()
    keep_alive.append(mds)
    refs = list(dict.fromkeys(mds.to_arrow_refs()))  # the blocks are Arrow already: the same refs, no copy
    meta_fn = ray.remote(num_cpus=0)(_block_meta)
    metas = ray.get(meta_fn.remote(*refs)) if refs else []
    return refs, metas


def _run_driver(blocks: list[pa.Table]) -> tuple[list[pa.Table], list[dict[str, list]]]:
    outs = [
        pa.table(read_decode({c: b.column(c).to_numpy(zero_copy_only=False) for c in b.column_names})) for b in blocks
    ]
    return outs, [_meta(t) for t in outs]


def select_items(spec) -> list[dict[str, Any]]:
    """List a dataset's seeded subset on the driver (cheap: ids, labels, locations; no image is read).

    Raises:
        catalog.CatalogError: Unknown variable, missing folder/file, wrong Parquet columns, no images.
    """
    return _selected_items(spec)


def load_dataset(
    spec, n_images: int, *, batch_size: int = 16, driver: bool = False, items: list[dict[str, Any]] | None = None
) -> LoadedDataset:
    """Read and decode the first ``n_images`` decodable images of a dataset's seeded subset, once.

    Args:
        spec: ``catalog.DatasetSpec``.
        n_images: Images the sweep uses (``--images`` capped by ``--limit``).
        batch_size: Images per decode task (and per block handed to the model actors).
        driver: Decode in this process instead of on Ray Data (dry runs).
        items: :func:`select_items` of ``spec``, if already listed.

    Returns:
        The dataset info (fingerprint identical to :func:`catalog.load_dataset`'s), errors and shards.

    Raises:
        catalog.CatalogError: As :func:`select_items`; no image of the subset can be decoded.
    """
    rows = items if items is not None else _selected_items(spec)
    keep_alive: list = []
    run = _run_driver if driver else (lambda b: _run_ray(b, keep_alive))
    meta_by_pos: dict[int, dict[str, Any]] = {}
    where: dict[int, int] = {}  # position -> index into parts
    parts: list[Any] = []
    decode = {r["pos"] for r in rows[:n_images]}
    tried: set[int] = set()
    while decode:
        # The first pass reads and hashes every image (the fingerprint covers the whole subset).
        todo = rows if not meta_by_pos else [r for r in rows if r["pos"] in decode]
        out_blocks, metas = run(_blocks(todo, decode, batch_size))
        for blk, meta in zip(out_blocks, metas, strict=True):
            parts.append(blk)
            for j, p in enumerate(meta["pos"]):
                rec = {c: meta[c][j] for c in _META_COLUMNS}
                if p not in meta_by_pos or rec["decoded"] or (rec["error"] and not meta_by_pos[p]["error"]):
                    meta_by_pos[p] = rec
                if rec["decoded"]:
                    where[p] = len(parts) - 1
        ok = [p for p in sorted(meta_by_pos) if meta_by_pos[p]["decoded"]]
        short = n_images - len(ok)
        # Some of the first images could not be decoded: decode as many of the next readable ones
        # (and a batch more, in case some of those fail too).
        tried |= decode
        untried = [p for p in sorted(meta_by_pos) if p not in tried and not meta_by_pos[p]["error"]]
        decode = set(untried[: short + batch_size]) if short > 0 else set()
    errors = []
    hashed = []  # (image_id, sha256 of its bytes, "" if unreadable) of the whole subset, for the fingerprint
    for p in sorted(meta_by_pos):
        m = meta_by_pos[p]
        hashed.append((m["image_id"], m["sha256"]))
        if m["error"]:
            errors.append((m["image_id"], m["error"]))
    kept = [p for p in sorted(meta_by_pos) if meta_by_pos[p]["decoded"]][:n_images]
    if not kept:
        detail = f": {errors[:3]}" if errors else ""
        raise CatalogError(f"dataset {spec.name!r} has no readable images ({spec.uri}){detail}")
    by_part: dict[int, list[int]] = defaultdict(list)
    for p in kept:
        by_part[where[p]].append(p)
    shards: list[Any] = []
    for k in sorted(by_part, key=lambda k: by_part[k][0]):
        if driver:
            shards.append(_rows(parts[k], set(by_part[k])))
        else:
            shards.append(Shard(parts[k], tuple(by_part[k])))
    info = DatasetInfo(
        name=spec.name,
        role=spec.role,
        version=str(spec.version),
        fingerprint=catalog.fingerprint(hashed),
        n_images=len(kept),
    )
    n_decoded = sum(1 for m in meta_by_pos.values() if m["decoded"])
    return LoadedDataset(info, errors, shards, n_decoded, keep_alive)
