"""The zoo's training data: the catalog's task splits as tensors, and the augmentation recipes.

Images come from the catalog datasets (``digits-train`` ...), decoded exactly as ``lee eval`` decodes
them, so what a model is trained on and what it is measured on are the same bytes (same fingerprint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import catalog

__all__ = ["MEAN", "STD", "TaskData", "augment", "load_split", "normalize"]

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
# Out-of-frame fill when augmenting: digits sit on black, photo crops continue by reflection.
PADDING = {"digits": "zeros", "patches": "reflection"}


@dataclass(frozen=True)
class TaskData:
    """One split of a zoo task.

    Attributes:
        task: ``digits`` or ``patches``.
        split: ``train``, ``test`` or ``ood``.
        images: ``(N, 3, 32, 32)`` float32 in [0, 1].
        labels: ``(N,)`` int64 class indices into ``classes`` (-1 for labels outside them).
        classes: Class names (sorted labels of the train split).
        fingerprint: The catalog dataset's fingerprint.
    """

    task: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    fingerprint: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(task: str, split: str, classes: tuple[str, ...] | None = None) -> TaskData:
    """Load a catalog split (``<task>-<split>``) as tensors; ``classes`` default to the split's sorted labels."""
    imset = catalog.load_dataset(f"{task}-{split}")
    if imset.errors:
        raise RuntimeError(f"{task}-{split}: {len(imset.errors)} images cannot be decoded: {imset.errors[:2]}")
    labels = [str(im.label) for im in imset.images]
    classes = classes or tuple(sorted(set(labels)))
    index = {c: i for i, c in enumerate(classes)}

    arr = np.stack([im.array for im in imset.images])  # (N, H, W, 3) uint8
    images = torch.from_numpy(arr).permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()
    y = torch.tensor([index.get(lab, -1) for lab in labels], dtype=torch.int64)
    return TaskData(task, split, images, y, classes, imset.fingerprint)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the zoo models' input normalization (mean 0.5, std 0.5 per channel)."""
    mean = torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, recipe: str, gen: torch.Generator, padding: str = "zeros") -> torch.Tensor:
    """Apply an augmentation recipe to a batch of [0, 1] images, drawing from ``gen`` (deterministic).

    Args:
        x: ``(B, 3, H, W)`` images in [0, 1].
        recipe: ``none``; ``translate``: shifts uniform in +-4 px; ``rotate``: angle uniform in
            [-180, 180) degrees; ``strong``: rotation, +-4 px shift, scale uniform in [0.85, 1.15] and
            Gaussian pixel noise (sigma 0.05).
        gen: CPU random generator.
        padding: ``grid_sample`` padding mode for pixels that come from outside the frame.

    Returns:
        The augmented batch (bilinear resampling), same shape.
    """
    if recipe == "none":
        return x
    b, _, h, w = x.shape

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    zero = torch.zeros(b, dtype=torch.float64)
    angle = uniform(-math.pi, math.pi) if recipe in ("rotate", "strong") else zero
    shift = 4.0 if recipe in ("translate", "strong") else 0.0
    tx = uniform(-shift, shift) * (2.0 / w) if shift else zero
    ty = uniform(-shift, shift) * (2.0 / h) if shift else zero
    scale = uniform(0.85, 1.15) if recipe == "strong" else torch.ones(b, dtype=torch.float64)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    if recipe == "strong":
        out = (out + 0.05 * torch.randn(out.shape, generator=gen, dtype=out.dtype)).clamp_(0.0, 1.0)
    return out
