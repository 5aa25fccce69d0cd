"""Checks of a sweep's inputs that need a model's architecture (``--img-size``) or its output root,
run before any work (no Ray, no weights, no dataset is read).
"""

from __future__ import annotations

import functools
import json
import os
import warnings

import timm
import torch

from catalog import is_zoo_arch
from pipelines.errors import UsageError
from pipelines.zoo.models import build_zoo_arch

__all__ = ["MIN_IMG_SIZE", "arch_min_img_size", "check_img_size", "check_root_usable"]

MIN_IMG_SIZE = 8
"""The smallest ``--img-size`` accepted for any model, in pixels. A 1-pixel image has no spatial derivative
(its LEE is 0 by construction); a few pixels are below every architecture's stride or patch anyway."""


@functools.lru_cache(maxsize=256)
def _arch_minimum(arch: str, zoo: bool, num_classes: int | None, model_kwargs: str | None) -> int | None:
    try:
        with warnings.catch_warnings(), torch.device("meta"):  # the structure only: no memory, no init cost
            warnings.simplefilter("ignore")
            if zoo:
                model = build_zoo_arch(arch, num_classes=num_classes or 10,
                                       model_kwargs=json.loads(model_kwargs) if model_kwargs else None)
            else:
                model = timm.create_model(arch, pretrained=False)
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on meta: no check beyond the floor
        return None
    sizes = []
    info = getattr(model, "feature_info", None)
    if isinstance(info, list):
        sizes += [int(f["reduction"]) for f in info if isinstance(f, dict) and f.get("reduction")]
    for holder in ("patch_embed", "stem"):
        patch = getattr(getattr(model, holder, None), "patch_size", None)
        if patch is not None:
            sizes += [int(p) for p in (patch if isinstance(patch, tuple | list) else (patch,))]
    return max(sizes) if sizes else None


def arch_min_img_size(spec) -> int | None:
    """The smallest input side ``spec``'s architecture takes: its total stride (the reduction of its last
    feature map, timm ``feature_info``) or its patch size, whichever is larger; None if unknown.

    The model is built on PyTorch's ``meta`` device (no weights, no memory), once per architecture.
    """
    kwargs = None
    if spec.model_kwargs:
        kwargs = json.dumps(spec.model_kwargs, sort_keys=True, default=str)
    return _arch_minimum(spec.arch, is_zoo_arch(spec.arch), spec.num_classes, kwargs)


def check_img_size(img_size: int | None, specs: list) -> None:
    """Refuse an ``--img-size`` below :data:`MIN_IMG_SIZE` or below a selected model's stride / patch size.

    Raises:
        UsageError: Naming the size, the model and its minimum.
    """
    if img_size is None:
        return
    if img_size < 1:
        raise UsageError(f"--img-size must be a positive number of pixels, got {img_size}")
    if img_size < MIN_IMG_SIZE:
        raise UsageError(f"--img-size {img_size} is too small: at least {MIN_IMG_SIZE} pixels (a 1-pixel image has "
                         "no spatial derivative: its LEE would be 0 by construction)")
    too_small = []
    for spec in specs:
        minimum = arch_min_img_size(spec)
        if minimum is not None and img_size < minimum:
            too_small.append(f"{spec.name} (at least {minimum})")
    if too_small:
        more = f" and {len(too_small) - 3} more" if len(too_small) > 3 else ""
        raise UsageError(f"--img-size {img_size} is below the total stride or patch size of "
                         f"{', '.join(too_small[:3])}{more}: the image would not fill one cell of the last "
                         "feature map")


def check_root_usable(store) -> None:
    """What ``--dry-run`` checks of the output root without writing to it.

    A local root must be a directory that this user can write (or, not yet there, be creatable: its nearest
    existing parent is a writable directory). A remote root must answer a listing (done by the caller,
    which reads ``runs/``).

    Raises:
        UsageError: Naming the root and the problem.
    """
    if store.protocol not in ("file", "local"):
        return
    path = store.path
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"output root {store.uri!r} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"output root {store.uri!r} is not writable (permission denied)")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"output root {store.uri!r} cannot be created: {parent!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"output root {store.uri!r} cannot be created: {parent!r} is not writable")
