"""Checks of a sweep's flags that need no torch, timm or Ray: what ``lee submit`` runs before it submits.

``lee submit`` checks a job's flags here, on the submitting side, and the job's driver checks them again
with the whole sweep (:func:`pipelines.running.plan.plan`). Importing torch costs 2-4 s of CPU on an idle machine
and 35-45 s on a loaded one; the job's driver pays it anyway, so the submitting side must not: this module
and the catalog (names, YAML, globs) import neither torch nor timm nor Ray. What needs a model's
architecture (``--img-size`` against its stride, a checkpoint's tensors) is checked by the job's driver,
before any work, and fails the job with the same one-line error.

liecore's names (generators, alternative metrics) are listed here, as liecore's own modules import torch;
tests/test_imports.py keeps them equal to liecore's.
"""

from __future__ import annotations

import os
from typing import Any

import catalog
from lee_names import did_you_mean
from pipelines.errors import UsageError
from pipelines.spec.config import FAMILIES, INTERPOLATIONS, WEIGHT_POLICIES, SweepConfig

__all__ = [
    "ALT_METRICS",
    "GENERATORS",
    "MIN_IMG_SIZE",
    "check_generators",
    "check_img_size_floor",
    "checkpoint_spec",
    "select_models",
    "unique_models",
    "validate",
]

GENERATORS: tuple[str, ...] = (
    "translate_x",
    "translate_y",
    "rotate",
    "scale",
    "shear_x",
    "shear_y",
    "stretch_x",
    "stretch_y",
    "hyperbolic_rotate",
    "brightness",
    "contrast",
    "saturation",
)
"""The names of ``liecore.GENERATORS``, in its order."""

ALT_METRICS: tuple[str, ...] = (
    "shift_consistency",
    "circular_shift_consistency",
    "eq_t",
    "eq_t_frac",
    "eq_r",
    "sampled_equivariance_error",
)
"""The names of ``liecore.metrics.METRICS``, in its order."""

MIN_IMG_SIZE = 8
"""The smallest ``--img-size`` accepted for any model, in pixels. A 1-pixel image has no spatial derivative
(its LEE is 0 by construction); a few pixels are below every architecture's stride or patch anyway."""


