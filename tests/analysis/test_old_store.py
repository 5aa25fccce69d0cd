"""A store written by the previous version (schema 3, before this restructuring) reads unchanged.

``tests/data/store-schema3`` was written by ``lee eval -m test_resnet.r160_in1k -d sample-test --limit 2
-g rotate,translate_x --img-size 64 --metrics lee,alt,layerwise`` at commit c229242 (``runs.schema_version``
3). Its rows must come out of today's views exactly as stored, with the columns added since then NULL.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.analysis.views import connect
from pipelines.cli import main

OLD = Path(__file__).parents[1] / "data" / "store-schema3"


@pytest.fixture()
def old_root(tmp_path: Path) -> Path:
    root = tmp_path / "old"
    shutil.copytree(OLD, root)
    return root


def _stored(root: Path, table: str) -> list[dict]:
    (path,) = sorted(root.glob(f"{table}/**/part-0.parquet"))
    return pq.read_table(path).to_pylist()


def test_old_store_reads_unchanged_through_todays_views(old_root: Path) -> None:
    con = connect(str(old_root))
    runs = con.execute(
        "SELECT family, status, schema_version, key_mapping, n_skipped, node_id, pid FROM runs"
    ).fetchall()
    assert sorted(r[0] for r in runs) == ["alt", "layerwise", "lee"]
    assert all(r[1] == "done" and r[2] == "3" and r[3:] == (None, None, None, None) for r in runs)
    for table, key in (
        ("lee", ("sample_id", "generator")),
        ("alt", ("sample_id", "metric")),
        ("layerwise", ("sample_id", "generator", "call_index", "kind")),
    ):
        stored = {tuple(r[k] for k in key): r["value"] for r in _stored(old_root, table)}
        cols = ", ".join(key)
        seen = {tuple(r[:-1]): r[-1] for r in con.execute(f"SELECT {cols}, value FROM {table}").fetchall()}
        assert seen == stored and len(stored) > 0, table
    summary = con.execute("SELECT generator, mean_lee, n FROM lee_summary ORDER BY generator").fetchall()
    lee = _stored(old_root, "lee")
    for generator, mean_lee, n in summary:
        values = [r["value"] for r in lee if r["generator"] == generator]
        assert n == len(values) == 2 and mean_lee == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert con.execute("SELECT count(*) FROM layerwise_layers").fetchone()[0] > 0
    assert con.execute("SELECT count(*) FROM alt_summary").fetchone()[0] > 0


def test_old_store_verifies_clean_and_answers_queries(old_root: Path, capsys) -> None:
    assert main(["verify", "-r", str(old_root)]) == 0
    capsys.readouterr()
    assert main(["query", "-r", str(old_root), "SELECT count(*) AS n FROM lee", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].strip() == "4"
