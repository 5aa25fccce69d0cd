"""Work units: model x dataset x metric family x config, each with a content key.

The key is ``sha256`` over a canonical JSON of everything that changes the numbers: the
model spec (name, arch, tag, weight source, checkpoint, preprocessing, spec version), the
weights policy (``auto`` as the sweep resolved it for a hub model: ``hub`` or ``random``, so a
unit that fell back to random init offline and the same unit with hub weights never share a
key), the dataset (name, spec version, content fingerprint, number of images), the
family config (generators, output, interpolation, method, probes, metrics), the seed and the
family's implementation version. Batch size, actor count, cluster and output root are not in
it: they do not change the numbers (random draws are per image, from a generator seeded with
the unit's seed and the image's position, :func:`pipelines.families.image_seed`; only float
rounding of differently batched kernels differs). Same key = same numbers; a done key is skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import liecore
from pipelines.config import SweepConfig
from pipelines.data import DatasetInfo
from pipelines.families import available_alt_metrics, family_version

__all__ = ["DatasetInfo", "WorkUnit", "effective_weights", "family_config", "make_unit", "unit_key"]

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
class WorkUnit:
    key: str
    family: str
    model: Any  # catalog.ModelSpec
    dataset: DatasetInfo
    weights_policy: str
    config: dict[str, Any] = field(hash=False)
    seed: int = 0
    metric_version: str = ""
    key_json: str = ""
    weights: str | None = None
    """The weights the runner builds with: ``weights_policy`` (the request), or for ``auto`` on a hub model
    what the sweep resolved once on the driver (``hub`` or ``random``)."""

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


def effective_weights(policy: str | None, spec) -> str | None:
    """The ``weights`` argument ``catalog.build_model`` gets for a unit: None means the spec's own source.

    ``spec`` (and no policy) is each spec's source; ``auto`` decides hub-or-random for hub specs only, so a
    spec that names a checkpoint (or random init) keeps it.
    """
    if policy in ("spec", None) or (policy == "auto" and spec.source != "hub"):
        return None
    return policy


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
    family: str, spec, dataset: DatasetInfo, cfg: SweepConfig, fam_cfg: dict[str, Any], weights: str | None = None
) -> WorkUnit:
    """The unit of ``family`` x ``spec`` x ``dataset``; ``weights``: ``cfg.weights`` as resolved for this model
    (default ``cfg.weights``)."""
    version = family_version(family, fam_cfg)
    payload = {
        "family": family,
        "model": spec_key_dict(spec),
        "weights": weights or cfg.weights,
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
    return WorkUnit(key, family, spec, dataset, cfg.weights, fam_cfg, cfg.seed, version, text, weights or cfg.weights)
