"""Checks before any work (exit 2, a message naming the problem), actor sizing, the quiet progress line.

No Ray is started here: every case fails before ``ray.init`` or is a dry run.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import time

import pytest
import torch

from pipelines.cli import main
from pipelines.running.execute import actor_plan
from pipelines.running.progress import Progress
from pipelines.spec.config import SweepConfig

BASE = ["eval", "-m", "test_resnet.r160_in1k", "-d", "sample-test", "--limit", "2", "-g", "rotate", "--img-size", "32"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("lee: error:"), err
    assert "Traceback" not in err
    return err


def test_in_process_output_root_is_refused_unless_dry_run(capsys):
    assert main([*BASE, "-r", "memory://lee-audit/res"]) == 2
    err = _error(capsys)
    assert "'memory://lee-audit/res'" in err and "in-process" in err
    assert main([*BASE, "-r", "memory://lee-audit/res", "--dry-run"]) == 0


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_dataset_whose_filesystem_package_is_missing(tmp_path, capsys):
    ds = tmp_path / "datasets.yaml"
    ds.write_text('datasets:\n  - {name: s3ds, uri: "s3://no-such-bucket/x", format: flat}\n')
    assert main(["eval", "-m", "test_resnet.r160_in1k", "-d", str(ds), "--dry-run"]) == 2
    err = _error(capsys)
    assert "s3://no-such-bucket/x" in err and "s3fs" in err and "lee-eval[cloud]" in err


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("images: ten\n", "images: expected an integer, got 'ten' (str)"),
        ("models: 5\n", "models: expected a list of strings or a comma-separated string, got 5 (int)"),
        ("force: 'yes'\n", "force: expected true or false, got 'yes' (str)"),
        ("gpus: many\n", "gpus: expected a number (or null), got 'many' (str)"),
    ],
)
def test_config_values_are_type_checked(tmp_path, capsys, yaml_text, needle):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    assert main(["eval", "--config", str(cfg), "--dry-run"]) == 2
    err = _error(capsys)
    assert f"{cfg}: {needle}" in err, err


def test_config_values_of_the_right_type_pass():
    cfg = SweepConfig.from_dict({"images": 5, "models": "a, b", "cpus-per-actor": 2, "gpus": 0.5, "limit": None})
    assert cfg.images == 5 and cfg.models == ["a", "b"] and cfg.cpus_per_actor == 2 and cfg.gpus_per_actor == 0.5


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_ray_address_fails_fast(tmp_path, capsys, scheme):
    address = f"{scheme}127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    assert main([*BASE, "-r", str(tmp_path / "r"), "--address", address]) == 2
    assert time.perf_counter() - t0 < 30
    err = _error(capsys)
    assert f"'{address}'" in err and "unreachable" in err


def test_error_messages_keep_their_quotes(tmp_path, capsys):
    assert main(["eval", "-m", "nosuchmodel", "-r", str(tmp_path / "r"), "--dry-run"]) == 2
    assert "unknown model 'nosuchmodel'" in _error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpus_without_gpus_or_cluster_is_refused(tmp_path, capsys):
    assert main([*BASE, "-r", str(tmp_path / "r"), "--gpus", "1"]) == 2
    assert "--gpus 1" in _error(capsys)


def test_actor_plan_requests_gpus_from_zero_when_asked():
    cfg = SweepConfig(gpus_per_actor=1)
    head_only = {"CPU": 0.0}  # cluster.yaml's head: no GPU worker started yet
    assert actor_plan(cfg, 5, head_only) == (5, {"num_gpus": 1, "num_cpus": 1})
    assert actor_plan(cfg, 5, None) == (5, {"num_gpus": 1, "num_cpus": 1})
    assert actor_plan(SweepConfig(gpus_per_actor=0.5, actors=2), 5, head_only) == (2, {"num_gpus": 0.5, "num_cpus": 1})
    assert actor_plan(SweepConfig(gpus_per_actor=1, actors=9), 3, head_only)[0] == 3
    # auto-detect (default): what the cluster has now
    assert actor_plan(SweepConfig(), 5, {"CPU": 4.0}) == (4, {"num_cpus": 1.0})
    assert actor_plan(SweepConfig(), 5, {"CPU": 16.0, "GPU": 2.0}) == (2, {"num_gpus": 1, "num_cpus": 1})
    assert actor_plan(SweepConfig(), 5, head_only) == (1, {"num_cpus": 1.0})


def test_dry_run_shows_the_actor_request(tmp_path, capsys):
    models = "test_resnet.r160_in1k,test_vit.r160_in1k"
    args = [
        "eval",
        "-m",
        models,
        "-d",
        "sample-test",
        "--limit",
        "2",
        "-g",
        "rotate",
        "--dry-run",
        "-r",
        str(tmp_path / "r"),
    ]
    assert main([*args, "--gpus", "1"]) == 0
    out = capsys.readouterr().out
    assert "actors: 2 (one per model), each num_gpus=1 num_cpus=1" in out
    assert main(args) == 0
    assert "actors: auto-detected at run time" in capsys.readouterr().out


def test_progress_off_a_terminal_writes_log_lines_per_unit_and_periodically():
    import datetime as dt

    stream = io.StringIO()  # isatty() is False: plain log lines
    prog = Progress(3, 30, stream=stream, interval=30.0)
    assert prog.enabled and prog.plain
    prog.start(2)
    assert "running 3 unit(s), 30 images, on 2 actor(s)" in stream.getvalue()
    prog.render()  # under 30 s since the last line: nothing
    assert stream.getvalue().count("\n") == 1
    # The rate counts from when the first finished unit started, not from the progress' creation.
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    prog.t0 -= 1000  # a long start-up (Ray, decoding) must not slow the measured rate
    prog.update(
        "done",
        10,
        {
            "family": "lee",
            "model": "m1",
            "dataset": "d",
            "wall_s": 5.0,
            "started_at": started,
            "node_id": "abcdef0123456789",
            "pid": 42,
        },
    )
    prog.update("failed", 10, {"family": "lee", "model": "m2", "dataset": "d", "error": "ValueError: boom\ntb"})
    lines = stream.getvalue().splitlines()
    assert "unit 1/3 done: lee m1@d (10 images, 5.0s; node abcdef01 pid 42)" in lines[1]
    assert "unit 2/3 failed: lee m2@d (10 images): ValueError: boom" in lines[2]
    rate = prog.rate()
    assert 10 / 5.5 < rate <= 10 / 5.0  # 10 images in the ~5 s since the unit started
    assert abs(prog.eta() - 10 / rate) < 1e-3  # the one unit left: 10 images at that rate
    prog._last -= 31  # 30 s later: a periodic line
    prog.render()
    assert "units 2/3: 1 done, 1 failed, 1 remaining" in stream.getvalue().splitlines()[-1]
    assert "images/s" in stream.getvalue().splitlines()[-1] and "ETA " in stream.getvalue().splitlines()[-1]
    quiet = io.StringIO()
    prog = Progress(3, 30, stream=quiet, enabled=False)  # --no-progress
    prog.start(1)
    prog.update("done", 10)
    prog.close()
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_rewrites_one_line():
    shown = io.StringIO()
    prog = Progress(3, 30, stream=shown, plain=False)
    prog.update("done", 10)
    prog.close()
    assert "\r" in shown.getvalue() and "units 1/3: 1 done, 0 failed, 2 remaining" in shown.getvalue()


@pytest.mark.parametrize(
    "size, needle",
    [
        ("0", "--img-size must be a positive number of pixels, got 0"),
        ("-5", "--img-size must be a positive number of pixels, got -5"),
        ("1", "--img-size 1 is too small: at least 8 pixels"),
        ("16", "--img-size 16 is below the total stride or patch size of test_resnet.r160_in1k (at least 32)"),
    ],
)
def test_img_size_is_checked_before_any_work(tmp_path, capsys, size, needle):
    import ray

    argv = [
        "eval",
        "-m",
        "test_resnet.r160_in1k",
        "-d",
        "sample-test",
        "--limit",
        "2",
        "-g",
        "rotate",
        "--img-size",
        size,
        "-r",
        str(tmp_path / "r"),
    ]
    ray_before = ray.is_initialized()  # other test files of the session may have started it
    assert main(argv) == 2
    assert needle in _error(capsys)
    assert ray.is_initialized() == ray_before  # refused before Ray starts
    assert not (tmp_path / "r").exists()  # and before the root is touched
    assert main([*argv, "--dry-run"]) == 2
    assert needle in _error(capsys)


def test_img_size_minimum_is_the_patch_size_of_a_vit(tmp_path, capsys):
    import catalog
    from pipelines.running.checks import arch_min_img_size

    assert arch_min_img_size(catalog.get_model("test_vit.r160_in1k")) == 16  # patch 16
    assert arch_min_img_size(catalog.get_model("test_resnet.r160_in1k")) == 32  # total stride 32
    assert (
        main(
            [
                "eval",
                "-m",
                "test_vit.r160_in1k",
                "-d",
                "sample-test",
                "--limit",
                "2",
                "--img-size",
                "16",
                "-r",
                str(tmp_path / "r"),
                "--dry-run",
            ]
        )
        == 0
    )
    capsys.readouterr()


def test_dry_run_checks_the_output_root(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for root, needle in [(afile, "is not a directory"), (afile / "sub", "cannot be created")]:
        assert main([*BASE, "-r", str(root), "--dry-run"]) == 2
        err = _error(capsys)
        assert f"output root {str(root)!r}" in err and needle in err


def test_costlier_models_are_scheduled_first(tmp_path):
    from pipelines.running.execute import unit_cost
    from pipelines.running.plan import plan

    cfg = SweepConfig(
        models=["test_resnet.r160_in1k", "resnet50.a1_in1k"],
        datasets=["sample-test"],
        images=2,
        generators=["rotate"],
        output=str(tmp_path / "r"),
        weights="random",
    )
    units = {u.model.name: u for u in plan(cfg, check_writable=False, dry_run=True).units}
    small, large = units["test_resnet.r160_in1k"], units["resnet50.a1_in1k"]
    assert large.model.params_m > 10 * (small.model.params_m or 0)
    assert unit_cost(large) > unit_cost(small)
    # pixels count too: the same model at twice the side costs four times as much
    bigger = SweepConfig(**{**cfg.__dict__, "img_size": 64})
    smaller = SweepConfig(**{**cfg.__dict__, "img_size": 32})
    u64 = next(u for u in plan(bigger, check_writable=False, dry_run=True).units if u.model.name == large.model.name)
    u32 = next(u for u in plan(smaller, check_writable=False, dry_run=True).units if u.model.name == large.model.name)
    assert unit_cost(u64) == pytest.approx(4 * unit_cost(u32))
