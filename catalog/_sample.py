"""The built-in ``sample`` datasets: seeded crops of the photos scikit-image and scikit-learn ship.

Works offline (no download): only images bundled with the installed packages are used. Each split is
written once as Parquet (columns ``image_id``, ``image`` (PNG bytes), ``label``) under
``<cache>/sample/v<SAMPLE_VERSION>/``; rebuilding gives the same images, ids and fingerprint.

- ``train``/``test``: natural photos; each photo is split in two halves along its longer side, train crops
  come from the first half and test crops from the second, so the two splits share no pixel.
- ``ood``: histology (immunohistochemistry slide) and retina (fundus photo) crops.

Rows are stratified: the k-th crop of every photo comes before the (k+1)-th of any (ids
``<split>/<k>-<photo>``, and datasets list images in id order), so the first N images of a split (``--limit N``)
draw from every photo in turn: any 7 consecutive natural images from the start cover all 7 photos.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from catalog._errors import CatalogError
from catalog._paths import cache_dir

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "NATURAL",
    "OOD",
    "SAMPLE_SPLITS",
    "SAMPLE_VERSION",
    "materialize_sample",
    "photo",
    "sample_path",
    "split_region",
]

SAMPLE_VERSION = 2  # 2: stratified ids <split>/<k>-<photo> (1: <split>/<photo>/<k>)
SAMPLE_SPLITS = ("train", "test", "ood")
CROP = 256
PER_SPLIT = 100
SEED = 20230501
NATURAL = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "china", "flower")
OOD = ("immunohistochemistry", "retina")


def _sklearn_image_file(name: str) -> Path:
    """The JPEG scikit-learn ships as ``sklearn/datasets/images/<name>.jpg``, found without importing sklearn.

    ``sklearn.datasets.load_sample_image`` decodes the same file with PIL (``np.asarray(Image.open(f))``);
    importing scikit-learn for it would make ``catalog`` load scikit-learn (and scipy) just for two files.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # a top-level package: located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError(
            f"the sample photo {name!r} ships with scikit-learn, which is not installed: pip install scikit-learn"
        )
    for root in spec.submodule_search_locations:
        path = Path(root) / "datasets" / "images" / f"{name}.jpg"
        if path.is_file():
            return path
    raise CatalogError(
        f"the sample photo {name!r} is missing from the installed scikit-learn "
        f"(no datasets/images/{name}.jpg under {list(spec.submodule_search_locations)})"
    )


def photo(name: str) -> np.ndarray:
    """One source photo of the sample set (``NATURAL`` or ``OOD``) as an ``(H, W, 3)`` uint8 array."""
    import numpy as np

    if name in ("china", "flower"):
        from PIL import Image

        with Image.open(_sklearn_image_file(name)) as img:
            return np.asarray(img, dtype=np.uint8)
    import skimage.data

    loader: Callable[[], np.ndarray] = getattr(skimage.data, name)
    return np.asarray(loader(), dtype=np.uint8)[..., :3]


def split_region(img: np.ndarray, split: str) -> np.ndarray:
    """The part of a photo a split may crop from: a half (train/test) or the central part (ood)."""
    h, w = img.shape[:2]
    if split == "ood":
        # The fundus photo has a black border: keep the central 60%; harmless for the histology slide.
        top, left = int(0.2 * h), int(0.2 * w)
        return img[top : h - top, left : w - left]
    if w >= h:
        return img[:, : w // 2] if split == "train" else img[:, w // 2 :]
    return img[: h // 2] if split == "train" else img[h // 2 :]


def sample_regions(split: str) -> dict[str, np.ndarray]:
    """The photos a split of the sample set crops from, each cut to the part that split may use
    (:func:`split_region`): ``{name: (H, W, 3) uint8}`` over ``NATURAL`` for ``train`` and ``test`` (their halves)
    and ``OOD`` for ``ood`` (the centres), in that order. Other crops of the same photos (the zoo's patches) keep
    the sample set's split discipline by cropping from these.
    """
    if split not in SAMPLE_SPLITS:
        raise ValueError(f"unknown sample split {split!r}; splits {SAMPLE_SPLITS}")
    return {name: split_region(photo(name), split) for name in (NATURAL if split in ("train", "test") else OOD)}


def _crops(split: str) -> list[tuple[str, bytes, str]]:
    import numpy as np
    from PIL import Image

    photos = NATURAL if split in ("train", "test") else OOD
    counts = [PER_SPLIT // len(photos) + (i < PER_SPLIT % len(photos)) for i in range(len(photos))]
    rows = []
    for p_idx, (name, count) in enumerate(zip(photos, counts, strict=True)):
        region = split_region(photo(name), split)
        rh, rw = region.shape[:2]
        short = min(rh, rw)
        rng = np.random.default_rng([SEED, SAMPLE_SPLITS.index(split), p_idx])
        for k in range(count):
            side = int(rng.integers(max(32, short // 3), short + 1))
            top = int(rng.integers(0, rh - side + 1))
            left = int(rng.integers(0, rw - side + 1))
            crop = Image.fromarray(region[top : top + side, left : left + side])
            if side != CROP:
                crop = crop.resize((CROP, CROP), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            crop.save(buf, format="PNG", compress_level=1)
            rows.append((f"{split}/{k:03d}-{name}", buf.getvalue(), name))
    return sorted(rows)  # stratified: crop k of every photo before crop k + 1 of any


def write_images_parquet(rows: list[tuple[str, bytes, str]], path: Path) -> None:
    """Write ``(image_id, encoded image, label)`` rows as a Parquet file, atomically (temporary name, then
    rename: concurrent builders write the same content). The sample and the zoo's datasets use it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "image_id": pa.array([r[0] for r in rows], pa.string()),
            "image": pa.array([r[1] for r in rows], pa.binary()),
            "label": pa.array([r[2] for r in rows], pa.string()),
        }
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sample_path(split: str) -> Path:
    """Path of one split's Parquet file (not necessarily built yet)."""
    return cache_dir() / "sample" / f"v{SAMPLE_VERSION}" / f"{split}.parquet"


def materialize_sample(split: str, *, force: bool = False) -> Path:
    """Build one split of the sample dataset once (atomic write), and return its Parquet path.

    Args:
        split: ``train``, ``test`` or ``ood``.
        force: Rebuild even if the file exists.

    Returns:
        The Parquet file path.
    """
    if split not in SAMPLE_SPLITS:
        raise ValueError(f"unknown sample split {split!r}; one of {SAMPLE_SPLITS}")
    path = sample_path(split)
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _crops(split)
    write_images_parquet(rows, path)
    return path
