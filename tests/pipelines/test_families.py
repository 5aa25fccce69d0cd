"""The activation layouts the layerwise family declares, read from the models themselves."""

from __future__ import annotations

import pytest
import torch

import catalog
import liecore
from pipelines.families import activation_layouts


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
