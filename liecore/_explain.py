r"""Where the equivariance error arises: exact spatial maps of the layerwise decomposition.

The layerwise decomposition (:mod:`liecore._layerwise`) writes the Lie derivative as
:math:`L = L_X F(x) = \sum_i J_{N:i+1}\, e_i + u` with :math:`e_i = L_X f_i(x_{i-1})` layer
:math:`i`'s own error on its output grid. With :math:`G_i = J_{N:i+1}^\top L`, every
:math:`G_i` from *one* backward pass of :math:`\langle F(x), \mathrm{stop\_grad}(L)\rangle`,

.. math::

    b_i(q) = \frac{\langle G_i(q), e_i(q)\rangle}{\|L\|^2}

is layer :math:`i`'s signed share at location :math:`q` of its output (the inner product
runs over channels). Summed over :math:`q` it is the layer's layerwise share
:math:`\langle J_{N:i+1} e_i, L\rangle / \|L\|^2`, that is
``LayerRecord.share / LayerwiseResult.end_to_end`` of :func:`liecore.layerwise` (both
carry the same :math:`1/\dim(\mathrm{out})`, which cancels): the maps are *fractions of the
image's LEE*. Over all layers and locations, plus the unattributed remainder
(``unattributed_share / end_to_end``), they add up to 1. Multiply by :attr:`Explanation.lee`
for LEE units.

:math:`e_i` vanishes wherever layer :math:`i` is locally equivariant (an interior
convolution commutes with the derivative), so the maps are local: zero padding shows at
the border, strided sampling and pointwise nonlinearities where the features alias,
position embeddings where they vary. (The input-gradient map
:math:`(J^\top L) \odot T_X x` also sums to 1 but is made of large terms that cancel across
the image; it is not used.)

Locations: a spatial output's map is on its own ``h x w`` grid; a token output's patch
tokens are on their patch grid and its prefix tokens (class, registers) are reported apart
in :attr:`Explanation.special`; a layer whose output does not move (global pooling, a
head) has no location and its share is in :attr:`Explanation.special` as one column.

:attr:`Explanation.image_map` resamples every located map onto the input grid by area
overlap (cell ``y`` of an ``h``-cell axis covers ``[y H/h, (y+1) H/h)`` input pixels and
gives each pixel the fraction of its mass that the pixel's overlap is of the cell), which
keeps each map's total, and adds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._derivative import differentiable_mode, lie_derivatives, resolve_output
from ._generators import Generator, get_generator
from ._grid import Interpolation, check_interpolation
from ._layerwise import (
    DEFAULT_COMPOSITES,
    ActivationLayouts,
    LayerwiseRecorder,
    layer_kind,
    local_lie_derivative,
)
from ._layout import Layout

__all__ = ["Explanation", "explain", "explain_all", "area_matrix", "resample_mass"]


@dataclass(frozen=True)
class Explanation:
    r"""Signed shares of one generator's Lie derivative, by layer and location, per image.

    Every share is a fraction of the image's LEE :math:`\|L\|^2/\dim`; per image,
    ``image_map.sum() + sum(special) + remainder == 1`` (to rounding), and
    ``layer_maps[n].sum((1, 2)) + special.get(n, 0).sum(1)`` is layer ``n``'s layerwise share
    over the end-to-end LEE.

    Attributes:
        generator: the generator's name.
        output: what was differentiated (``probs``, ``logits`` or ``raw``).
        layer_maps: layer call name -> ``(B, h, w)`` float64 map on the layer's output grid
            (patch grid for tokens). Only layers whose local Lie derivative is not zero
            (their share is exactly 0 otherwise); a module called more than once has one
            entry per call, the ``k``-th (``k >= 1``) named ``name#k``.
        special: layer call name -> ``(B, p)`` shares without a location: a token output's
            ``p`` prefix tokens, or one column for an output that does not move.
        layers: layer call name -> ``(index in call order, class name, kind)``, for the
            layers in ``layer_maps`` or ``special``.
        image_map: ``(B, H, W)`` float64, the located maps resampled to the input grid and added.
        remainder: ``(B,)`` float64, the unattributed share (what happens between recorded layers).
        lee: ``(B,)`` float64, the end-to-end LEE :math:`\|L\|^2/\dim(\mathrm{out})`.
    """

    generator: str
    output: str
    layer_maps: dict[str, torch.Tensor]
    special: dict[str, torch.Tensor]
    layers: dict[str, tuple[int, str, str]]
    image_map: torch.Tensor
    remainder: torch.Tensor
    lee: torch.Tensor

    def layer_shares(self) -> dict[str, torch.Tensor]:
        """Layer call name -> ``(B,)`` total share (map plus its unlocated part), in call order."""
        names = sorted(self.layers, key=lambda n: self.layers[n][0])
        out = {}
        for n in names:
            b = self.lee.shape[0]
            s = torch.zeros(b, dtype=torch.float64)
            if n in self.layer_maps:
                s = s + self.layer_maps[n].sum((1, 2))
            if n in self.special:
                s = s + self.special[n].sum(1)
            out[n] = s
        return out

    def total(self) -> torch.Tensor:
        """``(B,)``: all shares plus the remainder (1 to rounding)."""
        t = self.image_map.sum((1, 2)) + self.remainder
        for v in self.special.values():
            t = t + v.sum(1)
        return t

    def top_layers(self, k: int = 4) -> list[str]:
        """The ``k`` layers with the largest mean absolute located map mass, largest first."""
        mass = {n: float(m.abs().sum((1, 2)).mean()) for n, m in self.layer_maps.items()}
        return sorted(mass, key=lambda n: -mass[n])[:k]


def area_matrix(n_out: int, n_in: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(n_out, n_in)`` mass-preserving resampling of an ``n_in``-cell axis onto ``n_out`` cells.

    Entry ``[Y, y]`` is the fraction of cell ``y`` (covering ``[y n_out/n_in, (y+1) n_out/n_in)``)
    that falls in output cell ``Y``; every column sums to 1.
    """
    edges_in = torch.arange(n_in + 1, dtype=torch.float64) * (n_out / n_in)
    lo = torch.maximum(edges_in[None, :-1], torch.arange(n_out, dtype=torch.float64)[:, None])
    hi = torch.minimum(edges_in[None, 1:], torch.arange(1, n_out + 1, dtype=torch.float64)[:, None])
    overlap = (hi - lo).clamp_min(0)
    return (overlap / (n_out / n_in)).to(dtype)


