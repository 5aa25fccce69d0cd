"""``ModelSpec`` and ``DatasetSpec``: frozen records of what to evaluate, validated when built from data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from catalog._errors import CatalogError

__all__ = [
    "DATASET_FORMATS",
    "DATASET_ROLES",
    "DatasetSpec",
    "ModelSpec",
    "WEIGHT_POLICIES",
    "WEIGHT_SOURCES",
    "spec_from_dict",
]

WEIGHT_SOURCES = ("hub", "file", "random")
"""Where a spec's weights come from (``ModelSpec.source``); also the values of ``weights`` in every result row."""
WEIGHT_POLICIES = ("auto", *WEIGHT_SOURCES)
"""What ``build_model(weights=...)`` accepts: a source, or ``auto`` (hub weights if available, else random)."""
DATASET_FORMATS = ("imagefolder", "flat", "parquet")
DATASET_ROLES = ("train", "test", "ood")


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: a timm architecture, the weights to put in it and its published numbers.

    Attributes:
        name: Catalog key, the timm ``arch.tag`` name (``resnet50.a1_in1k``) or a user-chosen name.
        arch: timm architecture (entrypoint) name.
        tag: timm pretrained tag, or None.
        source: Where the weights come from: ``hub`` (timm pretrained, local cache when offline),
            ``file`` (``checkpoint``, a local path or fsspec URI) or ``random`` (random init, smoke runs).
        checkpoint: Checkpoint path or URI for ``source='file'``.
        family: Coarse architecture family (cnn, vit, mixer, hybrid, ...).
        module: timm module that registers the architecture (``resnet``, ``vision_transformer``, ...).
        params_m: Parameter count in millions.
        pretrain_data: Data of the first training stage (in1k, in21k, in22k, in12k, laion2b, jft300m, ...).
        recipe: Training recipe part of the pretrained tag (``a1``, ``augreg``, ``fb`` ...).
        img_size: Evaluation input size (square side) of the timm pretrained config.
        crop_pct: Centre-crop fraction of the eval transform.
        interpolation: Resize interpolation of the eval transform.
        mean: Normalization mean (RGB).
        std: Normalization std (RGB).
        top1: Published ImageNet top-1 (%) at ``img_size``.
        top5: Published ImageNet top-5 (%) at ``img_size``.
        top1_v2: ImageNet-V2 (matched frequency) top-1 (%).
        top1_sketch: ImageNet-Sketch top-1 (%).
        top1_r: ImageNet-R top-1 (%).
        top1_real: ImageNet-ReaL top-1 (%).
        version: Spec version; bump when an entry changes meaning.
        model_kwargs: Architecture hyperparameters passed to the builder (zoo architectures such as
            ``zoo_cnn`` / ``zoo_vit``: width, depth, patch size ...); None for plain timm names.
        num_classes: Output logits of the head (zoo models); None: the architecture's default.
        in_chans: Input channels (zoo models; 3: grayscale images are replicated to RGB); None: 3.
        training: Provenance of a model trained by ``lee zoo train``: task, train-set size, augmentation
            recipe, seed, epochs, train/test/OOD accuracy, data fingerprints, cache key (free-form mapping,
            recorded, never executed).
        key_map: How a ``file`` checkpoint's keys map onto the architecture's, for checkpoints saved in
            another naming: ``rename`` (a list of ``[regex, replacement]`` pairs applied in order with
            ``re.sub`` to every key) and ``by_order`` (``true``: pair the i-th checkpoint tensor with the
            i-th model tensor, allowed only when the counts and every shape match). timm's own
            ``checkpoint_filter_fn`` of the architecture is applied before ``by_order`` whenever the keys
            do not fit as they are. None: keys must fit after the usual wrapper and prefix removal.
        checkpoints: The folder or glob of the catalog entry that found ``checkpoint`` (an entry with
            ``checkpoints:`` gives one model per file, :mod:`catalog._watch`); None for a model named on its
            own. Provenance only: not part of the unit key.
    """

    name: str
    arch: str
    tag: str | None = None
    source: str = "hub"
    checkpoint: str | None = None
    family: str | None = None
    module: str | None = None
    params_m: float | None = None
    pretrain_data: str | None = None
    recipe: str | None = None
    img_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    top1: float | None = None
    top5: float | None = None
    top1_v2: float | None = None
    top1_sketch: float | None = None
    top1_r: float | None = None
    top1_real: float | None = None
    version: int = 1
    model_kwargs: dict[str, Any] | None = None
    num_classes: int | None = None
    in_chans: int | None = None
    training: dict[str, Any] | None = None
    key_map: dict[str, Any] | None = None
    checkpoints: str | None = None

    def __hash__(self) -> int:  # the mapping fields are not hashable; name + weights identify a spec
        return hash((self.name, self.arch, self.tag, self.source, self.checkpoint, self.version))

    def __post_init__(self) -> None:
        if not self.name or not self.arch:
            raise CatalogError(f"model spec needs a name and an arch, got name={self.name!r} arch={self.arch!r}")
        if self.source not in WEIGHT_SOURCES:
            raise CatalogError(f"model {self.name!r}: source must be one of {WEIGHT_SOURCES}, got {self.source!r}")
        if self.source == "file" and not self.checkpoint:
            raise CatalogError(f"model {self.name!r}: source 'file' needs a checkpoint path or URI")
        if self.key_map is not None:
            object.__setattr__(self, "key_map", _check_key_map(self.key_map, self.name))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                if len(value) != 3:
                    raise CatalogError(f"model {self.name!r}: {key} must have 3 values, got {value!r}")
                object.__setattr__(self, key, tuple(float(v) for v in value))

    @property
    def timm_name(self) -> str:
        """The ``arch.tag`` name timm knows, or the bare arch."""
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    def replace(self, **changes: Any) -> ModelSpec:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), for YAML/JSON and result records."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class DatasetSpec:
    """One set of images: where it lives, how it is stored and which seeded subset is used.

    Attributes:
        name: Catalog key.
        uri: Local path or fsspec URI (``s3://``, ``gs://``, ``memory://``); ``${VAR}`` is expanded from the
            environment when loading; ``builtin://sample/<split>`` is the offline sample set.
        format: ``imagefolder`` (class subfolders, label = folder name), ``flat`` (images, no labels) or
            ``parquet`` (an encoded-image column, optional label and id columns).
        role: ``train``, ``test`` or ``ood``.
        domain: Domain tag (natural, histology, retina, ...).
        n: Size of the seeded subset, None for all images.
        seed: Seed of the subset draw.
        image_column: Parquet column with the encoded image (bytes, or a struct with a ``bytes`` field).
        label_column: Parquet label column (used if present).
        id_column: Parquet column with stable image ids (used if present, else ``file#row``).
        description: Free text: what it is and how to get it.
        version: Spec version.
    """

    name: str
    uri: str
    format: str = "imagefolder"
    role: str = "test"
    domain: str = "natural"
    n: int | None = None
    seed: int = 0
    image_column: str = "image"
    label_column: str | None = "label"
    id_column: str | None = "image_id"
    description: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if not self.name or not self.uri:
            raise CatalogError(f"dataset spec needs a name and a uri, got name={self.name!r} uri={self.uri!r}")
        if self.format not in DATASET_FORMATS:
            raise CatalogError(f"dataset {self.name!r}: format must be one of {DATASET_FORMATS}, got {self.format!r}")
        if self.role not in DATASET_ROLES:
            raise CatalogError(f"dataset {self.name!r}: role must be one of {DATASET_ROLES}, got {self.role!r}")
        if self.n is not None and (not isinstance(self.n, int) or self.n < 1):
            raise CatalogError(f"dataset {self.name!r}: n must be a positive integer or null, got {self.n!r}")

    def replace(self, **changes: Any) -> DatasetSpec:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for YAML/JSON and result records."""
        return dataclasses.asdict(self)


_S = TypeVar("_S", ModelSpec, DatasetSpec)

_FLOAT_FIELDS = {
    "params_m",
    "crop_pct",
    "top1",
    "top5",
    "top1_v2",
    "top1_sketch",
    "top1_r",
    "top1_real",
}
_INT_FIELDS = {"img_size", "version", "n", "seed", "num_classes", "in_chans"}
_MAPPING_FIELDS = {"model_kwargs", "training", "key_map"}
KEY_MAP_KEYS = ("rename", "by_order")


def _check_key_map(key_map: Any, name: str) -> dict[str, Any]:
    """Validate a ``key_map`` and return it normalized: ``{"rename": [[regex, repl], ...], "by_order": bool}``."""
    import re

    where = f"model {name!r}: key_map"
    if not isinstance(key_map, dict):
        raise CatalogError(f"{where} must be a mapping with keys {', '.join(KEY_MAP_KEYS)}, got {key_map!r}")
    unknown = [k for k in key_map if k not in KEY_MAP_KEYS]
    if unknown:
        raise CatalogError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(KEY_MAP_KEYS)}"
        )
    rename = key_map.get("rename") or []
    if isinstance(rename, dict):  # {regex: replacement} in file order
        rename = [list(item) for item in rename.items()]
    if not isinstance(rename, (list, tuple)) or not all(
        isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(p, str) for p in r) for r in rename
    ):
        raise CatalogError(f"{where}: rename must be a list of [regex, replacement] pairs, got {rename!r}")
    for pattern, _ in rename:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CatalogError(
                f"{where}: rename pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from None
    by_order = key_map.get("by_order", False)
    if not isinstance(by_order, bool):
        raise CatalogError(f"{where}: by_order must be true or false, got {by_order!r}")
    return {"rename": [list(r) for r in rename], "by_order": by_order}


def _check_type(cls: type, key: str, value: Any, where: str) -> Any:
    if value is None:
        return None
    if key in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CatalogError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if key in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CatalogError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if key in _MAPPING_FIELDS:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise CatalogError(f"{where}: {key} must be a mapping with string keys, got {value!r}")
        return dict(value)
    if key in ("mean", "std"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
            raise CatalogError(f"{where}: {key} must be a list of 3 numbers, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise CatalogError(f"{where}: {key} must be a string, got {value!r}")
    return value


def spec_from_dict(cls: type[_S], data: Any, where: str, base: _S | None = None) -> _S:
    """Build a spec from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: ``ModelSpec`` or ``DatasetSpec``.
        data: The mapping (from YAML/JSON).
        where: Where it came from (file and entry), used in error messages.
        base: Spec whose values fill the keys ``data`` does not set.

    Returns:
        The validated spec.

    Raises:
        CatalogError: Unknown keys (named), wrong types, missing required keys.
    """
    if not isinstance(data, dict):
        raise CatalogError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(names)}")
    values = {k: _check_type(cls, k, v, where) for k, v in data.items()}
    try:
        if base is not None:
            return dataclasses.replace(base, **values)
        return cls(**values)
    except TypeError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from None
