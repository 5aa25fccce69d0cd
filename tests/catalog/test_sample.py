"""The ``sample`` photos scikit-learn ships are read from its files without importing it, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest

from catalog._sample import photo


@pytest.mark.parametrize("name", ["china", "flower"])
def test_sklearn_sample_photos_are_the_pixels_sklearn_loads(name):
    from sklearn.datasets import load_sample_image

    ours = photo(name)
    ref = np.asarray(load_sample_image(f"{name}.jpg"), dtype=np.uint8)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape == (427, 640, 3)
    assert np.array_equal(ours, ref)


def test_sample_regions_keep_the_splits_apart():
    """Train and test crop from the two halves of each natural photo (disjoint pixels), ood from the centres of
    the out-of-distribution photos; an unknown split names the known ones."""
    import catalog

    train, test, ood = (catalog.sample_regions(s) for s in ("train", "test", "ood"))
    assert list(train) == list(test) and "chelsea" in train and not set(train) & set(ood)
    full = photo("chelsea")
    h, w = full.shape[:2]
    assert np.array_equal(np.concatenate([train["chelsea"], test["chelsea"]], axis=1 if w >= h else 0), full)
    assert all(r.ndim == 3 and r.dtype == np.uint8 for r in ood.values())
    with pytest.raises(ValueError, match="train"):
        catalog.sample_regions("validation")
