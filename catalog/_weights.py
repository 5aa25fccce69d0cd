"""The weights policy, resolved: the one place that decides what a model's weights are.

A policy is ``auto``, ``hub``, ``file``, ``random`` (:data:`catalog.WEIGHT_POLICIES`), a checkpoint path or
URI, or None (the spec's own ``source``). :func:`resolve_weights` turns it into the final source, ``hub``,
``file`` or ``random``, that :func:`catalog.build_model` loads; a sweep resolves each model once, on the
driver, and hands the final source to its actors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from catalog._errors import CatalogError
from catalog._hub import HubStatus, auto_weights
from catalog._spec import WEIGHT_POLICIES, ModelSpec
from catalog._zoo import is_zoo_arch

__all__ = ["ResolvedWeights", "resolve_weights"]


@dataclass(frozen=True)
class ResolvedWeights:
    """What a model is built with, decided from a weights policy.

    Attributes:
        policy: The policy asked for (the spec's source when none was; a path as given).
        source: The final source: ``hub``, ``file`` or ``random`` (seeded init).
        spec: The spec to build: the given one, or for a path policy the same spec with that checkpoint
            (``source: file``).
        fallback: Why ``auto`` chose random init for a hub model (the hub offline or unreachable and the
            weights not cached, or timm names no pretrained weights); None otherwise.
        auto_choice: Whether ``auto`` chose between a hub model's hub weights and random init (then the choice
            depends on the hub cache and the network, not on the policy alone).
    """

    policy: str
    source: str
    spec: ModelSpec
    fallback: str | None = None
    auto_choice: bool = False


def resolve_weights(
    spec: ModelSpec, weights: str | None = None, *, hub: HubStatus | Callable[[], HubStatus] | None = None
) -> ResolvedWeights:
    """Resolve a weights policy for one model into the source that is loaded.

    - ``hub``, ``file``, ``random``: that source. ``file`` needs the spec's checkpoint; ``hub`` a timm model.
    - A checkpoint path or URI: ``file``, with the spec's checkpoint replaced by it (the file is read when the
      model is built, and a missing one is an error then, naming it).
    - ``auto``: the spec's own source, except for a hub model: its hub weights when they are cached or the
      hub answers, else ``random`` (with the reason in ``fallback``). A zoo model has no hub weights: its
      checkpoint if it names one, else ``random``.

    Args:
        spec: The model.
        weights: The policy; None: the spec's ``source``.
        hub: For ``auto`` on a hub model whose weights are not cached: the hub's status, or a function giving
            it (a sweep checks the hub once, :func:`catalog.check_hub`); default: checked here.

    Returns:
        The resolved weights.

    Raises:
        CatalogError: ``file`` for a spec without a checkpoint, or ``hub`` for a zoo architecture.
    """
    policy = weights or spec.source
    fallback, auto_choice = None, False
    if policy not in WEIGHT_POLICIES:  # a checkpoint path or URI
        spec, source = spec.replace(source="file", checkpoint=policy), "file"
    elif policy != "auto":
        source = policy
    elif is_zoo_arch(spec.arch):
        source = "file" if spec.checkpoint else "random"
    elif spec.source != "hub":
        source = spec.source
    else:
        (source, fallback), auto_choice = auto_weights(spec, hub), True
    if source == "hub" and is_zoo_arch(spec.arch):
        raise CatalogError(
            f"model {spec.name!r} (zoo architecture {spec.arch!r}) has no hub weights; "
            f"use its checkpoint (weights 'file') or weights 'random'"
        )
    if source == "file" and not spec.checkpoint:
        raise CatalogError(f"model {spec.name!r}: weights 'file' needs a checkpoint path or URI")
    return ResolvedWeights(policy, source, spec, fallback, auto_choice)
