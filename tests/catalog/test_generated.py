"""The generated catalog: coverage of timm, the awkward joins, agreement with timm's configs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import catalog
from catalog._files import read_catalog_file
from catalog._registry import _base

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "catalog" / "data"


def _rows(fname: str) -> list[dict[str, str]]:
    with open(DATA / fname, newline="") as fh:
        return list(csv.DictReader(fh))


def test_import_catalog_imports_no_heavy_packages() -> None:
    code = (
        "import sys, catalog; catalog.load_models('quickstart'); catalog.get_dataset('sample-train');"
        "print(sorted(m for m in ('timm','torch','ray','duckdb','liecore','pipelines') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_covers_every_pretrained_in1k_classifier_with_a_published_top1() -> None:
    import timm
    from timm.models import get_pretrained_cfg

    published = {r["model"] for r in _rows("results-imagenet.csv")}
    expected = {n for n in timm.list_pretrained() if n in published and get_pretrained_cfg(n).num_classes == 1000}
    have = {s.name for s in catalog.load_models(["all", "tiny"])}
    assert len(expected) > 1200
    assert expected - have == set()
    # ... and every one of them carries its top-1.
    assert all(catalog.get_model(n).top1 is not None for n in expected)
    # `all` is every pretrained 1k classifier (also those without results), test_* archs live in `tiny`.
    all_names = {s.name for s in catalog.load_models("all")}
    timm_1k = {n for n in timm.list_pretrained(exclude_filters="test_*") if get_pretrained_cfg(n).num_classes == 1000}
    assert all_names == timm_1k


def test_two_image_sizes_join_at_the_models_own_size() -> None:
    by_model: dict[str, list[dict[str, str]]] = {}
    for r in _rows("results-imagenet.csv"):
        by_model.setdefault(r["model"], []).append(r)
    twice = {m: rs for m, rs in by_model.items() if len(rs) == 2}
    assert len(twice) == 290
    v2 = {(r["model"], r["img_size"]): float(r["top1"]) for r in _rows("results-imagenetv2-matched-frequency.csv")}
    checked = 0
    for model, rows in twice.items():
        spec = catalog.get_model(model)
        row = next(r for r in rows if int(r["img_size"]) == spec.img_size)
        other = next(r for r in rows if int(r["img_size"]) != spec.img_size)
        assert spec.top1 == float(row["top1"]), model
        if row["top1"] != other["top1"]:
            assert spec.top1 != float(other["top1"])
        assert spec.top1_v2 == v2.get((model, row["img_size"])), model
        checked += 1
    assert checked == 290
    # A known case: ConvNeXt-V2-L is listed at 288 (87.494) and 224 (87.266); timm evaluates it at 224.
    spec = catalog.get_model("convnextv2_large.fcmae_ft_in22k_in1k")
    assert (spec.img_size, spec.top1, spec.crop_pct) == (224, 87.266, 0.875)


def test_parameter_counts_with_thousands_separators() -> None:
    quoted = {r["model"]: r["param_count"] for r in _rows("results-imagenet.csv") if "," in r["param_count"]}
    assert quoted
    for model, text in quoted.items():
        assert catalog.get_model(model).params_m == float(text.replace(",", ""))
    assert catalog.get_model("eva_giant_patch14_336.clip_ft_in1k").params_m == pytest.approx(1013.01)


def test_shifted_test_sets_are_joined() -> None:
    spec = catalog.get_model("resnet50.a1_in1k")
    expected = {}
    for key, fname in (
        ("top1_sketch", "results-sketch.csv"),
        ("top1_r", "results-imagenet-r.csv"),
        ("top1_real", "results-imagenet-real.csv"),
    ):
        expected[key] = next(
            float(r["top1"]) for r in _rows(fname) if r["model"] == spec.name and int(r["img_size"]) == spec.img_size
        )
    assert {k: getattr(spec, k) for k in expected} == expected


def test_preprocessing_fields_match_timm_pretrained_cfgs() -> None:
    from timm.models import get_pretrained_cfg

    for spec in catalog.load_models(["all", "tiny"]):
        cfg = get_pretrained_cfg(spec.name)
        assert spec.img_size == cfg.input_size[-1], spec.name
        assert spec.crop_pct == pytest.approx(cfg.crop_pct), spec.name
        assert spec.interpolation == cfg.interpolation, spec.name
        assert spec.mean == pytest.approx(cfg.mean, abs=1e-6) and spec.std == pytest.approx(cfg.std, abs=1e-6)


def test_renamed_models_resolve_through_timm() -> None:
    from timm.models import get_deprecated_models

    deprecated = get_deprecated_models()
    assert deprecated["tv_resnet50"] == "resnet50.tv_in1k"
    assert catalog.get_model("tv_resnet50").name == "resnet50.tv_in1k"
    assert catalog.get_model("resnet50").name == "resnet50.a1_in1k"  # timm's default tag
    # timm maps both old IG names to the 32x8d weights; the catalog keeps them apart.
    assert deprecated["ig_resnext101_32x16d"] == "resnext101_32x8d.fb_wsl_ig1b_ft_in1k"
    sweep = {s.name for s in catalog.load_models("paper-sweep")}
    assert {"resnext101_32x16d.fb_wsl_ig1b_ft_in1k", "resnext101_32x8d.fb_wsl_ig1b_ft_in1k"} <= sweep


def _paper_rows() -> list[dict[str, str]]:
    with open(DATA / "paper-models.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_bare_paper_names_resolve_to_their_2022_imagenet_1k_weights() -> None:
    sweep = {s.name for s in catalog.load_models("paper-sweep")}
    core = set(catalog.catalog_groups("paper")["core"])
    # timm's default for the MIIL ViT is the 11k-class in21k head; the paper's model is the 1k fine-tune.
    assert "vit_base_patch16_224_miil.in21k_ft_in1k" in core
    # augreg2 (timm's default since 2023) is not the 2022 ViT-B/16; augreg_in21k_ft_in1k is.
    assert "vit_base_patch16_224.augreg_in21k_ft_in1k" in core
    assert "vit_base_patch16_224.augreg2_in21k_ft_in1k" not in sweep
    # Where the 2022 sweep had both a bare name and its in21k / Noisy Student variant, both are kept apart.
    assert {
        "convnext_base.fb_in1k",
        "convnext_base.fb_in22k_ft_in1k",
        "tf_efficientnet_b0.aa_in1k",
        "tf_efficientnet_b0.ns_jft_in1k",
        "tf_efficientnetv2_s.in1k",
        "tf_efficientnetv2_s.in21k_ft_in1k",
        "resnet18.tv_in1k",
        "regnetx_008.pycls_in1k",
    } <= sweep


def test_every_resolved_paper_name_is_a_pretrained_1k_classifier_and_none_collapse() -> None:
    import timm
    from timm.models import get_deprecated_models, get_pretrained_cfg

    from catalog._generate import PAPER_UNRESOLVED, TAGS_2022, resolve_name

    deprecated = get_deprecated_models()
    rows = _paper_rows()
    assert len(rows) == 483
    resolved = {r["model"]: resolve_name(r["model"], deprecated, timm) for r in rows}
    all_names = {s.name for s in catalog.load_models("all")}
    ok = {old: new for old, new in resolved.items() if new in all_names and old not in PAPER_UNRESOLVED}
    assert len(ok) == 478
    assert len(set(ok.values())) == len(ok)  # no two 2022 names end up on the same weights
    assert {s.name for s in catalog.load_models("paper-sweep")} == set(ok.values())
    for name in ok.values():
        assert get_pretrained_cfg(name).num_classes == 1000, name
    # The hand-made table of 2022 tags only names tags the installed timm has, with weights and 1000 classes.
    for arch, tag in TAGS_2022.items():
        assert get_pretrained_cfg(f"{arch}.{tag}").num_classes == 1000 and f"{arch}.{tag}" in all_names
    unresolved = {u["name"] for u in read_catalog_file(ROOT / "catalog" / "models" / "paper.yaml")["unresolved"]}
    assert unresolved == {
        "mixnet_xxl",
        "gluon_xception65",
        "ig_resnext101_32x48d",
        "mixer_b16_224_in21k",
        "mixer_l16_224_in21k",
    }


def test_paper_subset_has_the_papers_comparisons() -> None:
    paper = {s.name for s in catalog.load_models("paper")}
    groups = catalog.catalog_groups("paper")
    assert len(groups["core"]) >= 75
    assert {"resnet50.a1_in1k", "resnetblur50.bt_in1k"} <= set(groups["resnet50_vs_blurpool"])
    assert len(groups["resnext50_recipes"]) >= 3 and len(groups["deit_sizes"]) >= 3
    assert {"resmlp_big_24_224.fb_in1k", "resmlp_big_24_224.fb_in22k_ft_in1k"} <= set(groups["resmlp_more_data"])
    for members in groups.values():
        assert set(members) <= paper


def test_quickstart_models_are_small() -> None:
    specs = catalog.load_models("quickstart")
    assert 4 <= len(specs) <= 8
    assert all(s.params_m is not None and s.params_m < 20 for s in specs)
    assert len({s.family for s in specs}) >= 3


def test_committed_catalog_is_the_generators_output(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_catalog.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    for fname in ("all.json", "tiny.yaml", "paper.yaml", "paper-sweep.yaml"):
        assert (tmp_path / fname).read_text() == (ROOT / "catalog" / "models" / fname).read_text(), fname
    header = json.loads((tmp_path / "all.json").read_text())
    import timm

    assert header["timm_version"] == timm.__version__


def test_all_catalog_loads() -> None:
    _base.cache_clear()
    catalog._registry._load_builtin.cache_clear()
    start = time.perf_counter()
    assert len(catalog.load_models("all")) > 1200
    print(f"all catalog loaded in {time.perf_counter() - start:.2f} s")  # a figure, not a check


def test_generator_in_process_reproduces_the_packaged_all_catalog() -> None:
    start = time.perf_counter()
    data = catalog.generate_all_catalog()
    elapsed = time.perf_counter() - start
    assert catalog.all_catalog_text(data) == (ROOT / "catalog" / "models" / "all.json").read_text()
    assert catalog.generated_specs(data) == catalog.load_models("all")
    print(f"generated {len(data['models'])} entries in {elapsed:.2f} s")  # a figure, not a check
