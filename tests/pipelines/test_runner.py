"""The unit runner in this process (no Ray): kills at any moment, batch-size independence, OOM retry.

Real Parquet stores under ``tmp_path``; the datasets are decoded on the driver (dry-run plans).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.running.plan import plan
from pipelines.running.runner import UnitRunner
from pipelines.spec.config import SweepConfig
from pipelines.store.results import Store

pytestmark = pytest.mark.slow

MODEL = "test_resnet.r160_in1k"


def _config(out, **kw) -> SweepConfig:
    base = dict(
        models=[MODEL],
        datasets=["sample-test"],
        generators=["rotate"],
        images=4,
        img_size=32,
        output=str(out),
        batch_size=4,
    )
    base.update(kw)
    return SweepConfig(**base)


def _run_todo(cfg: SweepConfig, runner: UnitRunner | None = None, sweep_id: str = "test") -> list[dict]:
    """Run a plan's missing units in this process, as ``execute`` does (attempt = stored + 1)."""
    p = plan(cfg, dry_run=True)
    runner = runner or UnitRunner(cfg.output)
    attempts = p.store.run_attempts()
    return [
        runner.run(
            u,
            p.datasets[u.dataset.name].shards,
            sweep_id,
            attempt=attempts.get(u.key, 0) + 1,
            batch_size=cfg.batch_size,
        )
        for u in p.todo
    ]


# A forced rerun of the done unit in another process, killed (os._exit, no cleanup) at one point.
_KILLED_RERUN = textwrap.dedent(
    """
    import json, os, sys
    from pipelines.running import runner
    from pipelines.spec import families
    from pipelines.store import results as store
    from pipelines.spec.config import SweepConfig
    from pipelines.running.plan import plan

    cfg = SweepConfig(**json.loads(sys.argv[1]))
    where = sys.argv[2]

    def die(*args, **kwargs):
        os._exit(9)

    if where == "compute":  # in the middle of computing the unit
        runner.FAMILY_IMPLS = {**families.FAMILY_IMPLS, "lee": families.Family("lee", "lee", die)}
    else:  # right after its new data file replaced the old one, before its final runs row
        write_data = store.Store.write_data
        store.Store.write_data = lambda self, *a, **k: (write_data(self, *a, **k), die())
    p = plan(cfg, dry_run=True)
    (u,) = p.todo
    runner.UnitRunner(cfg.output).run(u, p.datasets[u.dataset.name].shards, "killed",
                                      attempt=p.store.run_attempts().get(u.key, 0) + 1)
    sys.exit("not killed")
    """
)


def test_killed_force_rerun_then_plain_rerun_gives_the_unit_exactly_once(tmp_path):
    cfg = _config(tmp_path / "res")
    (first,) = _run_todo(cfg)
    assert first["status"] == "done"
    store = Store(cfg.output)
    want = store.read_table("lee").sort_by([("sample_index", "ascending"), ("generator", "ascending")])
    assert want.num_rows == 4
    forced = json.dumps({**cfg.to_dict(), "force": True})
    for where in ("compute", "after_data"):
        proc = subprocess.run(
            [sys.executable, "-c", _KILLED_RERUN, forced, where], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 9, proc.stderr[-3000:]
        # the unit no longer counts as done: its rows are invisible and a plain rerun redoes it
        assert store.run_status() == {first["unit"]: "failed"}
        assert store.runs().column("error_type").to_pylist() == ["Interrupted"]
        assert store.read_table("lee").num_rows == 0
    assert [u.key for u in plan(cfg, dry_run=True).todo] == [first["unit"]]
    (again,) = _run_todo(cfg)
    assert again["status"] == "done"
    got = store.read_table("lee").sort_by([("sample_index", "ascending"), ("generator", "ascending")])
    assert got.num_rows == 4 and got.column("value").to_pylist() == want.column("value").to_pylist()
    run = store.runs().to_pylist()
    assert len(run) == 1 and run[0]["status"] == "done" and run[0]["attempt"] == 4  # first, two killed, this
    files = sorted(p.name for p in (tmp_path / "res").rglob("*") if p.is_file())
    assert files == ["part-0.parquet", "part-0.parquet"]  # one data file, one runs row, no temp files
    assert plan(cfg, dry_run=True).todo == []


def test_runs_row_records_the_resolved_data_config_and_versions(tmp_path):
    cfg = _config(tmp_path / "res", images=2)
    _run_todo(cfg)
    (row,) = Store(cfg.output).runs().to_pylist()
    data_cfg = json.loads(row["data_config_json"])
    assert data_cfg["input_size"] == [3, 32, 32] and {"crop_pct", "crop_mode", "interpolation", "mean"} <= set(data_cfg)
    versions = json.loads(row["package_versions"])
    assert versions["pipelines"] and versions["catalog"] and versions["liecore"]
    assert row["attempt"] == 1


def test_git_rev_comes_from_lee_git_rev():
    code = "from pipelines.spec import env; print(env.git_revision())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LEE_GIT_REV": "abc123-job"},
    )
    assert out.stdout.strip() == "abc123-job"


