"""The zoo: small classifiers trained offline on packaged data, registered as a ``file`` catalog.

``lee zoo train [--preset small|full] [--out DIR]`` trains the grid of :mod:`pipelines.zoo.grid` on the
rotated-digits and photo-patch tasks (``catalog/_zoo_data.py``), caches every model by content key and
writes ``zoo.yaml``, which ``lee eval -m zoo`` evaluates like any other catalog. The architectures live in
``catalog/_zoo_models.py`` so that ``catalog.build_model`` builds a zoo spec without this package.
"""

from pipelines.zoo.grid import ARCHS, PRESETS, RECIPES, ZooModelConfig, preset
from pipelines.zoo.train import ZOO_CODE_VERSION, TrainedModel, ZooResult, evaluate, train_model, train_zoo

__all__ = [
    "ARCHS",
    "PRESETS",
    "RECIPES",
    "ZOO_CODE_VERSION",
    "TrainedModel",
    "ZooModelConfig",
    "ZooResult",
    "evaluate",
    "preset",
    "train_model",
    "train_zoo",
]
