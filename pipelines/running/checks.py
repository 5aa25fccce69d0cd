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

from catalog import build_zoo_arch, is_zoo_arch
from pipelines.errors import UsageError
from pipelines.spec import flagcheck

__all__ = [
    "MIN_IMG_SIZE",
    "arch_min_img_size",
    "available_memory",
    "check_img_size",
    "check_root_usable",
    "derivative_bytes",
]

MIN_IMG_SIZE = flagcheck.MIN_IMG_SIZE
"""The smallest ``--img-size`` accepted for any model (:data:`pipelines.spec.flagcheck.MIN_IMG_SIZE`)."""


@functools.lru_cache(maxsize=256)
def _arch_minimum(arch: str, zoo: bool, num_classes: int | None, model_kwargs: str | None) -> int | None:
    try:
        with warnings.catch_warnings(), torch.device("meta"):  # the structure only: no memory, no init cost
            warnings.simplefilter("ignore")
            if zoo:
                model = build_zoo_arch(
                    arch, num_classes=num_classes or 10, model_kwargs=json.loads(model_kwargs) if model_kwargs else None
                )
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


JVP_FACTOR = 2
"""Copies of every layer output a forward-mode derivative holds at once: the primal and its tangent."""


@functools.lru_cache(maxsize=256)
def _activation_bytes(
    arch: str, zoo: bool, num_classes: int | None, model_kwargs: str | None, img_size: int | None
) -> tuple[int, int] | None:
    """(bytes of every leaf layer's output for one image, the side they were measured at), from a forward on
    PyTorch's ``meta`` device (shapes only: no memory, no compute); None if the model cannot run there."""
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            if zoo:
                model = build_zoo_arch(
                    arch, num_classes=num_classes or 10, model_kwargs=json.loads(model_kwargs) if model_kwargs else None
                )
                chans, side = 3, img_size or 32
            else:
                model = timm.create_model(arch, pretrained=False)
                chans, _, side = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
            total = [0]

            def hook(_module, _inputs, output) -> None:
                for t in output if isinstance(output, tuple | list) else (output,):
                    if isinstance(t, torch.Tensor):
                        total[0] += t.numel() * t.element_size()

            handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
            try:
                with torch.no_grad():
                    model.eval()(torch.empty(1, int(chans), int(side), int(side)))
            finally:
                for h in handles:
                    h.remove()
    except Exception:  # noqa: BLE001 - a model that cannot run on meta: no estimate (the floor checks stay)
        return None
    return total[0], int(side)


def derivative_bytes(spec, img_size: int) -> tuple[int, int, int] | None:
    """A lower bound of the memory one image's forward-mode derivative takes at ``img_size``:
    ``(bytes, bytes of the layer outputs at the reference side, that side)``, or None if unknown.

    The layer outputs are measured once per architecture at its own input size (a ``meta`` forward) and
    scaled by the pixel count, times :data:`JVP_FACTOR` (primal and tangent). Attention grows faster than
    the pixel count, and the derivative needs workspace beyond the outputs: the real need is larger.
    """
    kwargs = json.dumps(spec.model_kwargs, sort_keys=True, default=str) if spec.model_kwargs else None
    found = _activation_bytes(spec.arch, is_zoo_arch(spec.arch), spec.num_classes, kwargs, spec.img_size)
    if found is None or found[0] <= 0:
        return None
    ref, side = found
    return int(ref * (img_size / side) ** 2 * JVP_FACTOR), ref, side


def available_memory() -> tuple[int, str] | None:
    """(bytes, what) of the memory a unit computed on this machine can use: the first GPU's when CUDA is
    visible, else the host's (its cgroup limit, if lower); None if unknown."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), f"GPU 0 ({props.name})"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            return int(text), "host memory (cgroup limit)"
    return int(total), "host memory"


def _gib(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1024:.3g} KiB"


def check_img_size(img_size: int | None, specs: list, memory: tuple[int, str] | None = None) -> None:
    """Refuse an ``--img-size`` below :data:`MIN_IMG_SIZE` or below a selected model's stride / patch size, or
    so large that one image's derivative cannot fit in memory (:func:`derivative_bytes` against
    :func:`available_memory`, or ``memory``).

    Raises:
        UsageError: Naming the size, the model and its minimum, or the memory estimate and what there is.
    """
    if img_size is None:
        return
    flagcheck.check_img_size_floor(img_size)
    too_small = []
    for spec in specs:
        minimum = arch_min_img_size(spec)
        if minimum is not None and img_size < minimum:
            too_small.append(f"{spec.name} (at least {minimum})")
    if too_small:
        more = f" and {len(too_small) - 3} more" if len(too_small) > 3 else ""
        raise UsageError(
            f"--img-size {img_size} is below the total stride or patch size of "
            f"{', '.join(too_small[:3])}{more}: the image would not fill one cell of the last "
            "feature map"
        )
    check_img_size_memory(img_size, specs, memory)


def check_img_size_memory(img_size: int, specs: list, memory: tuple[int, str] | None = None) -> None:
    """Refuse an ``--img-size`` whose derivative needs more memory than there is, for the largest need among
    ``specs`` (the check of :func:`check_img_size`); nothing when the machine's memory or the model's is unknown."""
    if not specs:
        return
    memory = memory or available_memory()
    if memory is None:
        return
    have, where = memory
    worst = None
    for spec in specs:
        need = derivative_bytes(spec, img_size)
        if need is not None and need[0] > have and (worst is None or need[0] > worst[1][0]):
            worst = (spec, need)
    if worst is not None:
        spec, (need, ref, side) = worst
        raise UsageError(
            f"--img-size {img_size} is too large for {spec.name}: one image's derivative needs at least {_gib(need)} "
            f"(its layer outputs take {_gib(ref)} per image at {side} px, x ({img_size}/{side})^2 pixels, x "
            f"{JVP_FACTOR} for the tangents) and this machine has {_gib(have)} ({where}); "
            f"sizes above about {int(side * (have / (ref * JVP_FACTOR)) ** 0.5)} px cannot fit"
        )


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
