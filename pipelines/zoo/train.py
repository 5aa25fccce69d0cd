"""Training the zoo: plain PyTorch on the CPU, deterministic given the seed, cached by content key.

Each model is trained once: its key is ``sha256`` over the config, the fingerprints of the data it is
trained and tested on, ``ZOO_CODE_VERSION`` and (for fine-tuned models) the pretrained model's key. The
checkpoint (safetensors) and its metadata (JSON) are named by that key under ``<out>/models/``; a model
whose two files exist is not trained again. Then ``<out>/zoo.yaml`` is (re)written: one ``file``
checkpoint entry per trained model, with the full training provenance, which ``lee eval -m zoo`` (or
``-m <out>/zoo.yaml``) evaluates like any other catalog.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

import catalog
from pipelines.zoo.data import MEAN, PADDING, STD, TaskData, augment, load_split, normalize
from pipelines.zoo.grid import ZooModelConfig, grid_configs

__all__ = ["ZOO_CODE_VERSION", "TrainedModel", "ZooResult", "evaluate", "train_model", "train_zoo"]

ZOO_CODE_VERSION = 2
IMG_SIZE = 32


@dataclass(frozen=True)
class TrainedModel:
    """One zoo model on disk: its config, checkpoint, metadata and whether this call trained it."""

    config: ZooModelConfig
    checkpoint: Path
    meta: dict[str, Any]
    cached: bool


@dataclass(frozen=True)
class ZooResult:
    """What ``train_zoo`` did: the models (in grid order), the catalog file and the wall time."""

    models: list[TrainedModel]
    catalog: Path
    wall_s: float


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {"torch": str(torch.__version__), "timm": str(timm.__version__), "python": platform.python_version()}
    try:
        import e2cnn

        out["e2cnn"] = str(getattr(e2cnn, "__version__", "?"))
    except ImportError:
        pass
    return out


def _subset(data: TaskData, n: int | None, seed: int) -> TaskData:
    if n is None or n >= len(data):
        return data
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:n].sort().values
    return TaskData(data.task, data.split, data.images[idx], data.labels[idx], data.classes, data.fingerprint)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData, batch_size: int = 256) -> float | None:
    """Top-1 accuracy (fraction) of ``model`` on the labelled images of ``data``; None if none is labelled."""
    model.eval()
    keep = data.labels >= 0
    if not bool(keep.any()):
        return None
    x, y = data.images[keep], data.labels[keep]
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(normalize(x[i : i + batch_size])).argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(y)


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * frac))


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    # e2cnn shares basis buffers between layers: store independent contiguous copies.
    flat = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_json(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True, default=str)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def train_model(
    cfg: ZooModelConfig,
    data: dict[str, TaskData],
    *,
    init: dict[str, torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one config from scratch (or from ``init``, all keys but the head's) and measure its accuracy.

    Args:
        cfg: The model config.
        data: ``train``, ``test`` and ``ood`` splits of ``cfg.task``.
        init: Pretrained state dict for fine-tuning (its ``head.*`` keys are dropped).
        log: Called with one progress line per epoch.

    Returns:
        The trained model (eval mode) and its metrics: train/test/OOD accuracy, train_n, steps, wall_s.
    """
    t0 = time.perf_counter()
    train = _subset(data["train"], cfg.train_n, cfg.seed)
    torch.manual_seed(cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = catalog.build_zoo_arch(
            cfg.arch, num_classes=cfg.num_classes, model_kwargs=cfg.model_kwargs, name=cfg.name
        )
    if init is not None:
        keep = {k: v for k, v in init.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(keep, strict=False)
        if unexpected or any(not k.startswith("head.") for k in missing):
            raise RuntimeError(f"{cfg.name}: pretrained weights do not fit: missing {missing}, unexpected {unexpected}")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            x = normalize(augment(train.images[idx], cfg.recipe, gen, PADDING[cfg.task]))
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, steps_per_epoch, cfg.lr)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            step += 1
        if log:
            log(f"  {cfg.name} epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / n:.3f}")
    model.eval()
    metrics = {
        "train_n": n,
        "steps": total,
        "train_acc": evaluate(model, train),
        "test_acc": evaluate(model, data["test"]),
        "ood_acc": evaluate(model, data["ood"]),
        "chance_acc": 1.0 / cfg.num_classes,
        "train_wall_s": round(time.perf_counter() - t0, 2),
    }
    return model, metrics


def _spec_entry(cfg: ZooModelConfig, ckpt: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The catalog entry (a ``ModelSpec`` mapping) of a trained model."""
    return {
        "name": cfg.name,
        "arch": cfg.arch,
        "source": "file",
        "checkpoint": str(ckpt.resolve()),
        "family": cfg.family,
        "params_m": round(meta["params"] / 1e6, 6),
        "pretrain_data": meta["pretrain_task"] or cfg.task,
        "recipe": cfg.recipe,
        "img_size": IMG_SIZE,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": list(MEAN),
        "std": list(STD),
        "model_kwargs": dict(cfg.model_kwargs),
        "num_classes": cfg.num_classes,
        "in_chans": 3,
        "training": {
            k: meta[k]
            for k in (
                "task",
                "size",
                "classes",
                "train_n",
                "recipe",
                "seed",
                "epochs",
                "batch_size",
                "lr",
                "weight_decay",
                "steps",
                "train_acc",
                "test_acc",
                "ood_acc",
                "chance_acc",
                "params",
                "pretrain",
                "pretrain_task",
                "data_fingerprint",
                "key",
                "code_version",
                "versions",
                "train_wall_s",
                "threads",
            )
        },
    }


def _groups(models: Sequence[TrainedModel]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}

    def add(group: str, name: str) -> None:
        groups.setdefault(group, []).append(name)

    for m in models:
        c = m.config
        add(f"family-{c.family}", c.name)
        add(f"task-{c.task}", c.name)
        add(f"seed-{c.seed}", c.name)
        if c.task == "digits" and c.train_n is None and not c.pretrain:
            add(f"recipe-{c.recipe}", c.name)
            if c.size == "s" and c.recipe == "none" and c.seed == 0:
                add("table1", c.name)  # one model per family, same data and recipe
    return dict(sorted(groups.items()))


def write_catalog(models: Sequence[TrainedModel], path: Path, *, preset: str | None = None) -> Path:
    """Write (merge into) the zoo catalog file: existing entries of other models are kept if their checkpoint exists."""
    entries: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            old = catalog.load_catalog_file(path)
        except catalog.CatalogError:
            old = []
        for spec in old:
            if spec.checkpoint and Path(spec.checkpoint).exists():
                entries[spec.name] = {k: v for k, v in spec.to_dict().items() if v is not None and k != "version"}
    for m in models:
        entries[m.config.name] = _spec_entry(m.config, m.checkpoint, m.meta)
    # Rebuild the groups over every entry (configs of the kept entries from their metadata).
    seeds = sorted({int((e.get("training") or {}).get("seed") or 0) for e in entries.values()} | {0})
    by_name = grid_configs(seeds)
    known = [TrainedModel(by_name[n], Path(e["checkpoint"]), {}, True) for n, e in entries.items() if n in by_name]
    doc = {
        "name": "zoo",
        "description": "Models trained offline by `lee zoo train` on rotated digits and photo patches "
        "(catalog/_zoo_data.py); file checkpoints with their training provenance.",
        "version": 1,
        "trained": {"last_preset": preset, "code_version": ZOO_CODE_VERSION, "versions": _versions()},
        "models": list(entries.values()),
        "groups": _groups(known),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".zoo-", suffix=".yaml", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Written by `lee zoo train`; do not edit (rerun it instead).\n")
        yaml.safe_dump(doc, fh, sort_keys=False, width=120)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    catalog.load_catalog_file(path)  # what we wrote must load
    return path


def train_zoo(
    configs: Sequence[ZooModelConfig],
    out: str | Path,
    *,
    force: bool = False,
    preset: str | None = None,
    threads: int | None = 2,
    log: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> ZooResult:
    """Train (or reuse) every config and write ``<out>/zoo.yaml``.

    Args:
        configs: Models to train; a fine-tuned model's pretrained model must come before it.
        out: Output folder (``models/`` and ``zoo.yaml`` go there).
        force: Retrain even if the checkpoint exists.
        preset: Preset name, recorded in the catalog.
        threads: ``torch.set_num_threads`` while training (None: leave as is).
        log: Called with progress lines (one per model; per epoch if ``verbose``).
        verbose: Log every epoch.

    Returns:
        The models, the catalog path and the wall time.
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser()
    (out / "models").mkdir(parents=True, exist_ok=True)
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    data: dict[str, dict[str, TaskData]] = {}
    done: dict[str, TrainedModel] = {}
    say = log or (lambda _s: None)
    try:
        for cfg in configs:
            if cfg.task not in data:
                tr = load_split(cfg.task, "train")
                data[cfg.task] = {
                    "train": tr,
                    "test": load_split(cfg.task, "test", tr.classes),
                    "ood": load_split(cfg.task, "ood", tr.classes),
                }
            d = data[cfg.task]
            fingerprint = {s: d[s].fingerprint for s in ("train", "test", "ood")}
            pre = None
            if cfg.pretrain:
                if cfg.pretrain not in done:
                    raise ValueError(f"{cfg.name}: pretrained model {cfg.pretrain!r} must be trained first")
                pre = done[cfg.pretrain]
            key = _sha(
                {
                    "config": cfg.to_dict(),
                    "data": fingerprint,
                    "code": ZOO_CODE_VERSION,
                    "pretrain": pre.meta["key"] if pre else None,
                }
            )
            stem = f"{cfg.name}-{key[:12]}"
            ckpt, meta_path = out / "models" / f"{stem}.safetensors", out / "models" / f"{stem}.json"
            if ckpt.exists() and meta_path.exists() and not force:
                meta = json.loads(meta_path.read_text())
                done[cfg.name] = TrainedModel(cfg, ckpt, meta, cached=True)
                say(f"cached   {cfg.name:<40} test acc {meta['test_acc']:.3f}")
                continue
            init = None
            if pre is not None:
                init, _ = catalog.read_checkpoint(str(pre.checkpoint))
            model, metrics = train_model(cfg, d, init=init, log=say if verbose else None)
            meta = {
                **cfg.to_dict(),
                **metrics,
                "classes": list(d["train"].classes),
                "params": sum(p.numel() for p in model.parameters()),
                "pretrain_task": pre.config.task if pre else None,
                "data_fingerprint": fingerprint,
                "key": key,
                "code_version": ZOO_CODE_VERSION,
                "versions": _versions(),
                "threads": torch.get_num_threads(),
            }
            _save_safetensors(model.state_dict(), ckpt)
            _write_json(meta, meta_path)
            done[cfg.name] = TrainedModel(cfg, ckpt, meta, cached=False)
            ood = "-" if meta["ood_acc"] is None else f"{meta['ood_acc']:.3f}"
            say(
                f"trained  {cfg.name:<40} train {meta['train_acc']:.3f} test {meta['test_acc']:.3f} "
                f"ood {ood}  ({meta['train_wall_s']:.0f}s)"
            )
    finally:
        torch.set_num_threads(prev_threads)
    models = [done[c.name] for c in configs]
    path = write_catalog(models, out / "zoo.yaml", preset=preset)
    return ZooResult(models, path, time.perf_counter() - t0)
