"""Datasets: the offline sample set, folders and Parquet through fsspec, decoding failures, subsets."""

from __future__ import annotations

import io
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage

import catalog


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _photo(seed: int, size: tuple[int, int] = (40, 60)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def test_sample_builds_offline_with_real_images_per_role() -> None:
    specs = catalog.load_datasets("sample")
    assert [(s.name, s.role) for s in specs] == [
        ("sample-train", "train"),
        ("sample-test", "test"),
        ("sample-ood", "ood"),
    ]
    sets = {s.role: catalog.load_dataset(s) for s in specs}
    natural = {"astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "china", "flower"}
    for role, images in sets.items():
        assert len(images) == 100 and images.errors == []
        for img in images.images:
            assert img.array.shape == (256, 256, 3) and img.array.dtype == np.uint8
            assert img.array.std() > 5  # a photo crop, not a flat fill
        labels = {img.label for img in images.images}
        assert labels == (natural if role != "ood" else {"immunohistochemistry", "retina"})
    train_ids = {i.image_id for i in sets["train"].images}
    assert train_ids.isdisjoint(i.image_id for i in sets["test"].images)
    # Train and test crops come from disjoint halves: no test crop equals a train crop.
    train_hashes = {i.array.tobytes() for i in sets["train"].images}
    assert not any(i.array.tobytes() in train_hashes for i in sets["test"].images)


def test_sample_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = catalog.load_dataset("sample-ood")
    monkeypatch.setenv("LEE_CACHE_DIR", str(tmp_path))
    path = catalog.materialize_sample("ood")
    assert path.is_relative_to(tmp_path)
    second = catalog.load_dataset("sample-ood")
    assert second.fingerprint == first.fingerprint
    assert [i.image_id for i in second.images] == [i.image_id for i in first.images]
    assert all(np.array_equal(a.array, b.array) for a, b in zip(first.images, second.images, strict=True))


def _write_folder(root: Path) -> dict[str, np.ndarray]:
    """An image folder with good images of several modes, and broken files."""
    good = {}
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    for i in range(3):
        good[f"cat/{i}.png"] = _photo(i)
        (root / "cat" / f"{i}.png").write_bytes(_png(good[f"cat/{i}.png"]))
    gray = _photo(10)[..., 0]
    (root / "dog" / "gray.png").write_bytes(_png(gray, mode="L"))
    sixteen = (np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) * 27).astype(np.uint16)
    (root / "dog" / "sixteen.png").write_bytes(_png(sixteen))
    rgba = np.dstack([_photo(11), np.full((40, 60), 128, np.uint8)])
    (root / "dog" / "rgba.png").write_bytes(_png(rgba, mode="RGBA"))
    buf = io.BytesIO()
    PILImage.new("CMYK", (30, 20), (0, 255, 0, 0)).save(buf, format="JPEG")
    (root / "dog" / "cmyk.jpg").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    PILImage.fromarray(_photo(12)).convert("P").save(buf, format="PNG")
    (root / "dog" / "palette.png").write_bytes(buf.getvalue())
    (root / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "cat" / "truncated.png").write_bytes(_png(_photo(13))[:200])
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    return good


def test_folder_with_corrupt_images_loads_the_rest(tmp_path: Path) -> None:
    good = _write_folder(tmp_path / "data")
    spec = catalog.DatasetSpec(name="local", uri=str(tmp_path / "data"), format="imagefolder")
    images = catalog.load_dataset(spec)
    by_id = {i.image_id: i for i in images.images}
    assert set(by_id) == {
        "cat/0.png",
        "cat/1.png",
        "cat/2.png",
        "dog/gray.png",
        "dog/sixteen.png",
        "dog/rgba.png",
        "dog/cmyk.jpg",
        "dog/palette.png",
    }
    failed = dict(images.errors)
    assert set(failed) == {"dog/corrupt.jpg", "cat/truncated.png"}
    assert "corrupt.jpg" in failed["dog/corrupt.jpg"] and "truncated.png" in failed["cat/truncated.png"]
    for key, array in good.items():
        assert np.array_equal(by_id[key].array, array)
        assert by_id[key].label == "cat"
    assert by_id["dog/gray.png"].label == "dog"
    for img in images.images:
        assert img.array.dtype == np.uint8 and img.array.ndim == 3 and img.array.shape[2] == 3
    sixteen = by_id["dog/sixteen.png"].array
    assert sixteen.max() > 200 and np.array_equal(sixteen[..., 0], sixteen[..., 2])  # scaled, not clipped
    assert np.array_equal(by_id["dog/cmyk.jpg"].array[0, 0], [255, 0, 255])
    flat = catalog.load_dataset(spec.replace(name="flat", format="flat"))
    assert len(flat) == 8 and all(i.label is None for i in flat.images)


def test_seeded_subset_and_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(20):
        (root / f"img{i:02d}.png").write_bytes(_png(_photo(i, (8, 8))))
    spec = catalog.DatasetSpec(name="flat", uri=str(root), format="flat", n=5, seed=1)
    a, b = catalog.load_dataset(spec), catalog.load_dataset(spec)
    assert [i.image_id for i in a.images] == [i.image_id for i in b.images] and a.fingerprint == b.fingerprint
    assert len(a) == 5
    other = catalog.load_dataset(spec.replace(seed=2))
    assert [i.image_id for i in other.images] != [i.image_id for i in a.images]
    # Changing one selected image's bytes changes the fingerprint; changing an unselected one does not.
    chosen = {i.image_id for i in a.images}
    unselected = next(f"img{i:02d}.png" for i in range(20) if f"img{i:02d}.png" not in chosen)
    (root / unselected).write_bytes(_png(_photo(99, (8, 8))))
    assert catalog.load_dataset(spec).fingerprint == a.fingerprint
    (root / sorted(chosen)[0]).write_bytes(_png(_photo(98, (8, 8))))
    assert catalog.load_dataset(spec).fingerprint != a.fingerprint


def test_memory_uri_parquet_and_folder() -> None:
    fs = fsspec.filesystem("memory")
    photos = [_photo(i, (16, 24)) for i in range(6)]
    table = pa.table(
        {
            "image_id": [f"row-{i}" for i in range(6)],
            "image": [_png(p) for p in photos[:5]] + [b"garbage"],
            "label": [i % 2 for i in range(6)],
        }
    )
    with fs.open("/lee-test/parquet/part-0.parquet", "wb") as fh:
        pq.write_table(table, fh)
    spec = catalog.DatasetSpec(name="mem", uri="memory://lee-test/parquet", format="parquet")
    images = catalog.load_dataset(spec)
    assert [i.image_id for i in images.images] == [f"row-{i}" for i in range(5)]
    assert [i.label for i in images.images] == [0, 1, 0, 1, 0]
    assert np.array_equal(images.images[3].array, photos[3])
    assert [e[0] for e in images.errors] == ["row-5"] and "part-0.parquet" in images.errors[0][1]
    # Hugging Face style: an image struct {bytes, path}, another label column, no id column.
    hf = pa.table(
        {
            "img": [{"bytes": _png(p), "path": None} for p in photos],
            "fine_label": list(range(6)),
        }
    )
    with fs.open("/lee-test/hf.parquet", "wb") as fh:
        pq.write_table(hf, fh)
    hf_spec = catalog.DatasetSpec(
        name="hf",
        uri="memory://lee-test/hf.parquet",
        format="parquet",
        image_column="img",
        label_column="fine_label",
        id_column=None,
        n=3,
    )
    subset = catalog.load_dataset(hf_spec)
    assert len(subset) == 3 and all(i.image_id.startswith("hf.parquet#") for i in subset.images)
    for img in subset.images:
        assert np.array_equal(img.array, photos[img.label])
    # An image folder in memory.
    for i in range(2):
        fs.pipe(f"/lee-test/folder/a/{i}.png", _png(photos[i]))
    folder = catalog.load_dataset(catalog.DatasetSpec(name="memf", uri="memory://lee-test/folder"))
    assert [(i.image_id, i.label) for i in folder.images] == [("a/0.png", "a"), ("a/1.png", "a")]
    fs.rm("/lee-test", recursive=True)


def test_paper_datasets_need_their_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    with pytest.raises(catalog.CatalogError, match="IMAGENET_ROOT"):
        catalog.load_dataset("imagenet-val")
    _write_folder(tmp_path / "val")
    monkeypatch.setenv("IMAGENET_ROOT", str(tmp_path))
    images = catalog.load_dataset("imagenet-val")
    assert len(images) == 8 and images.spec.role == "test" and len(images.errors) == 2
    assert {s.name for s in catalog.load_datasets("paper")} >= {"imagenet-train", "cifar100", "diabetic-retinopathy"}


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    spec = catalog.DatasetSpec(name="nope", uri=str(tmp_path / "nope"))
    with pytest.raises(catalog.CatalogError, match="does not exist"):
        catalog.load_dataset(spec)
    with pytest.raises(catalog.CatalogError, match="role must be one of"):
        catalog.DatasetSpec(name="x", uri="/x", role="validation")


def test_fingerprint_is_the_stated_hash_of_ids_and_bytes(tmp_path: Path) -> None:
    """The fingerprint (part of every unit key) recomputed here from the files with hashlib, as its
    docstring states it: the seeded subset of the sorted ids, each id with the sha256 of its bytes,
    ``unreadable`` for an image that cannot be read. Public listing, selection and hash agree."""
    import hashlib
    import random

    root = tmp_path / "flat"
    root.mkdir()
    for i in range(12):
        (root / f"img{i:02d}.png").write_bytes(_png(_photo(i, (8, 8))))
    (root / "img99.png").symlink_to(root / "missing.png")  # listed, cannot be read
    spec = catalog.DatasetSpec(name="flat", uri=str(root), format="flat", n=13, seed=3)
    ids = sorted(p.name for p in root.iterdir())
    digest = hashlib.sha256()
    for name in ids:
        path = root / name
        sha = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "unreadable"
        digest.update(f"{name}\0{sha}\n".encode())
    loaded = catalog.load_dataset(spec)
    assert [e[0] for e in loaded.errors] == ["img99.png"] and len(loaded) == 12
    assert loaded.fingerprint == digest.hexdigest()

    items = catalog.list_items(spec.replace(n=5))
    assert sorted(it.image_id for it in items) == ids
    chosen = catalog.select_items(items, 5, 3)
    expected = [ids[i] for i in sorted(random.Random(3).sample(range(len(ids)), 5))]
    assert [it.image_id for it in chosen] == expected
    hashed = [
        (it.image_id, hashlib.sha256((root / it.image_id).read_bytes()).hexdigest())
        for it in chosen
        if it.image_id != "img99.png"
    ]
    hashed += [("img99.png", None)] if "img99.png" in expected else []
    assert catalog.fingerprint(sorted(hashed)) == catalog.load_dataset(spec.replace(n=5)).fingerprint
