r"""Layerwise decomposition of the Lie derivative.

For a network :math:`F = f_N \circ \dots \circ f_1` the chain rule splits the Lie
derivative into one term per layer call,

.. math::

    L_X F(x) = \sum_i dF_{N:i+1}(x_i)\, L_X f_i(x_{i-1}) + u(x),
    \qquad L_X f_i(x_{i-1}) = D f_i(x_{i-1})[T_X x_{i-1}] - T_X x_i,

where :math:`T_X` acts on each activation according to its declared layout and
:math:`u` is the *unattributed* remainder: what operations between the recorded layers
contribute when they are not equivariant (learned position embeddings, window partitions,
token selection...). Equivariant glue (residual additions, reshapes between declared
layouts, concatenation of invariant tokens) contributes nothing, so for a network built
only from recorded layers and such glue :math:`u = 0`.

Layers are the leaves of the module tree (modules without children, ``nn.Identity``
excluded) plus a stated set of composite classes recorded as one layer
(:data:`DEFAULT_COMPOSITES`: attention, patch embeddings, normalization-with-activation,
squeeze-excitation, MLP-Mixer/ResMLP blocks, Swin blocks). Each *call* is its own entry,
in call order, with its qualified name and class. A layer's input is its first positional
argument or, when it is called with keywords only, the first parameter of its ``forward``
passed by name (``conv(input=h)``); other arguments are held fixed. A layer whose local Lie
derivative cancels to rounding (at most 64 ulps of its two terms: eval-mode batch norm,
1x1 convolutions, dropout) is recorded with an exact zero and skipped in the push-forward.

Per image and layer the result reports

* ``value``: :math:`\|c_i\|^2 / \dim(\mathrm{out})` with :math:`c_i = dF_{N:i+1} L_X f_i`
  (the layer's contribution on the LEE scale);
* ``share``: :math:`\langle c_i, L_X F(x)\rangle / \dim(\mathrm{out})`, signed, computed
  exactly by both methods; the unattributed share is the end-to-end LEE minus the sum of
  the shares, so the table adds up to the end-to-end LEE exactly (to rounding).

Two methods:

``exact``
    pushes every :math:`L_X f_i` through the rest of the network by forward-mode AD, all
    layers in one vectorized pass (no sampling noise).
``stochastic``
    :math:`\mathbb E_z[(z^\top c_i)^2]` with :math:`z \sim N(0, I)` over ``num_probes``
    backward passes (one backward gives every layer's :math:`z^\top c_i`), with standard
    errors over probes; ``unattributed`` is estimated the same way. The shares take one more
    backward pass with :math:`L_X F(x)` as the output gradient (a vector-Jacobian product
    giving every :math:`\langle c_i, L_X F\rangle` at once) and carry no sampling noise.
    With ``rng`` one CPU generator per image, image ``i``'s probes come from ``rng[i]``
    alone, so its estimates do not depend on the batch it is in.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import jvp

from ._action import input_tangent
from ._derivative import batched_jvp, differentiable_mode, lie_derivatives, output_tangent, resolve_output
from ._generators import Generator, get_generator
from ._grid import Interpolation, check_interpolation, spatial_tangent_nchw
from ._layout import Layout
from ._recorder import LayerCall, LayerRecorder
from .metrics._result import Rng, make_rng, randn

__all__ = [
    "ActivationLayouts",
    "DEFAULT_COMPOSITES",
    "LayerRecord",
    "LayerwiseRecorder",
    "LayerwiseResult",
    "layer_kind",
    "layer_units",
    "local_lie_derivative",
    "layerwise",
]

DEFAULT_COMPOSITES: frozenset[str] = frozenset(
    {
        # attention
        "Attention",
        "AttentionRope",
        "EvaAttention",
        "WindowAttention",
        "WindowAttentionGlobal",
        "MultiheadAttention",
        "Attention2d",
        "AttentionPool2d",
        "RotAttentionPool2d",
        "AttentionPoolLatent",
        "ClassAttn",
        "TalkingHeadAttn",
        "LocalAttention",
        "GlobalSubSampleAttn",
        "LocallyGroupedAttn",
        # patch embedding
        "PatchEmbed",
        "HybridEmbed",
        "PatchEmbedWithSize",
        "ConvPosEnc",
        # normalization with activation, and normalization modules with children
        "BatchNormAct2d",
        "SyncBatchNormAct",
        "FrozenBatchNormAct2d",
        "GroupNormAct",
        "GroupNorm1Act",
        "LayerNormAct",
        "LayerNormAct2d",
        "EvoNorm2dB0",
        "EvoNorm2dS0",
        # squeeze-excitation and friends
        "SqueezeExcite",
        "SEModule",
        "EffectiveSEModule",
        "SqueezeExcitation",
        "SEBlock",
        "EcaModule",
        "CecaModule",
        "GatherExcite",
        "CbamModule",
        "LightCbamModule",
        # MLP-Mixer family blocks (token mixing transposes the layout inside the block)
        "MixerBlock",
        "ResBlock",
        "SpatialGatingBlock",
        # window/grid partitions and patch merging reshape between their children
        "SwinTransformerBlock",
        "SwinTransformerV2Block",
        "SwinTransformerV2CrBlock",
        "PatchMerging",
        "PartitionAttentionCl",
        "PartitionAttention2d",
    }
)
"""Class names recorded as one layer by default (their children are not recorded)."""


_KIND_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("patch_embedding", ("PatchEmbed", "HybridEmbed", "Stem", "ConvPosEnc")),
    ("attention", ("Attention", "Attn", "MultiheadAttention")),
    ("squeeze_excitation", ("SqueezeExcite", "SEModule", "SEBlock", "Eca", "GatherExcite", "Cbam", "Excitation")),
    ("mixer_block", ("MixerBlock", "ResBlock", "GatingBlock", "SwinTransformer")),
    ("normalization_activation", ("NormAct", "EvoNorm")),  # timm's fused norm + activation (BatchNormAct2d ...)
    ("normalization", ("Norm", "Affine")),
    ("downsampling", ("Pool", "Downsample", "BlurPool", "PixelUnshuffle", "Flatten")),
    ("convolution", ("Conv",)),
    (
        "activation",
        (
            "ReLU",
            "GELU",
            "SiLU",
            "Swish",
            "Sigmoid",
            "Tanh",
            "Mish",
            "Hardswish",
            "Hardsigmoid",
            "ELU",
            "Softplus",
            "QuickGELU",
            "Act",
            "Softmax",
            "Gate",
        ),
    ),
    ("linear", ("Linear",)),
    ("dropout", ("Dropout", "DropPath", "DropBlock")),
    ("scale", ("LayerScale", "Scale")),
)


def layer_kind(cls_name: str) -> str:
    """A coarse type of a layer class for summaries (``convolution``, ``attention``, ...)."""
    for kind, keys in _KIND_RULES:
        if any(k in cls_name for k in keys):
            return kind
    return "other"


@dataclass(frozen=True)
class ActivationLayouts:
    """Declared layouts of a network's activations, by rank.

    Args:
        input: layout of the network input (images, NCHW).
        spatial: layout of every other 4-D activation (``Layout.spatial(channels_last=True)``
            for NHWC networks such as timm's Swin).
        tokens: declared token layouts; a 3-D activation ``(B, N, C)`` takes the first whose
            ``num_prefix_tokens + h * w`` equals ``N``, or the same grid without prefix when
            ``N == h * w`` (tokens before the class token is prepended).

        outputs: output layouts of particular layers, by qualified module name (fnmatch
            patterns allowed); they take precedence over the rank rules.

    A layer that declares its own output format, an ``output_fmt`` attribute equal to
    ``"NHWC"`` or ``"NCHW"`` (timm's patch embeddings do), is taken at its word for 4-D
    outputs. 2-D (and 1-D) activations are invariant. Anything else is an error naming the
    layer.
    """

    input: Layout = field(default_factory=Layout.spatial)
    spatial: Layout = field(default_factory=Layout.spatial)
    tokens: tuple[Layout, ...] = ()
    outputs: Mapping[str, Layout] = field(default_factory=dict)

    def output_layout(self, name: str, module: nn.Module, t: torch.Tensor, where: str) -> Layout:
        """Layout of a layer's output: explicit declaration, the module's own, or by rank."""
        for pattern, lay in self.outputs.items():
            if name == pattern or fnmatch.fnmatchcase(name, pattern):
                return lay
        fmt = getattr(module, "output_fmt", None)
        fmt = getattr(fmt, "value", fmt)
        if t.ndim == 4 and fmt in ("NHWC", "NCHW"):
            return Layout.spatial(channels_last=fmt == "NHWC")
        return self.resolve(t, where)

    def __post_init__(self) -> None:
        toks = (self.tokens,) if isinstance(self.tokens, Layout) else tuple(self.tokens)
        for t in toks:
            if t.kind != "tokens":
                raise ValueError(f"tokens= takes token layouts, got {t}")
        object.__setattr__(self, "tokens", toks)

    def resolve(self, t: torch.Tensor, where: str) -> Layout:
        if t.ndim <= 2:
            return Layout.invariant()
        if t.ndim == 4:
            return self.spatial
        if t.ndim == 3:
            n = t.shape[1]
            for lay in self.tokens:
                h, w = lay.grid  # type: ignore[misc]
                if n == lay.num_prefix_tokens + h * w:
                    return lay
            for lay in self.tokens:
                h, w = lay.grid  # type: ignore[misc]
                if n == h * w:
                    return Layout.tokens(lay.grid, 0)  # type: ignore[arg-type]
            declared = ", ".join(f"{x.num_prefix_tokens}+{x.grid[0]}x{x.grid[1]}" for x in self.tokens) or "none"
            raise ValueError(
                f"{where}: a (B, N, C) activation with N={n} matches no declared token layout ({declared}); "
                f"declare it with ActivationLayouts(tokens=...) or record the enclosing module as a composite"
            )
        raise ValueError(f"{where}: no layout for a {t.ndim}-D activation of shape {tuple(t.shape)}")


@dataclass(frozen=True)
class LayerRecord:
    """One layer call.

    Attributes:
        index: call order (0-based) among recorded calls.
        name: qualified module name (``""`` for the root).
        cls: class name of the module.
        kind: coarse layer type (:func:`layer_kind`).
        value: ``(B,)`` float64, :math:`\\|c_i\\|^2/\\dim(out)` per image.
        share: ``(B,)`` float64, :math:`\\langle c_i, L F\\rangle/\\dim(out)` per image.
        stderr: ``(B,)`` standard error of ``value`` over probes (stochastic method) or None.
    """

    index: int
    name: str
    cls: str
    kind: str
    value: torch.Tensor
    share: torch.Tensor
    stderr: torch.Tensor | None = None


@dataclass(frozen=True)
class LayerwiseResult:
    """Layerwise decomposition of one generator's Lie derivative, per image.

    ``end_to_end`` (``(B,)``) is the LEE of the whole network from its own JVP;
    ``unattributed`` is :math:`\\|L F - \\sum_i c_i\\|^2/\\dim` (a probe estimate for the
    stochastic method), ``unattributed_share`` is ``end_to_end - sum(r.share for r in
    records)`` (the shares are exact in both methods), i.e.
    :math:`\\langle L F - \\sum_i c_i, L F\\rangle/\\dim`, so that the table adds up to
    ``end_to_end`` to rounding.
    """

    generator: str
    method: str
    output: str
    dim_out: int
    records: tuple[LayerRecord, ...]
    end_to_end: torch.Tensor
    unattributed: torch.Tensor
    unattributed_share: torch.Tensor
    num_probes: int | None = None

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def total_share(self) -> torch.Tensor:
        """Sum of all shares including the unattributed one (equals ``end_to_end``)."""
        out = self.unattributed_share.clone()
        for r in self.records:
            out = out + r.share
        return out

    def rows(self) -> list[dict]:
        """Long-format rows (one per image and layer call, plus end-to-end and unattributed)."""
        rows = []
        b = self.end_to_end.shape[0]
        for i in range(b):
            for r in self.records:
                rows.append(
                    dict(
                        sample=i,
                        index=r.index,
                        layer=r.name,
                        cls=r.cls,
                        kind=r.kind,
                        value=float(r.value[i]),
                        share=float(r.share[i]),
                        stderr=None if r.stderr is None else float(r.stderr[i]),
                    )
                )
            rows.append(
                dict(
                    sample=i,
                    index=-1,
                    layer="<end_to_end>",
                    cls="",
                    kind="end_to_end",
                    value=float(self.end_to_end[i]),
                    share=float(self.end_to_end[i]),
                    stderr=None,
                )
            )
            rows.append(
                dict(
                    sample=i,
                    index=-2,
                    layer="<unattributed>",
                    cls="",
                    kind="unattributed",
                    value=float(self.unattributed[i]),
                    share=float(self.unattributed_share[i]),
                    stderr=None,
                )
            )
        return rows


_ROUNDING_FACTOR = 64.0
"""A local Lie derivative below this many ulps of its two terms counts as zero."""


def layer_units(model: nn.Module, composites: Iterable[str] = DEFAULT_COMPOSITES) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of the recorded layers: leaves (``nn.Identity`` excluded) and
    modules whose class is in ``composites``, whose children are then not recorded."""
    comp = frozenset(composites)
    out: list[tuple[str, nn.Module]] = []
    skip: list[str] = []
    for name, mod in model.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(mod, nn.Identity):
            continue
        is_comp = type(mod).__name__ in comp
        if is_comp or not any(True for _ in mod.children()):
            out.append((name, mod))
            if is_comp:
                skip.append(name)
    return out


class LayerwiseRecorder(LayerRecorder):
    """The :class:`~liecore._recorder.LayerRecorder` of a layerwise decomposition.

    A context manager: on entry it registers hooks on the recorded layers of ``model``
    (:func:`layer_units`), on exit it removes every handle (nothing is left on the modules).
    :meth:`record` keeps each call's input and output, :meth:`inject` adds ``s[k] * v[k]``
    to the output of call ``k``.
    """

    def __init__(self, model: nn.Module, composites: Iterable[str] = DEFAULT_COMPOSITES):
        super().__init__(model, layer_units(model, composites))


def local_lie_derivative(
    call: LayerCall,
    gen: Generator,
    layouts: ActivationLayouts,
    interpolation: Interpolation,
    mean,
    std,
) -> torch.Tensor | None:
    """:math:`D f_i(x)[T x] - T f_i(x)` for one recorded call, or None when identically zero."""
    where = f"layer {call.name or '<root>'} ({type(call.module).__name__})"
    is_input = call.is_input
    lay_in = layouts.input if is_input else layouts.resolve(call.x, where + " input")
    lay_out = layouts.output_layout(call.name, call.module, call.y, where + " output")
    if is_input:
        tin = input_tangent(call.x, gen, interpolation=interpolation, mean=mean, std=std)
    elif lay_in.moves and gen.is_spatial:
        prefix, grid = lay_in.to_nchw(call.x)
        tg = spatial_tangent_nchw(grid, gen.matrix, interpolation)
        tin = lay_in.from_nchw(None if prefix is None else torch.zeros_like(prefix), tg)
    else:
        tin = None
    tout = output_tangent(call.y, gen, lay_out, interpolation)
    if tin is None and tout is None:
        return None
    if tin is None:
        return -tout
    _, dy = jvp(call.apply, (call.x.clone(),), (tin,))
    if tout is None:
        return dy
    v = dy - tout
    # equivariant layers (eval batch norm, 1x1 convolutions, dropout) cancel to rounding:
    # record them as exact zeros and keep them out of the push-forward
    floor = _ROUNDING_FACTOR * torch.finfo(v.dtype).eps * max(float(dy.abs().max()), float(tout.abs().max()))
    if float(v.abs().max()) <= floor:
        return None
    return v


def layerwise(
    model: nn.Module,
    x: torch.Tensor,
    generator: str | Generator,
    *,
    method: str = "exact",
    output: str | None = None,
    out_layout: Layout | None = None,
    layouts: ActivationLayouts | None = None,
    composites: Iterable[str] = DEFAULT_COMPOSITES,
    interpolation: Interpolation = "cubic",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_probes: int = 100,
    seed: int = 0,
    rng: int | Rng | None = None,
    chunk_size: int | None = 16,
) -> LayerwiseResult:
    r"""Decompose :math:`L_X F(x)` into per-layer-call contributions.

    Args:
        model: the network (an ``nn.Module``), put in eval mode while it runs.
        x: images ``(B, C, H, W)``.
        generator: one generator (name or :class:`Generator`).
        method: ``"exact"`` (forward-mode push-forward) or ``"stochastic"`` (random probes).
        output: ``"probs"`` (default for invariant outputs) or ``"logits"``.
        out_layout: the network output's layout (default invariant).
        layouts: declared activation layouts (default: NCHW maps, no token layouts).
        composites: class names recorded as one layer.
        interpolation, mean, std: as in :func:`liecore.lie_derivatives`.
        num_probes: probes of the stochastic method.
        seed: seed of the probes when ``rng`` is None (a generator on ``x``'s device draws
            the whole batch's probes).
        rng: where the stochastic method draws its probes from, on the CPU (moved to ``x``'s
            device afterwards, so the same draws on every device): a seed, one CPU
            ``torch.Generator`` for the batch, or a sequence of one per image; then image
            ``i``'s probes come from ``rng[i]`` alone and its values equal those of the
            image evaluated alone with that generator (up to rounding of the batched layers).
        chunk_size: layers per vectorized pass of the exact method (bounds memory; the
            primal is recomputed once per chunk).

    Returns:
        :class:`LayerwiseResult`.
    """
    gen = get_generator(generator)
    check_interpolation(interpolation)
    if method not in ("exact", "stochastic"):
        raise ValueError(f"unknown method {method!r}; choose 'exact' or 'stochastic'")
    if method == "stochastic" and num_probes < 1:
        raise ValueError("num_probes must be >= 1")
    probe_rng = _probe_rng(rng, x.shape[0])
    if not isinstance(model, nn.Module):
        raise TypeError("layerwise needs an nn.Module (its layers are found in the module tree)")
    layouts = layouts or ActivationLayouts()
    out_layout = out_layout or Layout.invariant()
    # a module (Probs holds the model): differentiable_mode(f) reaches the model's layers
    f, output = resolve_output(model, out_layout, output)
    # read only; each forward pass below gets its own copy, since a layer that writes into
    # its input (ReLU(inplace=True) first) would change the input of the passes after it
    x = x.detach()

    with LayerwiseRecorder(model, composites) as rec:
        with differentiable_mode(model):
            y, calls = rec.record(f, x.clone())
            calls = [c for c in calls if c.is_tensor_call]
            vectors = [local_lie_derivative(c, gen, layouts, interpolation, mean, std) for c in calls]
        _, e2e = lie_derivatives(f, x, [gen], out_layout=out_layout, interpolation=interpolation, mean=mean, std=std)
        e2e = e2e[0]
        dim = int(y[0].numel())
        b = x.shape[0]
        rec.set_vectors(vectors)
        active = [i for i, v in enumerate(vectors) if v is not None]
        zeros = torch.zeros(b, dtype=torch.float64)
        values = {i: zeros for i in range(len(calls))}
        shares = dict(values)
        stderrs: dict[int, torch.Tensor] = {}
        e2e_flat = e2e.flatten(1)
        end_to_end = (e2e_flat.double().square().sum(1) / dim).cpu()

        if method == "exact" and active:
            contrib = _push_forward_exact(f, x, rec, len(active), chunk_size)  # (K, B, ...)
            cflat = contrib.flatten(2)
            for slot, i in enumerate(active):
                values[i] = (cflat[slot].double().square().sum(1) / dim).cpu()
                shares[i] = ((cflat[slot].double() * e2e_flat.double()).sum(1) / dim).cpu()
            rest = e2e_flat.double() - cflat.double().sum(0)
            unattributed = (rest.square().sum(1) / dim).cpu()
        elif method == "stochastic" and active:
            est = _probe_stochastic(f, x, rec, len(active), e2e_flat, num_probes, seed, probe_rng)
            for slot, i in enumerate(active):
                values[i] = est["value"][slot] / dim
                shares[i] = est["share"][slot] / dim
                stderrs[i] = est["value_se"][slot] / dim
            unattributed = est["rest"] / dim
        else:
            unattributed = end_to_end.clone()
        # shares are exact in both methods; the unattributed share is what they leave over,
        # so that the table adds up to the end-to-end value
        unattributed_share = end_to_end.clone()
        for v in shares.values():
            unattributed_share = unattributed_share - v

    records = tuple(
        LayerRecord(
            index=i,
            name=c.name,
            cls=type(c.module).__name__,
            kind=layer_kind(type(c.module).__name__),
            value=values[i],
            share=shares[i],
            stderr=stderrs.get(i, zeros if method == "stochastic" else None),
        )
        for i, c in enumerate(calls)
    )
    return LayerwiseResult(
        generator=gen.name,
        method=method,
        output=output,
        dim_out=dim,
        records=records,
        end_to_end=end_to_end,
        unattributed=unattributed,
        unattributed_share=unattributed_share,
        num_probes=num_probes if method == "stochastic" else None,
    )


def _push_forward_exact(f, x: torch.Tensor, rec: LayerwiseRecorder, k: int, chunk_size: int | None) -> torch.Tensor:
    """All :math:`dF_{N:i+1} v_i` at once: JVP in a dummy scale ``s`` (primal 0) that injects
    ``s[i] * v_i`` at call ``i``; vmapping over the basis tangents ``e_i`` gives one
    contribution per slot while the primal is computed once."""
    s0 = torch.zeros(k, dtype=x.dtype, device=x.device)

    def g(s):
        return rec.inject(f, x.clone(), s)  # a fresh input per pass (in-place first layers)

    basis = torch.eye(k, dtype=x.dtype, device=x.device)
    with differentiable_mode(rec.model):
        _, out = batched_jvp(g, s0, basis, chunk_size)
    return out


def _probe_rng(rng: int | Rng | None, b: int) -> Rng | None:
    """The CPU generator(s) of the probes: None (a device generator seeded with ``seed``), one
    generator (a seed is made one), or one per image (checked against the batch size)."""
    if rng is None:
        return None
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return make_rng(None, int(rng))
    return make_rng(rng, None, b)


def _draw_probe(shape: torch.Size, dtype: torch.dtype, device: torch.device, dev_gen, rng: Rng | None) -> torch.Tensor:
    """One Gaussian probe of the output's shape ``(B, ...)``: from the device generator, or
    drawn on the CPU (image ``i``'s slice from ``rng[i]`` for per-image generators) and moved."""
    if rng is None:
        return torch.randn(shape, generator=dev_gen, dtype=dtype, device=device)
    return randn(rng, shape, dtype).to(device)


def _probe_stochastic(
    f, x, rec: LayerwiseRecorder, k: int, e2e_flat: torch.Tensor, num_probes: int, seed: int, rng: Rng | None = None
) -> dict:
    """:math:`\\|c_i\\|^2` estimated from ``num_probes`` Gaussian probes (one backward pass per
    probe gives every layer's :math:`z^\\top c_i`), with standard errors; the shares
    :math:`\\langle c_i, LF\\rangle` exactly, from one more backward pass with
    :math:`LF` as the output gradient. Probes come from ``rng`` (CPU, see :func:`_draw_probe`)
    or, when it is None, from a generator on ``x``'s device seeded with ``seed``."""
    b = x.shape[0]
    s = torch.zeros(k, b, dtype=x.dtype, device=x.device, requires_grad=True)
    with differentiable_mode(rec.model, grad=True):
        out = rec.inject(f, x.clone(), s)  # a fresh input (in-place first layers)
    e2e = e2e_flat.reshape(out.shape).to(out.dtype)
    (share,) = torch.autograd.grad(out, s, grad_outputs=e2e, retain_graph=True)
    share = share.detach().double().cpu()  # (K, B): <c_i, L F> per image
    dev_gen = torch.Generator(device=x.device).manual_seed(seed) if rng is None else None
    sq = torch.zeros(k, b, dtype=torch.float64)
    sq2 = torch.zeros(k, b, dtype=torch.float64)
    rest = torch.zeros(b, dtype=torch.float64)
    for p in range(num_probes):
        z = _draw_probe(out.shape, out.dtype, out.device, dev_gen, rng)
        (proj,) = torch.autograd.grad(out, s, grad_outputs=z, retain_graph=p + 1 < num_probes)
        proj = proj.detach().double().cpu()  # (K, B): z^T c_i per image
        pe = (z * e2e).flatten(1).sum(1).double().cpu()  # z^T L F
        sq += proj.square()
        sq2 += proj.square().square()
        rest += (pe - proj.sum(0)).square()
    n = float(num_probes)
    mean_sq = sq / n
    var = (sq2 / n - mean_sq.square()).clamp_min(0) * (n / max(n - 1, 1))
    return {
        "value": mean_sq,
        "value_se": var.sqrt() / math.sqrt(n),
        "share": share,
        "rest": rest / n,
    }
