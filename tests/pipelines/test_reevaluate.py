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
    assert resolve_fresh(["resnet50", "tv_resnet50"], fresh) == [catalog.get_model("resnet50"),
                                                                  catalog.get_model("tv_resnet50")]


def test_models_a_newer_timm_adds_are_picked_up(tmp_path: Path) -> None:
    fresh = regenerate_catalog(tmp_path)
    base = fresh.specs["resnet18.a1_in1k"]
    added = base.replace(name="resnet18.new_in1k", tag="new_in1k")
    changed = fresh.specs["resnet50.a1_in1k"].replace(crop_pct=0.5)
    newer = dataclasses.replace(fresh, specs={**fresh.specs, added.name: added, changed.name: changed},
                                new=[added.name])
    assert added in resolve_fresh(["resnet18.*"], newer)
    assert added in resolve_fresh(["all"], newer) and len(resolve_fresh(["all"], newer)) == len(fresh.specs) + 1
    assert resolve_fresh(["resnet18.new_in1k"], newer) == [added]
    assert changed in resolve_fresh(["paper"], newer)  # an unmodified curated entry takes the new spec
    assert resolve_fresh(["test_resnet.r160_in1k"], newer) == [catalog.get_model("test_resnet.r160_in1k")]
    with pytest.raises(UsageError, match="no_such_model"):
        resolve_fresh(["no_such_model"], newer)
    with pytest.raises(UsageError, match="matches no model"):
        resolve_fresh(["zz_nothing_*"], newer)
