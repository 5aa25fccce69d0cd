"""A real unit's data file changed after it was written (docs/integrity.md): its ``runs`` row recorded the
file's sha256, size and listing stamp; ``lee eval`` and ``lee reevaluate`` redo it (reason ``data damaged``)
and ``lee verify`` lists it. The units run in this process (dry-run plans decode on the driver, no Ray)."""

from __future__ import annotations

import glob
import hashlib

import pytest

from pipelines.cli import main
from pipelines.commands.reevaluate_cmd import plan_reevaluation
from pipelines.commands.verify_cmd import verify_root
from pipelines.running.plan import CHANGED, plan
from pipelines.running.runner import UnitRunner
from pipelines.spec.config import SweepConfig
from pipelines.store.results import Store
from tests.analysis.test_integrity import flip_mid_file, rewrite_values_same_size

pytestmark = pytest.mark.slow

MODEL = "test_resnet.r160_in1k"
EVAL = [
    "eval",
    "-m",
    MODEL,
    "-d",
    "sample-test",
    "-g",
    "rotate",
    "-n",
    "3",
    "--img-size",
    "32",
    "--batch-size",
    "4",
    "--dry-run",
]


def _run_todo(cfg: SweepConfig) -> list[dict]:
    p = plan(cfg, dry_run=True)
    runner = UnitRunner(cfg.output)
    return [
        runner.run(
            u,
            p.datasets[u.dataset.name].shards,
            "test",
            attempt=p.attempts.get(u.key, 0) + 1,
            batch_size=cfg.batch_size,
        )
        for u in p.todo
    ]


def test_a_changed_data_file_is_redone(tmp_path, capsys):
    cfg = SweepConfig(
        models=[MODEL],
        datasets=["sample-test"],
        generators=["rotate"],
        images=3,
        img_size=32,
        output=str(tmp_path / "r"),
        batch_size=4,
    )
    (first,) = _run_todo(cfg)
    unit = first["unit"]
    (path,) = glob.glob(f"{cfg.output}/lee/model=*/dataset=*/unit={unit}/part-0.parquet")
    row = Store(cfg.output).run_row(unit)
    data = open(path, "rb").read()
    assert (row["data_sha256"], row["data_bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    original = Store(cfg.output).read_table("lee").sort_by("sample_index").column("value").to_pylist()
    for attempt, damage in enumerate((flip_mid_file, rewrite_values_same_size), start=2):
        damage(path)
        assert len(open(path, "rb").read()) == len(data)  # same size: the listing's stamp, then the sha256
        capsys.readouterr()
        p = plan(cfg, dry_run=True)
        assert [u.key for u in p.todo] == [unit] and p.damaged[unit].startswith(CHANGED)
        err = capsys.readouterr().err
        assert f"is done but its data file {path} no longer matches what was written" in err
        assert plan_reevaluation(cfg, dry_run=True)[1] == {unit: "data damaged"}
        assert main([*EVAL, "-r", cfg.output]) == 0
        line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(unit))
        assert line.split()[-3:] == ["todo", "data", "damaged"]
        assert [(f.kind, f.unit) for f in verify_root(cfg.output)[0]] == [("data changed", unit)]
        (again,) = _run_todo(cfg)  # redone: the file is the unit's own again, its values the same as before
        assert again["status"] == "done" and again["attempt"] == attempt
        assert verify_root(cfg.output, full=True)[0] == [] and plan(cfg, dry_run=True).todo == []
        assert Store(cfg.output).read_table("lee").sort_by("sample_index").column("value").to_pylist() == original
