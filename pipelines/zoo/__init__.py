"""The zoo: small classifiers trained offline on packaged data, registered as a ``file`` catalog.

``lee zoo train [--preset small|full] [--out DIR]`` trains the grid of :mod:`pipelines.zoo.grid` on the
rotated-digits and photo-patch tasks (:mod:`pipelines.zoo.datasets`), caches every model by content key and
writes ``zoo.yaml``, which ``lee eval -m zoo`` evaluates like any other catalog.

The whole zoo lives here: architectures (:mod:`pipelines.zoo.models`), datasets (:mod:`.datasets`, :mod:`.data`),
the grid (:mod:`.grid`), training (:mod:`.train`) and the results table (:mod:`.summary`). Importing this package
registers the architectures and the dataset builder with the catalog (``catalog.register_zoo``); ``catalog``
imports it by name on the first zoo spec or ``builtin://zoo-...`` dataset it meets, so ``catalog.build_model``
builds a zoo spec in any process. The package itself imports only what registering needs (the bottom layer of
``pipelines``); training and the summary are imported from their modules, by ``lee zoo``.
"""

import catalog
from catalog import ZOO_ARCH_NAMES
from pipelines.zoo.datasets import materialize_zoo_data
from pipelines.zoo.grid import ARCHS, PRESETS, RECIPES, ZooModelConfig, preset
from pipelines.zoo.models import ZOO_ARCHS, build_zoo_arch

if set(ZOO_ARCHS) != set(ZOO_ARCH_NAMES):  # the catalog's zoo spec and the builders must name the same archs
    raise ImportError(f"pipelines.zoo builds {sorted(ZOO_ARCHS)} but the catalog names {sorted(ZOO_ARCH_NAMES)}")
catalog.register_zoo(build_arch=build_zoo_arch, materialize_data=materialize_zoo_data)

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