def test_git_rev_without_lee_git_rev_comes_from_the_working_directory_else_the_package_version(tmp_path):
    """`ray job submit --working-dir . -- python -m pipelines ...`: the job's copy has no .git."""
    import shutil
    from importlib import metadata

    import pipelines

    copy = tmp_path / "job"  # a Ray Job's working_dir: the package, no .git
    shutil.copytree(Path(pipelines.__file__).parent, copy / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    code = "from pipelines.spec import env; print(env.git_revision())"
    env = {k: v for k, v in os.environ.items() if k != "LEE_GIT_REV"} | {"PYTHONPATH": str(copy)}

    def rev(cwd) -> str:
        out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    try:
        version = metadata.version("lee-eval")
    except metadata.PackageNotFoundError:
        version = None
    assert rev(copy) == (f"lee-eval=={version}" if version else "None")  # was None (NULL) before
    repo = tmp_path / "repo"  # run from a checkout: its HEAD
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert rev(repo) == head


ALT = ["eq_t", "eq_r", "circular_shift_consistency", "sampled_equivariance_error"]
EXACT = {"circular_shift_consistency"}  # percentages of argmax agreements: no rounding to differ by


def _alt_values(cfg: SweepConfig, runner: UnitRunner | None = None) -> tuple[dict, dict]:
    (row,) = _run_todo(cfg, runner)
    assert row["status"] == "done", row["error"]
    t = Store(cfg.output).read_table("alt").to_pandas().sort_values(["metric", "sample_index"])
    return {m: g.value.to_numpy() for m, g in t.groupby("metric")}, Store(cfg.output).runs().to_pylist()[0]


def _assert_same_values(a: dict, b: dict, names: list[str] = ALT) -> None:
    assert sorted(a) == sorted(names) == sorted(b)
    for name in names:
        if name in EXACT:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:  # the same draws; only float32 rounding of differently batched convolutions differs
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, err_msg=name)


def test_alt_family_revision_follows_the_stylegan3_transforms():
    """alt.3: EQ-R / EQ-T_frac values changed with StyleGAN3's transforms, so stored alt units are redone."""
    from pipelines.spec.families import family_version

    v = family_version("alt", {"metrics": ["eq_r", "eq_t_frac"]})
    assert "/alt.3:eq_r=" in v and ",eq_t_frac=" in v and "/alt.2:" not in v


def test_alt_values_do_not_depend_on_the_batch_size(tmp_path):
    kw = dict(metrics=["alt"], alt_metrics=ALT, images=8)
    by8, _ = _alt_values(_config(tmp_path / "b8", batch_size=8, **kw))
    by3, row = _alt_values(_config(tmp_path / "b3", batch_size=3, **kw))
    assert row["batch_size"] == 3
    _assert_same_values(by8, by3)
    # the control: another seed gives other draws, so the comparison above can fail
    other, _ = _alt_values(_config(tmp_path / "seed1", batch_size=8, seed=1, **kw))
    assert any(not np.allclose(other[m], by8[m], rtol=1e-5) for m in ALT)


