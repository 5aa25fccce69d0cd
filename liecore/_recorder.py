"""The forward hooks that record or perturb layer calls, for every per-layer computation.

One :class:`LayerRecorder` serves :func:`liecore.layerwise` (record every layer call, then
add vectors to their outputs) and the per-layer metrics :func:`liecore.metrics.eq_layerwise`
and :func:`liecore.metrics.sampled_layerwise` (record the input and output of named layers).
It owns its hooks: they are registered on entering the context and removed on exit, and
outside :meth:`LayerRecorder.record` and :meth:`LayerRecorder.inject` they do nothing.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LayerCall", "LayerRecorder", "layer_input"]


@dataclass
class LayerCall:
    """One recorded call of a layer.

    Attributes:
        name: qualified module name.
        module: the layer.
        args, kwargs: its other arguments (held fixed by :meth:`apply`).
        x: a copy of its input taken before the call (None when the recorder keeps no
            inputs, or when the call had no tensor input; see :func:`layer_input`).
        y: a copy of its output taken after the call (the output itself when it is not a
            tensor).
        is_input: whether its input was the tensor given to :meth:`LayerRecorder.record`.
        key: the input's keyword when the layer was called with it by name, else None.
        found: whether the call had a tensor input (by :func:`layer_input`).
    """

    name: str
    module: nn.Module
    args: tuple
    kwargs: dict
    x: torch.Tensor | None
    y: Any
    is_input: bool
    key: str | None = None
    found: bool = True

    def apply(self, a: torch.Tensor) -> torch.Tensor:
        """The layer on input ``a``, its other arguments held fixed."""
        if self.key is None:
            return self.module(a, *self.args, **self.kwargs)
        return self.module(*self.args, **{self.key: a}, **self.kwargs)

    @property
    def is_tensor_call(self) -> bool:
        """Whether the call had a tensor input and returned a tensor (the calls :meth:`LayerRecorder.inject` counts)."""
        return self.found and isinstance(self.y, torch.Tensor)


def _input_name(mod: nn.Module) -> str | None:
    """Name of the first parameter of ``mod.forward`` when it can be passed by keyword."""
    try:
        params = list(inspect.signature(mod.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if params and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
        return params[0].name
    return None


def layer_input(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, str | None] | None:
    """``(input, keyword)`` of a layer call: its first positional argument, else the first
    parameter of ``forward`` passed by keyword (keyword ``None`` for positional); None when
    that is not a tensor. The record and inject passes both count calls by this rule."""
    if args:
        return (args[0], None) if isinstance(args[0], torch.Tensor) else None
    key = _input_name(mod)
    if key is not None and isinstance(kwargs.get(key), torch.Tensor):
        return kwargs[key], key
    return None


class LayerRecorder(contextlib.AbstractContextManager):
    """Context manager that owns forward hooks on chosen layers of a model.

    Args:
        model: the network (its hooks are on ``units``, modules inside it).
        units: ``(qualified name, module)`` of the layers to hook.
        inputs: whether :meth:`record` keeps a copy of each call's input.

    On entry it registers the hooks, on exit it removes every handle (nothing is left on the
    modules). :meth:`record` runs a function and returns every call of the hooked layers;
    :meth:`inject` runs it and adds ``scale[slot] * v`` to the output of the ``k``-th call
    that has a tensor input and output, for the vectors set by :meth:`set_vectors`.
    """

    def __init__(self, model: nn.Module, units: Sequence[tuple[str, nn.Module]], *, inputs: bool = True):
        self.model = model
        self.units = list(units)
        self.inputs = inputs
        self._handles: list = []
        self._mode = "off"
        self._calls: list[LayerCall] = []
        self._pending: list[tuple | None] = []  # one entry per open call (pre hook to post hook)
        self._x: torch.Tensor | None = None
        self._k = 0
        self._scale: torch.Tensor | None = None
        self._vectors: list[torch.Tensor | None] = []
        self._slots: list[int] = []

    def __enter__(self) -> LayerRecorder:
        for name, mod in self.units:
            self._handles.append(mod.register_forward_pre_hook(self._pre(), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._pending.clear()
        self._mode = "off"

    def record(self, f: Callable[[torch.Tensor], Any], x: torch.Tensor) -> tuple[Any, list[LayerCall]]:
        """``(f(x), the calls of the hooked layers in call order)``.

        Inputs are copied before each call (a layer may write into its input,
        ``ReLU(inplace=True)``) and outputs after it (a later layer may write into them).
        """
        self._calls, self._pending, self._x = [], [], x
        self._mode = "record"
        try:
            y = f(x)
        finally:
            self._mode, self._x = "off", None
            self._pending.clear()
        return y, self._calls

    def set_vectors(self, vectors: Sequence[torch.Tensor | None]) -> int:
        """Set what :meth:`inject` adds: ``vectors[k]`` to the ``k``-th counted call's output
        (nothing where None). Returns the number of slots, one per vector that is not None, in order."""
        self._vectors = list(vectors)
        self._slots = [0] * len(self._vectors)
        active = [i for i, v in enumerate(self._vectors) if v is not None]
        for slot, i in enumerate(active):
            self._slots[i] = slot
        return len(active)

    def inject(
        self, f: Callable[[torch.Tensor], Any], x: torch.Tensor, scale: torch.Tensor | Sequence[torch.Tensor]
    ) -> Any:
        """``f(x)`` with ``scale[slot] * vectors[k]`` added to the output of the ``k``-th call
        that has a tensor input and output; ``scale`` is ``(slots,)`` or ``(slots, B)``
        (one scale per image), or a sequence of one tensor per slot shaped like that slot's
        vector (one scale per element, :func:`liecore.explain`)."""
        self._mode, self._k, self._scale = "inject", 0, scale
        try:
            return f(x)
        finally:
            self._mode, self._scale = "off", None

    def _pre(self):
        def hook(mod, args, kwargs):
            if self._mode == "record":
                found = layer_input(mod, args, kwargs)
                entry = None
                if found is not None:
                    inp, key = found
                    rest_args = args[1:] if key is None else args
                    rest_kwargs = dict(kwargs) if key is None else {k: v for k, v in kwargs.items() if k != key}
                    # clone: in-place layers (ReLU(inplace=True)) overwrite their input
                    x = inp.detach().clone() if self.inputs else None
                    entry = (rest_args, rest_kwargs, x, inp is self._x, key)
                self._pending.append(entry)
            return None

        return hook

    def _post(self, name: str):
        def hook(mod, args, kwargs, output):
            if self._mode == "record":
                entry = self._pending.pop() if self._pending else None
                y = output.detach().clone() if isinstance(output, torch.Tensor) else output
                if entry is None:
                    self._calls.append(LayerCall(name, mod, args, dict(kwargs), None, y, False, found=False))
                else:
                    rest_args, rest_kwargs, x, is_input, key = entry
                    self._calls.append(LayerCall(name, mod, rest_args, rest_kwargs, x, y, is_input, key))
                return None
            if self._mode != "inject":
                return None
            if not isinstance(output, torch.Tensor) or layer_input(mod, args, kwargs) is None:
                return None
            k = self._k
            self._k += 1
            v = self._vectors[k]
            if v is None:
                return None
            if v.shape != output.shape:
                raise RuntimeError(f"layer call {k} ({name}) changed shape between passes")
            s = self._scale[self._slots[k]]
            if s.ndim and s.shape != output.shape:  # per-image scale (stochastic method)
                s = s.reshape(-1, *([1] * (output.ndim - 1)))
            return output + s * v

        return hook
