"""The sweep configuration: one dataclass, loaded from ``--config run.yaml`` and overridden by flags."""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from catalog import WEIGHT_POLICIES as _CATALOG_POLICIES
from lee_names import did_you_mean
from pipelines.errors import UsageError

__all__ = ["FAMILIES", "INTERPOLATIONS", "SweepConfig", "DEFAULT_OUTPUT", "WEIGHT_POLICIES", "WEIGHTS_FILTERS"]

FAMILIES = ("lee", "layerwise", "alt", "explain")
_FLAG_NAMES = {"gpus": "gpus_per_actor"}  # flags whose name differs from their field
DEFAULT_OUTPUT = "./lee-results"
WEIGHT_POLICIES = (*_CATALOG_POLICIES, "spec")
"""``--weights``: catalog's policies plus ``spec`` (each spec's own source); see
``pipelines.store.units.resolve_unit_weights``.
"""
WEIGHTS_FILTERS: dict[str, tuple[str, ...] | None] = {
    "pretrained": ("hub", "file"),
    "random": ("random",),
    "any": None,
}
"""``--weights-filter`` (the analyses' and the report's ``weights=``): which stored results to use -> the values of
the ``weights`` column (the weights a unit actually used) it keeps (None: all). The one vocabulary of
``lee query``, ``lee report`` and :mod:`pipelines.analysis.analyses`."""


INTERPOLATIONS: tuple[str, ...] = ("cubic", "spectral")
"""liecore's image interpolants (``choices=`` of the ``--derivative-interp`` flags): ``liecore.INTERPOLATIONS``, listed
here because importing liecore imports torch, which commands that never differentiate (``lee query``, ``lee sql``,
``lee --help``, ``lee submit``) should not pay for; tests/test_imports.py keeps the two equal."""


@dataclass
class SweepConfig:
    """Everything ``lee eval`` needs. Fields mirror the command-line flags (``--images``...).

    Attributes:
        models: catalog selections: catalog names (``quickstart``, ``paper``, ``all``, ``tiny``), a YAML
            path, model names or fnmatch patterns.
        datasets: catalog dataset names (default the offline ``sample``).
        generators: liecore generator names (None: the paper's eight).
        metrics: metric families to run: ``lee``, ``layerwise``, ``alt``, ``explain``.
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
        actors: number of model actors (None: one per GPU, or one per CPU; with ``gpus_per_actor``
            one per model, the work).
        cpus_per_actor: CPUs reserved per actor on CPU-only clusters.
        gpus_per_actor: GPUs every actor requests (``--gpus``), whether or not the cluster has GPUs now,
            so an autoscaler starts GPU workers from zero (None: auto-detect: ``num_gpus=1`` only if
            the cluster already shows GPUs).
        force: recompute units that are already done.
        checkpoint: a checkpoint (path, fsspec URI or ``package://MODULE/PATH``) to evaluate as one more model
            (``--checkpoint``), on the timm architecture ``arch``; alone (no ``models`` given) it is the only model.
        arch: timm architecture of ``checkpoint`` (``--arch``).
        model_name: catalog name of the checkpoint's model (default ``ARCH@FILE-STEM``).
        map_keys_by_order: pair the checkpoint's tensors with the architecture's by order when every shape
            matches (``key_map: {by_order: true}``).
        rename_keys: ``REGEX=REPLACEMENT`` rules applied in order to the checkpoint's keys (``key_map: {rename}``).
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
    gpus_per_actor: float | None = None
    force: bool = False
    checkpoint: str | None = None
    arch: str | None = None
    model_name: str | None = None
    map_keys_by_order: bool = False
    rename_keys: list[str] | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> SweepConfig:
        """Build from a mapping (YAML ``run.yaml``); field or flag names (``-`` or ``_`` both accepted).

        Unknown keys and values of the wrong type are :class:`~pipelines.errors.UsageError` s naming the key,
        the value and the expected type.
        """
        clean: dict[str, Any] = {}
        known = cls.field_names()
        for key, value in (data or {}).items():
            k = str(key).replace("-", "_")
            k = _FLAG_NAMES.get(k, k)
            if k not in known:
                raise UsageError(f"{source}: unknown key {key!r}{did_you_mean(k, known, n=1)}")
            if k in (
                "models",
                "datasets",
                "generators",
                "metrics",
                "alt_metrics",
                "layerwise_generators",
                "rename_keys",
            ):
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
            problem = _type_problem(value, _field_types()[k])
            if problem:
                hint = ""
                if k in ("models", "datasets") and isinstance(value, list) and any(isinstance(v, dict) for v in value):
                    hint = f"; {k[:-1]} specs go in a catalog YAML file, whose path you list here"
                raise UsageError(f"{source}: {key}: expected {problem}, got {value!r} ({type(value).__name__}){hint}")
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


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(SweepConfig)


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _type_problem(value: Any, hint: Any) -> str | None:
    """None if ``value`` fits the field type ``hint``, else what was expected (``an integer``...)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        if any(p is None for p in problems):
            return None
        return " or ".join(problems) + (" (or null)" if type(None) in args else "")
    if origin is list:
        (item,) = typing.get_args(hint)
        what = f"a list of {_NAMES[item].removeprefix('a ').removeprefix('an ')}s"
        if item is str:
            what += " or a comma-separated string"
        if not isinstance(value, list):
            return what
        return what if any(_type_problem(v, item) for v in value) else None
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return None if ok else _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def load_yaml(path: str) -> dict[str, Any]:
    """Read a ``run.yaml`` (local path or fsspec URI)."""
    import fsspec
    import yaml

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
