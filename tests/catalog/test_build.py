"""Building models: file checkpoints, hub cache / auto / offline, layout, and timm's preprocessing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import catalog

TINY = "test_resnet.r160_in1k"


def _hub_tiny() -> catalog.ModelSpec:
    """TINY as a hub model: the tiny catalog names random weights, which ``auto`` keeps; a hub model's ``auto``
    is its hub weights, or random init when they are neither cached nor downloadable."""
    return catalog.get_model(TINY).replace(source="hub")


def _images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(200, 300, 3), (180, 180, 3), (321, 143, 3)]
    return [rng.integers(0, 256, size=shapes[i % 3], dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def source_model() -> catalog.LoadedModel:
    """test_resnet with seeded random weights, perturbed so it differs from the default init."""
    loaded = catalog.build_model(TINY, weights="random")
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return loaded


def _outputs(loaded: catalog.LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(loaded.preprocess(_images()))


@pytest.mark.parametrize("kind", ["pt", "safetensors", "wrapped", "memory"])
def test_file_checkpoint_reproduces_the_saved_model(
    kind: str, tmp_path: Path, source_model: catalog.LoadedModel
) -> None:
    state = {k: v.clone() for k, v in source_model.model.state_dict().items()}
    if kind == "safetensors":
        from safetensors.torch import save_file

        uri = str(tmp_path / "ckpt.safetensors")
        save_file(state, uri)
    elif kind == "wrapped":  # a training checkpoint: DDP prefixes under 'state_dict', plus other entries
        uri = str(tmp_path / "ckpt.pth")
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, uri)
    elif kind == "memory":
        import fsspec

        uri = "memory://ckpts/test_resnet.pt"
        with fsspec.open(uri, "wb") as fh:
            torch.save(state, fh)
    else:
        uri = str(tmp_path / "ckpt.pt")
        torch.save(state, uri)
    spec = catalog.get_model(TINY).replace(source="file", checkpoint=uri)
    loaded = catalog.build_model(spec)
    assert loaded.weights == "file"
    assert not loaded.model.training
    assert loaded.weights_sha256 is not None and len(loaded.weights_sha256) == 64
    torch.testing.assert_close(_outputs(loaded), _outputs(source_model), rtol=0, atol=0)
    # A checkpoint path given as the weights argument means 'file'.
    again = catalog.build_model(TINY, weights=uri)
    assert again.weights == "file" and again.weights_sha256 == loaded.weights_sha256


def test_mismatched_checkpoint_names_checkpoint_and_arch(tmp_path: Path) -> None:
    vit = catalog.build_model("test_vit.r160_in1k", weights="random")
    path = tmp_path / "vit.safetensors"
    from safetensors.torch import save_file

    save_file(vit.model.state_dict(), str(path))
    with pytest.raises(catalog.CatalogError) as info:
        catalog.build_model(TINY, weights=str(path))
    message = str(info.value)
    assert str(path) in message and "'test_resnet'" in message
    assert "missing keys: conv1.0.weight" in message and "unexpected keys: blocks." in message


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callback": math.floor}, path)  # a pickled global
    with pytest.raises(catalog.CatalogError, match="weights only"):
        catalog.build_model(TINY, weights=str(path))
    with pytest.raises(catalog.CatalogError, match="cannot read checkpoint"):
        catalog.build_model(TINY, weights=str(tmp_path / "missing.pt"))


class _RunsCode:
    """Pickles as a call of ``os.getcwd`` (a harmless stand-in for the code a malicious checkpoint runs)."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


@pytest.mark.parametrize("payload", ["code", "garbage"])
def test_refused_checkpoint_gets_a_safe_message(tmp_path: Path, payload: str) -> None:
    path = tmp_path / "evil.pt"
    if payload == "code":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _RunsCode()}, path)
    else:
        path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(catalog.CatalogError) as info:
        catalog.build_model(TINY, weights=str(path))
    message = str(info.value)
    assert str(path) in message and "refused" in message
    assert "safetensors.torch.save_file" in message  # how to convert it safely
    if payload == "code":
        assert "GLOBAL" in message and "getcwd" in message  # why: the global that is not a tensor type
    # PyTorch's own hint (re-run with weights_only=False, "will likely succeed") is never passed on
    assert "False" not in message and "likely succeed" not in message and "weights_only=False" not in message


def test_random_weights_are_seeded() -> None:
    a = catalog.build_model(TINY, weights="random")
    b = catalog.build_model(TINY, weights="random")
    assert a.weights == "random" and a.weights_sha256 is None
    torch.testing.assert_close(_outputs(a), _outputs(b), rtol=0, atol=0)


