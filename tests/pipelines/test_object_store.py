"""Results on an object store, end to end, against a real S3 API: moto's server on the loopback address.

One tiny sweep (two ``test_*`` models, four images of an image folder, 32 px) runs on a local root and on
``s3://`` (two ``lee eval`` at once: each unit computed once), with the models' catalog and the dataset (and its
datasets file) read from the bucket; every command then gives the same values on both roots. Separately: a
bucket that does not exist, ``lee query``'s sandbox on a bucket and in the working folder, and kill -9 mid-sweep.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.cli import main
from pipelines.commands.verify_cmd import verify_root
from pipelines.store.results import Store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BUCKET = "lee-os"
MODELS = [("os_resnet", "test_resnet"), ("os_vit", "test_vit")]
GENS = "rotate,translate_x"
N_IMAGES = 4


def _s3fs():
    import s3fs

    return s3fs.S3FileSystem(use_listings_cache=False)


def _eval_argv(address: str, out: str, models: str, datasets: str, n: int = N_IMAGES) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipelines",
        "eval",
        "--address",
        address,
        "-r",
        out,
        "-m",
        models,
        "-d",
        datasets,
        "-n",
        str(n),
        "--img-size",
        "32",
        "-g",
        GENS,
        "--batch-size",
        "4",
        "--actors",
        "1",
        "--no-progress",
    ]


def _computed(text: str) -> int:
    line = next(ln for ln in text.splitlines() if " units: " in ln)
    return int(line.split(" units: ")[1].split(" computed")[0])


def _inputs(base: Path, fs, prefix: str) -> dict[str, str]:
    """An image folder, its datasets file and a models catalog, written locally and copied to ``prefix``."""
    local = base / "inputs"
    for label in ("a", "b"):
        (local / "imgs" / label).mkdir(parents=True)
        for i in range(2):
            rgb = np.random.default_rng(10 * ord(label) + i).integers(0, 256, (40, 48, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG")
            (local / "imgs" / label / f"{i}.png").write_bytes(buf.getvalue())
    import timm
    from safetensors.torch import save_file

    # the first model's weights are a checkpoint file (read from the bucket by the s3 sweep), with zoo-style
    # training metadata, so that `lee zoo summary` has a model to report
    torch_model = timm.create_model(MODELS[0][1], pretrained=False)
    (local / "ckpt").mkdir()
    save_file({k: v.contiguous() for k, v in torch_model.state_dict().items()}, str(local / "ckpt" / "m.safetensors"))
    training = "{task: digits, recipe: plain, train_n: 100, test_acc: 0.5, train_acc: 0.6, ood_acc: 0.4, size: s}"
    out = {}
    for where, root in (("local", str(local)), ("s3", f"s3://{prefix}")):
        ds = f"datasets:\n  - {{name: osimgs, uri: '{root}/imgs', format: imagefolder, role: test}}\n"
        first = (
            f"  - {{name: {MODELS[0][0]}, arch: {MODELS[0][1]}, source: file, checkpoint: '{root}/ckpt/m.safetensors', "
            f"family: cnn, training: {training}}}\n"
        )
        models = (
            "name: os\nmodels:\n"
            + first
            + "".join(
                f"  - {{name: {name}, arch: {arch}, source: random, family: {'vit' if 'vit' in arch else 'cnn'}}}\n"
                for name, arch in MODELS[1:]
            )
        )
        (local / f"datasets-{where}.yaml").write_text(ds)
        (local / f"models-{where}.yaml").write_text(models)
        out[f"{where}_datasets"] = f"{root}/datasets-{where}.yaml"
        out[f"{where}_models"] = f"{root}/models-{where}.yaml"
    fs.put(str(local / "imgs"), f"{prefix}/imgs", recursive=True)
    fs.put(str(local / "ckpt" / "m.safetensors"), f"{prefix}/ckpt/m.safetensors")
    for where in ("s3",):
        fs.put(str(local / f"datasets-{where}.yaml"), f"{prefix}/datasets-{where}.yaml")
        fs.put(str(local / f"models-{where}.yaml"), f"{prefix}/models-{where}.yaml")
    return out


@pytest.fixture(scope="module")
def sweeps(s3_endpoint, ray_session, tmp_path_factory):
    """The sweep on a local root (one ``lee eval``) and on ``s3://lee-os/res`` (two at once); wall times."""
    fs = _s3fs()
    fs.mkdir(BUCKET)
    base = tmp_path_factory.mktemp("objstore")
    inputs = _inputs(base, fs, f"{BUCKET}/inputs")
    local, remote = str(base / "res"), f"s3://{BUCKET}/res"
    t0 = time.perf_counter()
    # in this process (the session's Ray, no interpreter to start): only the s3 writers below need processes
    assert main(_eval_argv(ray_session, local, inputs["local_models"], inputs["local_datasets"])[3:]) == 0
    local_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    argv = _eval_argv(ray_session, remote, inputs["s3_models"], inputs["s3_datasets"])
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    s3_s = time.perf_counter() - t0
    assert all(p.returncode == 0 for p in procs), outs
    print(
        f"\ntiny sweep ({len(MODELS)} units): local root {local_s:.1f} s (one lee eval, in this process), "
        f"s3:// on moto {s3_s:.1f} s (two concurrent lee eval)"
    )
    return {"local": local, "s3": remote, "inputs": inputs, "s3_outputs": outs, "base": base, "address": ray_session}


