"""The previous version's units are today's: same keys (nothing is redone) and the same numbers, except where a
metric's revision changed on purpose.

``tests/data/store-schema4`` was written at commit 93eda3b (schema 4, before ``pipelines`` was restructured into
layers) by ``lee eval -m test_resnet.r160_in1k -d sample-test --limit 2 -g rotate,translate_x --img-size 64
--metrics lee,alt,layerwise`` with the hub offline (``--weights auto`` fell back to random init, as it does here). A
restructuring that changes no
result keeps every unit key, so today's plan finds all three units done; recomputed with ``--force``, they give
the stored values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main

STORED = Path(__file__).parents[1] / "data" / "store-schema4"
ARGS = [
    "-m",
    "test_resnet.r160_in1k",
    "-d",
    "sample-test",
    "--limit",
    "2",
    "-g",
    "rotate,translate_x",
    "--img-size",
    "64",
    "--metrics",
    "lee,alt,layerwise",
]
KEYS = {
    "lee": ("sample_id", "generator"),
    "alt": ("sample_id", "metric"),
    "layerwise": ("sample_id", "generator", "call_index", "kind"),
}


def _values(root: Path, table: str) -> dict[tuple, float]:
    rows = [r for path in sorted(root.glob(f"{table}/**/*.parquet")) for r in pq.read_table(path).to_pylist()]
    return {tuple(r[k] for k in KEYS[table]): r["value"] for r in rows}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # auto resolves to random init, as when the store was written


def test_previous_units_are_done_under_todays_keys(tmp_path: Path, capsys) -> None:
    root = tmp_path / "r"
    shutil.copytree(STORED, root)
    assert main(["eval", *ARGS, "-o", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 units, 2 to run, 1 already done" in out, out
    todo = [line.split() for line in out.splitlines() if " todo " in f" {line} "]
    assert sorted(row[1] for row in todo) == ["alt", "layerwise"], out


@pytest.mark.ray
def test_previous_units_recompute_to_the_stored_values(ray_session, tmp_path: Path, capsys) -> None:
    root = tmp_path / "r"
    shutil.copytree(STORED, root)
    assert main(["eval", *ARGS, "-o", str(root), "--address", ray_session, "--force", "--no-progress"]) == 0
    capsys.readouterr()
    stored, now = _values(STORED, "lee"), _values(root, "lee")  # the same unit key: rewritten in place
    assert now.keys() == stored.keys() and len(stored) > 0
    for key, value in stored.items():
        assert now[key] == pytest.approx(value, rel=1e-6, abs=1e-12), ("lee", key)
    for table, changed in (("alt", "shift_consistency"), ("layerwise", None)):  # new keys: a new file each
        old_unit = {p.parent.name for p in STORED.glob(f"{table}/**/*.parquet")}
        (new_file,) = [p for p in root.glob(f"{table}/**/*.parquet") if p.parent.name not in old_unit]
        stored = _values(STORED, table)
        now = {tuple(r[k] for k in KEYS[table]): r["value"] for r in pq.read_table(new_file).to_pylist()}
        assert now.keys() == stored.keys() and len(stored) > 0, table
        for key, value in stored.items():
            if changed not in key:
                assert now[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (table, key)
