"""Progress of a sweep, on a terminal and off it (Ray Job logs, cron logs), and the plain-text tables the
commands print (:func:`format_table`).

On a terminal: one line rewritten in place (units done/failed/remaining, images/s, ETA). Off a
terminal: plain log lines, one per finished or failed unit, and at most every ``interval`` seconds
(30 by default) one with the units done, images/s and ETA. ``--no-progress`` silences both.

The throughput is measured over the units themselves: images of the finished units divided by the
time since the first of them started (its ``started_at``), so Ray's start-up, the dataset's decoding
and the actors' imports do not count. The ETA comes from each unit's relative cost (family and model
size: ``pipelines.execute.unit_cost``, given by :meth:`Progress.set_costs`): the seconds per unit of cost
of the finished units of each family (their own ``wall_s``; other families' when a family has none
finished yet) times the cost of the units left, over the actors working, counted down between two
finished units. Without costs it is the remaining images at the measured rate.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

__all__ = ["Progress", "format_table"]


def _stamp() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


class Progress:
    """Counts finished units and reports them.

    Args:
        total_units: Units this invocation runs.
        total_images: Images over those units (a unit of n images counts n).
        stream: Where to write (default stderr).
        enabled: False: silent (``--no-progress``); default True.
        plain: Log lines instead of a line rewritten in place; default: when ``stream`` is not a terminal.
        interval: Seconds between two periodic lines in plain mode.
    """

    def __init__(self, total_units: int, total_images: int, *, stream: TextIO | None = None,
                 enabled: bool | None = None, plain: bool | None = None, interval: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.stream = stream or sys.stderr
        self.enabled = True if enabled is None else enabled
        isatty = getattr(self.stream, "isatty", None)
        self.plain = (not (isatty and isatty())) if plain is None else plain
        self.interval = interval
        self.total_units = total_units
        self.total_images = total_images
        self.done = self.failed = self.images = self.images_failed = 0
        self.t0 = time.time()
        self.first_start: float | None = None  # epoch seconds: when the first finished unit started
        self.clock = clock
        self._last = clock()
        self.n_actors = 1
        self.unit_costs: dict[str, tuple[str, float]] = {}  # unit key -> (family, relative cost)
        self.finished: set[str] = set()
        self.spent: dict[str, list[float]] = {}  # family -> [wall seconds, cost] of its finished units
        self._eta_at: tuple[float, float | None] | None = None  # (when, ETA then), set at each finished unit

    def set_costs(self, costs: Iterable[tuple[str, str, float]]) -> None:
        """The units to run as (key, family, relative cost): the ETA then follows per-unit cost."""
        self.unit_costs = {key: (family, float(cost)) for key, family, cost in costs}

    def _cost_eta(self) -> float | None:
        """Seconds left: the cost of the units left at each family's seconds per cost, over the actors."""
        wall = sum(s[0] for s in self.spent.values())
        cost = sum(s[1] for s in self.spent.values())
        if cost <= 0:
            return None
        left = [(f, c) for k, (f, c) in self.unit_costs.items() if k not in self.finished]
        secs = sum(c * (self.spent[f][0] / self.spent[f][1] if self.spent.get(f, [0, 0])[1] > 0 else wall / cost)
                   for f, c in left)
        return secs / max(1, min(self.n_actors, len(left)))

    # ---------------------------------------------------------------------------------- counting
    def update(self, status: str, n_images: int, row: dict[str, Any] | None = None, *, key: str | None = None) -> None:
        """Count one finished unit (``row``: its ``runs`` summary, for the log line and the rate; ``key``: its
        unit key, for the cost-based ETA)."""
        if status == "done":
            self.done += 1
            self.images += n_images
        else:
            self.failed += 1
            self.images_failed += n_images
        started = (row or {}).get("started_at")
        if isinstance(started, _dt.datetime):
            ts = started.timestamp()
            self.first_start = ts if self.first_start is None else min(self.first_start, ts)
        if key is not None and key in self.unit_costs:
            self.finished.add(key)
            wall = (row or {}).get("wall_s")
            if status == "done" and wall is not None:
                family, cost = self.unit_costs[key]
                spent = self.spent.setdefault(family, [0.0, 0.0])
                spent[0] += float(wall)
                spent[1] += cost
            self._eta_at = (self.clock(), self._cost_eta())
        if not self.enabled:
            return
        if self.plain:
            self._write(self.unit_line(status, n_images, row or {}) + "\n")
        else:
            self.render(force=True)

    @property
    def remaining(self) -> int:
        return self.total_units - self.done - self.failed

    def rate(self, now: float | None = None) -> float | None:
        """Images per second over the units finished so far (None before the first one)."""
        if self.first_start is None or not self.images:
            return None
        span = (now or time.time()) - self.first_start
        return self.images / span if span > 0 else None

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left (None before an estimate exists): cost-based with :meth:`set_costs`, else by images."""
        if self._eta_at is not None and self._eta_at[1] is not None:
            when, eta = self._eta_at
            return max(0.0, eta - ((now if now is not None else self.clock()) - when))
        if self.unit_costs:
            return None
        rate = self.rate(now)
        if rate is None:
            return None
        return max(0.0, self.total_images - self.images - self.images_failed) / rate

    # ----------------------------------------------------------------------------------- lines
    def line(self) -> str:
        now = self.clock()
        rate, eta = self.rate(now), self.eta(now)
        finished = self.done + self.failed
        return (
            f"units {finished}/{self.total_units}: {self.done} done, {self.failed} failed, "
            f"{self.remaining} remaining | {'?' if rate is None else f'{rate:.1f}'} images/s | "
            f"elapsed {now - self.t0:,.0f}s | ETA {'?' if eta is None else f'{eta:,.0f}s'}"
        )

    def unit_line(self, status: str, n_images: int, row: dict[str, Any]) -> str:
        """``lee: [HH:MM:SS] unit 3/12 done: lee test_resnet@sample-test (16 images, 2.1s; node 1a2b3c4d pid 123)``."""
        what = f"{row.get('family', '?')} {row.get('model', '?')}@{row.get('dataset', '?')}"
        where = []
        if row.get("wall_s") is not None:
            where.append(f"{row['wall_s']:.1f}s")
        if row.get("node_id"):
            where.append(f"node {str(row['node_id'])[:8]} pid {row.get('pid')}")
        detail = f" ({n_images} images{', ' + '; '.join(where) if where else ''})"
        text = f"lee: [{_stamp()}] unit {self.done + self.failed}/{self.total_units} {status}: {what}{detail}"
        if status != "done" and row.get("error"):
            text += f": {str(row['error']).strip().splitlines()[0][:300]}"
        return text

    def start(self, n_actors: int) -> None:
        """The first line of a run (plain mode): what is to be done, on how many actors."""
        self.n_actors = max(1, n_actors)
        if self.enabled and self.plain:
            self._write(f"lee: [{_stamp()}] running {self.total_units} unit(s), {self.total_images} images, "
                        f"on {n_actors} actor(s)\n")
        self._last = time.time()

    def note(self, text: str) -> None:
        """One line of its own (a worker that died, a retry), shown even with ``--no-progress``."""
        if self.enabled and not self.plain:
            self._write("\r\033[K" + text + "\n")
            self.render(force=True)
        else:
            self._write(text + "\n")

    def render(self, force: bool = False) -> None:
        """The in-place line (terminal, at most every 0.5 s) or a periodic log line (plain, every ``interval``)."""
        if not self.enabled:
            return
        now = time.time()
        if self.plain:
            if now - self._last >= self.interval:
                self._last = now
                self._write(f"lee: [{_stamp()}] {self.line()}\n")
            return
        if not force and now - self._last < 0.5:
            return
        self._last = now
        self._write("\r\033[K" + self.line())

    def close(self) -> None:
        if not self.enabled:
            return
        if self.plain:
            self._write(f"lee: [{_stamp()}] {self.line()}\n")
        else:
            self._write("\r\033[K" + self.line() + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain-text table: ``columns`` = [(key, header)]."""
    if not rows:
        return "(no rows)"
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
