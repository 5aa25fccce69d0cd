r"""Sampled equivariance error: the finite-transformation counterpart of the LEE.

.. math::

    \mathrm{SEE}_X(f, x) = \mathbb E_{t \sim U[-t_{max}, t_{max}]}
        \frac{\|\rho_{out}(e^{tX})^{-1} f(\rho_{in}(e^{tX}) x) - f(x)\|^2}{\dim(\mathrm{out})},

with the group action of :func:`liecore.transform` (the stated interpolant, reflection
boundary) on the input and, for spatial or token outputs, on the output
(:math:`\rho_{out}(e^{tX})^{-1} = \rho_{out}(e^{-tX})`, applied to the grid part). One
:math:`t` is drawn per image and per sample.

Properties: zero for every :math:`t` when :math:`f` is equivariant under the stated
action; for smooth :math:`f` and small :math:`t`,
:math:`\|\rho_{out}^{-1} f(\rho_{in} x) - f(x)\|^2 = t^2 \|L_X f(x)\|^2 + O(t^3)`, so
:math:`\mathrm{SEE} \approx \tfrac{t_{max}^2}{3}\,\mathrm{LEE}` and the per-draw ratio
averaged in ``extras["lee_estimate"]`` (error over :math:`t^2`) tends to the LEE
:math:`\|L_X f(x)\|^2 / \dim(\mathrm{out})` of :func:`liecore.lee` as :math:`t_{max} \to 0`.
Units of :math:`t`: the generator's flow time (normalized coordinates for spatial
generators, so :math:`t = 0.1` is 5% of the image width for ``translate_x``; radians for
``rotate``).

Per layer (:func:`sampled_layerwise`) the same error is taken on activations with declared
layouts, with the normalizations of :func:`liecore.metrics.eq_layerwise`: per element,
:math:`\mathrm{SSE}/N` (:math:`N` the activation's size per image, so this is the
end-to-end normalization :math:`\|\cdot\|^2/\dim`), and :math:`\mathrm{SSE}/\sqrt N`.
Activations take the spatial part of the action only (colour generators act on the network
input). Interpolation is not exactly invertible, and near the border the reflection breaks
the round trip, so even an equivariant layer (a 1x1 convolution) shows the error of
:math:`\rho(e^{-tX})\rho(e^{tX}) z - z`; for smooth :math:`z` its square vanishes faster
than the :math:`t^2\,\mathrm{LEE}` term (between :math:`t^3` and :math:`t^4` in the tests),
as for spatial outputs of :func:`sampled_equivariance_error`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from .._action import transform
from .._derivative import differentiable_mode, resolve_output
from .._generators import Generator, get_generator
from .._grid import Interpolation
from .._layout import Layout
from .._recorder import LayerRecorder
from ._layers import LayerErrors, LayerwiseEQResult, layer_specs, named_calls, named_units
from ._result import MetricResult, Rng, make_rng, rand

__all__ = ["sampled_equivariance_error", "sampled_layerwise"]


def _transform_output(
    y: torch.Tensor, layout: Layout, gen: Generator, t: float, interpolation: Interpolation
) -> torch.Tensor:
    if not layout.moves or not gen.is_spatial:
        return y
    prefix, grid = layout.to_nchw(y)
    spatial_only = Generator(gen.name, gen.matrix)
    moved = transform(grid, spatial_only, t, interpolation=interpolation)
    return layout.from_nchw(prefix, moved)


def sampled_equivariance_error(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    generator: str | Generator = "translate_x",
    *,
    rng: Rng | None = None,
    seed: int | None = 0,
    num_samples: int = 10,
    t_max: float = 0.1,
    out_layout: Layout | None = None,
    output: str | None = None,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> MetricResult:
    r"""Sampled equivariance error :math:`\mathbb E_t \|\rho(t)^{-1} f(\rho(t) x) - f(x)\|^2 / \dim(\mathrm{out})`.

    Args:
        f: model or callable on ``(B, C, H, W)`` images; samples processed independently.
        x: images ``(B, C, H, W)``.
        generator: the Lie-algebra generator :math:`X` (name or :class:`liecore.Generator`).
        rng: a CPU ``torch.Generator`` to draw :math:`t` from, or one per image (else one seeded with ``seed``).
        seed: seed used when ``rng`` is None.
        num_samples: draws of :math:`t` per image.
        t_max: :math:`t \sim U[-t_{max}, t_{max}]` in flow-time units of the generator.
        out_layout: the output's layout (default invariant).
        output: for invariant outputs ``"probs"`` (default, as :func:`liecore.lee`) or
            ``"logits"``; spatial/token outputs are used raw.
        interpolation, mean, std: the group action's interpolant and the model's
            normalization for colour generators (see :func:`liecore.transform`).

    Returns:
        :class:`MetricResult` ``"sampled_equivariance_error"`` (unit ``mse``, lower is
        better), per image; ``extras["lee_estimate"]``: the per-image mean over draws of
        error / :math:`t^2`.
    """
    gen = get_generator(generator)
    if x.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    layout = out_layout or Layout.invariant()
    fo, output = resolve_output(f, layout, output)
    b = x.shape[0]
    g = make_rng(rng, seed, b)
    err = torch.zeros(b, dtype=torch.float64)
    ratio = torch.zeros(b, dtype=torch.float64)
    with differentiable_mode(f):
        y = fo(x.clone())  # a copy: a first layer may write into its input
        layout.check(y, "output")
        for _ in range(num_samples):
            ts = (rand(g, 1, b)[0] * 2 - 1) * t_max
            xt = torch.cat(
                [
                    transform(x[i : i + 1], gen, float(ts[i]), interpolation=interpolation, mean=mean, std=std)
                    for i in range(b)
                ]
            )
            yt = fo(xt)
            back = torch.cat(
                [_transform_output(yt[i : i + 1], layout, gen, -float(ts[i]), interpolation) for i in range(b)]
            )
            e = (back - y).to(torch.float64).reshape(b, -1).square().mean(-1).cpu()
            err += e
            ratio += e / ts.square().clamp_min(torch.finfo(torch.float64).tiny)
    return MetricResult(
        name="sampled_equivariance_error",
        values=err / num_samples,
        unit="mse",
        higher_is_better=False,
        params={
            "generator": gen.name,
            "t_range": (-t_max, t_max),
            "t_distribution": "uniform",
            "num_samples": num_samples,
            "layout": layout.kind,
            "output": output,
            "interpolation": interpolation,
            "seed": None if rng is not None else seed,
        },
        extras={"lee_estimate": ratio / num_samples},
    )


def _act(
    z: torch.Tensor,
    layout: Layout,
    gen: Generator,
    ts: torch.Tensor,
    interpolation: Interpolation,
    image: bool,
    mean,
    std,
) -> torch.Tensor:
    """:math:`\\rho(e^{t_i X})` on image ``i`` of ``z``: the full action on network input images
    (``image``), the spatial part on the grid of other activations."""
    if image:
        return torch.cat(
            [
                transform(z[i : i + 1], gen, float(t), interpolation=interpolation, mean=mean, std=std)
                for i, t in enumerate(ts)
            ]
        )
    return torch.cat([_transform_output(z[i : i + 1], layout, gen, float(t), interpolation) for i, t in enumerate(ts)])


def sampled_layerwise(
    model: nn.Module,
    x: torch.Tensor,
    layers: Mapping[str, Layout | tuple[Layout, Layout]],
    generator: str | Generator = "translate_x",
    *,
    mode: Literal["local", "cumulative"] = "local",
    rng: Rng | None = None,
    seed: int | None = 0,
    num_samples: int = 1,
    t_max: float = 0.1,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> LayerwiseEQResult:
    r"""Sampled equivariance error of declared layers, normalized per :math:`N` and per :math:`\sqrt N`.

    Args:
        model: an ``nn.Module``; each declared layer is a submodule called once per forward
            pass whose first positional argument is its only tensor input (``local`` mode).
        x: images ``(B, C, H, W)``.
        layers: qualified name -> layout of the layer's output, or ``(input layout, output
            layout)``; a single layout means input and output share it.
        generator: the generator :math:`X`.
        mode: ``"local"``: for each layer :math:`\ell` with recorded input :math:`z`,
            :math:`\|\rho_{out}(e^{-tX})\,\ell(\rho_{in}(e^{tX}) z) - \ell(z)\|^2` (the
            layer on its own; the full action when :math:`z` is the network input, the
            spatial part otherwise); ``"cumulative"``: the activation of the model on
            :math:`\rho(e^{tX}) x`, moved back by :math:`\rho_{out}(e^{-tX})`, against the
            activation on :math:`x`.
        rng, seed, num_samples, t_max, interpolation, mean, std: as in
            :func:`sampled_equivariance_error`, whose draws of :math:`t` these are (the same
            seed gives the same :math:`t`); the same draws serve every layer.

    Returns:
        :class:`LayerwiseEQResult` with ``metric="sampled_equivariance_error"``;
        ``per_element`` is :math:`\mathbb E_t \|\cdot\|^2 / N`, ``count`` is :math:`N`.
    """
    gen = get_generator(generator)
    names, lays = layer_specs(layers, mode, x)
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    b = x.shape[0]
    g = make_rng(rng, seed, b)
    acc = LayerErrors(b, len(names))
    x = x.detach()
    with differentiable_mode(model), LayerRecorder(model, named_units(model, names), inputs=mode == "local") as rec:
        base = named_calls(rec, names, x.clone())  # a copy: a first layer may write into its input
        image_fed = {n for n, c in base.items() if c.is_input}
        for n in names:
            lays[n][1].check(base[n].y, f"output of {n!r}")
        for _ in range(num_samples):
            ts = (rand(g, 1, b)[0] * 2 - 1) * t_max
            if mode == "cumulative":
                moved = named_calls(rec, names, _act(x, Layout.spatial(), gen, ts, interpolation, True, mean, std))
            for i, n in enumerate(names):
                lin, lout = lays[n]
                z, y = base[n].x, base[n].y
                if mode == "cumulative":
                    yt = moved[n].y
                else:
                    if not isinstance(z, torch.Tensor):
                        raise TypeError(f"layer {n!r} has no tensor input to transform")
                    lin.check(z, f"input of {n!r}")
                    zt = _act(z, lin, gen, ts, interpolation, n in image_fed, mean, std)
                    yt = model.get_submodule(n)(zt if zt is not z else z.clone())  # z serves every draw
                back = _act(yt, lout, gen, -ts, interpolation, False, mean, std)
                e = (back - y).to(torch.float64).reshape(b, -1).square().sum(-1)
                acc.add(i, e, torch.full_like(e, float(y[0].numel())))
    params = {
        "generator": gen.name,
        "t_range": (-t_max, t_max),
        "t_distribution": "uniform",
        "num_samples": num_samples,
        "interpolation": interpolation,
        "seed": None if rng is not None else seed,
        "layouts": {n: (lays[n][0].kind, lays[n][1].kind) for n in names},
    }
    return acc.result("sampled_equivariance_error", mode, names, num_samples, params)
