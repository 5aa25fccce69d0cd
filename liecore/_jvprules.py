r"""Tangent rules for differentiating images: only the input carries a tangent.

Under ``vmap(jvp(f))`` PyTorch differentiates op by op with general rules: a rule treats
every argument as one that may carry a tangent, and evaluates the whole rule once per
tangent. For a Lie derivative (one primal, several tangents of the image, parameters
constant) five functions have much cheaper exact rules, which :class:`TangentRules` reroutes
to while it is active:

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

Weight, bias and layer-norm parameters must come from outside the transforms (module
parameters and buffers, which carry no tangent); a call that does not qualify (a weight or
bias computed in ``forward``, an explicit softmax dtype, an in-place SiLU) runs PyTorch's
rule.
Calls are rerouted only while grad mode is off, so reverse mode never meets these rules.
The tests compare every rule with PyTorch's in float64.
"""

from __future__ import annotations

import collections

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.autograd import Function
from torch.overrides import TorchFunctionMode

__all__ = ["TangentRules"]


class _Const:
    """Opaque holder of an op's other arguments: ``autograd.Function`` sees no tensor in it,
    so it materializes no zero tangent for them."""

    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args


class _Rule(Function):
    """``forward(x, const)`` with one differentiable input; ``jvp`` sees the primal input and
    output through ``ctx.saved_tensors`` and the other arguments as ``ctx.args``."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.args = inputs[1].args
        ctx.save_for_forward(inputs[0], output)

    @staticmethod
    def backward(ctx, *grads):  # pragma: no cover - rerouted only while grad mode is off
        raise RuntimeError("liecore's tangent rules are for forward-mode differentiation only")


class _Linear(_Rule):
    rule_name = "linear"

    @staticmethod
    def forward(x, c):
        return F.linear(x, *c.args)

    @staticmethod
    def jvp(ctx, xt, _):
        return F.linear(xt, ctx.args[0])


class _LayerNorm(_Rule):
    rule_name = "layer_norm"

    @staticmethod
    def forward(x, c):
        return F.layer_norm(x, *c.args)

    @staticmethod
    def jvp(ctx, xt, _):
        (x, _y), (shape, w, _b, eps) = ctx.saved_tensors, ctx.args
        _, mean, rstd = torch.native_layer_norm(x, shape, None, None, eps)
        d = torch.ops.aten.native_layer_norm_backward(
            xt, x, shape, mean, rstd, None, None, [True, False, False]
        )[0]
        return d if w is None else d * w


class _Softmax(_Rule):
    rule_name = "softmax"

    @staticmethod
    def forward(x, c):
        return torch.softmax(x, c.args[0])

    @staticmethod
    def jvp(ctx, xt, _):
        (_x, y), (dim,) = ctx.saved_tensors, ctx.args
        return torch._softmax_backward_data(xt, y, dim, y.dtype)


class _Gelu(_Rule):
    rule_name = "gelu"

    @staticmethod
    def forward(x, c):
        return F.gelu(x, approximate=c.args[0])

    @staticmethod
    def jvp(ctx, xt, _):
        (x, _y), (approximate,) = ctx.saved_tensors, ctx.args
        return xt * torch.ops.aten.gelu_backward(torch.ones_like(x), x, approximate=approximate)


class _Silu(_Rule):
    rule_name = "silu"

    @staticmethod
    def forward(x, c):
        return F.silu(x)

    @staticmethod
    def jvp(ctx, xt, _):
        (x, _y) = ctx.saved_tensors
        return xt * torch.ops.aten.silu_backward(torch.ones_like(x), x)


_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def _constant(*ts) -> bool:
    """Tensors made outside every ``torch.func`` transform (parameters, buffers): they carry no
    tangent and may be closed over. A tensor computed inside ``f`` (timm's BEiT concatenates
    its qkv bias in ``forward``) is not: such calls keep PyTorch's rule."""
    if _is_wrapped is None:  # pragma: no cover - a torch without the query: no rerouting
        return False
    return all(
        t is None or (torch.is_tensor(t) and not _is_wrapped(t) and fwAD.unpack_dual(t).tangent is None)
        for t in ts
    )


def _bind(names: tuple[str, ...], defaults: tuple, args: tuple, kwargs: dict) -> list | None:
    """Positional-or-keyword arguments after the input, or None when there are unknown keywords."""
    if len(args) > len(names) or set(kwargs) - set(names[len(args) :]):
        return None
    return list(args) + [
        kwargs.get(n, d) for n, d in zip(names[len(args) :], defaults[len(args) :], strict=True)
    ]


def _linear(args, kwargs):
    bound = _bind(("weight", "bias"), (None, None), args, kwargs)
    if bound is None or not torch.is_tensor(bound[0]) or not _constant(*bound):
        return None
    return _Linear, bound


def _layer_norm(args, kwargs):
    bound = _bind(("normalized_shape", "weight", "bias", "eps"), (None, None, None, 1e-5), args, kwargs)
    if bound is None or not _constant(bound[1], bound[2]):
        return None
    bound[0] = tuple(bound[0])
    return _LayerNorm, bound


def _softmax(names: tuple[str, ...]):
    def bind(args, kwargs):
        bound = _bind(names, (None,) * len(names), args, kwargs)
        if bound is None or not isinstance(bound[0], int) or bound[-1] is not None:  # dim, ..., dtype
            return None
        return _Softmax, bound[:1]

    return bind


def _gelu(args, kwargs):
    bound = _bind(("approximate",), ("none",), args, kwargs)
    return None if bound is None else (_Gelu, bound)


def _silu(args, kwargs):
    bound = _bind(("inplace",), (False,), args, kwargs)
    return None if bound is None or bound[0] else (_Silu, [])


_RULES = {
    F.linear: _linear,
    F.layer_norm: _layer_norm,
    F.softmax: _softmax(("dim", "_stacklevel", "dtype")),
    torch.softmax: _softmax(("dim", "dtype")),
    torch.Tensor.softmax: _softmax(("dim", "dtype")),
    F.gelu: _gelu,
    F.silu: _silu,
}


class TangentRules(TorchFunctionMode):
    """While active (and grad mode is off), linear, layer norm, softmax, GELU and SiLU calls
    that qualify use liecore's exact rules (module docstring); every other call runs as is.

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
            hit = bind(args[1:], kwargs)
            if hit is not None:
                rule, rest = hit
                self.rerouted[rule.rule_name] += 1
                return rule.apply(args[0], _Const(*rest))
        return func(*args, **kwargs)
