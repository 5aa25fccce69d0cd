r"""Tangent rules for differentiating images: only the input carries a tangent.

Under ``vmap(jvp(f))`` PyTorch differentiates op by op with general rules: a rule treats
every argument as one that may carry a tangent and runs once per tangent. For a Lie
derivative (one primal, several tangents of the image, parameters constant) five functions
have much cheaper exact rules, which :class:`TangentRules` applies while it is active:

* ``F.linear``: :math:`\dot y = \dot x W^\top`. PyTorch's ``addmm`` rule also multiplies the
  input by a materialized zero weight tangent and adds it (a primal-sized matmul, a fill and
  two adds per layer and pass).
* ``F.layer_norm``: the Jacobian is :math:`\operatorname{diag}(w)\, r P` with the *symmetric*
  projection :math:`P = I - \mathbf 1\mathbf 1^\top/n - \hat x\hat x^\top/n` (:math:`r` the
  reciprocal standard deviation), so the tangent is :math:`w \odot (r P\dot x)`, and
  :math:`r P\dot x` is exactly PyTorch's fused backward of an unweighted layer norm applied
  to :math:`\dot x`: one pass instead of the rule's six.
* ``softmax``: the Jacobian :math:`\operatorname{diag}(y) - y y^\top` is symmetric too: the
  tangent is the fused softmax backward applied to :math:`\dot x`.
* ``F.gelu``, ``F.silu`` (not in place): the derivative is evaluated once on the primal and
  multiplies every tangent, instead of once per tangent.

A rule unpacks the input's primal and tangent (``forward_ad.unpack_dual``), computes the
output and its tangent with plain ops, and returns ``forward_ad.make_dual(output, tangent)``
(no ``autograd.Function``, whose functorch wrappers cost half a millisecond per call).
Weight, bias and layer-norm parameters must carry no tangent; a call that does not qualify
(a weight that depends on the input, an explicit softmax dtype, an in-place SiLU) runs
PyTorch's rule. Rules apply only while grad mode is off, so reverse mode never meets them.
The tests compare every rule with PyTorch's in float64.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["TangentRules"]

Rule = Callable[[torch.Tensor, torch.Tensor, list], tuple[torch.Tensor, torch.Tensor]]
"""``rule(primal, tangent, args) -> (output, output tangent)``; a binder maps a call's other
arguments to ``(rule, args)``, or to None when the call does not qualify."""


def _linear(x, t, args):
    w, b = args
    return F.linear(x, w, b), F.linear(t, w)


def _layer_norm(x, t, args):
    shape, w, b, eps = args
    y, mean, rstd = torch.native_layer_norm(x, shape, w, b, eps)
    input_only = [True, False, False]  # the backward's output mask: no weight or bias gradients
    d = torch.ops.aten.native_layer_norm_backward(t, x, shape, mean, rstd, None, None, input_only)[0]
    return y, (d if w is None else d * w)


def _softmax(x, t, args):
    (dim,) = args
    y = torch.softmax(x, dim)
    return y, torch._softmax_backward_data(t, y, dim, y.dtype)


def _gelu(x, t, args):
    (approximate,) = args
    return F.gelu(x, approximate=approximate), t * torch.ops.aten.gelu_backward(
        torch.ones_like(x), x, approximate=approximate
    )


def _silu(x, t, args):
    return F.silu(x), t * torch.ops.aten.silu_backward(torch.ones_like(x), x)


def _constant(*ts) -> bool:
    return all(t is None or (torch.is_tensor(t) and fwAD.unpack_dual(t).tangent is None) for t in ts)


def _bind(names: tuple[str, ...], defaults: tuple, args: tuple, kwargs: dict) -> list | None:
    """Positional-or-keyword arguments after the input, or None when there are unknown keywords."""
    if len(args) > len(names) or set(kwargs) - set(names[len(args) :]):
        return None
    return list(args) + [kwargs.get(n, d) for n, d in zip(names[len(args) :], defaults[len(args) :], strict=True)]


def _bind_linear(args, kwargs):
    bound = _bind(("weight", "bias"), (None, None), args, kwargs)
    if bound is None or not torch.is_tensor(bound[0]) or not _constant(*bound):
        return None
    return _linear, bound


def _bind_layer_norm(args, kwargs):
    bound = _bind(("normalized_shape", "weight", "bias", "eps"), (None, None, None, 1e-5), args, kwargs)
    if bound is None or not _constant(bound[1], bound[2]):
        return None
    bound[0] = tuple(bound[0])
    return _layer_norm, bound


def _bind_softmax(names: tuple[str, ...]):
    def bind(args, kwargs):
        bound = _bind(names, (None,) * len(names), args, kwargs)
        if bound is None or not isinstance(bound[0], int) or bound[-1] is not None:  # dim, ..., dtype
            return None
        return _softmax, bound[:1]

    return bind


def _bind_gelu(args, kwargs):
    bound = _bind(("approximate",), ("none",), args, kwargs)
    return None if bound is None else (_gelu, bound)


def _bind_silu(args, kwargs):
    bound = _bind(("inplace",), (False,), args, kwargs)
    return None if bound is None or bound[0] else (_silu, [])


_RULES = {
    F.linear: _bind_linear,
    F.layer_norm: _bind_layer_norm,
    F.softmax: _bind_softmax(("dim", "_stacklevel", "dtype")),
    torch.softmax: _bind_softmax(("dim", "dtype")),
    torch.Tensor.softmax: _bind_softmax(("dim", "dtype")),
    F.gelu: _bind_gelu,
    F.silu: _bind_silu,
}
_NAMES: dict[Rule, str] = {
    _linear: "linear",
    _layer_norm: "layer_norm",
    _softmax: "softmax",
    _gelu: "gelu",
    _silu: "silu",
}


class TangentRules(TorchFunctionMode):
    """While active (and grad mode is off), linear, layer norm, softmax, GELU and SiLU calls
    on an input that carries a tangent use liecore's exact rules (module docstring); every
    other call runs as is.

    For ``torch.func.jvp`` calls in which only the input carries a tangent: liecore's Lie
    derivatives enter it around their ``vmap(jvp(f))``. ``rerouted`` counts the calls that
    took a rule, by rule (``linear``, ``layer_norm``, ``softmax``, ``gelu``, ``silu``).
    """

    def __init__(self):
        super().__init__()
        self.rerouted: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bind = _RULES.get(func)
        if bind is not None and args and torch.is_tensor(args[0]) and not torch.is_grad_enabled():
            primal, tangent = fwAD.unpack_dual(args[0])
            hit = None if tangent is None else bind(args[1:], kwargs)
            if hit is not None:
                rule, rest = hit
                self.rerouted[_NAMES[rule]] += 1
                return fwAD.make_dual(*rule(primal, tangent, rest))
        return func(*args, **kwargs)
