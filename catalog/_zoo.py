"""The zoo as the catalog sees it: which specs are zoo models, which datasets are zoo tasks, and their
builders.

The zoo's definitions live in the catalog, beside the timm models it builds:

- a zoo architecture is an ``arch`` of :data:`ZOO_ARCH_NAMES` (``zoo_cnn``, ``zoo_e2cnn_c8``, ``zoo_vit``,
  ``zoo_mixer``), built by :func:`build_zoo_arch` (:mod:`catalog._zoo_models`);
- a zoo dataset is ``builtin://zoo-<task>/<split>`` with a task of :data:`ZOO_TASKS` and a split of
  :data:`ZOO_SPLITS`, written once by :func:`materialize_zoo_data` (:mod:`catalog._zoo_data`);
- the trained zoo's catalog file is ``catalog.zoo_catalog_path()``.

Training the zoo (``lee zoo train``) uses these builders and lives in a higher layer. Importing
``catalog`` loads neither torch, e2cnn, scikit-learn, numpy nor PIL: the builders import them when called.
"""

from __future__ import annotations

from pathlib import Path

from catalog._zoo_models import ZOO_ARCHS, build_zoo_arch

__all__ = [
    "ZOO_ARCHS",
    "ZOO_ARCH_NAMES",
    "ZOO_SPLITS",
    "ZOO_TASKS",
    "build_zoo_arch",
    "is_zoo_arch",
    "materialize_zoo_data",
]

ZOO_ARCH_NAMES = tuple(ZOO_ARCHS)
ZOO_TASKS = ("digits", "patches")
ZOO_SPLITS = ("train", "test", "ood")


def is_zoo_arch(arch: str | None) -> bool:
    """Whether ``arch`` names a zoo architecture (one of :data:`ZOO_ARCH_NAMES`) rather than a timm one."""
    return arch in ZOO_ARCH_NAMES


def materialize_zoo_data(task: str, split: str, *, force: bool = False) -> Path:
    """Build one split of a zoo task once and return its Parquet path (see :mod:`catalog._zoo_data`).

    Args:
        task: ``digits`` or ``patches``.
        split: ``train``, ``test`` or ``ood``.
        force: Rebuild even if the file exists.

    Returns:
        The Parquet file path.

    Raises:
        ValueError: Unknown task or split.
    """
    from catalog._zoo_data import materialize_zoo_data as materialize  # numpy and PIL on first use only

    return materialize(task, split, force=force)