def _values(root: str) -> list[tuple]:
    t = Store(root).read_table("lee")
    return sorted(
        zip(
            t.column("model").to_pylist(),
            t.column("sample_id").to_pylist(),
            t.column("generator").to_pylist(),
            t.column("value").to_pylist(),
            strict=True,
        )
    )


# ------------------------------------------------------------------------------------------------ the sweep
def test_eval_on_s3_gives_the_local_values_and_each_unit_once(sweeps):
    local, remote = _values(sweeps["local"]), _values(sweeps["s3"])
    assert len(local) == len(MODELS) * N_IMAGES * 2
    assert [r[:3] for r in remote] == [r[:3] for r in local]
    np.testing.assert_allclose([r[3] for r in remote], [r[3] for r in local], rtol=1e-6, atol=0)
    # the checkpoint read from the bucket is the local one
    sha = {
        w: {r["model"]: (r["weights"], r["weights_sha256"]) for r in Store(sweeps[w]).runs().to_pylist()}
        for w in ("local", "s3")
    }
    assert sha["s3"] == sha["local"] and sha["s3"][MODELS[0][0]][0] == "file" and sha["s3"][MODELS[0][0]][1]
    # two writers on one bucket root: each unit computed by exactly one of them, once
    assert sum(_computed(text) for text in sweeps["s3_outputs"]) == len(MODELS), sweeps["s3_outputs"]
    runs = Store(sweeps["s3"]).runs().to_pylist()
    assert sorted(r["model"] for r in runs) == sorted(m for m, _ in MODELS)
    assert {r["status"] for r in runs} == {"done"} and [r["attempt"] for r in runs] == [1] * len(MODELS)
    assert not _s3fs().glob(f"{BUCKET}/res/_locks/*")  # leases released


def test_rerun_on_s3_skips_everything_and_verify_is_clean(sweeps, capsys):
    argv = _eval_argv(sweeps["address"], sweeps["s3"], sweeps["inputs"]["s3_models"], sweeps["inputs"]["s3_datasets"])
    again = _out(capsys, argv[3:])  # `lee eval` in this process
    assert _computed(again) == 0 and f"{len(MODELS)} already done" in again
    assert verify_root(sweeps["s3"])[0] == [] and verify_root(sweeps["s3"], full=True)[0] == []
    assert main(["verify", "-r", sweeps["s3"]]) == 0


