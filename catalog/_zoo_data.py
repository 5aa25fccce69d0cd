"""The zoo's offline datasets: rotated digits and photo patches, built from data that ships in Python packages.

Each split is written once as Parquet (columns ``image_id``, ``image`` (PNG bytes), ``label``) under
``<cache>/zoo-data/v<ZOO_DATA_VERSION>/<task>-<split>.parquet``; rebuilding gives the same bytes, ids and
fingerprint. All images are 32x32.

``digits`` (a small RotMNIST): scikit-learn's 1797 8x8 digits, upsampled (bicubic) to 20x20, centred on a
black 32x32 canvas (so any rotation keeps the digit inside the frame) and rotated by an angle drawn
uniformly from [-180, 180) degrees (bilinear). A seeded permutation assigns 1200 source digits to
``train`` and 597 to ``test``; ``ood`` re-draws the *test* digits with a different look: strokes
thickened by a 3x3 grey dilation, Gaussian pixel noise (sigma 24 grey levels) and new angles. Stored as
grayscale PNG (decoded to RGB by replication: zoo models take 3 channels). Label: the digit, ``"0"``-``"9"``.

``patches``: crops of the seven natural photos of the ``sample`` set (scikit-image, scikit-learn),
resized to 32x32 (bicubic) and labelled by source photo (7 classes). Train crops come from one half of
each photo and test crops from the other half (pixel-disjoint); ``ood``: crops of the histology slide and
the retina photo (labelled by their source, classes the models never saw).

The catalog calls :func:`materialize_zoo_data` for the ``builtin://zoo-<task>/<split>`` URIs of
``catalog/datasets.yaml`` (through ``catalog._zoo``, which imports this module on first use: numpy, PIL and
scikit-learn stay unloaded until a zoo dataset is read).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from catalog._paths import cache_dir
from catalog._sample import sample_regions, write_images_parquet
from catalog._zoo import ZOO_SPLITS, ZOO_TASKS

__all__ = ["ZOO_DATA_VERSION", "materialize_zoo_data", "zoo_data_path"]

ZOO_DATA_VERSION = 1
SIZE = 32
DIGIT_SIZE = 20
DIGITS_TRAIN = 1200
SEED = 20230502
PATCHES_PER_CLASS = {"train": 100, "test": 50, "ood": 100}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _digit_rows(split: str) -> list[tuple[str, bytes, str]]:
    from sklearn.datasets import load_digits  # scikit-learn only for the digits: it takes a second to import

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    order = np.random.default_rng([SEED, 0]).permutation(len(images))
    chosen = order[:DIGITS_TRAIN] if split == "train" else order[DIGITS_TRAIN:]
    rng = np.random.default_rng([SEED, 1, ZOO_SPLITS.index(split)])
    angles = rng.uniform(-180.0, 180.0, size=len(chosen))
    pad = (SIZE - DIGIT_SIZE) // 2
    rows = []
    for k, idx in enumerate(chosen):
        small = Image.fromarray(images[idx]).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC)
        if split == "ood":
            small = small.filter(ImageFilter.MaxFilter(3))
        canvas = Image.new("L", (SIZE, SIZE), 0)
        canvas.paste(small, (pad, pad))
        rotated = canvas.rotate(float(angles[k]), resample=Image.Resampling.BILINEAR, fillcolor=0)
        arr = np.asarray(rotated, dtype=np.float64)
        if split == "ood":
            arr = arr + rng.normal(0.0, 24.0, size=arr.shape)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        rows.append((f"{split}/{int(idx):04d}", _png(arr), str(int(digits.target[idx]))))
    return rows


def _patch_rows(split: str) -> list[tuple[str, bytes, str]]:
    rows = []
    for p_idx, (name, region) in enumerate(sample_regions(split).items()):
        rh, rw = region.shape[:2]
        short = min(rh, rw)
        rng = np.random.default_rng([SEED, 2, ZOO_SPLITS.index(split), p_idx])
        for k in range(PATCHES_PER_CLASS[split]):
            side = int(rng.integers(SIZE, max(SIZE + 1, short // 4) + 1))
            top = int(rng.integers(0, rh - side + 1))
            left = int(rng.integers(0, rw - side + 1))
            crop = Image.fromarray(np.ascontiguousarray(region[top : top + side, left : left + side]))
            if side != SIZE:
                crop = crop.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
            rows.append((f"{split}/{name}/{k:03d}", _png(np.asarray(crop.convert("RGB"))), name))
    return rows


def zoo_data_path(task: str, split: str) -> Path:
    """Path of one split's Parquet file (not necessarily built yet)."""
    return cache_dir() / "zoo-data" / f"v{ZOO_DATA_VERSION}" / f"{task}-{split}.parquet"


def materialize_zoo_data(task: str, split: str, *, force: bool = False) -> Path:
    """Build one split of a zoo task once (atomic write) and return its Parquet path.

    Args:
        task: ``digits`` or ``patches``.
        split: ``train``, ``test`` or ``ood``.
        force: Rebuild even if the file exists.

    Returns:
        The Parquet file path.
    """

    if task not in ZOO_TASKS or split not in ZOO_SPLITS:
        raise ValueError(f"unknown zoo data {task!r}/{split!r}; tasks {ZOO_TASKS}, splits {ZOO_SPLITS}")
    path = zoo_data_path(task, split)
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _digit_rows(split) if task == "digits" else _patch_rows(split)
    write_images_parquet(rows, path)
    return path
