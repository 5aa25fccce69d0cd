"""The shipped ``examples/run.yaml`` (complete, loadable, strict) and the crontab line of ``lee reevaluate
--print-cron``, run as cron runs it: ``/bin/sh -c`` under ``env -i PATH=/usr/bin:/bin HOME=...``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.spec.config import SweepConfig
from pipelines.store.results import Store

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "run.yaml"
TINY = [
    "-m",
    "test_resnet.r160_in1k",
    "-d",
    "sample-test",
    "-n",
    "2",
    "--img-size",
    "32",
    "-g",
    "translate_x",
    "--weights",
    "random",
]


def test_the_example_run_yaml_sets_every_option_with_a_comment():
    data = yaml.safe_load(EXAMPLE.read_text())
    keys = {{"gpus": "gpus_per_actor"}.get(k, k) for k in data}
    assert keys == set(SweepConfig.field_names())  # complete: a new option must be documented here
    SweepConfig.from_dict(data, source=str(EXAMPLE))  # every value has the type of its option
    for line in EXAMPLE.read_text().splitlines():
        if re.match(r"^[a-z_]+:", line):
            assert "#" in line, f"undocumented key: {line}"


def test_reevaluate_dry_run_loads_the_example(tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["reevaluate", "--config", str(EXAMPLE), "--dry-run", *TINY, "-r", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "new model" in cap.out and "test_resnet.r160_in1k" in cap.out
    assert "1 of 1 units to evaluate" in cap.err
    assert not out.exists()  # a dry run writes nothing


def test_unknown_keys_are_errors_naming_them(tmp_path, capsys):
    bad = tmp_path / "run.yaml"
    bad.write_text(EXAMPLE.read_text() + "imagez: 3\n")
    assert main(["reevaluate", "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lee: error: {bad}: unknown key 'imagez'; did you mean 'images'?"]
    bad.write_text("images: many\n")
    assert main(["eval", "--config", str(bad), "--dry-run"]) == 2
    assert "images: expected an integer, got 'many'" in capsys.readouterr().err


def test_print_cron_escapes_percent_and_carries_no_secrets(tmp_path, monkeypatch, capsys):
    from pipelines.commands.reevaluate_cmd import cron_line

    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret")
    monkeypatch.setenv("LEE_CACHE_DIR", "/data/lee cache")
    line = cron_line(["--config", "run 100%.yaml"], "30 1 * * 1-5", cwd="/srv/lee")
    assert line.startswith("30 1 * * 1-5 cd /srv/lee && env ")
    assert "s3cret" not in line and "'LEE_CACHE_DIR=/data/lee cache'" in line
    assert "run 100\\%.yaml" in line and f"{sys.executable} -m pipelines reevaluate" in line
    assert line.endswith(">> /srv/lee/reeval.log 2>&1")
    assert main(["reevaluate", "--config", str(EXAMPLE), "--print-cron", "--at", "0 2 * *"]) == 2
    assert "five fields" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ray
def test_the_printed_crontab_line_evaluates_under_crons_bare_environment(tmp_path, monkeypatch, capsys):
    if not shutil.which("env", path="/usr/bin:/bin"):
        pytest.skip("no env(1) on /usr/bin:/bin")
    out, home = tmp_path / "res", tmp_path / "home"
    home.mkdir()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": ["test_resnet.r160_in1k"],
                "datasets": ["sample-test"],
                "images": 2,
                "img_size": 32,
                "generators": ["translate_x"],
                "weights": "random",
                "output": str(out),
            }
        )
    )
    # The user's shell: this checkout's Python, no LEE_CACHE_DIR (the cache goes under cron's HOME). `lee` runs
    # in this process (the line it prints is the subject; cron's run of it below is a fresh process).
    for var in ("LEE_CACHE_DIR", "PYTHONPATH", "HF_HUB_OFFLINE", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(REPO)
    capsys.readouterr()
    code = main(
        [
            "reevaluate",
            "--config",
            str(cfg),
            "--print-cron",
            "--at",
            "15 3 * * *",
            "--log",
            str(tmp_path / "reeval.log"),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    line = printed.out.strip()
    assert line.startswith("15 3 * * * ") and "lee " not in line.split(" -m pipelines")[0]
    command = line.split(" ", 5)[5].replace("\\%", "%")  # what cron hands to /bin/sh
    cron = subprocess.run(
        ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", "/bin/sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (tmp_path / "reeval.log").read_text()
    assert cron.returncode == 0, log[-3000:]
    assert "1 computed" in log and "Traceback" not in log, log[-3000:]
    runs = Store(str(out)).runs().to_pylist()
    assert [r["status"] for r in runs] == ["done"] and runs[0]["n_rows"] == 2
    assert (home / ".cache").is_dir()  # the regenerated catalog went under cron's HOME
