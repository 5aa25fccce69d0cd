r"""EQ-T, EQ-T_frac and EQ-R of Karras et al. (2021, "Alias-Free Generative Adversarial Networks").

For a transformation :math:`T` drawn at random, compare :math:`f(Tx)` with :math:`T f(x)`
(spatial or token outputs; the transformation is rescaled to the output's grid) or with
:math:`f(x)` (invariant outputs: logits or probabilities), over the elements that are valid
after the transformation. The transformations and masks are StyleGAN3's own
(:mod:`liecore.metrics._resample`, tested against outputs of their code):

* ``eq_t``: :math:`t \sim U[-t_{max}, t_{max}]^2` of the image size (rows, columns),
  rounded to whole pixels of the *coarsest* grid involved (so the shift is an integer
  number of pixels on every grid); exact shift with zero fill;
* ``eq_t_frac``: the same :math:`t`, unrounded, StyleGAN3's Lanczos-:math:`a` shift and
  mask (:func:`~liecore.metrics.fractional_translate`);
* ``eq_r``: :math:`\theta \sim U[-\theta_{max}, \theta_{max}]`, StyleGAN3's rotation: the
  oriented band-limited filter at :math:`4\times` upsampling and the rotated-square mask
  (:func:`~liecore.metrics.rotate`). With ``pseudo_rotation=True``, :math:`f(Tx)` is
  also passed through StyleGAN3's pseudo-rotation :math:`R^*_\theta` (the same band limit,
  unrotated) and its mask, as ``compute_equivariance_metrics`` does with the generator's
  output. StyleGAN3 rotates its generator's *input* exactly (Fourier features), so
  :math:`R^*` there gives both sides the same spectrum; here the input is rotated by the
  same discrete :math:`R` as the output, and :math:`R^*` would make even the identity
  inexact (40 to 56 dB per image on natural 64 px photos at angles 0.3 to 2.5 rad), hence
  off by default.

Statistics (all in float64). For image :math:`i` and draw :math:`k`, with
:math:`\mathrm{SSE}_{ik}` the squared error summed over valid elements and
:math:`N_{ik}` their number (valid pixels times channels, as StyleGAN3's mask):

.. math::

    \mathrm{MSE}_i = \frac1K \sum_k \frac{\mathrm{SSE}_{ik}}{N_{ik}}, \qquad
    \mathrm{PSNR}_i = 20 \log_{10} p - 10 \log_{10} \mathrm{MSE}_i, \qquad
    \mathrm{PSNR}_{pooled} = 20 \log_{10} p - 10 \log_{10}
        \frac{\sum_{ik} \mathrm{SSE}_{ik}}{\sum_{ik} N_{ik}}

in dB, :math:`p` = ``peak_to_peak`` (default 2, the range of images in :math:`[-1, 1]`;
it is also 2 for probabilities and logits unless given). The per-image statistic is
:attr:`MetricResult.values` (``extras["mse"]`` behind it); the pooled statistic,
:attr:`MetricResult.pooled`, is the one StyleGAN3's ``compute_equivariance_metrics``
reports (total squared error over total mask count over the whole run), and
``extras["sse"]``, ``extras["count"]`` (per image, summed over draws) let batches be
pooled the same way: ``psnr(sum(sse) / sum(count))``. It is not the PSNR of the mean of
:math:`\mathrm{MSE}_i` (the two differ when masks differ in size). Higher is better;
``inf`` for an exact result; NaN where no element is valid (an empty mask: StyleGAN3's
rotation mask keeps about :math:`(n - 12)^2` pixels of an :math:`n \times n` map, none for
:math:`n \le 12`).

Per layer (:func:`eq_layerwise`) the same comparison is made on activations with declared
layouts and two normalizations are returned, since they change rankings between layers of
different sizes: per element, :math:`\mathrm{SSE}/N`, and per square-root element,
:math:`\mathrm{SSE}/\sqrt N` (the latter is what the paper's code ``lee/layerwise_other.py``
used for EQ-T), :math:`N` the number of valid elements.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .._derivative import differentiable_mode, resolve_output
from .._layout import Layout
from .._recorder import LayerRecorder
from ._layers import LayerErrors, LayerwiseEQResult, layer_specs, named_calls, named_units, ratio
from ._resample import fractional_translate, integer_translate, masked_sq_error, pseudo_rotate, psnr, rotate
from ._result import MetricResult, Rng, make_rng, rand

__all__ = ["EQ_KINDS", "POOLED_DEFINITION", "LayerwiseEQResult", "eq_layerwise", "eq_r", "eq_t", "eq_t_frac"]

EQ_KINDS: tuple[str, ...] = ("eq_t", "eq_t_frac", "eq_r")

EQKind = Literal["eq_t", "eq_t_frac", "eq_r"]

POOLED_DEFINITION = "psnr(sum(sse) / sum(count)) over images and draws (StyleGAN3's compute_equivariance_metrics)"
"""What :attr:`MetricResult.pooled` of the EQ metrics is."""


def _grid_size(y: torch.Tensor, layout: Layout) -> tuple[int, int] | None:
    if layout.kind == "invariant":
        return None
    if layout.kind == "tokens":
        return layout.grid  # type: ignore[return-value]
    return (y.shape[1], y.shape[2]) if layout.channels_last else (y.shape[-2], y.shape[-1])


@dataclass(frozen=True)
class _Draw:
    """One draw for a batch: fractions of the size (t_y, t_x), each (B,), or angles (B,)."""

    ty: torch.Tensor
    tx: torch.Tensor
    angle: torch.Tensor


def _draw(b: int, gen: Rng, t_max: float, angle_max: float) -> _Draw:
    u = rand(gen, 3, b) * 2 - 1
    return _Draw(u[0] * t_max, u[1] * t_max, u[2] * angle_max)


def _quantum(sizes: list[int]) -> tuple[int, int]:
    """(reference size g, ...) such that shifts of whole pixels on a g-grid are whole on every grid."""
    g = min(sizes)
    for s in sizes:
        if s % g:
            raise ValueError(
                f"eq_t needs grid sizes that are multiples of the coarsest one to shift by whole pixels, got {sizes}"
            )
    return g, max(sizes)


def _transform_fn(kind: str, draw: _Draw, size: tuple[int, int], ref: tuple[int, int] | None, a: int):
    """The transformation T on a (B, C, h, w) map of grid ``size``.

    ``ref`` is the coarsest grid (rows, cols) involved, on which integer shifts are rounded.
    """
    h, w = size
    if kind == "eq_r":
        return lambda m: rotate(m, draw.angle.to(m.device), a)
    if kind == "eq_t_frac":
        return lambda m: fractional_translate(m, (draw.ty * h).to(m.device), (draw.tx * w).to(m.device), a)
    gh, gw = ref if ref is not None else (h, w)
    dy = torch.round(draw.ty * gh).long() * (h // gh)
    dx = torch.round(draw.tx * gw).long() * (w // gw)
    return lambda m: integer_translate(m, dy.to(m.device), dx.to(m.device))


def _pseudo_fn(kind: str, draw: _Draw, a: int, pseudo_rotation: bool):
    """StyleGAN3's R* on f(Tx) for ``eq_r`` with ``pseudo_rotation``, else None."""
    if kind != "eq_r" or not pseudo_rotation:
        return None
    return lambda m: pseudo_rotate(m, draw.angle.to(m.device), a)


