r"""Declared layouts of tensors: how a model's input, output or activation transforms.

Nothing is inferred from shapes: the caller declares what a tensor is.

* ``Layout.invariant()``: the tensor does not move (class logits, probabilities,
  pooled features). Its Lie derivative is :math:`D f(x)[T_A x]`.
* ``Layout.spatial()``: a map ``(B, C, H, W)`` (or ``(B, H, W, C)`` with
  ``channels_last=True``) on its own grid; it is transformed like the image, so
  :math:`L_A f(x) = D f(x)[T_A x] - T_A f(x)`.
* ``Layout.tokens(grid, num_prefix_tokens)``: a sequence ``(B, N, C)`` whose first
  ``num_prefix_tokens`` entries (class, distillation, register tokens) are invariant and
  whose remaining ``h * w`` entries form a row-major spatial grid ``(h, w)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Layout"]

Kind = Literal["invariant", "spatial", "tokens"]


@dataclass(frozen=True)
class Layout:
    """How a tensor transforms under spatial generators.

    Use the constructors :meth:`invariant`, :meth:`spatial` and :meth:`tokens`.
    """

    kind: Kind
    channels_last: bool = False
    num_prefix_tokens: int = 0
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("invariant", "spatial", "tokens"):
            raise ValueError(f"unknown layout kind {self.kind!r}")
        if self.kind == "tokens":
            if self.grid is None or len(self.grid) != 2 or min(self.grid) < 1:
                raise ValueError(f"a token layout needs a grid (h, w) of positive sizes, got {self.grid!r}")
            object.__setattr__(self, "grid", (int(self.grid[0]), int(self.grid[1])))
            if self.num_prefix_tokens < 0:
                raise ValueError("num_prefix_tokens must be >= 0")

    @classmethod
    def invariant(cls) -> Layout:
        return cls("invariant")

    @classmethod
    def spatial(cls, channels_last: bool = False) -> Layout:
        return cls("spatial", channels_last=channels_last)

    @classmethod
    def tokens(cls, grid: tuple[int, int], num_prefix_tokens: int = 0) -> Layout:
        return cls("tokens", num_prefix_tokens=num_prefix_tokens, grid=tuple(grid))

    @property
    def moves(self) -> bool:
        """Whether spatial generators act on tensors of this layout."""
        return self.kind != "invariant"

    def check(self, y: torch.Tensor, what: str = "tensor") -> None:
        """Raise a clear error when ``y`` cannot have this layout."""
        if self.kind == "spatial" and y.ndim != 4:
            raise ValueError(f"{what} declared spatial needs 4 dims (B, C, H, W), got shape {tuple(y.shape)}")
        if self.kind == "tokens":
            if y.ndim != 3:
                raise ValueError(f"{what} declared as tokens needs 3 dims (B, N, C), got shape {tuple(y.shape)}")
            h, w = self.grid  # type: ignore[misc]
            if y.shape[1] != self.num_prefix_tokens + h * w:
                raise ValueError(
                    f"{what} has {y.shape[1]} tokens but the declared layout has "
                    f"{self.num_prefix_tokens} prefix tokens + a {h}x{w} grid = {self.num_prefix_tokens + h * w}"
                )

    # The two helpers below move between a tensor of this layout and a (B, C, H, W) map
    # of its moving part, so that one spatial tangent serves every layout.
    def to_nchw(self, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Split ``y`` into its invariant prefix (or None) and an NCHW map of its spatial part."""
        if self.kind == "invariant":
            return y, None
        if self.kind == "spatial":
            return None, (y.permute(0, 3, 1, 2) if self.channels_last else y)
        h, w = self.grid  # type: ignore[misc]
        p = self.num_prefix_tokens
        prefix = y[:, :p] if p else None
        grid = y[:, p:].transpose(1, 2).reshape(y.shape[0], y.shape[2], h, w)
        return prefix, grid

    def from_nchw(self, prefix: torch.Tensor | None, grid: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_nchw` (prefix may be replaced by zeros of its shape)."""
        if self.kind == "spatial":
            return grid.permute(0, 2, 3, 1) if self.channels_last else grid
        if self.kind != "tokens":
            raise ValueError("from_nchw needs a spatial or token layout")
        b, c = grid.shape[:2]
        seq = grid.reshape(b, c, -1).transpose(1, 2)
        return seq if prefix is None else torch.cat([prefix, seq], dim=1)
