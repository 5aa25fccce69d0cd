"""The one "did you mean" (``lee_names``): its suggestions, and every layer's messages built from it."""

from __future__ import annotations

import pathlib

import pytest

from lee_names import close_matches, did_you_mean

ROOT = pathlib.Path(__file__).parents[1]


def test_close_matches_ranks_by_similarity_then_substring():
    known = ["resnet50.a1_in1k", "resnet50.tv_in1k", "resnet18.a1_in1k", "vit_small_patch16_224", "resnet50"]
    assert close_matches("resnet50.a1_in1kk", known, n=1) == ["resnet50.a1_in1k"]
    # nothing close enough by ratio: names containing the text follow
    assert close_matches("patch16", known) == ["vit_small_patch16_224"]
    assert close_matches("zzz", known) == []
    assert close_matches("resnet50", ["resnet50", "resnet50"], n=5) == ["resnet50"]  # duplicates once


def test_did_you_mean_quotes_every_suggestion():
    assert did_you_mean("imagez", ["images", "models"], n=1) == "; did you mean 'images'?"
    assert did_you_mean("rotat", ["rotate", "translate_x", "rotation"], n=2) == "; did you mean 'rotate', 'rotation'?"
    assert did_you_mean("qqq", ["images"]) == ""


def test_every_layer_says_it_the_same_way():
    import catalog
    import liecore
    from pipelines.analysis.analyses import run_analysis
    from pipelines.errors import UsageError
    from pipelines.spec.config import SweepConfig

    with pytest.raises(ValueError) as gen:
        liecore.get_generator("rotat")
    assert "unknown generator 'rotat'; did you mean 'rotate'" in str(gen.value)
    with pytest.raises(ValueError, match=r"unknown analysis 'acuracy'; did you mean 'accuracy'\? \(known: "):
        run_analysis(None, "acuracy")
    with pytest.raises(UsageError, match=r"^x: unknown key 'imagez'; did you mean 'images'\?$"):
        SweepConfig.from_dict({"imagez": 3}, source="x")
    with pytest.raises(catalog.CatalogError, match=r"unknown dataset 'sample-tset'; did you mean 'sample-test'"):
        catalog.load_dataset("sample-tset")


def test_no_other_module_computes_close_matches():
    """``difflib`` appears only in ``lee_names``: a new "did you mean" reuses :func:`did_you_mean`."""
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("liecore", "catalog", "pipelines")
        for p in (ROOT / pkg).rglob("*.py")
        if "difflib" in p.read_text()
    ]
    assert not offenders, offenders
