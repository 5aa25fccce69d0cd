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
