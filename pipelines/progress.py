"""One progress line for a sweep (units done/failed/remaining, images/s, ETA); silent off a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total_units: int, total_images: int, *, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total_units = total_units
        self.total_images = total_images
        self.done = self.failed = self.images = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, status: str, n_images: int) -> None:
        if status == "done":
            self.done += 1
            self.images += n_images
        else:
            self.failed += 1
        self.render(force=True)

    @property
    def remaining(self) -> int:
        return self.total_units - self.done - self.failed

    def line(self) -> str:
        el = time.perf_counter() - self.t0
        rate = self.images / el if el > 0 else 0.0
        finished = self.done + self.failed
        eta = (el / finished * self.remaining) if finished else float("nan")
        eta_s = "?" if eta != eta else f"{eta:,.0f}s"
        return (
            f"units {finished}/{self.total_units}: {self.done} done, {self.failed} failed, "
            f"{self.remaining} remaining | {rate:.1f} images/s | elapsed {el:,.0f}s | ETA {eta_s}"
        )

    def render(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        self.stream.write("\r\033[K" + self.line())
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K" + self.line() + "\n")
            self.stream.flush()
