"""The weights policy resolved in one place (``catalog.resolve_weights``): each policy, a path, a missing
file, a cached, an answering and an unreachable hub; and a sweep's resolution of it (``pipelines.store.units``)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import catalog
from catalog import HubStatus, resolve_weights

TINY = "test_resnet.r160_in1k"
REPO_ID = "timm/test_resnet.r160_in1k"


def _no_hub_check() -> HubStatus:
    raise AssertionError("the hub was checked, but nothing needed it")


@pytest.fixture()
def hub_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> catalog.ModelSpec:
    """The tiny timm model as a hub model, with an empty private Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return catalog.get_model(TINY).replace(source="hub")


def _cache_weights(cache: Path) -> None:
    """A cached hub file for TINY, laid out as huggingface_hub keeps it (its content is not read here)."""
    snapshot = cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("1" * 40)
    (snapshot / "model.safetensors").write_bytes(b"cached")


def test_a_named_source_is_taken_as_asked_without_the_hub(hub_spec) -> None:
    for policy in ("hub", "random"):
        got = resolve_weights(hub_spec, policy, hub=_no_hub_check)
        assert (got.policy, got.source, got.fallback, got.auto_choice) == (policy, policy, None, False)
        assert got.spec is hub_spec
    assert resolve_weights(hub_spec, hub=_no_hub_check).source == "hub"  # None: the spec's own source
    with pytest.raises(catalog.CatalogError, match=r"weights 'file' needs a checkpoint"):
        resolve_weights(hub_spec, "file", hub=_no_hub_check)
    with_file = hub_spec.replace(source="file", checkpoint="/models/tiny.safetensors")
    assert resolve_weights(with_file, "file").source == "file"
    assert resolve_weights(with_file, "auto", hub=_no_hub_check).source == "file"  # auto: the checkpoint
    random_spec = hub_spec.replace(source="random")
    got = resolve_weights(random_spec, "auto", hub=_no_hub_check)  # auto keeps a non-hub model's source
    assert (got.source, got.auto_choice) == ("random", False)


def test_a_path_is_a_file_checkpoint_and_a_missing_one_fails_when_read(hub_spec, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.safetensors")
    got = resolve_weights(hub_spec, missing, hub=_no_hub_check)
    assert (got.policy, got.source) == (missing, "file")
    assert (got.spec.source, got.spec.checkpoint, got.spec.name) == ("file", missing, hub_spec.name)
    with pytest.raises(catalog.CatalogError, match="missing.safetensors"):
        catalog.validate_checkpoint(hub_spec, missing)


def test_auto_on_a_hub_model_is_cached_or_answering_hub_weights_else_random(
    hub_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answering = HubStatus(True, "http://127.0.0.1:1")
    got = resolve_weights(hub_spec, "auto", hub=answering)
    assert (got.source, got.fallback, got.auto_choice) == ("hub", None, True)

    offline = catalog.check_hub()  # the test session sets HF_HUB_OFFLINE: no request
    got = resolve_weights(hub_spec, "auto", hub=offline)
    assert (got.source, got.auto_choice) == ("random", True)
    assert "not in the local cache" in got.fallback and "HF_HUB_OFFLINE" in got.fallback

    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    monkeypatch.setenv("HF_ENDPOINT", dead)
    got = resolve_weights(hub_spec, "auto")  # checks the hub itself: unreachable
    assert got.source == "random" and dead in got.fallback and "unreachable" in got.fallback

    _cache_weights(tmp_path / "hub")
    got = resolve_weights(hub_spec, "auto", hub=_no_hub_check)  # cached: no check needed
    assert (got.source, got.fallback, got.auto_choice) == ("hub", None, True)


def test_a_zoo_model_has_its_checkpoint_or_random_init_never_hub_weights() -> None:
    zoo = catalog.spec_from_entry({"name": "zoo-x", "arch": "zoo_cnn", "num_classes": 10, "source": "random"})
    assert resolve_weights(zoo, "auto", hub=_no_hub_check).source == "random"
    trained = zoo.replace(source="file", checkpoint="/zoo/x.safetensors")
    assert resolve_weights(trained, "auto", hub=_no_hub_check).source == "file"
    with pytest.raises(catalog.CatalogError, match="has no hub weights"):
        resolve_weights(trained, "hub")


def test_a_sweep_resolves_spec_and_keeps_its_unit_keys(hub_spec) -> None:
    from pipelines.errors import UsageError
    from pipelines.store.units import resolve_unit_weights

    got = resolve_unit_weights("spec", hub_spec.replace(source="random"), _no_hub_check)
    assert (got.policy, got.source, got.in_key) == ("spec", "random", "spec")
    got = resolve_unit_weights("auto", hub_spec.replace(source="random"), _no_hub_check)
    assert (got.source, got.in_key) == ("random", "auto")  # as before: auto on a non-hub model stays auto
    got = resolve_unit_weights("auto", hub_spec, catalog.check_hub())
    assert (got.source, got.in_key) == ("random", "random") and got.fallback
    got = resolve_unit_weights("random", hub_spec, _no_hub_check)
    assert (got.source, got.in_key) == ("random", "random")
    with pytest.raises(UsageError, match="needs a checkpoint"):  # refused by the catalog: before any work
        resolve_unit_weights("file", hub_spec, _no_hub_check)