def test_stochastic_layerwise_does_not_depend_on_the_batch_size(tmp_path):
    """One call per batch, each image's probes from its own generator: batches 5 and 2 (2+2+1) agree."""
    kw = dict(metrics=["layerwise"], layerwise_method="stochastic", num_probes=2, images=5)
    tables = []
    for bs in (5, 2):
        cfg = _config(tmp_path / f"b{bs}", batch_size=bs, **kw)
        (row,) = _run_todo(cfg)
        assert row["status"] == "done", row["error"]
        assert Store(cfg.output).runs().to_pylist()[0]["batch_size"] == bs
        t = Store(cfg.output).read_table("layerwise").to_pandas()
        tables.append(t.sort_values(["sample_index", "generator", "kind", "call_index"]).reset_index(drop=True))
    assert len(tables[0]) == len(tables[1]) > 0
    assert sorted(set(tables[0].sample_index)) == list(range(5))
    # the same probes; only float32 rounding of differently batched layers differs
    for col in ("value", "stderr", "share"):
        np.testing.assert_allclose(tables[0][col], tables[1][col], rtol=1e-4, atol=1e-12, err_msg=col)


def test_stochastic_layerwise_family_equals_one_call_per_image():
    """The family's batched call gives the values of the former image-by-image calls, each seeded with
    ``image_seed(seed, first_index + i)`` (on the CPU both draw the same probes)."""
    import timm

    import liecore
    from pipelines.spec.families import activation_layouts, compute_layerwise, image_seed

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False).eval()
    x = torch.rand(3, 3, 32, 32)
    config = dict(method="stochastic", num_probes=3, generators=["rotate"], output="probs", interpolation="cubic")
    cols = compute_layerwise(model, x, config=config, mean=None, std=None, seed=4, first_index=10)
    pos = np.asarray(cols["sample_pos"])
    value, stderr = np.asarray(cols["value"]), np.asarray(cols["stderr"], dtype=float)
    for i in range(3):
        alone = liecore.layerwise(
            model,
            x[i : i + 1],
            "rotate",
            method="stochastic",
            output="probs",
            layouts=activation_layouts(model),
            num_probes=3,
            seed=image_seed(4, 10 + i),
        )
        want = [float(r.value[0]) for r in alone.records]
        want += [float(alone.end_to_end[0]), float(alone.unattributed[0])]
        want_se = [float(r.stderr[0]) for r in alone.records] + [np.nan, np.nan]
        atol = 1e-6 * max(want)  # the unattributed part is float32 rounding here (a residual network)
        np.testing.assert_allclose(value[pos == i], want, rtol=1e-4, atol=atol, err_msg=f"image {i}")
        np.testing.assert_allclose(stderr[pos == i], want_se, rtol=1e-4, atol=atol, err_msg=f"image {i}")
    # the control: other images of the dataset (first_index) draw other probes
    other = compute_layerwise(model, x, config=config, mean=None, std=None, seed=4, first_index=11)
    assert not np.allclose(np.asarray(other["value"]), value, rtol=1e-2, atol=1e-6 * value.max())


class _OutOfMemoryAbove(torch.nn.Module):
    """Our own model wrapper: raises torch's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, model: torch.nn.Module, limit: int):
        super().__init__()
        self.model, self.limit, self.batches = model, limit, []

    def forward(self, x):
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"out of memory (test): batch {x.shape[0]} > {self.limit}")
        return self.model(x)


class _SmallMemoryRunner(UnitRunner):
    def _load(self, unit):
        loaded = super()._load(unit)
        if not isinstance(loaded.model, _OutOfMemoryAbove):
            loaded.model = _OutOfMemoryAbove(loaded.model, 2)
        return loaded


def test_out_of_memory_halves_the_batch_and_changes_no_value(tmp_path):
    names = ["eq_t", "circular_shift_consistency"]
    kw = dict(metrics=["alt"], alt_metrics=names, images=6)
    want, _ = _alt_values(_config(tmp_path / "ref", batch_size=8, **kw))
    runner = _SmallMemoryRunner(str(tmp_path / "oom"))
    got, row = _alt_values(_config(tmp_path / "oom", batch_size=8, **kw), runner)
    assert row["status"] == "done" and row["batch_size"] == 2 and row["n_rows"] == 6 * len(names)
    assert max(runner._loaded.model.batches) == 6 and 4 in runner._loaded.model.batches  # 8 (6 images), 4, 2
    _assert_same_values(want, got, names)
