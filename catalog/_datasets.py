"""Dataset lookup and loading: folders or Parquet through fsspec, seeded subsets, fingerprints.

Decoding failures never abort a dataset: the image is skipped and ``ImageSet.errors`` names it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog._decode import IMAGE_EXTENSIONS, DecodeError, decode_image
from catalog._errors import CatalogError, unknown_name_error
from catalog._files import PACKAGE_DIR, check_keys, read_catalog_file
from catalog._spec import DatasetSpec, spec_from_dict

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DatasetItem",
    "Image",
    "ImageSet",
    "fingerprint",
    "get_dataset",
    "list_datasets",
    "list_items",
    "load_dataset",
    "load_dataset_file",
    "load_datasets",
    "resolve_uri",
    "select_items",
]

DATASETS_FILE = PACKAGE_DIR / "datasets.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Image:
    """One decoded image.

    Attributes:
        image_id: Stable id: path relative to the dataset root, or the Parquet id (``file#row`` if none).
        array: ``(H, W, 3)`` uint8 RGB.
        label: Class name / label value, None if the dataset has none.
        source: File path or URI it was read from.
    """

    image_id: str
    array: np.ndarray = field(repr=False)
    label: int | str | None
    source: str


@dataclass(frozen=True)
class ImageSet:
    """The selected, decoded images of a dataset.

    Attributes:
        spec: The dataset spec.
        images: Decoded images, sorted by id.
        errors: ``(image_id or source, message)`` for each selected image that could not be decoded.
        fingerprint: sha256 hex over the sorted selected ids and the sha256 of each one's encoded bytes
            (:func:`fingerprint`).
    """

    spec: DatasetSpec
    images: list[Image]
    errors: list[tuple[str, str]]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class DatasetItem:
    """One image of a dataset's listing, not read yet.

    Attributes:
        image_id: Stable id (as :attr:`Image.image_id`).
        source: File path or URI, ``file#row`` for a Parquet row.
        label: Class name / label value, None if the dataset has none.
        read: Returns the encoded bytes (raises ``OSError`` or :class:`DecodeError`).
    """

    image_id: str
    source: str
    label: int | str | None
    read: Callable[[], bytes] = field(repr=False)


def load_dataset_file(path: str | Path) -> tuple[dict[str, DatasetSpec], dict[str, list[str]]]:
    """Load and validate a datasets YAML file (``datasets:`` list, optional ``groups:``).

    Returns:
        Specs by name, and groups (name -> dataset names).

    Raises:
        CatalogError: Unknown keys (named with the file), bad values, groups naming unknown datasets.
    """
    data = read_catalog_file(path)
    check_keys(data, ("version", "datasets", "groups", "description"), str(path), required=("datasets",))
    if not isinstance(data["datasets"], list):
        raise CatalogError(f"{path}: 'datasets' must be a list")
    specs: dict[str, DatasetSpec] = {}
    for i, entry in enumerate(data["datasets"]):
        spec = spec_from_dict(DatasetSpec, entry, f"{path} datasets[{i}]")
        if spec.name in specs:
            raise CatalogError(f"{path} datasets[{i}]: duplicate dataset name {spec.name!r}")
        specs[spec.name] = spec
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise CatalogError(f"{path}: 'groups' must be a mapping of group name to dataset names")
    for group, members in groups.items():
        for member in members or []:
            if member not in specs:
                raise CatalogError(f"{path}: group {group!r} names unknown dataset {member!r}")
    return specs, {g: list(m or []) for g, m in groups.items()}


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[dict[str, DatasetSpec], dict[str, list[str]]]:
    return load_dataset_file(DATASETS_FILE)


def list_datasets() -> list[DatasetSpec]:
    """The built-in dataset specs, in file order."""
    return list(_builtin()[0].values())


def get_dataset(name: str) -> DatasetSpec:
    """Look up a built-in dataset spec.

    Raises:
        CatalogError: Unknown name, with close matches.
    """
    specs, groups = _builtin()
    if name not in specs:
        raise unknown_name_error("dataset", name, [*specs, *groups])
    return specs[name]


def load_datasets(selection: str | list[str]) -> list[DatasetSpec]:
    """Resolve group names (``sample``, ``paper``), dataset names or a datasets YAML path to specs."""
    specs, groups = _builtin()
    items = [selection] if isinstance(selection, str) else list(selection)
    out: dict[str, DatasetSpec] = {}
    for item in items:
        if item in groups:
            found = [specs[n] for n in groups[item]]
        elif Path(item).suffix in (".yaml", ".yml"):
            found = list(load_dataset_file(item)[0].values())
        else:
            found = [get_dataset(item)]
        for spec in found:
            out.setdefault(spec.name, spec)
    return list(out.values())


def resolve_uri(spec: DatasetSpec) -> str:
    """The spec's URI with ``${VAR}`` expanded and ``builtin://sample/<split>`` (or ``builtin://zoo-<task>/<split>``)
    materialized.

    Raises:
        CatalogError: A variable the URI needs is not set (named, with the dataset).
    """

    def expand(match: re.Match[str]) -> str:
        var = match.group(1) or match.group(2)
        value = os.environ.get(var)
        if not value:
            raise CatalogError(
                f"dataset {spec.name!r} needs the environment variable {var} (its uri is {spec.uri!r}); "
                f"set {var} to where the data lives"
            )
        return value

    uri = _VAR.sub(expand, spec.uri)
    if uri.startswith("builtin://"):
        from catalog._sample import SAMPLE_SPLITS, materialize_sample
        from catalog._zoo import ZOO_SPLITS, ZOO_TASKS, materialize_zoo_data

        kind, _, split = uri[len("builtin://") :].partition("/")
        if kind.startswith("zoo-") and kind[4:] in ZOO_TASKS and split in ZOO_SPLITS:
            return str(materialize_zoo_data(kind[4:], split))
        if kind != "sample" or split not in SAMPLE_SPLITS:
            raise CatalogError(f"dataset {spec.name!r}: unknown built-in uri {uri!r}")
        return str(materialize_sample(split))
    if "://" not in uri:
        uri = os.path.expanduser(uri)
    return uri


def _folder_items(fs: Any, root: str, uri: str, labelled: bool) -> list[DatasetItem]:
    if not fs.isdir(root):
        raise CatalogError(f"dataset folder {uri!r} does not exist or is not a folder")
    items = []
    for path in sorted(fs.find(root)):
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            continue
        rel = path[len(root) :].lstrip("/") if path.startswith(root) else path
        parts = rel.split("/")
        label = parts[0] if labelled and len(parts) > 1 else None
        source = fs.unstrip_protocol(path)
        items.append(DatasetItem(rel, source, label, functools.partial(fs.cat_file, path)))
    return items


def _parquet_items(fs: Any, root: str, uri: str, spec: DatasetSpec) -> list[DatasetItem]:
    import pyarrow.parquet as pq

    if fs.isdir(root):
        files = sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    elif fs.exists(root):
        files = [root]
    else:
        raise CatalogError(f"dataset {spec.name!r}: Parquet file or folder {uri!r} does not exist")
    items: list[DatasetItem] = []
    for path in files:
        rel = path[len(root) :].lstrip("/") or os.path.basename(path)
        with fs.open(path, "rb") as fh:
            pfile = pq.ParquetFile(fh)
            names = pfile.schema_arrow.names
            if spec.image_column not in names:
                raise CatalogError(
                    f"dataset {spec.name!r}: {fs.unstrip_protocol(path)} has no image column "
                    f"{spec.image_column!r} (columns: {', '.join(names)})"
                )
            meta = [c for c in (spec.id_column, spec.label_column) if c and c in names]
            table = pfile.read(columns=meta) if meta else None
            nrows = pfile.metadata.num_rows
        ids = table.column(spec.id_column).to_pylist() if spec.id_column in meta else None
        labels = table.column(spec.label_column).to_pylist() if spec.label_column in meta else None
        reader = _ParquetColumn(fs, path, spec.image_column)
        source = fs.unstrip_protocol(path)
        for row in range(nrows):
            image_id = str(ids[row]) if ids is not None else f"{rel}#{row}"
            label = labels[row] if labels is not None else None
            items.append(DatasetItem(image_id, f"{source}#{row}", label, functools.partial(reader.get, row)))
    return items


class _ParquetColumn:
    """Reads the image column of one Parquet file once, on first use (only for selected rows' files)."""

    def __init__(self, fs: Any, path: str, column: str) -> None:
        self.fs, self.path, self.column = fs, path, column
        self._values: list[Any] | None = None

    def get(self, row: int) -> bytes:
        import pyarrow.parquet as pq

        if self._values is None:
            with self.fs.open(self.path, "rb") as fh:
                self._values = pq.ParquetFile(fh).read(columns=[self.column]).column(0).to_pylist()
        value = self._values[row]
        if isinstance(value, dict):  # Hugging Face image struct {bytes, path}
            value = value.get("bytes")
        if not isinstance(value, (bytes, bytearray)):
            raise DecodeError(f"column {self.column!r} holds {type(value).__name__}, not encoded image bytes")
        return bytes(value)


def select_items(items: list[DatasetItem], n: int | None, seed: int) -> list[DatasetItem]:
    """The seeded subset: ``n`` of ``items`` (all when ``n`` is None or too large), in id order.

    Drawn from the ids sorted in a stable order with ``random.Random(seed)``, so it depends only
    on the ids, ``n`` and ``seed``.
    """
    items = sorted(items, key=lambda it: it.image_id)
    if n is None or n >= len(items):
        return items
    chosen = random.Random(seed).sample(range(len(items)), n)
    return [items[i] for i in sorted(chosen)]


def list_items(spec: DatasetSpec) -> list[DatasetItem]:
    """Every image of a dataset (folder or Parquet, through fsspec), listed without reading one.

    Raises:
        CatalogError: Unset variable, missing folder/file, wrong Parquet columns, no images.
    """
    import fsspec

    uri = resolve_uri(spec)
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/") or root
    if spec.format == "parquet":
        items = _parquet_items(fs, root, uri, spec)
    else:
        items = _folder_items(fs, root, uri, labelled=spec.format == "imagefolder")
    if not items:
        raise CatalogError(f"dataset {spec.name!r}: no images found at {uri!r} (format {spec.format})")
    return items


def fingerprint(entries: Iterable[tuple[str, str | None]]) -> str:
    """The dataset fingerprint: sha256 hex over ``(image_id, sha256 hex of its encoded bytes)`` of
    every selected image in id order, ``None`` (or ``""``) for an image that could not be read.

    Unit keys contain it: whoever loads a dataset computes it here, so that they agree.
    """
    digest = hashlib.sha256()
    for image_id, sha in entries:
        digest.update(f"{image_id}\0{sha or 'unreadable'}\n".encode())
    return digest.hexdigest()


def load_dataset(spec_or_name: DatasetSpec | str) -> ImageSet:
    """Load the seeded subset of a dataset, decoded to RGB uint8.

    The subset is :func:`select_items` of :func:`list_items` (``spec.n`` images drawn with
    ``spec.seed``), so it depends only on the ids, ``n`` and ``seed``. Only the selected images are read.

    Args:
        spec_or_name: Spec or built-in dataset name.

    Returns:
        The images, the per-image errors and the fingerprint.

    Raises:
        CatalogError: Unknown name, unset variable, missing folder/file, wrong Parquet columns.
    """
    spec = get_dataset(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
    chosen = select_items(list_items(spec), spec.n, spec.seed)
    hashed: list[tuple[str, str | None]] = []
    images: list[Image] = []
    errors: list[tuple[str, str]] = []
    for item in chosen:
        try:
            data = item.read()
        except (OSError, DecodeError) as exc:
            errors.append((item.image_id, f"{item.source}: cannot read: {exc}"))
            hashed.append((item.image_id, None))
            continue
        hashed.append((item.image_id, hashlib.sha256(data).hexdigest()))
        try:
            array = decode_image(data)
        except DecodeError as exc:
            errors.append((item.image_id, f"{item.source}: {exc}"))
            continue
        images.append(Image(item.image_id, array, item.label, item.source))
    return ImageSet(spec=spec, images=images, errors=errors, fingerprint=fingerprint(hashed))
