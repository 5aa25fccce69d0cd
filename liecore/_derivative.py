r"""Lie derivatives by forward-mode automatic differentiation.

.. math::

    L_X f(x) = \frac{d}{dt}\Big|_{t=0} \rho_{out}(e^{tX})^{-1} f(\rho_{in}(e^{tX}) x)
             = D f(x)[T_X x] - T_X f(x),

the second term only where the output moves (spatial maps, the grid part of token
sequences) and only for the spatial part of :math:`X`. :math:`D f(x)[v]` is one
Jacobian-vector product (``torch.func.jvp``); several generators share one primal pass
(``vmap`` over tangents).

Properties: linear in :math:`X`; zero for every :math:`X` when :math:`f` is equivariant in
the declared layouts; :math:`[L_X, L_Y] = L_{[X,Y]}` (for the continuum operators).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import jvp, vmap

from ._action import input_tangent
from ._generators import Generator, resolve_generators
from ._grid import Interpolation, check_interpolation, spatial_tangent_nchw
from ._jvprules import TangentRules
from ._layout import Layout

__all__ = [
    "Probs",
    "differentiable_mode",
    "lie_derivative",
    "lie_derivatives",
    "output_tangent",
    "resolve_output",
    "with_output",
]

OUTPUTS = ("probs", "logits")


@contextlib.contextmanager
def differentiable_mode(f, *, grad: bool = False) -> Iterator[None]:
    r"""Make ``f`` safe and deterministic for forward-mode AD, restoring it on exit.

    * modules in eval mode (batch statistics and dropout would make :math:`f` random);
    * fused attention off: every submodule attribute ``fused_attn`` set to ``False`` (timm's
      flag) and PyTorch's scaled-dot-product attention limited to the math kernel, the only
      one with a forward-mode derivative on every device;
    * no autograd graph for the primal (``torch.no_grad``) unless ``grad=True``: forward-mode
      AD does not need one.
    """
    modules = list(f.modules()) if isinstance(f, nn.Module) else []
    was_training = [(m, m.training) for m in modules]
    fused = [(m, m.fused_attn) for m in modules if isinstance(getattr(m, "fused_attn", None), bool)]
    try:
        for m in modules:
            m.training = False
        for m, _ in fused:
            m.fused_attn = False
        with contextlib.ExitStack() as stack:
            try:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            except ImportError:  # pragma: no cover - older torch
                pass
            if not grad:
                stack.enter_context(torch.no_grad())
            yield
    finally:
        for m, mode in was_training:
            m.training = mode
        for m, flag in fused:
            m.fused_attn = flag


class Probs(nn.Module):
    """Softmax probabilities of a classifier ``f`` returning logits.

    A module holding ``f`` (as a submodule when ``f`` is one), so that
    :func:`differentiable_mode` on the wrapper reaches ``f``'s modules: eval mode and fused
    attention off apply through it.
    """

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.f(x), dim=-1)


def with_output(f: Callable[[torch.Tensor], torch.Tensor], output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a classifier returning logits so that it returns ``output`` (``probs`` or ``logits``).

    For ``probs`` the result is a :class:`Probs` module holding ``f``.
    """
    if output == "logits":
        return f
    if output == "probs":
        return Probs(f)
    raise ValueError(f"unknown output {output!r}; choose one of {OUTPUTS}")


def resolve_output(
    f: Callable[[torch.Tensor], torch.Tensor], layout: Layout, output: str | None
) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """``(the function to differentiate, the output's name)`` of ``f`` with output ``layout``.

    ``output=None`` means ``"probs"`` for invariant outputs (classifiers) and ``"raw"`` for
    spatial and token outputs, which are always used as they are; ``"probs"`` and
    ``"logits"`` apply to classifiers only (see :func:`with_output`).
    """
    if output is None:
        output = "probs" if layout.kind == "invariant" else "raw"
    if output == "raw":
        return f, output
    if layout.kind != "invariant":
        raise ValueError(f"output={output!r} applies to classifiers; a {layout.kind} output is used raw")
    return with_output(f, output), output


