"""The zoo's grid: one frozen config per model, and the ``small`` / ``full`` presets.

The grid varies what the paper varies: architecture family (CNN, C8-steerable CNN, ViT, MLP-Mixer),
width, training-set size and augmentation recipe, plus a ViT pretrained on photo patches and fine-tuned on
rotated digits with rotation augmentation (the paper's MAE experiment in miniature). ``small`` is a
subset of ``full`` with the same settings, so training ``full`` after ``small`` reuses its models.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ARCHS", "PRESETS", "RECIPES", "ZooModelConfig", "preset", "with_seed"]

RECIPES = ("none", "translate", "rotate", "strong")
NUM_CLASSES = {"digits": 10, "patches": 7}

# family -> (catalog builder, {size: model_kwargs}). An e2cnn of width w has the layout of a CNN of width w
# (w // 8 regular C8 fields of 8 channels each) but about 1/8 of its parameters; its sizes are chosen
# larger (32, 48) so that its parameter counts are of the order of the plain CNN's.
ARCHS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "cnn": ("zoo_cnn", {"s": {"width": 16}, "m": {"width": 32}, "l": {"width": 64}}),
    "e2cnn": ("zoo_e2cnn_c8", {"s": {"width": 32}, "m": {"width": 48}}),
    "vit": (
        "zoo_vit",
        {
            "s": {"patch_size": 4, "embed_dim": 48, "depth": 4, "num_heads": 3, "mlp_ratio": 2.0},
            "m": {"patch_size": 4, "embed_dim": 96, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0},
        },
    ),
    "mixer": (
        "zoo_mixer",
        {
            "s": {"patch_size": 4, "embed_dim": 64, "num_blocks": 4, "mlp_ratio": [0.5, 2.0]},
            "m": {"patch_size": 4, "embed_dim": 128, "num_blocks": 4, "mlp_ratio": [0.5, 2.0]},
        },
    ),
}
LR = {"cnn": 3e-3, "e2cnn": 3e-3, "vit": 1e-3, "mixer": 1e-3}
EPOCHS = 30


@dataclass(frozen=True)
class ZooModelConfig:
    """Everything that determines one trained zoo model (its cache key is a hash of this and the data).

    Attributes:
        family: ``cnn``, ``e2cnn``, ``vit`` or ``mixer``.
        size: Width label, a key of ``ARCHS[family]`` (``s``, ``m``, ``l``).
        task: ``digits`` (rotated digits, 10 classes) or ``patches`` (photo patches, 7 classes).
        recipe: Augmentation: ``none``, ``translate`` (shifts up to 4 px), ``rotate`` (uniform angle),
            ``strong`` (rotation, shift, scale 0.85-1.15 and pixel noise).
        train_n: Training images (a seeded subset of the task's train split; None: all).
        seed: Seed of the init, the subset, the batch order and the augmentation draws.
        epochs: Passes over the training images.
        batch_size: Images per step.
        lr: Peak AdamW learning rate (cosine decay after one warm-up epoch).
        weight_decay: AdamW weight decay.
        pretrain: Name of the zoo model whose weights (all but the head) initialise this one.
    """

    family: str
    size: str = "s"
    task: str = "digits"
    recipe: str = "none"
    train_n: int | None = None
    seed: int = 0
    epochs: int = EPOCHS
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.05
    pretrain: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.family not in ARCHS:
            raise ValueError(f"unknown zoo family {self.family!r}; one of {sorted(ARCHS)}")
        if self.size not in ARCHS[self.family][1]:
            raise ValueError(
                f"family {self.family!r} has no size {self.size!r}; one of {sorted(ARCHS[self.family][1])}"
            )
        if self.task not in NUM_CLASSES:
            raise ValueError(f"unknown zoo task {self.task!r}; one of {sorted(NUM_CLASSES)}")
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; one of {RECIPES}")
        object.__setattr__(self, "model_kwargs", dict(ARCHS[self.family][1][self.size]))
        if self.lr is None:
            object.__setattr__(self, "lr", LR[self.family])

    @property
    def arch(self) -> str:
        return ARCHS[self.family][0]

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.task]

    @property
    def name(self) -> str:
        """Catalog name, e.g. ``zoo-cnn-s-rotate-n1200-s0`` (``-patches`` for the photo task, ``-ft`` if fine-tuned)."""
        n = "all" if self.train_n is None else str(self.train_n)
        parts = ["zoo", self.family, self.size, self.recipe, f"n{n}", f"s{self.seed}"]
        if self.task != "digits":
            parts.append(self.task)
        if self.pretrain:
            parts.append("ft")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["arch"] = self.arch
        d["num_classes"] = self.num_classes
        return d


def _presets() -> dict[str, list[ZooModelConfig]]:
    z = ZooModelConfig
    small = [
        z("cnn", "s", recipe="none"),
        z("cnn", "s", recipe="rotate"),
        z("e2cnn", "s", recipe="none"),
        z("mixer", "s", recipe="none"),
    ]
    full: list[ZooModelConfig] = []
    for fam in ARCHS:  # augmentation recipe x family, small width, all 1200 training digits
        full += [z(fam, "s", recipe=r) for r in RECIPES]
    for fam, (_, sizes) in ARCHS.items():  # width
        full += [z(fam, s, recipe="none") for s in sizes if s != "s"]
    full += [z(fam, "s", recipe="none", train_n=300) for fam in ARCHS]  # training-set size
    pre = z("vit", "s", task="patches", recipe="none")  # pretrain on photo patches, fine-tune on digits
    full += [pre, z("vit", "s", recipe="rotate", pretrain=pre.name), z("cnn", "s", task="patches", recipe="none")]
    for cfg in small:
        assert cfg in full, cfg
    return {"small": small, "full": full}


PRESETS = _presets()


def with_seed(cfg: ZooModelConfig, seed: int) -> ZooModelConfig:
    """``cfg`` trained from another seed; a fine-tuned model then starts from its pretrained model of that seed.

    Seed 0 returns ``cfg`` itself, so the names and cache keys of the presets' models never change.
    """
    if seed == cfg.seed:
        return cfg
    pretrain = cfg.pretrain
    if pretrain is not None:
        by_name = {c.name: c for c in PRESETS["full"]}
        if pretrain not in by_name:
            raise ValueError(f"{cfg.name}: pretrained model {pretrain!r} is not in the grid")
        pretrain = with_seed(by_name[pretrain], seed).name
    return dataclasses.replace(cfg, seed=seed, pretrain=pretrain)


def preset(name: str, only: list[str] | None = None, seeds: Sequence[int] = (0,)) -> list[ZooModelConfig]:
    """The configs of a preset (``small`` or ``full``), optionally filtered by fnmatch patterns on the name.

    Args:
        name: ``small`` or ``full``.
        only: fnmatch patterns on the model names (of every seed); None keeps all.
        seeds: Seeds to train each configuration with (seed 0: the preset's own models, ``...-s0``);
            the models are listed seed by seed.

    Pretrained models a selected fine-tuned model needs are kept (and come first).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown zoo preset {name!r}; one of {sorted(PRESETS)}")
    seeds = list(dict.fromkeys(seeds))
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"zoo seeds must be non-negative integers; got {seeds}")
    cfgs = [with_seed(c, s) for s in seeds for c in PRESETS[name]]
    if only:
        keep = [c for c in cfgs if any(fnmatch.fnmatchcase(c.name, p) for p in only)]
        need = {c.pretrain for c in keep if c.pretrain}
        full = [with_seed(c, s) for s in seeds for c in PRESETS["full"]]
        cfgs = [c for c in full if c.name in need and c not in keep] + keep
    return cfgs


def grid_configs(seeds: Sequence[int] = (0,)) -> dict[str, ZooModelConfig]:
    """Every config of the full grid at ``seeds``, by name."""
    return {c.name: c for c in preset("full", seeds=seeds)}
