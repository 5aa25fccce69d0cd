r"""Lie-algebra generators of continuous image transformations.

Images are continuous signals on normalized coordinates :math:`p = (u, v) \in [-1, 1]^2`
(``u`` along width, ``v`` along height, pixel centres at :math:`u_j = -1 + 2j/(W-1)`).
A *spatial* generator is an affine vector field given by a :math:`2 \times 3` matrix
:math:`A`; the image transformed at flow time :math:`t` samples the input at
:math:`e^{t\hat A} \tilde p`, with :math:`\hat A` the :math:`3 \times 3` homogeneous lift of
:math:`A` and :math:`\tilde p = (u, v, 1)`. Its tangent on an image :math:`h` is

.. math:: T_A h(p) = \nabla h(p) \cdot (A \tilde p).

*Colour* generators act on intensities: ``brightness`` multiplies raw intensities by
:math:`e^t`, ``contrast`` multiplies the normalized image by :math:`e^t`, ``saturation``
moves raw intensities away from their grey value, :math:`g + e^t (x - g)`.

Generators form a real vector space (``a * X + b * Y``); tangents are linear in the
generator. The bracket :meth:`Generator.bracket` is defined so that tangents form a Lie
algebra homomorphism, :math:`[T_X, T_Y] = T_{[X, Y]}`; for spatial generators this is
:math:`[X, Y] = BA - AB` in terms of the matrices (the vector-field bracket).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from lee_names import did_you_mean

__all__ = [
    "COLOR_KINDS",
    "GENERATORS",
    "PAPER_GENERATORS",
    "Generator",
    "get_generator",
    "resolve_generators",
]

COLOR_KINDS: tuple[str, ...] = ("brightness", "contrast", "saturation")


def _freeze_matrix(m) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    rows = tuple(tuple(float(v) for v in row) for row in m)
    if len(rows) != 2 or any(len(r) != 3 for r in rows):
        raise ValueError(f"a spatial generator is a 2x3 matrix, got {rows!r}")
    return rows  # type: ignore[return-value]


@dataclass(frozen=True)
class Generator:
    r"""A generator of image transformations: an affine vector field plus colour terms.

    Args:
        name: label used in results.
        matrix: the :math:`2 \times 3` matrix :math:`A` of the affine vector field
            :math:`p \mapsto A \tilde p` (rows: ``du``, ``dv`` components).
        color: coefficients of the colour generators, a mapping from ``brightness``,
            ``contrast``, ``saturation`` to reals.

    Generators can be added, subtracted and scaled; the result is a new generator whose
    tangent is the same linear combination of tangents.
    """

    name: str
    matrix: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    color: tuple[tuple[str, float], ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "matrix", _freeze_matrix(self.matrix))
        color = dict(self.color.items() if isinstance(self.color, Mapping) else self.color)
        unknown = sorted(set(color) - set(COLOR_KINDS))
        if unknown:
            raise ValueError(f"unknown colour generator(s) {unknown}; known: {list(COLOR_KINDS)}")
        object.__setattr__(self, "color", tuple((k, float(color[k])) for k in COLOR_KINDS if color.get(k, 0.0) != 0.0))

    # --- structure -------------------------------------------------------------------
    @property
    def is_spatial(self) -> bool:
        """Whether the generator moves pixels (non-zero affine part)."""
        return any(v != 0.0 for row in self.matrix for v in row)

    @property
    def is_color(self) -> bool:
        """Whether the generator has a colour part."""
        return bool(self.color)

    @property
    def color_coeffs(self) -> dict[str, float]:
        return dict(self.color)

    def matrix_tensor(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        """The :math:`2 \\times 3` matrix as a tensor."""
        return torch.tensor(self.matrix, dtype=dtype, device=device)

    def homogeneous(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        r"""The :math:`3 \times 3` lift :math:`\hat A` (last row zero), so that the flow is
        :math:`e^{t \hat A}`."""
        out = torch.zeros(3, 3, dtype=dtype, device=device)
        out[:2] = self.matrix_tensor(dtype, device)
        return out

    def flow(self, t: float, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        r"""The affine map :math:`e^{t \hat A}` as a :math:`3 \times 3` matrix."""
        return torch.linalg.matrix_exp(t * self.homogeneous(dtype, device))

    # --- vector space and bracket ------------------------------------------------------
    def _combine(self, other: Generator, a: float, b: float, name: str) -> Generator:
        m = tuple(
            tuple(a * x + b * y for x, y in zip(r1, r2, strict=True))
            for r1, r2 in zip(self.matrix, other.matrix, strict=True)
        )
        c1, c2 = self.color_coeffs, other.color_coeffs
        color = {k: a * c1.get(k, 0.0) + b * c2.get(k, 0.0) for k in COLOR_KINDS}
        return Generator(name, m, color)

    def __add__(self, other: Generator) -> Generator:
        return self._combine(other, 1.0, 1.0, f"({self.name}+{other.name})")

    def __sub__(self, other: Generator) -> Generator:
        return self._combine(other, 1.0, -1.0, f"({self.name}-{other.name})")

    def __neg__(self) -> Generator:
        return self * -1.0

    def __mul__(self, s: float) -> Generator:
        s = float(s)
        return self._combine(self, s, 0.0, f"{s:g}*{self.name}")

    __rmul__ = __mul__

    def renamed(self, name: str) -> Generator:
        return Generator(name, self.matrix, dict(self.color))

    def bracket(self, other: Generator) -> Generator:
        r"""Lie bracket with :math:`[T_X, T_Y] = T_{[X, Y]}` on images.

        For spatial generators the vector-field bracket of :math:`p \mapsto A\tilde p` and
        :math:`p \mapsto B\tilde p` is :math:`(BA - AB)\tilde p`. Colour generators commute
        with spatial ones and with each other (they are pointwise in space and, for the
        three generators here, mutually commuting up to the affine grey term), so only
        spatial-spatial brackets are supported.
        """
        if self.is_color or other.is_color:
            raise ValueError("bracket is defined here for spatial generators only")
        a = self.homogeneous()
        b = other.homogeneous()
        c = b @ a - a @ b
        return Generator(f"[{self.name},{other.name}]", c[:2].tolist())


def _spatial(name: str, rows) -> Generator:
    return Generator(name, rows)


GENERATORS: dict[str, Generator] = {
    "translate_x": _spatial("translate_x", [[0, 0, 1], [0, 0, 0]]),
    "translate_y": _spatial("translate_y", [[0, 0, 0], [0, 0, 1]]),
    "rotate": _spatial("rotate", [[0, 1, 0], [-1, 0, 0]]),
    "scale": _spatial("scale", [[-1, 0, 0], [0, -1, 0]]),
    "shear_x": _spatial("shear_x", [[0, 1, 0], [0, 0, 0]]),
    "shear_y": _spatial("shear_y", [[0, 0, 0], [1, 0, 0]]),
    "stretch_x": _spatial("stretch_x", [[1, 0, 0], [0, 0, 0]]),
    "stretch_y": _spatial("stretch_y", [[0, 0, 0], [0, 1, 0]]),
    "hyperbolic_rotate": _spatial("hyperbolic_rotate", [[0, 1, 0], [1, 0, 0]]),
    "brightness": Generator("brightness", color={"brightness": 1.0}),
    "contrast": Generator("contrast", color={"contrast": 1.0}),
    "saturation": Generator("saturation", color={"saturation": 1.0}),
}
"""The named generators (name -> :class:`Generator`)."""

PAPER_GENERATORS: tuple[str, ...] = (
    "translate_x",
    "translate_y",
    "rotate",
    "shear_x",
    "shear_y",
    "stretch_x",
    "stretch_y",
    "contrast",
)
"""The eight generators of the paper's tables."""


def get_generator(name: str | Generator) -> Generator:
    """Look a generator up by name (a :class:`Generator` is returned as is)."""
    if isinstance(name, Generator):
        return name
    try:
        return GENERATORS[name]
    except KeyError:
        hint = did_you_mean(str(name), GENERATORS, n=3)
        raise ValueError(f"unknown generator {name!r}{hint} (known: {', '.join(GENERATORS)})") from None


def resolve_generators(generators) -> tuple[Generator, ...]:
    """Turn a name, a generator, or a sequence of either into a tuple of generators.

    ``None`` means the paper's eight generators.
    """
    if generators is None:
        generators = PAPER_GENERATORS
    if isinstance(generators, (str, Generator)):
        generators = (generators,)
    out = tuple(get_generator(g) for g in generators)
    if not out:
        raise ValueError("no generators given")
    names = [g.name for g in out]
    if len(set(names)) != len(names):
        raise ValueError(f"generator names must be unique, got {names}")
    return out
