"""Work units: model x dataset x metric family x config, each with a content key.

The key is ``sha256`` over a canonical JSON of everything that changes the numbers: the
model spec (name, arch, tag, weight source, checkpoint, preprocessing, spec version), the
weights policy (``auto`` as the sweep resolved it for a hub model: ``hub`` or ``random``, so a
unit that fell back to random init offline and the same unit with hub weights never share a
key: :attr:`UnitWeights.in_key`), the dataset (name, spec version, content fingerprint, number of images), the
family config (generators, output, interpolation, method, probes, metrics), the seed and the
family's implementation version. Batch size, actor count, cluster and output root are not in
it: they do not change the numbers (random draws are per image, from a generator seeded with
the unit's seed and the image's position, :func:`pipelines.spec.families.image_seed`; only float
rounding of differently batched kernels differs). Same key = same numbers; a done key is skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import catalog
import liecore
from pipelines.errors import UsageError
from pipelines.spec.config import SweepConfig
from pipelines.spec.data import DatasetInfo
from pipelines.spec.families import available_alt_metrics, family_version

__all__ = [
    "DatasetInfo",
    "UnitWeights",
    "WorkUnit",
    "family_config",
    "make_unit",
    "resolve_unit_weights",
    "unit_key",
]

_SPEC_KEY_FIELDS = (
    "name",
    "arch",
    "tag",
    "source",
    "checkpoint",
    "img_size",
    "crop_pct",
    "interpolation",
    "mean",
    "std",
    "version",
)


@dataclass(frozen=True)
class UnitWeights:
    """A unit's weights: the sweep's ``--weights`` policy and the source it resolved to, once per model, on
    the driver (:func:`resolve_unit_weights`); the actor builds with :attr:`source` and decides nothing.

    Attributes:
        policy: The policy asked for: ``auto``, ``hub``, ``file``, ``random`` or ``spec`` (the ``runs``
            table's ``weights_policy``).
        source: What the actor loads: ``hub``, ``file`` or ``random``.
        fallback: Why ``auto`` chose random init for a hub model; None otherwise.
        auto_choice: ``auto`` chose between hub weights and random init (a hub model): the unit key holds the
            choice.
    """

    policy: str
    source: str
    fallback: str | None = None
    auto_choice: bool = False

    @property
    def in_key(self) -> str:
        """What the unit key holds: the policy, or for ``auto`` on a hub model its choice (``hub``, ``random``)."""
        return self.source if self.auto_choice else self.policy


@dataclass(frozen=True)
class WorkUnit:
    key: str
    family: str
    model: Any  # catalog.ModelSpec
    dataset: DatasetInfo
    weights: UnitWeights
    config: dict[str, Any] = field(hash=False)
    seed: int = 0
    metric_version: str = ""
    key_json: str = ""

    @property
    def table(self) -> str:
        return self.family

    def describe(self) -> str:
        return f"{self.family}:{self.model.name}@{self.dataset.name}[{self.key}]"


def family_config(family: str, cfg: SweepConfig) -> dict[str, Any]:
    """The part of the sweep config that the family's numbers depend on."""
    gens = [g.name for g in liecore.resolve_generators(cfg.generators)]
    if family == "lee":
        return {"generators": gens, "output": cfg.output_kind, "interpolation": cfg.interpolation}
    if family == "layerwise":
        lgens = cfg.layerwise_generators or gens[:1]
        out = {
            "generators": list(lgens),
            "method": cfg.layerwise_method,
            "output": cfg.output_kind,
            "interpolation": cfg.interpolation,
        }
        if cfg.layerwise_method == "stochastic":
            out["num_probes"] = int(cfg.num_probes)
        return out
    if family == "explain":
        return {"generators": gens, "output": cfg.output_kind, "interpolation": cfg.interpolation}
    if family == "alt":
        return {"metrics": list(cfg.alt_metrics or available_alt_metrics()), "output": cfg.output_kind}
    raise ValueError(f"unknown metric family {family!r}")


def resolve_unit_weights(policy: str, spec: Any, hub: Any = None) -> UnitWeights:
    """The weights of ``spec``'s units under the sweep's policy: :func:`catalog.resolve_weights`, with
    ``spec`` meaning the spec's own source. A policy the catalog refuses for this model (``file`` without a
    checkpoint, ``hub`` for a zoo model) is a :class:`UsageError`, before any work.

    Args:
        policy: ``--weights``: ``auto``, ``hub``, ``file``, ``random`` or ``spec``.
        spec: The model (``catalog.ModelSpec``).
        hub: The hub's status, or a function giving it (called at most when ``auto`` meets a hub model whose
            weights are not cached).
    """
    try:
        resolved = catalog.resolve_weights(spec, None if policy == "spec" else policy, hub=hub)
    except catalog.CatalogError as exc:
        raise UsageError(str(exc)) from None
    return UnitWeights(policy, resolved.source, resolved.fallback, resolved.auto_choice)


def spec_key_dict(spec) -> dict[str, Any]:
    d = spec.to_dict()
    out = {k: d.get(k) for k in _SPEC_KEY_FIELDS}
    if d.get("key_map"):  # only when declared, so the keys of specs without one stay as they were
        out["key_map"] = d["key_map"]
    return out


def unit_key(payload: dict[str, Any]) -> tuple[str, str]:
    """(key, canonical JSON) of a unit payload."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20], text


def make_unit(
    family: str,
    spec: Any,
    dataset: DatasetInfo,
    cfg: SweepConfig,
    fam_cfg: dict[str, Any],
    weights: UnitWeights,
) -> WorkUnit:
    """The unit of ``family`` x ``spec`` x ``dataset`` with ``spec``'s resolved weights."""
    version = family_version(family, fam_cfg)
    payload = {
        "family": family,
        "model": spec_key_dict(spec),
        "weights": weights.in_key,
        "dataset": {
            "name": dataset.name,
            "version": dataset.version,
            "fingerprint": dataset.fingerprint,
            "n": dataset.n_images,
        },
        "config": fam_cfg,
        "seed": cfg.seed,
        "metric_version": version,
    }
    key, text = unit_key(payload)
    return WorkUnit(
        key=key,
        family=family,
        model=spec,
        dataset=dataset,
        weights=weights,
        config=fam_cfg,
        seed=cfg.seed,
        metric_version=version,
        key_json=text,
    )