def resample_mass(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``(B, h, w)`` maps onto ``size`` keeping each map's total (:func:`area_matrix`)."""
    h, w = m.shape[-2:]
    if (h, w) == tuple(size):
        return m
    ay = area_matrix(size[0], h, m.dtype).to(m.device)
    ax = area_matrix(size[1], w, m.dtype).to(m.device)
    return ay @ m @ ax.T


def _call_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}#{k}")
    return out


def _locate(prod: torch.Tensor, layout: Layout) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(B, h, w)`` map and ``(B, p)`` unlocated part of an elementwise product of a layer's
    output shape, summed over channels."""
    if layout.kind == "invariant":
        return None, prod.flatten(1).sum(1, keepdim=True)
    prefix, grid = layout.to_nchw(prod)
    special = None if prefix is None else prefix.sum(-1)  # (B, p)
    return grid.sum(1), special


def explain_all(
    model: nn.Module,
    x: torch.Tensor,
    generators: Sequence[str | Generator] | str | Generator,
    *,
    output: str | None = None,
    out_layout: Layout | None = None,
    layouts: ActivationLayouts | None = None,
    composites: Iterable[str] = DEFAULT_COMPOSITES,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, Explanation]:
    """:func:`explain` for several generators: one recording pass, the Lie derivatives of all
    generators in one vectorized pass, then per generator the local errors and one backward
    pass. Returns generator name -> :class:`Explanation`, in the given order."""
    if isinstance(generators, (str, Generator)):
        generators = [generators]
    gens = [get_generator(g) for g in generators]
    if not gens:
        raise ValueError("explain needs at least one generator")
    check_interpolation(interpolation)
    if not isinstance(model, nn.Module):
        raise TypeError("explain needs an nn.Module (its layers are found in the module tree)")
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    layouts = layouts or ActivationLayouts()
    out_layout = out_layout or Layout.invariant()
    f, output = resolve_output(model, out_layout, output)
    x = x.detach()
    b, size = x.shape[0], (x.shape[-2], x.shape[-1])
    out: dict[str, Explanation] = {}
    with LayerwiseRecorder(model, composites) as rec:
        with differentiable_mode(model):
            _, calls = rec.record(f, x.clone())
        calls = [c for c in calls if c.is_tensor_call]
        names = _call_names([c.name for c in calls])
        _, lds = lie_derivatives(f, x, gens, out_layout=out_layout, interpolation=interpolation, mean=mean, std=std)
        for gen, ld in zip(gens, lds, strict=True):
            with differentiable_mode(model):
                vectors = [local_lie_derivative(c, gen, layouts, interpolation, mean, std) for c in calls]
            active = [i for i, v in enumerate(vectors) if v is not None]
            rec.set_vectors(vectors)
            norm2 = ld.flatten(1).double().square().sum(1)  # (B,) ||L||^2
            dim = int(ld[0].numel())
            scales = [torch.zeros_like(vectors[i], requires_grad=True) for i in active]
            layer_maps: dict[str, torch.Tensor] = {}
            special: dict[str, torch.Tensor] = {}
            layers: dict[str, tuple[int, str, str]] = {}
            image_map = torch.zeros(b, *size, dtype=torch.float64)
            if active:
                with differentiable_mode(model, grad=True):
                    y = rec.inject(f, x.clone(), scales)
                    # d<F, L>/ds_i = G_i * e_i elementwise: every layer's product in one pass
                    grads = torch.autograd.grad(y, scales, grad_outputs=ld.to(y.dtype))
                denom = norm2.reshape(-1, 1, 1)
                for i, g in zip(active, grads, strict=True):
                    c = calls[i]
                    where = f"layer {c.name or '<root>'} ({type(c.module).__name__})"
                    lay = layouts.output_layout(c.name, c.module, c.y, where + " output")
                    grid, spec = _locate(g.detach().double(), lay)
                    n = names[i]
                    layers[n] = (i, type(c.module).__name__, layer_kind(type(c.module).__name__))
                    if grid is not None:
                        m = (grid / denom).cpu()
                        layer_maps[n] = m
                        image_map = image_map + resample_mass(m, size)
                    if spec is not None:
                        special[n] = (spec / norm2.reshape(-1, 1)).cpu()
            total = image_map.sum((1, 2))
            for v in special.values():
                total = total + v.sum(1)
            ratio = torch.ones(b, dtype=torch.float64)
            ratio = torch.where(norm2.cpu() > 0, ratio, torch.full_like(ratio, float("nan")))
            out[gen.name] = Explanation(
                generator=gen.name,
                output=output,
                layer_maps=layer_maps,
                special=special,
                layers=layers,
                image_map=image_map,
                remainder=ratio - total,
                lee=(norm2 / dim).cpu(),
            )
    return out


def explain(
    model: nn.Module,
    x: torch.Tensor,
    generator: str | Generator,
    *,
    output: str | None = None,
    out_layout: Layout | None = None,
    layouts: ActivationLayouts | None = None,
    composites: Iterable[str] = DEFAULT_COMPOSITES,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Explanation:
    r"""Exact spatial maps of one generator's equivariance error, by layer and location.

    Args:
        model: the network (an ``nn.Module``), put in eval mode while it runs.
        x: images ``(B, C, H, W)``.
        generator: one generator (name or :class:`Generator`); :func:`explain_all` takes several.
        output: ``"probs"`` (default for invariant outputs) or ``"logits"``, as in :func:`liecore.lee`.
        out_layout: the network output's layout (default invariant), as in :func:`liecore.lee`.
        layouts, composites: declared activation layouts and composite layers, as in
            :func:`liecore.layerwise`.
        interpolation, mean, std: as in :func:`liecore.lie_derivatives`.

    Returns:
        :class:`Explanation`. An image whose Lie derivative is exactly zero has NaN shares
        (0/0).

    Cost: one recording pass, one JVP for the Lie derivative, one JVP per layer with a
    moving input or output for its local error (as :func:`liecore.layerwise`), then a
    single forward and backward pass (instead of the exact method's push-forward).
    """
    gen = get_generator(generator)
    return explain_all(
        model,
        x,
        [gen],
        output=output,
        out_layout=out_layout,
        layouts=layouts,
        composites=composites,
        interpolation=interpolation,
        mean=mean,
        std=std,
    )[gen.name]
