"""The activation layouts the layerwise family declares, read from the models themselves."""

from __future__ import annotations

import pytest
import torch

import catalog
import liecore
from pipelines.spec.families import activation_layouts


@pytest.mark.parametrize("name", [s.name for s in catalog.load_models("tiny")])
def test_activation_layouts_fit_the_models_features(name: str) -> None:
    """The one place the model layout is read (catalog reads only ``num_prefix_tokens``): the declared
    layout of ``forward_features`` fits its shape, with the catalog's prefix-token count."""
    loaded = catalog.build_model(name, weights="random")
    layouts = activation_layouts(loaded.model)
    with torch.no_grad():
        feats = loaded.model.forward_features(torch.zeros(2, *loaded.data_config["input_size"]))
    lay = layouts.resolve(feats, "features")
    lay.check(feats, "features")
    if feats.ndim == 3:
        assert lay.kind == "tokens" and lay.num_prefix_tokens == loaded.num_prefix_tokens
        assert layouts.tokens == (liecore.Layout.tokens(lay.grid, loaded.num_prefix_tokens),)
    else:
        assert lay.kind == "spatial" and layouts.tokens == ()


def test_shift_consistency_gives_every_model_windows_of_its_input_size() -> None:
    """Zhang (2019): windows of the model's input size at offsets 0..31, cut from the eval crop 32 pixels larger;
    a ViT of a fixed input size (which refused the old, smaller windows) is measured, and each window is a
    crop of the enlarged image at the model's size."""
    import numpy as np

    from pipelines.spec.families import SHIFT_MARGIN, alt_margin, compute_alt

    loaded = catalog.build_model("test_vit3.r160_in1k", weights="random")
    _, h, w = loaded.data_config["input_size"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (240, 300, 3), dtype=np.uint8) for _ in range(2)]
    config = {"metrics": ["shift_consistency", "circular_shift_consistency"], "output": "probs"}
    assert alt_margin(config) == SHIFT_MARGIN == 32 and alt_margin({"metrics": ["eq_t"]}) == 0
    x, x_margin = loaded.preprocess(images), loaded.preprocess(images, margin=alt_margin(config))
    assert x_margin.shape[-2:] == (h + SHIFT_MARGIN, w + SHIFT_MARGIN)

    seen = []

    def model(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.detach().clone())
        return loaded.model(t)

    cols = compute_alt(model, x, config=config, mean=None, std=None, seed=0, x_margin=x_margin)
    values = dict(zip(cols["metric"], cols["value"], strict=False))
    assert set(cols["metric"]) == set(config["metrics"]) and 0 <= values["shift_consistency"] <= 100
    windows = seen[: 2 * 5]  # shift consistency runs first: 5 pairs of windows
    assert all(t.shape[-2:] == (h, w) for t in seen)
    for t in windows:  # each window is the enlarged crop at some offset in 0..31
        hits = [
            (i, j)
            for i in range(SHIFT_MARGIN)
            for j in range(SHIFT_MARGIN)
            if torch.equal(x_margin[0, :, i : i + h, j : j + w], t[0])
        ]
        assert len(hits) >= 1
    with pytest.raises(ValueError, match="x_margin"):
        compute_alt(loaded.model, x, config=config, mean=None, std=None, seed=0)