def _out(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_query_sql_report_reevaluate_and_zoo_summary_agree(sweeps, capsys, tmp_path):
    local, remote = sweeps["local"], sweeps["s3"]
    sql = "SELECT model, generator, n, mean_lee, se_lee FROM lee_summary ORDER BY model, generator"
    rows = {r: json.loads(_out(capsys, ["query", "-r", r, sql, "--format", "json"])) for r in (local, remote)}
    assert len(rows[local]) == len(MODELS) * 2 and {r["n"] for r in rows[local]} == {N_IMAGES}
    assert rows[remote] == rows[local]
    # lee sql: the same views, over the bucket's paths
    script = _out(capsys, ["sql", "-r", remote])
    assert f"s3://{BUCKET}/res/lee/model=*/dataset=*/unit=*/*.parquet" in script
    assert script.replace(f"s3://{BUCKET}/res", "ROOT") == _out(capsys, ["sql", "-r", local]).replace(local, "ROOT")
    # lee report: the same tables
    reports = {}
    for r, name in ((local, "local"), (remote, "s3")):
        assert main(["report", "-r", r, "--weights", "random", "--out", str(tmp_path / name), "--n-boot", "50"]) == 0
        reports[name] = {p.name: p.read_text() for p in sorted((tmp_path / name / "tables").glob("*.csv"))}
    assert reports["s3"] and reports["s3"] == reports["local"]
    # the zoo summary's numbers (the checkpoint model's LEE per dataset) are the local ones
    import catalog
    from pipelines.zoo.summary import collect

    specs = {w: catalog.load_models(sweeps["inputs"][f"{w}_models"]) for w in ("local", "s3")}
    zoo = {w: collect(sweeps[w], specs[w]) for w in ("local", "s3")}
    assert [z["name"] for z in zoo["s3"]] == [MODELS[0][0]] and zoo["s3"][0]["lee"]["osimgs"][2] == N_IMAGES
    assert zoo["s3"] == zoo["local"]
    # reevaluate (a plan against the runs table: nothing to do) and the zoo summary read the bucket alike
    texts: dict[str, list[str]] = {}
    for where, r in (("local", local), ("s3", remote)):
        models, datasets = sweeps["inputs"][f"{where}_models"], sweeps["inputs"][f"{where}_datasets"]
        plan = _out(
            capsys,
            [
                "reevaluate",
                "-m",
                models,
                "-d",
                datasets,
                "-n",
                str(N_IMAGES),
                "--img-size",
                "32",
                "-g",
                GENS,
                "--dry-run",
                "-r",
                r,
            ],
        )
        summary = _out(capsys, ["zoo", "summary", "--catalog", models, "-r", r])
        texts[where] = [
            t.replace(r, "ROOT").replace(models, "MODELS").replace(datasets, "DATASETS") for t in (plan, summary)
        ]
    assert texts["s3"] == texts["local"]


def test_query_reads_only_the_root_of_the_bucket(sweeps, capsys):
    fs = _s3fs()
    with fs.open(f"{BUCKET}/other/secret.parquet", "wb") as fh:
        pq.write_table(pa.table({"secret": [42]}), fh)
    with fs.open(f"{BUCKET}/res-sibling/secret.parquet", "wb") as fh:  # shares the root's name as a prefix
        pq.write_table(pa.table({"secret": [43]}), fh)
    for path in (f"s3://{BUCKET}/other/secret.parquet", f"s3://{BUCKET}/res-sibling/secret.parquet"):
        capsys.readouterr()
        assert main(["query", "-r", sweeps["s3"], f"SELECT * FROM read_parquet('{path}')"]) == 2
        err = capsys.readouterr().err
        assert "query refused" in err and "Permission Error" in err and "42" not in err
    # the root itself is readable directly
    n = _out(
        capsys,
        [
            "query",
            "-r",
            sweeps["s3"],
            "--format",
            "json",
            f"SELECT count(*) AS n FROM read_parquet('s3://{BUCKET}/res/lee/*/*/*/*.parquet')",
        ],
    )
    assert json.loads(n) == [{"n": len(MODELS) * N_IMAGES * 2}]


def test_query_cannot_read_the_working_folders_tmp(sweeps, capsys, tmp_path, monkeypatch):
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "secret.csv").write_text("secret\n42\n")
    monkeypatch.chdir(tmp_path)
    for root in (sweeps["local"], sweeps["s3"]):
        capsys.readouterr()
        assert main(["query", "-r", root, "SELECT * FROM read_csv('.tmp/secret.csv')"]) == 2
        err = capsys.readouterr().err
        assert "query refused" in err and "42" not in err
        assert main(["query", "-r", root, f"SELECT * FROM read_csv('{tmp_path}/.tmp/secret.csv')"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp"]  # DuckDB wrote nothing here


def test_a_missing_bucket_is_an_error_never_a_new_bucket(s3_endpoint, capsys):
    fs = _s3fs()
    for argv in (
        [
            "eval",
            "-m",
            "test_resnet.r160_in1k",
            "-d",
            "sample-test",
            "-n",
            "2",
            "--img-size",
            "32",
            "-g",
            "rotate",
            "-r",
            "s3://lee-no-such-bucket/res",
        ],
        ["query", "-r", "s3://lee-no-such-bucket/res", "SELECT 1"],
        ["verify", "-r", "s3://lee-no-such-bucket/res"],
    ):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "'lee-no-such-bucket'" in err and "does not exist" in err, err
    assert not fs.exists("lee-no-such-bucket")


def test_kill_9_mid_sweep_on_s3_then_rerun_gives_each_unit_once(sweeps):
    models = ["test_resnet.r160_in1k", "test_vit.r160_in1k", "test_convnext.r160_in1k", "test_efficientnet.r160_in1k"]
    root = f"s3://{BUCKET}/killed"
    argv = _eval_argv(sweeps["address"], root, ",".join(models), sweeps["inputs"]["s3_datasets"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def n_done() -> int:
        try:
            return sum(s == "done" for s in Store(root).run_status().values())
        except FileNotFoundError:
            return 0

    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not n_done():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = n_done()
    assert 0 < done_at_kill < len(models), f"kill did not land mid-sweep ({done_at_kill} done)"
    assert main(argv[3:]) == 0  # the rerun: `lee eval` in this process
    runs = Store(root).runs().to_pandas()
    assert len(runs) == len(models) and runs.unit.is_unique and set(runs.status) == {"done"}
    t = Store(root).read_table("lee").to_pandas()
    assert not t.duplicated(["unit", "sample_id", "generator"]).any()
    assert sorted(t.groupby("model").size().items()) == [(m, N_IMAGES * 2) for m in sorted(models)]
    assert verify_root(root)[0] == []


def test_parquet_and_folder_datasets_read_from_s3_as_from_disk(s3_endpoint, tmp_path):
    import catalog

    fs = _s3fs()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    photos = [np.random.default_rng(i).integers(0, 256, (16, 24, 3), dtype=np.uint8) for i in range(5)]
    pngs = []
    for p in photos:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    (tmp_path / "pq").mkdir()
    pq.write_table(
        pa.table({"image_id": [f"r{i}" for i in range(5)], "image": pngs, "label": [0, 1, 0, 1, 0]}),
        tmp_path / "pq" / "part-0.parquet",
    )
    for i, png in enumerate(pngs):
        (tmp_path / "folder" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / f"c{i % 2}" / f"{i}.png").write_bytes(png)
    fs.put(str(tmp_path / "pq"), f"{BUCKET}/ds/pq", recursive=True)
    fs.put(str(tmp_path / "folder"), f"{BUCKET}/ds/folder", recursive=True)
    for fmt, sub in (("parquet", "pq"), ("imagefolder", "folder")):
        sets = [
            catalog.load_dataset(catalog.DatasetSpec(name="d", uri=uri, format=fmt, n=4, seed=1))
            for uri in (str(tmp_path / sub), f"s3://{BUCKET}/ds/{sub}")
        ]
        local, remote = sets
        assert len(local) == 4 and not local.errors and not remote.errors
        assert [(i.image_id, i.label) for i in remote.images] == [(i.image_id, i.label) for i in local.images]
        assert all(np.array_equal(a.array, b.array) for a, b in zip(remote.images, local.images, strict=True))
        assert remote.fingerprint == local.fingerprint


# ------------------------------------------------------------------------------------------- leases
_HOLDER = """
import sys, time
from pipelines.store.results import Store
with Store(sys.argv[1]).unit_lock("u1"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def _holder(root: str, hold_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, root, str(hold_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LEE_LEASE_TTL_S": "3"},
    )
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def _take(store: Store, log: list) -> None:
    with store.unit_lock("u1") as held:
        log.append(("taken", time.monotonic(), held))


def test_a_lease_is_held_past_its_ttl_while_renewed_and_a_paused_holder_loses_it(s3_endpoint, monkeypatch):
    """Exclusion, and its documented limit: a holder paused longer than the lease's ttl loses the lease."""
    import threading

    fs = _s3fs()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    root = f"s3://{BUCKET}/leases"
    monkeypatch.setenv("LEE_LEASE_TTL_S", "3")
    store = Store(root)
    # a live holder keeps its lease for 8 s (over 2 ttl) by renewing it: the other writer waits all that time
    holder = _holder(root, 8)
    assert store.lock_held("u1")
    log: list = []
    t0 = time.monotonic()
    waiter = threading.Thread(target=_take, args=(store, log))
    waiter.start()
    waiter.join(timeout=60)
    assert holder.stdout.readline().strip() == "released" and holder.wait(timeout=30) == 0
    assert log and log[0][2] is True and log[0][1] - t0 > 6, log  # only after the holder released it
    assert "lost the lease" not in holder.stderr.read()
    assert not store.lock_held("u1") and not fs.exists(f"{BUCKET}/leases/_locks/u1.lock")
    # the limit: a holder stopped (SIGSTOP) for longer than the ttl cannot renew; its lease expires and is taken
    paused = _holder(root, 5)
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        log.clear()
        t0 = time.monotonic()
        with store.unit_lock("u1") as held:
            taken_after = time.monotonic() - t0
            assert held and 2.5 < taken_after < 30
            os.kill(paused.pid, signal.SIGCONT)
            # the paused holder wakes up inside its unit: both "hold" u1 now (the documented limit); its renewal
            # fails, it says so, and its release leaves this lease alone (a conditional delete)
            out, err = paused.communicate(timeout=60)
            assert "released" in out and "lost the lease" in err, err
            assert store.lock_held("u1")
    finally:
        if paused.poll() is None:
            os.kill(paused.pid, signal.SIGCONT)
            paused.kill()
    assert not store.lock_held("u1")
