"""``lee reevaluate`` regenerates the ``all`` catalog from the installed timm and resolves against it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import catalog
from pipelines.cli import UsageError
from pipelines.commands.reevaluate_cmd import regenerate_catalog, resolve_fresh


def test_regenerated_catalog_equals_the_packaged_one_for_the_installed_timm(tmp_path: Path) -> None:
    import timm

    fresh = regenerate_catalog(tmp_path)
    assert fresh.path == tmp_path / "catalog" / "all.json"
    header = json.loads(fresh.path.read_text())
    assert header["timm_version"] == fresh.timm_version == timm.__version__
    packaged = catalog.load_models("all")
    assert list(fresh.specs.values()) == packaged and fresh.new == []
    committed = json.loads((Path(catalog.__file__).parent / "models" / "all.json").read_text())
    assert header["models"] == committed["models"] and header["aliases"] == committed["aliases"]
    assert resolve_fresh(["all"], fresh) == packaged
    assert resolve_fresh(["quickstart"], fresh) == catalog.load_models("quickstart")
    assert resolve_fresh(["resnet50", "tv_resnet50"], fresh) == [
        catalog.get_model("resnet50"),
        catalog.get_model("tv_resnet50"),
    ]


def test_models_a_newer_timm_adds_are_picked_up(tmp_path: Path) -> None:
    fresh = regenerate_catalog(tmp_path)
    base = fresh.specs["resnet18.a1_in1k"]
    added = base.replace(name="resnet18.new_in1k", tag="new_in1k")
    changed = fresh.specs["resnet50.a1_in1k"].replace(crop_pct=0.5)
    newer = dataclasses.replace(
        fresh, specs={**fresh.specs, added.name: added, changed.name: changed}, new=[added.name]
    )
    assert added in resolve_fresh(["resnet18.*"], newer)
    assert added in resolve_fresh(["all"], newer) and len(resolve_fresh(["all"], newer)) == len(fresh.specs) + 1
    assert resolve_fresh(["resnet18.new_in1k"], newer) == [added]
    assert changed in resolve_fresh(["paper"], newer)  # an unmodified curated entry takes the new spec
    assert resolve_fresh(["test_resnet.r160_in1k"], newer) == [catalog.get_model("test_resnet.r160_in1k")]
    with pytest.raises(UsageError, match="no_such_model"):
        resolve_fresh(["no_such_model"], newer)
    with pytest.raises(UsageError, match="matches no model"):
        resolve_fresh(["zz_nothing_*"], newer)


def _listed_units(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[2:] if line.strip()]


@pytest.mark.ray
@pytest.mark.slow
def test_dry_run_lists_the_unit_whose_file_checkpoint_was_overwritten(ray_session, tmp_path, capsys) -> None:
    import timm
    import torch

    from catalog._checkpoint import sha256_file
    from pipelines.cli import main
    from pipelines.running.execute import execute
    from pipelines.running.plan import plan
    from pipelines.spec.config import SweepConfig
    from pipelines.store.results import Store

    ckpt = tmp_path / "resnet.pth"

    def save_weights(seed: int) -> None:
        torch.manual_seed(seed)
        torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), ckpt)

    save_weights(1)
    models = tmp_path / "models.yaml"
    models.write_text(
        "models:\n"
        "  - test_vit.r160_in1k\n"
        f"  - {{name: ckpt_resnet, arch: test_resnet, source: file, checkpoint: '{ckpt}'}}\n"
    )
    out = tmp_path / "res"
    cfg = SweepConfig(
        models=[str(models)],
        datasets=["sample-test"],
        generators=["translate_x"],
        images=4,
        img_size=32,
        output=str(out),
        batch_size=4,
    )
    execute(plan(cfg))
    rows = {r["model"]: r for r in Store(str(out)).runs().to_pylist()}
    assert {m: r["status"] for m, r in rows.items()} == {"test_vit.r160_in1k": "done", "ckpt_resnet": "done"}
    assert rows["ckpt_resnet"]["weights"] == "file" and rows["ckpt_resnet"]["weights_sha256"] == sha256_file(str(ckpt))
    argv = [
        "reevaluate",
        "--dry-run",
        "-r",
        str(out),
        "-m",
        str(models),
        "-d",
        "sample-test",
        "-g",
        "translate_x",
        "-n",
        "4",
        "--img-size",
        "32",
    ]
    assert main(argv) == 0
    assert "nothing new or changed" in capsys.readouterr().out

    save_weights(2)  # new weights under the same path: same unit key, different file
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert _listed_units(printed) == [rows["ckpt_resnet"]["unit"]], printed
    line = next(ln for ln in printed.splitlines() if ln.startswith(rows["ckpt_resnet"]["unit"]))
    assert line.split()[-2:] == ["weights", "changed"], printed


def test_hub_weights_compare_by_the_hf_cache_blob_name(tmp_path, monkeypatch) -> None:
    import hashlib

    from catalog._checkpoint import hub_blob_sha256, sha256_file
    from pipelines.commands.reevaluate_cmd import _weights_changed, current_weights_sha256

    spec = catalog.get_model("test_resnet.r160_in1k")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"

    def cache_revision(revision: str, content: bytes) -> Path:
        sha = hashlib.sha256(content).hexdigest()
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / sha).write_bytes(content)
        snap = repo / "snapshots" / revision
        snap.mkdir(parents=True)
        (snap / "model.safetensors").symlink_to(Path("..", "..", "blobs", sha))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        return snap / "model.safetensors"

    assert current_weights_sha256("hub", spec) is None  # not cached: nothing to compare, nothing downloaded
    first = cache_revision("a" * 40, b"first weights")
    assert hub_blob_sha256(str(first)) == sha256_file(str(first)) == current_weights_sha256("hub", spec)
    unit = type("Unit", (), {"model": spec})()
    row = {"weights": "hub", "weights_sha256": sha256_file(str(first))}
    assert not _weights_changed(unit, row, {})
    cache_revision("b" * 40, b"second weights")  # the cache got a new revision of the same file
    assert _weights_changed(unit, row, {})
    assert not _weights_changed(unit, {"weights": "random", "weights_sha256": None}, {})
    assert hub_blob_sha256(str(tmp_path / "hub")) is None  # not a blob: no cheap digest


def test_unknown_model_message_keeps_its_closing_quote(tmp_path: Path) -> None:
    fresh = regenerate_catalog(tmp_path)
    with pytest.raises(UsageError) as info:
        resolve_fresh(["zzqqxxvv"], fresh)
    assert str(info.value) == "unknown model 'zzqqxxvv'"
