"""The zoo: small classifiers trained offline on packaged data, registered as a ``file`` catalog.

``lee zoo train [--preset small|full] [--out DIR]`` trains the grid of :mod:`pipelines.zoo.grid` on the
rotated-digits and photo-patch tasks (``catalog.materialize_zoo_data``), caches every model by content key
and writes ``zoo.yaml``, which ``lee eval -m zoo`` evaluates like any other catalog.

The zoo's architectures and datasets are the catalog's (``catalog.build_zoo_arch``,
``catalog.materialize_zoo_data``: ``catalog.build_model`` builds a zoo spec in any process); this package
holds what only training needs: the training data views (:mod:`.data`), the grid (:mod:`.grid`), training
(:mod:`.train`) and the results table (:mod:`.summary`). The package itself imports only the grid (the
bottom layer of ``pipelines``); training and the summary are imported from their modules, by ``lee zoo``.
"""

from catalog import ZOO_ARCHS, build_zoo_arch, materialize_zoo_data
from pipelines.zoo.grid import ARCHS, PRESETS, RECIPES, ZooModelConfig, preset

__all__ = [
    "ARCHS",
    "PRESETS",
    "RECIPES",
    "ZOO_ARCHS",
    "ZooModelConfig",
    "build_zoo_arch",
    "materialize_zoo_data",
    "preset",
]