def output_tangent(
    y: torch.Tensor, generator: Generator, layout: Layout, interpolation: Interpolation
) -> torch.Tensor | None:
    r""":math:`T_X y` for an output ``y`` of the declared layout (None when it is zero)."""
    if not layout.moves or not generator.is_spatial:
        return None
    layout.check(y, "output")
    prefix, grid = layout.to_nchw(y)
    tg = spatial_tangent_nchw(grid, generator.matrix, interpolation)
    return layout.from_nchw(None if prefix is None else torch.zeros_like(prefix), tg)


def batched_jvp(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tangents: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x), stack of Df(x)[t] for t in tangents)``: the primal once per chunk, the
    tangents vectorized (``vmap`` over ``jvp``).

    Each primal pass gets its own copy of ``x``: a layer that writes into its input
    (``ReLU(inplace=True)`` first) must neither change the caller's tensor nor the input of
    the next chunk. Linear layers, layer norms, softmax, GELU and SiLU use the exact rules
    of :class:`~liecore._jvprules.TangentRules` (only ``x`` carries a tangent here).
    """
    with TangentRules():
        if len(tangents) == 1:
            y, dy = jvp(f, (x.clone(),), (tangents[0],))
            return y, dy.unsqueeze(0)
        step = chunk_size or len(tangents)
        parts = []
        for start in range(0, len(tangents), step):
            y, d = vmap(lambda t: jvp(f, (x.clone(),), (t,)), out_dims=(None, 0))(tangents[start : start + step])
            parts.append(d)
    return y, torch.cat(parts)


def lie_derivatives(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    generators: Sequence[str | Generator] | str | Generator | None = None,
    *,
    out_layout: Layout | None = None,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Lie derivatives of ``f`` at images ``x`` along several generators in one pass.

    Args:
        f: a callable (typically an ``nn.Module``) mapping ``(B, C, H, W)`` images to outputs
            of layout ``out_layout``; samples must be processed independently.
        x: images ``(B, C, H, W)`` (normalized intensities); dtype and device are kept.
        generators: names or :class:`Generator` objects (default: the paper's eight).
        out_layout: how the output transforms (default :meth:`Layout.invariant`).
        interpolation: ``"cubic"`` (central differences) or ``"spectral"``.
        mean, std: the model's per-channel normalization, for colour generators.
        chunk_size: process at most this many generators per vectorized pass (memory).

    Returns:
        ``(f(x), L)`` with ``L`` shaped ``(G, *f(x).shape)``, ``L[g]`` the Lie derivative
        along generator ``g``.
    """
    gens = resolve_generators(generators)
    check_interpolation(interpolation)
    layout = out_layout or Layout.invariant()
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    x = x.detach()  # read here only; every forward pass gets its own copy (batched_jvp)
    tangents = torch.stack([input_tangent(x, g, interpolation=interpolation, mean=mean, std=std) for g in gens])
    with differentiable_mode(f):
        y, dy = batched_jvp(f, x, tangents, chunk_size)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"f must return a tensor, got {type(y).__name__}")
    if layout.moves:
        layout.check(y, "output")
        parts = []
        for g, d in zip(gens, dy, strict=True):
            t = output_tangent(y, g, layout, interpolation)
            parts.append(d if t is None else d - t)
        dy = torch.stack(parts)
    return y, dy


def lie_derivative(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    generator: str | Generator,
    *,
    out_layout: Layout | None = None,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    r"""The Lie derivative :math:`L_X f(x)` along one generator, shaped like ``f(x)``.

    See :func:`lie_derivatives` for the arguments.
    """
    if not isinstance(generator, (str, Generator)):
        raise TypeError("lie_derivative takes one generator; use lie_derivatives for several")
    _, d = lie_derivatives(f, x, [generator], out_layout=out_layout, interpolation=interpolation, mean=mean, std=std)
    return d[0]