def _message(exc: BaseException) -> str:
    """The text of an exception (a KeyError's own message, without the quotes ``str`` adds)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def check_generators(names: list[str] | None) -> None:
    """Each name is one of liecore's generators, none twice (None: the paper's eight); the errors of
    ``liecore.resolve_generators``."""
    if names is None:
        return
    if not names:
        raise UsageError("no generators given")
    for name in names:
        if name not in GENERATORS:
            hint = did_you_mean(str(name), GENERATORS, n=3)
            raise UsageError(f"unknown generator {name!r}{hint} (known: {', '.join(GENERATORS)})")
    if len(set(names)) != len(names):
        raise UsageError(f"generator names must be unique, got {list(names)}")


def check_img_size_floor(img_size: int | None) -> None:
    """``--img-size`` is a positive number of pixels, at least :data:`MIN_IMG_SIZE` (what needs no model)."""
    if img_size is None:
        return
    if img_size < 1:
        raise UsageError(f"--img-size must be a positive number of pixels, got {img_size}")
    if img_size < MIN_IMG_SIZE:
        raise UsageError(
            f"--img-size {img_size} is too small: at least {MIN_IMG_SIZE} pixels (a 1-pixel image has "
            "no spatial derivative: its LEE would be 0 by construction)"
        )


def validate(cfg: SweepConfig) -> None:
    """Cheap checks of everything that is not a model or dataset."""
    bad = [m for m in cfg.metrics if m not in FAMILIES]
    if bad:
        raise UsageError(f"unknown metric family {bad[0]!r} (choose from {', '.join(FAMILIES)})")
    if not cfg.metrics:
        raise UsageError("no metric family selected")
    check_generators(cfg.generators)
    if cfg.layerwise_generators:
        check_generators(cfg.layerwise_generators)
    if cfg.weights not in WEIGHT_POLICIES:
        raise UsageError(f"unknown weights policy {cfg.weights!r} (choose from {', '.join(WEIGHT_POLICIES)})")
    if cfg.output_kind not in ("probs", "logits"):
        raise UsageError(f"--output-kind must be probs or logits, got {cfg.output_kind!r}")
    if cfg.interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {cfg.interpolation!r} (choose from {', '.join(INTERPOLATIONS)})")
    if cfg.images < 1 or (cfg.limit is not None and cfg.limit < 1):
        raise UsageError("--images and --limit must be positive")
    if cfg.batch_size < 1:
        raise UsageError("--batch-size must be positive")
    check_img_size_floor(cfg.img_size)  # positive, and not below the floor of every model
    if cfg.actors is not None and cfg.actors < 1:
        raise UsageError("--actors must be positive")
    if cfg.gpus_per_actor is not None and cfg.gpus_per_actor <= 0:
        raise UsageError(f"--gpus must be positive (GPUs per actor), got {cfg.gpus_per_actor}")
    if "layerwise" in cfg.metrics:
        if cfg.layerwise_method not in ("exact", "stochastic"):
            raise UsageError(f"--layerwise-method must be exact or stochastic, got {cfg.layerwise_method!r}")
    if "alt" in cfg.metrics:
        unknown = [n for n in (cfg.alt_metrics or []) if n not in ALT_METRICS]
        if unknown:
            hint = did_you_mean(unknown[0], ALT_METRICS, n=2)
            raise UsageError(f"unknown alt metric {unknown[0]!r}{hint} (known: {', '.join(sorted(ALT_METRICS))})")


def checkpoint_spec(cfg: SweepConfig):
    """The model of ``--checkpoint PATH --arch NAME`` (with its key mapping flags), as a catalog spec."""
    if not cfg.arch:
        raise UsageError("--checkpoint needs --arch: the timm architecture the checkpoint belongs to")
    stem = os.path.basename(cfg.checkpoint.rstrip("/")).split(".")[0] or "checkpoint"
    rename = []
    for rule in cfg.rename_keys or []:
        pattern, sep, repl = rule.partition("=")
        if not sep or not pattern:
            raise UsageError(f"--rename-keys {rule!r}: expected REGEX=REPLACEMENT")
        rename.append([pattern, repl])
    key_map = {"rename": rename, "by_order": bool(cfg.map_keys_by_order)} if rename or cfg.map_keys_by_order else None
    entry = {
        "name": cfg.model_name or f"{cfg.arch}@{stem}",
        "arch": cfg.arch,
        "source": "file",
        "checkpoint": cfg.checkpoint,
        "key_map": key_map,
    }
    try:
        return catalog.spec_from_entry(entry, where="--checkpoint")
    except ValueError as exc:
        raise UsageError(_message(exc)) from None


def select_models(cfg: SweepConfig) -> list:
    """The specs of ``cfg.models`` and ``--checkpoint``, each name once, through the catalog (no
    ``--img-size`` applied: :func:`pipelines.running.plan.resolve_models` does that)."""
    if not cfg.models and not cfg.checkpoint:
        raise UsageError("no models selected")
    try:
        found = []  # (spec, the -m entry it came from)
        for sel in cfg.models or []:  # each entry: catalog name, YAML path, model name or pattern
            found.extend((s, f"-m {sel}") for s in catalog.load_models(sel))
    except (ValueError, FileNotFoundError) as exc:  # CatalogError is a ValueError
        raise UsageError(_message(exc)) from None
    if cfg.checkpoint:
        found.append((checkpoint_spec(cfg), f"--checkpoint {cfg.checkpoint}"))
    specs = unique_models(found)
    if not specs:
        raise UsageError(f"model selection {cfg.models} matches no model")
    return specs


def unique_models(found: list[tuple[Any, str]]) -> list:
    """The specs of a selection, each name once: ``found`` is (spec, where it came from) in selection order.

    One model reached twice (``-m tiny -m test_resnet.r160_in1k``) is kept once; two different specs with one
    name (a user YAML's entry and a built-in model, two YAML files) are an error naming both sources.
    """
    out: dict[str, tuple[Any, str]] = {}
    for spec, where in found:
        if spec.name in out and out[spec.name][0] != spec:
            raise UsageError(
                f"two different models are named {spec.name!r}: one from {out[spec.name][1]} (arch "
                f"{out[spec.name][0].arch}), one from {where} (arch {spec.arch}); rename one of them"
            )
        out.setdefault(spec.name, (spec, where))
    return [spec for spec, _ in out.values()]
