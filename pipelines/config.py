"""The sweep configuration: one dataclass, loaded from ``--config run.yaml`` and overridden by flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAMILIES", "SweepConfig", "DEFAULT_OUTPUT"]

FAMILIES = ("lee", "layerwise", "alt")
DEFAULT_OUTPUT = "./lee-results"


@dataclass
class SweepConfig:
    """Everything ``lee eval`` needs. Fields mirror the command-line flags (``--images``...).

    Attributes:
        models: catalog selections: catalog names (``quickstart``, ``paper``, ``all``, ``tiny``), a YAML
            path, model names or fnmatch patterns.
        datasets: catalog dataset names (default the offline ``sample``).
        generators: liecore generator names (None: the paper's eight).
        metrics: metric families to run: ``lee``, ``layerwise``, ``alt``.
        images: images per dataset (the paper uses 100).
        limit: smoke runs: cap on images per dataset (applied after ``images``).
        output: results root, any fsspec URI.
        weights: weights policy passed to ``catalog.build_model``: ``auto``, ``hub``, ``file``, ``random``.
        output_kind: what liecore differentiates for classifiers: ``probs`` or ``logits``.
        interpolation: liecore interpolant, ``cubic`` or ``spectral``.
        layerwise_method: ``exact`` or ``stochastic``.
        layerwise_generators: generators of the layerwise family (None: the first of ``generators``).
        num_probes: probes of the stochastic layerwise method.
        alt_metrics: names in ``liecore.metrics.METRICS`` (None: all).
        img_size: override every model's input size (smaller inputs for smoke runs); part of the unit key.
        seed: seed of every unit.
        batch_size: images per liecore call (halved on out-of-memory).
        address: Ray cluster address (None: start a local Ray).
        actors: number of model actors (None: one per GPU, or one per CPU).
        cpus_per_actor: CPUs reserved per actor on CPU-only clusters.
        force: recompute units that are already done.
    """

    models: list[str] = field(default_factory=lambda: ["quickstart"])
    datasets: list[str] = field(default_factory=lambda: ["sample"])
    generators: list[str] | None = None
    metrics: list[str] = field(default_factory=lambda: ["lee"])
    images: int = 100
    limit: int | None = None
    output: str = DEFAULT_OUTPUT
    weights: str = "auto"
    output_kind: str = "probs"
    interpolation: str = "cubic"
    layerwise_method: str = "exact"
    layerwise_generators: list[str] | None = None
    num_probes: int = 8
    alt_metrics: list[str] | None = None
    img_size: int | None = None
    seed: int = 0
    batch_size: int = 16
    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    force: bool = False

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> SweepConfig:
        """Build from a mapping (YAML ``run.yaml``); unknown keys are errors (``-`` or ``_`` both accepted)."""
        from pipelines.cli import UsageError

        clean: dict[str, Any] = {}
        known = cls.field_names()
        for key, value in (data or {}).items():
            k = str(key).replace("-", "_")
            if k not in known:
                import difflib

                close = difflib.get_close_matches(k, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise UsageError(f"{source}: unknown key {key!r}{hint}")
            if k in ("models", "datasets", "generators", "metrics", "alt_metrics", "layerwise_generators"):
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
            clean[k] = value
        return cls(**clean)

    def merged(self, overrides: dict[str, Any]) -> SweepConfig:
        """A copy with the non-None ``overrides`` applied (flags override the YAML)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def n_images(self) -> int:
        return min(self.images, self.limit) if self.limit else self.images

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def load_yaml(path: str) -> dict[str, Any]:
    """Read a ``run.yaml`` (local path or fsspec URI)."""
    import fsspec
    import yaml

    from pipelines.cli import UsageError

    try:
        with fsspec.open(path, "r") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path!r} not found") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path!r} must hold a mapping of options, got {type(data).__name__}")
    return data