def _put_in_hf_cache(cache: Path, repo_id: str, state: dict[str, torch.Tensor]) -> Path:
    """Write weights in the Hugging Face hub cache layout (refs/main -> snapshots/<rev>/model.safetensors)."""
    from safetensors.torch import save_file

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def test_auto_uses_cached_hub_weights_else_random(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_model: catalog.LoadedModel
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert catalog.hub_cached_file(catalog.get_model(TINY)) is None
    assert catalog.build_model(_hub_tiny(), weights="auto").weights == "random"
    with pytest.raises(catalog.CatalogError, match=r"not cached.*--weights random"):
        catalog.build_model(TINY, weights="hub")

    cached = _put_in_hf_cache(tmp_path / "hub", "timm/test_resnet.r160_in1k", source_model.model.state_dict())
    assert catalog.hub_cached_file(catalog.get_model(TINY)) == str(cached)
    loaded = catalog.build_model(_hub_tiny(), weights="auto")
    assert loaded.weights == "hub"
    assert loaded.weights_sha256 == catalog._checkpoint.sha256_file(str(cached))
    torch.testing.assert_close(_outputs(loaded), _outputs(source_model), rtol=0, atol=0)


@pytest.mark.parametrize("name", [s.name for s in catalog.load_models("tiny")])
def test_num_prefix_tokens_is_read_from_the_model(name: str) -> None:
    loaded = catalog.build_model(name, weights="random")
    x = torch.zeros(2, *loaded.data_config["input_size"])
    with torch.no_grad():
        feats = loaded.model.forward_features(x)
    if name.startswith("test_vit"):
        # class token first, then the 10 x 10 patch grid
        assert loaded.num_prefix_tokens == 1 and feats.shape[1] == 1 + 10 * 10
    else:
        assert loaded.num_prefix_tokens == 0


@pytest.mark.parametrize("name", ["test_resnet.r160_in1k", "test_vit.r160_in1k", "test_efficientnet.r160_in1k"])
def test_preprocess_equals_timms_eval_transform(name: str) -> None:
    import timm
    import timm.data
    from PIL import Image

    loaded = catalog.build_model(name, weights="random")
    reference = timm.create_model(name, pretrained=False)
    config = timm.data.resolve_model_data_config(reference)
    transform = timm.data.create_transform(**config, is_training=False)
    images = _images()
    expected = torch.stack([transform(Image.fromarray(a)) for a in images])
    got = loaded.preprocess(images)
    assert got.dtype == torch.float32 and got.shape == (3, 3, 160, 160)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert loaded.provenance()["data_config"]["crop_pct"] == config["crop_pct"]


@pytest.mark.parametrize(
    ("name", "size", "crop_pct", "interp", "mean"),
    [
        ("resnet50.a1_in1k", 224, 0.95, "bicubic", (0.485, 0.456, 0.406)),
        ("resnet50.tv_in1k", 224, 0.875, "bilinear", (0.485, 0.456, 0.406)),
        ("vit_base_patch16_224.augreg2_in21k_ft_in1k", 224, 0.9, "bicubic", (0.5, 0.5, 0.5)),
        ("deit_tiny_patch16_224.fb_in1k", 224, 0.9, "bicubic", (0.485, 0.456, 0.406)),
        ("convnext_tiny.fb_in1k", 224, 0.875, "bicubic", (0.485, 0.456, 0.406)),
    ],
)
def test_big_models_preprocessing_without_building_them(
    name: str, size: int, crop_pct: float, interp: str, mean: tuple[float, float, float]
) -> None:
    """The data config timm resolves for real models, and its transform against a hand-built torchvision one."""
    import timm.data
    from PIL import Image
    from torchvision import transforms as T

    config = catalog.resolve_data_config(name)
    assert config["input_size"] == (3, size, size)
    assert (config["crop_pct"], config["interpolation"], config["crop_mode"]) == (crop_pct, interp, "center")
    assert tuple(config["mean"]) == pytest.approx(mean)
    modes = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}
    by_hand = T.Compose(
        [
            T.Resize(math.floor(size / crop_pct), interpolation=modes[interp]),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(config["mean"], config["std"]),
        ]
    )
    timm_transform = timm.data.create_transform(**config, is_training=False)
    for array in _images():
        img = Image.fromarray(array)
        torch.testing.assert_close(timm_transform(img), by_hand(img), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", [s.name for s in catalog.load_models("quickstart")])
def test_quickstart_models_build_and_run(name: str) -> None:
    """The real quickstart architectures (random init, so offline): eval mode, layout, one forward."""
    import os

    device = os.environ.get("TORCH_DEVICE", "cpu")
    loaded = catalog.build_model(name, weights="random", device=device)
    assert not loaded.model.training
    batch = loaded.preprocess(_images(1)).to(device)
    with torch.no_grad():
        out = loaded.model(batch)
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    if loaded.spec.family == "vit":
        assert loaded.num_prefix_tokens >= 1 and tuple(loaded.model.patch_embed.grid_size) == (14, 14)


@pytest.fixture()
def online_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback hub as ``HF_ENDPOINT``, online, with an empty private cache (the user's is never touched).

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import (the test session sets it): its flag is
    switched off here too, for this test only.
    """
    import huggingface_hub.constants

    from tests.hub_server import HubServer

    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield hub


def _closed_port_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connections are refused


def test_auto_downloads_hub_weights_through_the_endpoint(
    online_hub, tmp_path: Path, source_model: catalog.LoadedModel
) -> None:
    from safetensors.torch import save_file

    served = tmp_path / "served.safetensors"
    save_file({k: v.contiguous() for k, v in source_model.model.state_dict().items()}, str(served))
    online_hub.add("timm/test_resnet.r160_in1k", "model.safetensors", served)
    spec = catalog.get_model(TINY)
    assert catalog.hub_cached_file(spec) is None
    status = catalog.check_hub()
    assert status.online and status.endpoint == online_hub.endpoint, status

    loaded = catalog.build_model(_hub_tiny(), weights="auto", hub=status)
    assert (loaded.weights, loaded.fallback) == ("hub", None)
    assert loaded.weights_sha256 == catalog._checkpoint.sha256_file(str(served))
    torch.testing.assert_close(_outputs(loaded), _outputs(source_model), rtol=0, atol=0)
    assert online_hub.downloads() == ["/timm/test_resnet.r160_in1k/resolve/main/model.safetensors"]
    cached = catalog.hub_cached_file(spec)  # downloaded into the cache of HF_HUB_CACHE
    assert cached is not None and cached.startswith(str(tmp_path / "hub"))

    again = catalog.build_model(_hub_tiny(), weights="auto")  # cached now: loaded without any request
    assert again.weights == "hub" and again.weights_sha256 == loaded.weights_sha256
    assert len(online_hub.downloads()) == 1


def test_auto_with_an_answering_hub_fails_when_the_download_fails(online_hub) -> None:
    """The hub answers but has no such file: the model fails, loudly, instead of running on random init."""
    with pytest.raises(catalog.CatalogError, match=rf"could not be downloaded from {online_hub.endpoint}"):
        catalog.build_model(_hub_tiny(), weights="auto", hub=catalog.check_hub())
    assert ("HEAD", "/timm/test_resnet.r160_in1k/resolve/main/model.safetensors") in online_hub.requests


def test_auto_falls_back_to_random_only_when_the_hub_is_unreachable(
    online_hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = catalog.check_hub()
    assert not status.online and "HF_HUB_OFFLINE" in status.reason
    assert online_hub.requests == []  # offline: not even the reachability check is sent
    loaded = catalog.build_model(_hub_tiny(), weights="auto", hub=status)
    assert loaded.weights == "random" and loaded.weights_sha256 is None
    assert "not in the local cache" in loaded.fallback and "HF_HUB_OFFLINE" in loaded.fallback

    monkeypatch.delenv("HF_HUB_OFFLINE")
    dead = _closed_port_endpoint()
    monkeypatch.setenv("HF_ENDPOINT", dead)
    status = catalog.check_hub()
    assert not status.online and status.endpoint == dead and status.reason.startswith("unreachable"), status
    loaded = catalog.build_model(_hub_tiny(), weights="auto")  # checks the hub itself
    assert loaded.weights == "random" and dead in loaded.fallback
    # asked for hub weights: no fallback, and the reason at once (not after huggingface_hub's retries)
    with pytest.raises(catalog.CatalogError, match=f"could not be downloaded .*{dead}.* is unreachable"):
        catalog.build_model(TINY, weights="hub")


def test_check_hub_times_out_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint that accepts the connection but never answers is unreachable after the timeout."""
    import socket
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        t0 = time.perf_counter()
        status = catalog.check_hub(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=0.5)
        elapsed = time.perf_counter() - t0
    assert not status.online and "no answer within 0.5s" in status.reason, status
    assert elapsed < 3


@pytest.mark.parametrize("crop_pct", [0.875, 0.5, 0.95])
def test_preprocess_with_a_margin_enlarges_the_eval_crop_at_its_scale(crop_pct: float) -> None:
    """Where the eval resize leaves room, the centre of the enlarged crop is exactly the eval input; where it
    does not (crop_pct 0.95 at 160 px: 168 < 192), the image is resized to the enlarged crop."""
    import dataclasses

    import numpy as np

    spec = dataclasses.replace(catalog.get_model("test_resnet.r160_in1k"), img_size=160, crop_pct=crop_pct)
    loaded = catalog.build_model(spec, weights="random")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), rng.integers(0, 256, (257, 256, 3), dtype=np.uint8)]
    x, x_margin = loaded.preprocess(images), loaded.preprocess(images, margin=32)
    assert x.shape == (2, 3, 160, 160) and x_margin.shape == (2, 3, 192, 192)
    room = math.floor(160 / crop_pct) >= 192
    assert torch.equal(x_margin[..., 16:176, 16:176], x) is room
    config = catalog.margin_data_config(loaded.data_config, 32)
    assert config["input_size"] == (3, 192, 192) and (config["crop_pct"] == 1.0) is not room
    with pytest.raises(ValueError, match="margin"):
        loaded.preprocess(images, margin=-1)
