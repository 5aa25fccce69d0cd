"""``--weights auto``: hub weights downloaded through ``HF_ENDPOINT`` (a loopback hub), the loud offline
fallback to random init, and unit keys that keep the two apart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import catalog
from catalog._checkpoint import sha256_file
from pipelines.store.results import Store
from tests.hub_server import HubServer

ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "timm/test_resnet.r160_in1k"
MODEL = "hub-resnet"


@pytest.fixture()
def hub_catalog(tmp_path: Path) -> Path:
    """A user catalog with one hub model: timm's test_resnet with its (hub) pretrained weights."""
    path = tmp_path / "hub.yaml"
    path.write_text(f"name: hubtest\nmodels:\n  - {{name: {MODEL}, arch: test_resnet, tag: r160_in1k, source: hub}}\n")
    return path


@pytest.fixture()
def served_checkpoint(tmp_path: Path) -> Path:
    """A real test_resnet checkpoint (seeded, not timm's init) as the hub serves it: safetensors."""
    from safetensors.torch import save_file

    model = catalog.build_model("test_resnet.r160_in1k", weights="random").model
    gen = torch.Generator().manual_seed(7)
    state = {
        k: (v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    path = tmp_path / "served.safetensors"
    save_file(state, str(path))
    return path


def _config(hub_catalog: Path, output: Path, **kw):
    from pipelines.spec.config import SweepConfig

    base = dict(
        models=[str(hub_catalog)],
        datasets=["sample-test"],
        generators=["translate_x"],
        images=2,
        img_size=32,
        output=str(output),
        batch_size=2,
    )
    return SweepConfig(**(base | kw))


def _put_in_hf_cache(cache: Path, checkpoint: Path) -> None:
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    (snapshot / "model.safetensors").write_bytes(checkpoint.read_bytes())


def test_auto_resolves_in_the_unit_key(hub_catalog, served_checkpoint, tmp_path, monkeypatch) -> None:
    """Offline and not cached: random (same key as --weights random); cached: hub, another key."""
    from pipelines.running.plan import fallback_warning, plan

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # the session is offline (tests/conftest.py)
    offline = plan(_config(hub_catalog, tmp_path / "res"), check_writable=False, dry_run=True)
    (unit,) = offline.units
    assert (unit.weights.policy, unit.weights.source, unit.weights.in_key) == ("auto", "random", "random")
    assert set(offline.fallbacks) == {MODEL} and not offline.hub.online
    warning = fallback_warning(offline)
    assert "RANDOM-INIT" in warning and MODEL in warning and "HF_HUB_OFFLINE" in warning
    asked = plan(_config(hub_catalog, tmp_path / "res", weights="random"), check_writable=False, dry_run=True)
    assert asked.units[0].key == unit.key and asked.fallbacks == {} and fallback_warning(asked) is None

    _put_in_hf_cache(tmp_path / "hub", served_checkpoint)
    cached = plan(_config(hub_catalog, tmp_path / "res"), check_writable=False, dry_run=True)
    assert cached.units[0].weights.source == "hub" and cached.units[0].key != unit.key
    assert cached.fallbacks == {} and cached.hub is None  # every model cached: the hub is not even checked


@pytest.mark.slow
@pytest.mark.ray
def test_lee_eval_falls_back_loudly_offline_and_downloads_hub_weights_online(
    ray_session, hub_catalog, served_checkpoint, tmp_path, monkeypatch, capsys
) -> None:
    from pipelines.cli import main
    from pipelines.commands.reevaluate_cmd import plan_reevaluation

    root = tmp_path / "res"
    with HubServer() as hub:
        hub.add(REPO_ID, "model.safetensors", served_checkpoint)

        # Offline (this session sets HF_HUB_OFFLINE), nothing cached: random init, said on the command line,
        # in the summary and in the row; the hub is not asked.
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
        assert (
            main(
                [
                    "eval",
                    "-m",
                    str(hub_catalog),
                    "-d",
                    "sample-test",
                    "-n",
                    "2",
                    "-g",
                    "translate_x",
                    "--img-size",
                    "32",
                    "-r",
                    str(root),
                ]
            )
            == 0
        )
        out, err = capsys.readouterr()
        assert hub.requests == []
        assert "warning: RANDOM-INIT" in err and MODEL in err and "HF_HUB_OFFLINE" in err, err
        line = next(ln for ln in out.splitlines() if ln.startswith(MODEL))
        assert line.split()[1] == "random*", out
        assert "* RANDOM-INIT" in out
        (random_row,) = Store(str(root)).runs().to_pylist()
        assert (random_row["status"], random_row["weights"], random_row["weights_policy"]) == ("done", "random", "auto")
        assert random_row["weights_sha256"] is None

        # Hub weights now in the cache: reevaluate redoes the unit, "weights now available".
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "filled"))
        _put_in_hf_cache(tmp_path / "filled", served_checkpoint)
        p, reasons = plan_reevaluation(_config(hub_catalog, root), dry_run=True)
        assert [reasons[u.key] for u in p.todo] == ["weights now available"]
        assert p.todo[0].key != random_row["unit"]

        # Online, in its own process with its own local Ray (huggingface_hub reads HF_ENDPOINT and
        # HF_HUB_OFFLINE at import): the loopback hub answers, the same sweep downloads the weights into an
        # empty cache and redoes the unit.
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "RAY_ADDRESS")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["HF_HOME"] = str(tmp_path / "hf")
        args = [
            sys.executable,
            "-m",
            "pipelines",
            "eval",
            "-m",
            str(hub_catalog),
            "-d",
            "sample-test",
            "-n",
            "2",
            "-g",
            "translate_x",
            "--img-size",
            "32",
            "-r",
            str(root),
        ]
        online = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert online.returncode == 0, online.stderr
        assert "RANDOM-INIT" not in online.stderr + online.stdout, online.stderr
        assert hub.downloads() == [f"/{REPO_ID}/resolve/main/model.safetensors"], hub.requests
    rows = {r["weights"]: r for r in Store(str(root)).runs().to_pylist()}
    assert set(rows) == {"random", "hub"} and rows["hub"]["status"] == "done"
    assert rows["hub"]["unit"] == p.todo[0].key != rows["random"]["unit"]
    assert rows["hub"]["weights_sha256"] == sha256_file(str(served_checkpoint))
    downloaded = list((tmp_path / "hf" / "hub").rglob("model.safetensors"))
    assert len(downloaded) == 1 and sha256_file(str(downloaded[0])) == rows["hub"]["weights_sha256"]
    line = next(ln for ln in online.stdout.splitlines() if ln.startswith(MODEL) and " hub " in ln)
    assert line.split()[1] == "hub", online.stdout
