"""End-to-end sweeps on the session's local Ray: schema, values, reruns, failures, reevaluation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.cli import main
from pipelines.running.execute import execute
from pipelines.running.plan import plan
from pipelines.store import schema
from pipelines.store.results import Store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Small, fast units: timm's tiny random-init models at 32 px on a few sample images.
TINY = ["test_resnet.r160_in1k", "test_vit.r160_in1k", "test_convnext.r160_in1k"]
GENS = ["translate_x", "rotate"]
IMG = 32
N = 6


def sweep_config(output, models=None, **kw):
    from pipelines.spec.config import SweepConfig

    base = dict(
        models=list(models or TINY),
        datasets=["sample-test"],
        generators=list(GENS),
        images=N,
        img_size=IMG,
        output=str(output),
        batch_size=4,
    )
    base.update(kw)
    return SweepConfig(**base)


@pytest.fixture(scope="module")
def done_sweep(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "results"
    cfg = sweep_config(out)
    result = execute(plan(cfg))
    return cfg, result


def _unit_files(root: Path, table: str) -> list[Path]:
    return sorted(root.glob(f"{table}/model=*/dataset=*/unit=*/*.parquet"))


def test_sweep_writes_documented_schema(done_sweep):
    cfg, result = done_sweep
    root = Path(cfg.output)
    assert len(result.rows) == len(TINY) and all(r["status"] == "done" for r in result.rows), result.rows
    files = _unit_files(root, "lee")
    assert len(files) == len(TINY)
    for f in files:
        assert pq.read_schema(f).remove_metadata() == schema.LEE.schema.remove_metadata()
    runs = _unit_files(root, "runs") or sorted(root.glob("runs/unit=*/*.parquet"))
    for f in runs:
        assert pq.read_schema(f).remove_metadata() == schema.RUNS.schema.remove_metadata()
    # one DuckDB query over the hive layout, counting only done units
    con = duckdb.connect()
    rows = con.sql(
        f"""
        SELECT l.model, count(*) AS n, count(DISTINCT l.sample_id) AS images, any_value(r.weights) AS w
        FROM read_parquet('{root}/lee/**/*.parquet', hive_partitioning = true) l
        JOIN read_parquet('{root}/runs/**/*.parquet', hive_partitioning = true) r USING (unit)
        WHERE r.status = 'done' GROUP BY ALL ORDER BY 1
        """
    ).fetchall()
    assert [r[0] for r in rows] == sorted(TINY)
    assert all(r[1] == N * len(GENS) and r[2] == N and r[3] == "random" for r in rows)
    run = Store(cfg.output).runs().to_pylist()[0]
    versions = json.loads(run["package_versions"])
    assert versions["torch"] == torch.__version__ and versions["pipelines"] and versions["catalog"]
    assert run["dataset_fingerprint"] and run["hardware"].startswith("cpu") and run["wall_s"] > 0
    # attempt counts every start: 1, or more when Ray restarted the actor (its memory monitor, under load) and the
    # unit was retried; the row stored is the unit's last attempt, and it is done
    assert run["status"] == "done" and run["attempt"] >= 1 and run["schema_version"] == schema.SCHEMA_VERSION
    assert json.loads(run["data_config_json"])["input_size"] == [3, IMG, IMG]
    import ray

    # where it ran: the session's one node, in an actor's process (not the driver's)
    assert run["node_id"] == ray.get_runtime_context().get_node_id() and run["pid"] not in (None, os.getpid())


def test_values_equal_liecore_directly(done_sweep):
    import catalog
    import liecore

    cfg, _ = done_sweep
    images = catalog.load_dataset(catalog.get_dataset("sample-test")).images[:N]
    table = Store(cfg.output).read_table("lee").to_pandas()
    for name in TINY:
        spec = catalog.get_model(name).replace(img_size=IMG)
        torch.manual_seed(cfg.seed)
        loaded = catalog.build_model(spec, weights="auto", device="cpu")
        x = loaded.preprocess([im.array for im in images])
        res = liecore.lee(loaded.model, x, GENS, mean=loaded.data_config["mean"], std=loaded.data_config["std"])
        got = table[table.model == name].set_index(["sample_index", "generator"]).sort_index()
        for g_i, g in enumerate(GENS):
            want = res.values[:, g_i].numpy()
            have = np.array([got.loc[(i, g), "value"] for i in range(N)])
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-14)
            have_abs = np.array([got.loc[(i, g), "mean_abs"] for i in range(N)])
            np.testing.assert_allclose(have_abs, res.mean_abs[:, g_i].numpy(), rtol=1e-4, atol=1e-14)
        assert list(got.loc[(0, GENS[0]), ["sample_id", "weights"]]) == [images[0].image_id, loaded.weights]


def test_rerun_of_complete_sweep_does_no_work(done_sweep):
    cfg, _ = done_sweep
    before = {p: p.stat().st_mtime_ns for p in Path(cfg.output).rglob("*.parquet")}
    p = plan(cfg)
    assert p.todo == [] and len(p.units) == len(TINY)
    result = execute(p)
    assert result.rows == []
    assert {p: p.stat().st_mtime_ns for p in Path(cfg.output).rglob("*.parquet")} == before


def test_reevaluate_dry_run_lists_exactly_the_missing_unit(done_sweep, tmp_path, capsys):
    cfg, result = done_sweep
    root = tmp_path / "copy"
    shutil.copytree(cfg.output, root)
    missing = next(r for r in result.rows if r["model"] == TINY[1])
    shutil.rmtree(root / "runs" / f"unit={missing['unit']}")
    args = [
        "reevaluate",
        "--dry-run",
        "-r",
        str(root),
        "-m",
        ",".join(TINY),
        "-d",
        "sample-test",
        "-g",
        ",".join(GENS),
        "-n",
        str(N),
        "--img-size",
        str(IMG),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[2:] if line.strip()]
    assert listed == [missing["unit"]], out
    assert TINY[1] in out and "new model" in out


def test_failing_model_is_recorded_and_others_complete(ray_session, tmp_path):
    """A checkpoint that breaks after the checks made before any work (overwritten while the sweep starts)."""
    import torch

    import catalog

    ckpt = tmp_path / "resnet.pth"
    good = catalog.build_model(TINY[0], weights="random").model.state_dict()
    torch.save(good, ckpt)
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - {TINY[0]}\n  - {{name: broken_resnet, arch: test_resnet, source: file, checkpoint: '{ckpt}'}}\n"
    )
    cfg = sweep_config(tmp_path / "res", models=[str(models)])
    p = plan(cfg)  # the checkpoint loads and fits here
    ckpt.write_bytes(b"this is not a checkpoint")
    result = execute(p)
    by_model = {r["model"]: r for r in result.rows}
    assert by_model["broken_resnet"]["status"] == "failed" and by_model["broken_resnet"]["error"]
    assert by_model[TINY[0]]["status"] == "done"
    store = Store(cfg.output)
    runs = {r["model"]: r for r in store.runs().to_pylist()}
    assert runs["broken_resnet"]["status"] == "failed" and runs["broken_resnet"]["error_type"]
    lee = store.read_table("lee").to_pandas()
    assert set(lee.model) == {TINY[0]} and len(lee) == N * len(GENS)
    # a rerun retries the failed unit only, as its next attempt (the checkpoint repaired); the done unit is untouched
    # (attempts are compared with their values before: a task Ray retried after an actor restart counts truly)
    before = {m: r["attempt"] for m, r in runs.items()}
    torch.save(good, ckpt)
    p = plan(cfg)
    assert [u.model.name for u in p.todo] == ["broken_resnet"]
    (again,) = execute(p).rows
    assert again["status"] == "done"
    runs = {r["model"]: r for r in store.runs().to_pylist()}
    assert runs["broken_resnet"]["attempt"] >= before["broken_resnet"] + 1
    assert runs[TINY[0]]["attempt"] == before[TINY[0]]


def test_kill_and_resume_gives_each_unit_exactly_once(ray_session, tmp_path, capsys):
    out = tmp_path / "res"
    models = TINY + ["test_efficientnet.r160_in1k", "test_convnext2.r160_in1k", "test_vit2.r160_in1k"]
    argv = [
        sys.executable,
        "-m",
        "pipelines",
        "eval",
        "--address",
        ray_session,
        "-r",
        str(out),
        "-m",
        ",".join(models),
        "-d",
        "sample-test",
        "-n",
        "12",
        "--img-size",
        str(IMG),
        "-g",
        "translate_x,rotate,scale,shear_x",
        "--batch-size",
        "4",
        "--actors",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def n_done() -> int:  # units start with an Interrupted placeholder row; wait for a done one
        return sum(s == "done" for s in Store(str(out)).run_status().values()) if (out / "runs").exists() else 0

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if n_done():
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = n_done()
    assert 0 < done_at_kill < len(models), f"kill did not land mid-sweep ({done_at_kill} done)"
    # rerun to completion
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Token authentication" not in rerun.stderr  # Ray's startup notice, not shown off a terminal
    store = Store(str(out))
    runs = store.runs().to_pandas()
    assert len(runs) == len(models) and runs.unit.is_unique and set(runs.status) == {"done"}
    con = duckdb.connect()
    dup = con.sql(
        f"""SELECT unit, sample_id, generator, count(*) c
            FROM read_parquet('{out}/lee/**/*.parquet', hive_partitioning = true)
            GROUP BY ALL HAVING c > 1"""
    ).fetchall()
    assert dup == []
    counts = con.sql(
        f"SELECT model, count(*) FROM read_parquet('{out}/lee/**/*.parquet', hive_partitioning = true) GROUP BY 1"
    ).fetchall()
    assert sorted(counts) == sorted((m, 12 * 4) for m in models)
    assert not list(out.rglob("_tmp-*"))
    # and a third run does nothing (`lee eval` in this process: no interpreter to start)
    capsys.readouterr()
    assert main(argv[3:]) == 0
    again = capsys.readouterr().out
    assert "0 computed" in again and f"{len(models)} already done" in again