def _transform_params(kind: str, t_max: float, angle_max: float, a: int, pseudo_rotation: bool) -> dict[str, Any]:
    if kind == "eq_r":
        return {
            "angle_max": angle_max,
            "interpolation": f"stylegan3-bandlimited-up4-a{a}",
            "mask": "stylegan3-rotated-square",
            "pseudo_rotation": pseudo_rotation,
        }
    params: dict[str, Any] = {"t_max": t_max, "t_unit": "fraction of image size"}
    if kind == "eq_t_frac":
        params.update(interpolation=f"lanczos{a}", mask="stylegan3")
    return params


def _ref_grid(kind: str, sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
    if kind != "eq_t" or not sizes:
        return None
    gh, _ = _quantum([s[0] for s in sizes])
    gw, _ = _quantum([s[1] for s in sizes])
    return gh, gw


def _eq(
    kind: EQKind,
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    rng: Rng | None,
    seed: int | None,
    num_samples: int,
    t_max: float,
    angle_max: float,
    out_layout: Layout | None,
    output: str | None,
    a: int,
    peak_to_peak: float,
    pseudo_rotation: bool = False,
) -> MetricResult:
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    layout = out_layout or Layout.invariant()
    fo, output = resolve_output(f, layout, output)
    b, _, h, w = x.shape
    gen = make_rng(rng, seed, b)
    mse = torch.zeros(b, dtype=torch.float64)
    sse_sum = torch.zeros(b, dtype=torch.float64)
    cnt_sum = torch.zeros(b, dtype=torch.float64)
    with differentiable_mode(f):
        y = fo(x.clone())  # a copy: a first layer may write into its input
        layout.check(y, "output")
        osize = _grid_size(y, layout)
        ref = _ref_grid(kind, [(h, w)] + ([osize] if osize else []))
        for _ in range(num_samples):
            draw = _draw(b, gen, t_max, angle_max)
            xt, _ = _transform_fn(kind, draw, (h, w), ref, a)(x)
            yt = fo(xt)
            fn = _transform_fn(kind, draw, osize, ref, a) if osize else None
            sse, cnt = masked_sq_error(yt, y, layout, fn, _pseudo_fn(kind, draw, a, pseudo_rotation))
            sse, cnt = sse.cpu(), cnt.cpu()
            mse += ratio(sse, cnt)
            sse_sum += sse
            cnt_sum += cnt
    mse /= num_samples
    params: dict[str, Any] = {
        "num_samples": num_samples,
        "layout": layout.kind,
        "output": output,
        "peak_to_peak": peak_to_peak,
        "seed": None if rng is not None else seed,
        "dtype": str(x.dtype).replace("torch.", ""),
        **_transform_params(kind, t_max, angle_max, a, pseudo_rotation),
    }
    return MetricResult(
        name=kind,
        values=psnr(mse, peak_to_peak),
        unit="dB",
        higher_is_better=True,
        params=params,
        extras={"mse": mse, "sse": sse_sum, "count": cnt_sum},
        pooled=float(psnr(ratio(sse_sum.sum(), cnt_sum.sum()), peak_to_peak)),
        pooled_definition=POOLED_DEFINITION,
    )


def eq_t(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    rng: Rng | None = None,
    seed: int | None = 0,
    num_samples: int = 10,
    t_max: float = 0.125,
    out_layout: Layout | None = None,
    output: str | None = None,
    peak_to_peak: float = 2.0,
) -> MetricResult:
    r"""EQ-T: PSNR between :math:`f(Tx)` and :math:`T f(x)` for integer translations.

    Args:
        f: model or callable on ``(B, C, H, W)`` images; samples processed independently.
        x: images ``(B, C, H, W)``.
        rng: a CPU ``torch.Generator`` to draw from, or one per image (else one seeded with ``seed``).
        seed: seed used when ``rng`` is None.
        num_samples: draws per image.
        t_max: translations :math:`t \sim U[-t_{max}, t_{max}]` per axis, as a fraction of
            the image size, rounded to whole pixels of the coarsest grid (image or output).
        out_layout: the output's layout (default invariant: compare :math:`f(Tx)` with
            :math:`f(x)`).
        output: for invariant outputs ``"probs"`` (default, softmax, as the paper's code)
            or ``"logits"``; spatial/token outputs are compared raw.
        peak_to_peak: the peak-to-peak value range assumed by the PSNR (default 2, for
            :math:`[-1, 1]`; also applied to probabilities and logits unless given).

    Returns:
        :class:`MetricResult` named ``"eq_t"``: ``values``, the per-image PSNR in dB (of
        ``extras["mse"]``, the per-image MSE averaged over draws); ``pooled``, StyleGAN3's
        statistic, the PSNR of the total squared error over the total valid count
        (``extras["sse"]`` and ``extras["count"]`` per image, summed over draws). Exactly
        equivariant models give ``inf``.
    """
    return _eq(
        "eq_t",
        f,
        x,
        rng=rng,
        seed=seed,
        num_samples=num_samples,
        t_max=t_max,
        angle_max=0.0,
        out_layout=out_layout,
        output=output,
        a=3,
        peak_to_peak=peak_to_peak,
    )


def eq_t_frac(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    rng: Rng | None = None,
    seed: int | None = 0,
    num_samples: int = 10,
    t_max: float = 0.125,
    out_layout: Layout | None = None,
    output: str | None = None,
    a: int = 3,
    peak_to_peak: float = 2.0,
) -> MetricResult:
    r"""EQ-T_frac: as :func:`eq_t` for real-valued translations, StyleGAN3's Lanczos-``a`` shift and mask.

    :math:`t \sim U[-t_{max}, t_{max}]^2` of the image size, not rounded; on an output grid
    of another resolution the shift is :math:`t` times that grid's size. See
    :func:`~liecore.metrics.fractional_translate`.
    """
    return _eq(
        "eq_t_frac",
        f,
        x,
        rng=rng,
        seed=seed,
        num_samples=num_samples,
        t_max=t_max,
        angle_max=0.0,
        out_layout=out_layout,
        output=output,
        a=a,
        peak_to_peak=peak_to_peak,
    )


def eq_r(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    rng: Rng | None = None,
    seed: int | None = 0,
    num_samples: int = 10,
    angle_max: float = math.pi,
    out_layout: Layout | None = None,
    output: str | None = None,
    a: int = 3,
    peak_to_peak: float = 2.0,
    pseudo_rotation: bool = False,
) -> MetricResult:
    r"""EQ-R: as :func:`eq_t` for rotations :math:`\theta \sim U[-\theta_{max}, \theta_{max}]` about the centre.

    StyleGAN3's rotation (:func:`~liecore.metrics.rotate`: the oriented band-limited filter
    at 4x upsampling, Lanczos window of ``a`` taps) and its rotated-square mask, on the
    input and on spatial or token outputs. ``pseudo_rotation``: also pass :math:`f(Tx)`
    through StyleGAN3's :math:`R^*_\theta` (:func:`~liecore.metrics.pseudo_rotate`) and
    its mask, as their ``compute_equivariance_metrics`` (see the module docstring for why
    it is off by default). ``angle_max`` :math:`= \pi` is StyleGAN3's ``rotate_max = 1``.
    """
    return _eq(
        "eq_r",
        f,
        x,
        rng=rng,
        seed=seed,
        num_samples=num_samples,
        t_max=0.0,
        angle_max=angle_max,
        out_layout=out_layout,
        output=output,
        a=a,
        peak_to_peak=peak_to_peak,
        pseudo_rotation=pseudo_rotation,
    )


# --- per layer ---------------------------------------------------------------------------
def eq_layerwise(
    model: nn.Module,
    x: torch.Tensor,
    layers: Mapping[str, Layout | tuple[Layout, Layout]],
    *,
    metric: EQKind = "eq_t",
    mode: Literal["local", "cumulative"] = "local",
    rng: Rng | None = None,
    seed: int | None = 0,
    num_samples: int = 1,
    t_max: float = 0.125,
    angle_max: float = math.pi,
    a: int = 3,
    pseudo_rotation: bool = False,
) -> LayerwiseEQResult:
    r"""EQ-T / EQ-T_frac / EQ-R error of declared layers, normalized per :math:`N` and per :math:`\sqrt N`.

    Args:
        model: an ``nn.Module``; each declared layer is a submodule called once per forward
            pass whose first positional argument is its only tensor input (``local`` mode).
        x: images ``(B, C, H, W)``.
        layers: qualified name -> layout of the layer's output, or ``(input layout,
            output layout)``; a single layout means input and output share it
            (``local`` mode). Layers are hooked with forward hooks that are removed on exit.
        metric: ``"eq_t"``, ``"eq_t_frac"`` or ``"eq_r"`` (the transformation family).
        mode: ``"local"``: for each layer :math:`\ell` with recorded input :math:`z`,
            compare :math:`\ell(Tz)` with :math:`T \ell(z)` (the layer's own contribution,
            as the paper's ``layerwise_other.py``); ``"cumulative"``: compare the
            activation of the model on :math:`Tx` with :math:`T` of its activation on
            :math:`x`.
        rng, seed, num_samples, t_max, angle_max, a, pseudo_rotation: as in :func:`eq_t`,
            :func:`eq_t_frac` and :func:`eq_r` (the same StyleGAN3 transformations and
            masks); the same draws serve every layer. For ``eq_t`` shifts are whole pixels of the
            coarsest grid involved (per layer in ``local`` mode, over the image and all
            layers in ``cumulative`` mode).

    Returns:
        :class:`LayerwiseEQResult` with both normalizations. Invariant-layout tensors
        (pooled features, logits) are compared without transformation.
    """
    if metric not in EQ_KINDS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {EQ_KINDS}")
    names, lays = layer_specs(layers, mode, x)
    b, _, h, w = x.shape
    gen = make_rng(rng, seed, b)
    acc = LayerErrors(b, len(names))
    with differentiable_mode(model), LayerRecorder(model, named_units(model, names), inputs=mode == "local") as rec:
        base = named_calls(rec, names, x.clone())  # a copy: a first layer may write into its input
        out_sizes = {n: _grid_size(base[n].y, lays[n][1]) for n in names}
        for n in names:
            lays[n][1].check(base[n].y, f"output of {n!r}")
        ref = None
        if mode == "cumulative":
            ref = _ref_grid(metric, [(h, w)] + [s for s in out_sizes.values() if s])
        for _ in range(num_samples):
            draw = _draw(b, gen, t_max, angle_max)
            if mode == "cumulative":
                xt, _ = _transform_fn(metric, draw, (h, w), ref, a)(x)
                moved = named_calls(rec, names, xt)
            for i, n in enumerate(names):
                lin, lout = lays[n]
                z, y = base[n].x, base[n].y
                osize = out_sizes[n]
                if mode == "cumulative":
                    yt, tref = moved[n].y, ref
                else:
                    if not isinstance(z, torch.Tensor):
                        raise TypeError(f"layer {n!r} has no tensor input to transform")
                    lin.check(z, f"input of {n!r}")
                    isize = _grid_size(z, lin)
                    tref = _ref_grid(metric, [s for s in (isize, osize) if s])
                    if isize is None:
                        zt = z.clone()  # the layer may write into it; z serves every draw
                    else:
                        pre, grid = lin.to_nchw(z)
                        gt, _ = _transform_fn(metric, draw, isize, tref, a)(grid)
                        zt = lin.from_nchw(pre, gt)
                    yt = model.get_submodule(n)(zt)
                fn = _transform_fn(metric, draw, osize, tref, a) if osize else None
                acc.add(i, *masked_sq_error(yt, y, lout, fn, _pseudo_fn(metric, draw, a, pseudo_rotation)))
    params = {
        "num_samples": num_samples,
        "seed": None if rng is not None else seed,
        "layouts": {n: (lays[n][0].kind, lays[n][1].kind) for n in names},
        **_transform_params(metric, t_max, angle_max, a, pseudo_rotation),
    }
    return acc.result(metric, mode, names, num_samples, params)
