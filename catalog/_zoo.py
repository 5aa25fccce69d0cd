"""The zoo as the catalog sees it: which specs are zoo models, which datasets are zoo tasks, and two hooks.

The zoo itself (its architectures, the code that builds its datasets, training) lives in ``pipelines.zoo``;
the catalog keeps only what a spec or a dataset entry names:

- a zoo architecture is an ``arch`` of :data:`ZOO_ARCH_NAMES` (``zoo_cnn``, ``zoo_e2cnn_c8``, ``zoo_vit``,
  ``zoo_mixer``: ``pipelines.zoo`` registers a builder for each, and checks that it does);
- a zoo dataset is ``builtin://zoo-<task>/<split>`` with a task of :data:`ZOO_TASKS` and a split of
  :data:`ZOO_SPLITS`;
- the trained zoo's catalog file is ``catalog.zoo_catalog_path()``.

Building such a model or dataset goes through two hooks that the zoo registers with :func:`register_zoo`
when ``pipelines.zoo`` is imported. If nothing is registered yet, the first use imports the provider module
named by :data:`ZOO_PROVIDER` (a string: ``catalog`` has no import of ``pipelines``, and importing
``catalog`` loads neither e2cnn nor scikit-learn), so ``catalog.build_model`` builds a zoo spec in any
process, a Ray worker included.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog._errors import CatalogError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ZOO_ARCH_NAMES",
    "ZOO_PROVIDER",
    "ZOO_SPLITS",
    "ZOO_TASKS",
    "build_zoo_arch",
    "is_zoo_arch",
    "materialize_zoo_data",
    "register_zoo",
]

ZOO_ARCH_NAMES = ("zoo_cnn", "zoo_e2cnn_c8", "zoo_vit", "zoo_mixer")
ZOO_TASKS = ("digits", "patches")
ZOO_SPLITS = ("train", "test", "ood")
ZOO_PROVIDER = "pipelines.zoo"
"""Module imported on first use when no zoo is registered; importing it calls :func:`register_zoo`."""

_HOOKS: dict[str, Callable[..., Any]] = {}


def register_zoo(*, build_arch: Callable[..., nn.Module], materialize_data: Callable[..., Path]) -> None:
    """Register the zoo's builders (called by ``pipelines.zoo`` when it is imported).

    ``build_arch`` must build every architecture of :data:`ZOO_ARCH_NAMES` (the registering side checks it).

    Args:
        build_arch: ``build_arch(arch, *, num_classes, in_chans=3, model_kwargs=None, name="?") -> nn.Module``:
            a zoo architecture with random weights; raises ``CatalogError`` for an unknown name or bad kwargs.
        materialize_data: ``materialize_data(task, split, *, force=False) -> Path``: one split of a zoo task
            written once as Parquet; its path.
    """
    _HOOKS["build_arch"] = build_arch
    _HOOKS["materialize_data"] = materialize_data


def _hook(name: str) -> Callable[..., Any]:
    if name not in _HOOKS:
        try:
            importlib.import_module(ZOO_PROVIDER)
        except ModuleNotFoundError as exc:
            raise CatalogError(f"the model zoo needs the package {exc.name!r} ({ZOO_PROVIDER} registers it): "
                               f"pip install {exc.name}") from None
        if name not in _HOOKS:
            raise CatalogError(f"importing {ZOO_PROVIDER} registered no zoo (catalog.register_zoo was not called)")
    return _HOOKS[name]


def is_zoo_arch(arch: str | None) -> bool:
    """Whether ``arch`` names a zoo architecture (one of :data:`ZOO_ARCH_NAMES`) rather than a timm one."""
    return arch in ZOO_ARCH_NAMES


def build_zoo_arch(arch: str, *, num_classes: int, in_chans: int = 3, model_kwargs: dict[str, Any] | None = None,
                   name: str = "?") -> nn.Module:
    """``pipelines.zoo.models.build_zoo_arch`` (same arguments, random weights from the current torch RNG),
    reached through the hook ``pipelines.zoo`` registers; a :class:`CatalogError` for an unknown builder or
    bad kwargs."""
    return _hook("build_arch")(arch, num_classes=num_classes, in_chans=in_chans, model_kwargs=model_kwargs,
                               name=name)


def materialize_zoo_data(task: str, split: str, *, force: bool = False) -> Path:
    """Build one split of a zoo task once (through the registered hook) and return its Parquet path.

    Raises:
        ValueError: Unknown task or split.
    """
    if task not in ZOO_TASKS or split not in ZOO_SPLITS:
        raise ValueError(f"unknown zoo data {task!r}/{split!r}; tasks {ZOO_TASKS}, splits {ZOO_SPLITS}")
    return _hook("materialize_data")(task, split, force=force)
