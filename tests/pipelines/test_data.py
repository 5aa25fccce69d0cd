"""Ray Data read + decode: the same images, fingerprint and errors as ``catalog.load_dataset``."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import catalog
from pipelines.cli import main
from pipelines.spec.data import Shard, load_dataset, resolve_shard
from tests.catalog.test_datasets import _photo, _png, _write_folder

pytestmark = [pytest.mark.ray]


def _check_same_as_catalog(loaded, ref, n: int, driver: bool) -> None:
    want = ref.images[:n]
    assert loaded.info.fingerprint == ref.fingerprint
    assert loaded.info.n_images == len(want)
    assert (
        all(isinstance(s, dict) for s in loaded.shards) if driver else all(isinstance(s, Shard) for s in loaded.shards)
    )
    got = [resolve_shard(s) for s in loaded.shards]
    assert [i for g in got for i in g["ids"]] == [im.image_id for im in want]
    assert [v for g in got for v in g["labels"]] == [im.label for im in want]
    arrays = [a for g in got for a in g["images"]]
    assert all(np.array_equal(a, im.array) and a.dtype == np.uint8 for a, im in zip(arrays, want, strict=True))
    assert set(loaded.errors) <= set(ref.errors)


@pytest.mark.parametrize("driver", [True, False], ids=["driver", "ray-data"])
def test_folder_with_corrupt_and_odd_mode_images(ray_session, tmp_path: Path, driver: bool) -> None:
    _write_folder(tmp_path / "data")
    spec = catalog.DatasetSpec(name="local", uri=str(tmp_path / "data"), format="imagefolder")
    ref = catalog.load_dataset(spec)
    # ids in order: cat/0, cat/1, cat/2, cat/truncated (bad), dog/cmyk, dog/corrupt (bad), dog/gray, ...
    first3 = load_dataset(spec, 3, batch_size=2, driver=driver)
    _check_same_as_catalog(first3, ref, 3, driver)
    assert first3.decoded == 3 and first3.errors == []  # only what the sweep uses is decoded
    five = load_dataset(spec, 5, batch_size=2, driver=driver)  # cat/truncated is among the first 5
    _check_same_as_catalog(five, ref, 5, driver)
    assert "cat/truncated.png" in dict(five.errors) and five.info.n_images == 5
    everything = load_dataset(spec, 100, batch_size=3, driver=driver)
    _check_same_as_catalog(everything, ref, 100, driver)
    assert everything.info.n_images == 8 and set(everything.errors) == set(ref.errors)


@pytest.mark.parametrize("driver", [True, False], ids=["driver", "ray-data"])
def test_parquet_struct_column_in_memory_filesystem(ray_session, driver: bool) -> None:
    fs = fsspec.filesystem("memory")
    photos = [_photo(i, (16, 24)) for i in range(6)]
    table = pa.table(
        {
            "img": [{"bytes": _png(p), "path": None} for p in photos[:2]]
            + [{"bytes": b"garbage", "path": None}]
            + [{"bytes": _png(p), "path": None} for p in photos[3:]],
            "fine_label": list(range(6)),
        }
    )
    with fs.open(f"/lee-data-{driver}/hf.parquet", "wb") as fh:
        pq.write_table(table, fh, row_group_size=2)
    spec = catalog.DatasetSpec(
        name="hf",
        uri=f"memory://lee-data-{driver}/hf.parquet",
        format="parquet",
        image_column="img",
        label_column="fine_label",
        id_column=None,
        n=5,
        seed=3,
    )
    try:
        ref = catalog.load_dataset(spec)
        for n in (2, 4):
            _check_same_as_catalog(load_dataset(spec, n, batch_size=2, driver=driver), ref, n, driver)
    finally:
        fs.rm(f"/lee-data-{driver}", recursive=True)


def test_sample_parquet_on_ray_data_matches_catalog(ray_session) -> None:
    spec = catalog.get_dataset("sample-test")
    ref = catalog.load_dataset(spec)
    loaded = load_dataset(spec, 7, batch_size=3)
    _check_same_as_catalog(loaded, ref, 7, driver=False)
    assert loaded.decoded == 7 and len(loaded.shards) == 3
    assert loaded.arrays()[6].shape == ref.images[6].array.shape


def test_dry_run_reports_skipped_images(tmp_path: Path, capsys) -> None:
    _write_folder(tmp_path / "data")
    ds_file = tmp_path / "datasets.yaml"
    ds_file.write_text(f"datasets:\n  - {{name: local, uri: '{tmp_path / 'data'}', format: imagefolder}}\n")
    args = [
        "eval",
        "--dry-run",
        "-m",
        "test_resnet.r160_in1k",
        "-d",
        str(ds_file),
        "-n",
        "5",
        "-g",
        "rotate",
        "-r",
        str(tmp_path / "r"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "image(s) skipped (unreadable or undecodable), 5 used" in out and "cat/truncated.png" in out
