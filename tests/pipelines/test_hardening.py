"""Bad inputs from outside: damaged stores, skipped images, concurrent writers on one root.

The units run in this process (dry-run plans decode on the driver, no Ray), as in ``test_runner``; one test
runs two real ``lee eval`` at once on the session's local Ray.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.commands.reevaluate_cmd import plan_reevaluation
from pipelines.commands.verify_cmd import verify_root
from pipelines.running.plan import plan
from pipelines.running.runner import UnitRunner
from pipelines.spec.config import SweepConfig
from pipelines.store.results import Store
from tests.catalog.test_datasets import _write_folder

pytestmark = pytest.mark.slow

MODEL = "test_resnet.r160_in1k"


def _config(out, **kw) -> SweepConfig:
    base = dict(
        models=[MODEL],
        datasets=["sample-test"],
        generators=["rotate"],
        images=3,
        img_size=32,
        output=str(out),
        batch_size=4,
    )
    base.update(kw)
    return SweepConfig(**base)


def _run_todo(cfg: SweepConfig, sweep_id: str = "test") -> list[dict]:
    p = plan(cfg, dry_run=True)
    runner = UnitRunner(cfg.output)
    return [
        runner.run(
            u,
            p.datasets[u.dataset.name].shards,
            sweep_id,
            attempt=p.attempts.get(u.key, 0) + 1,
            batch_size=cfg.batch_size,
        )
        for u in p.todo
    ]


def _truncate(path: str, keep: int = 100) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(keep)


# --------------------------------------------------------------------------------------- damaged stores
def test_a_done_unit_with_unreadable_data_is_redone(tmp_path, capsys):
    cfg = _config(tmp_path / "r")
    (first,) = _run_todo(cfg)
    assert first["status"] == "done" and plan(cfg, dry_run=True).todo == []
    (path,) = glob.glob(f"{cfg.output}/lee/model=*/dataset=*/unit={first['unit']}/part-0.parquet")
    _truncate(path)
    capsys.readouterr()
    p = plan(cfg, dry_run=True)
    assert [u.key for u in p.todo] == [first["unit"]] and "Parquet" in p.damaged[first["unit"]]
    err = capsys.readouterr().err
    assert f"lee: warning: unit lee:{MODEL}@sample-test[{first['unit']}] is done but its data file {path}" in err
    _, reasons = plan_reevaluation(cfg, dry_run=True)
    assert reasons == {first["unit"]: "data unreadable"}
    from pipelines.cli import main

    assert (
        main(
            [
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
                "-r",
                cfg.output,
                "--dry-run",
            ]
        )
        == 0
    )
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(first["unit"]))
    assert row.split()[-3:] == ["todo", "data", "unreadable"]  # action, stored
    assert [f.kind for f in verify_root(cfg.output)[0]] == ["data unreadable"]
    (again,) = _run_todo(cfg)
    assert again["status"] == "done" and again["attempt"] == 2
    assert verify_root(cfg.output)[0] == [] and Store(cfg.output).read_table("lee").num_rows == 3
    # a deleted data file, too
    Path(path).unlink()
    assert plan(cfg, dry_run=True).damaged == {first["unit"]: "missing"}


def test_a_truncated_runs_file_does_not_stop_a_rerun(tmp_path, capsys):
    cfg = _config(tmp_path / "r")
    (first,) = _run_todo(cfg)
    (runs_file,) = glob.glob(f"{cfg.output}/runs/unit=*/part-0.parquet")
    _truncate(runs_file, 40)
    p = plan(cfg, dry_run=True)  # no traceback: the unit counts as never started
    assert [u.key for u in p.todo] == [first["unit"]]
    assert f"skipping unreadable runs file {runs_file}" in capsys.readouterr().err
    (again,) = _run_todo(cfg)
    assert again["status"] == "done" and Store(cfg.output).runs().num_rows == 1


# -------------------------------------------------------------------------------- skipped images recorded
def test_skipped_images_are_recorded_in_runs(tmp_path):
    _write_folder(tmp_path / "data")  # in id order: cat/0, cat/1, cat/2, cat/truncated (bad), dog/cmyk, ...
    ds = tmp_path / "datasets.yaml"
    ds.write_text(f"datasets:\n  - {{name: local, uri: '{tmp_path / 'data'}', format: imagefolder}}\n")
    cfg = _config(tmp_path / "r", datasets=[str(ds)], images=5)
    p = plan(cfg, dry_run=True)
    errors = dict(p.datasets["local"].errors)
    (row,) = _run_todo(cfg)
    assert row["status"] == "done"
    (run,) = Store(cfg.output).runs().to_pylist()
    skipped = json.loads(run["skipped_json"])
    assert run["n_skipped"] == len(errors) == len(skipped) >= 1 and run["n_images"] == 5
    assert {s["id"]: s["reason"] for s in skipped} == errors
    assert "cat/truncated.png" in errors and "truncated.png" in errors["cat/truncated.png"]
    # a clean dataset records none
    clean = _config(tmp_path / "r2")
    _run_todo(clean)
    (run,) = Store(clean.output).runs().to_pylist()
    assert run["n_skipped"] == 0 and json.loads(run["skipped_json"]) == []


def test_runs_rows_of_older_schemas_read_new_columns_as_null(tmp_path):
    cfg = _config(tmp_path / "r")
    (first,) = _run_todo(cfg)
    (runs_file,) = glob.glob(f"{cfg.output}/runs/unit=*/part-0.parquet")
    old = pq.read_table(runs_file).drop_columns(["n_skipped", "skipped_json"])  # as schema 3 wrote it
    pq.write_table(old, runs_file)
    (run,) = Store(cfg.output).runs().to_pylist()
    assert run["n_skipped"] is None and run["skipped_json"] is None and run["status"] == "done"
    from pipelines.analysis.views import connect

    con = connect(cfg.output, threads=1)
    try:
        assert con.execute("SELECT n_skipped, skipped_json, status FROM runs").fetchall() == [(None, None, "done")]
    finally:
        con.close()
    assert plan(cfg, dry_run=True).todo == []


# ------------------------------------------------------------------------------------ concurrent writers
# Another process computes the unit, slowly (each batch waits), planned at the same time as this one.
_SLOW_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pipelines.running import runner
    from pipelines.spec import families
    from pipelines.spec.config import SweepConfig
    from pipelines.running.plan import plan

    cfg = SweepConfig(**json.loads(sys.argv[1]))
    impl = families.FAMILY_IMPLS["lee"]

    def slow(*args, **kwargs):
        time.sleep(4)
        return impl.compute(*args, **kwargs)

    runner.FAMILY_IMPLS = {**families.FAMILY_IMPLS, "lee": families.Family("lee", "lee", slow)}
    p = plan(cfg, dry_run=True)
    (u,) = p.todo
    row = runner.UnitRunner(cfg.output).run(u, p.datasets[u.dataset.name].shards, "other",
                                            attempt=int(sys.argv[2]))
    print(json.dumps({k: row.get(k) for k in ("status", "attempt", "skipped")}))
    """
)


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_two_writers_compute_a_unit_once_and_count_attempts(tmp_path, force):
    cfg = _config(tmp_path / "r", force=force)
    if force:
        _run_todo(cfg)  # a done unit that both forced runs redo
    p = plan(cfg, dry_run=True)  # this run plans before the other starts
    (u,) = p.todo
    planned = p.attempts.get(u.key, 0) + 1
    other = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, json.dumps(cfg.to_dict()), str(planned)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = Store(cfg.output)
    deadline = time.time() + 120
    while time.time() < deadline and store.run_status().get(u.key) != "failed":
        assert other.poll() is None, other.stderr.read()[-3000:]
        time.sleep(0.05)  # until the other process has started the unit (its Interrupted placeholder row)
    computed = []
    from pipelines.running import runner as runner_mod

    impl = runner_mod.FAMILY_IMPLS["lee"]

    def counting(*args, **kwargs):
        computed.append(1)
        return impl.compute(*args, **kwargs)

    from pipelines.spec import families

    original = runner_mod.FAMILY_IMPLS
    runner_mod.FAMILY_IMPLS = {**original, "lee": families.Family("lee", "lee", counting)}
    try:
        mine = UnitRunner(cfg.output).run(u, p.datasets[u.dataset.name].shards, "mine", attempt=planned)
    finally:
        runner_mod.FAMILY_IMPLS = original
    out, err = other.communicate(timeout=300)
    assert computed == [], "computed twice"  # this run waited for the other, then did not redo the unit
    assert mine.get("skipped") == "computed meanwhile by sweep other"
    (run,) = store.runs().to_pylist()
    assert run["status"] == "done" and run["attempt"] == planned and run["sweep_id"] == "other"
    theirs = json.loads(out.strip().splitlines()[-1])
    assert theirs["status"] == "done" and theirs["attempt"] == planned, err[-2000:]
    assert store.read_table("lee").num_rows == 3
    assert not store.lock_held(u.key) and not glob.glob(f"{cfg.output}/_locks/*.lock")  # released, removed
    # a later plain run of this process, planned now, computes with the true next attempt
    again = UnitRunner(cfg.output).run(u, p.datasets[u.dataset.name].shards, "later")
    assert again["status"] == "done" and again["attempt"] == planned + 1


@pytest.mark.ray
def test_two_lee_eval_on_one_root_compute_each_unit_once(ray_session, tmp_path):
    out = tmp_path / "res"
    models = ["test_resnet.r160_in1k", "test_vit.r160_in1k", "test_convnext.r160_in1k"]
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
        "6",
        "--img-size",
        "32",
        "-g",
        "translate_x,rotate",
        "--batch-size",
        "6",
        "--actors",
        "1",
        "--no-progress",
    ]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    computed = []
    for text in outs:
        line = next(ln for ln in text.splitlines() if " units: " in ln)
        computed.append(int(line.split(" units: ")[1].split(" computed")[0]))
    assert sum(computed) == len(models), outs  # each unit computed by one of them
    runs = Store(str(out)).runs().to_pylist()
    assert len(runs) == len(models) and {r["status"] for r in runs} == {"done"}
    assert [r["attempt"] for r in runs] == [1] * len(models)
    assert verify_root(str(out))[0] == []
