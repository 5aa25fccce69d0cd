"""The zoo: small classifiers trained offline on packaged data, registered as a ``file`` catalog.

``lee zoo train [--preset small|full] [--out DIR]`` trains the grid of :mod:`pipelines.zoo.grid` on the
rotated-digits and photo-patch tasks (:mod:`pipelines.zoo.datasets`), caches every model by content key and
writes ``zoo.yaml``, which ``lee eval -m zoo`` evaluates like any other catalog.

The whole zoo lives here: architectures (:mod:`pipelines.zoo.models`), datasets, grid, training and summary.
Importing this package registers the architectures and the dataset builder with the catalog
(``catalog.register_zoo``); ``catalog`` imports it by name on the first zoo spec or ``builtin://zoo-...``
dataset it meets, so ``catalog.build_model`` builds a zoo spec in any process.
"""

import catalog
from catalog._zoo import ZOO_ARCH_NAMES
from pipelines.zoo.datasets import materialize_zoo_data
from pipelines.zoo.grid import ARCHS, PRESETS, RECIPES, ZooModelConfig, preset
from pipelines.zoo.models import ZOO_ARCHS, build_zoo_arch
from pipelines.zoo.train import ZOO_CODE_VERSION, TrainedModel, ZooResult, evaluate, train_model, train_zoo

if set(ZOO_ARCHS) != set(ZOO_ARCH_NAMES):  # the catalog's zoo spec and the builders must name the same archs
    raise ImportError(f"pipelines.zoo builds {sorted(ZOO_ARCHS)} but the catalog names {sorted(ZOO_ARCH_NAMES)}")
catalog.register_zoo(build_arch=build_zoo_arch, materialize_data=materialize_zoo_data)

__all__ = [
    "ARCHS",
    "PRESETS",
    "RECIPES",
    "ZOO_ARCHS",
    "ZOO_CODE_VERSION",
    "TrainedModel",
    "ZooModelConfig",
    "ZooResult",
    "build_zoo_arch",
    "evaluate",
    "materialize_zoo_data",
    "preset",
    "train_model",
    "train_zoo",
]
