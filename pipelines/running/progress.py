"""Progress of a sweep, on a terminal and off it (Ray Job logs, cron logs), and the plain-text tables the
commands print (:func:`format_table`).

On a terminal: one line rewritten in place (units done/failed/remaining, images/s, ETA). Off a
terminal: plain log lines, one per finished or failed unit, and at most every ``interval`` seconds
(30 by default) one with the units done, images/s and ETA. ``--no-progress`` silences both.

The throughput is measured over the units themselves: images of the finished units divided by the
time since the first of them started (its ``started_at``), so Ray's start-up, the dataset's decoding
and the actors' imports do not count.

The ETA comes from each unit's relative cost (:meth:`Progress.set_costs`: ``pipelines.running.execute.unit_cost``,
model size x pixels x images x a prior factor per family), and seconds per unit of cost learned from the
finished units' own ``wall_s``: pooled over every finished unit, and per family shrunk towards the pooled
rate by one unit's worth of prior (:data:`PRIOR_UNITS`), so the first finished unit of a family moves that
family's rate only half way. The cost of the units left at those rates, over the actors working, is
counted down between two finished units (never below half of it: a late unit stalls the count, it does not
reach zero with work left), and a new estimate moves at most :data:`MAX_STEP`-fold from the counted-down
one. Without costs it is the remaining images at the measured rate.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

__all__ = ["FAMILY_COST", "MAX_STEP", "PRIOR_UNITS", "Progress", "format_table"]

PRIOR_UNITS = 1.0
"""Weight of the prior (the pooled seconds per cost) in a family's rate, in units of that family's mean cost."""
FAMILY_COST = {"lee": 1.0, "alt": 3.0, "layerwise": 10.0, "explain": 10.0}
"""Relative cost of one image of a unit of each family, at the same model size (``lee`` = 1): the prior of
the ETA, which then learns each family's own seconds per cost from its finished units; also the weight of
long-first scheduling (``pipelines.running.execute.unit_cost``). Measured on the main job (three EfficientNet-Lites,
two actors on a 2-core CPU): an ``alt`` unit takes 2.5-4x its ``lee`` unit, a ``layerwise`` unit 10-15x
(one pass per layer call); ``explain`` (one pass per layer call too) is counted as ``layerwise``; a family
not listed counts 1."""
MAX_STEP = 2.0
"""At a finished unit the ETA moves at most this factor from its counted-down value (either way)."""


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

    def __init__(
        self,
        total_units: int,
        total_images: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        plain: bool | None = None,
        interval: float = 30.0,
        clock: Callable[[], float] = time.time,
    ):
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
        self.unit_groups: dict[str, str] = {}  # unit key -> its group (units one actor runs one after another)
        self.group_last: dict[str, float] = {}  # group -> clock() when its last unit finished (the next then started)
        self.finished: set[str] = set()
        self.spent: dict[str, list[float]] = {}  # family -> [wall seconds, cost] of its finished units
        self._eta_at: tuple[float, float | None] | None = None  # (when, ETA then), set at each finished unit

    def set_costs(self, costs: Iterable[tuple[str, str, float] | tuple[str, str, float, str]]) -> None:
        """The units to run as (key, family, relative cost[, group]): the ETA then follows per-unit cost.

        Units of one group run one after another on one actor (the sweep hands out a model's units
        together), so the ETA is never below the cost left in one group, nor spread over more actors
        than groups are left.
        """
        self.unit_costs, self.unit_groups = {}, {}
        for key, family, cost, *group in costs:
            self.unit_costs[key] = (family, float(cost))
            self.unit_groups[key] = str(group[0]) if group else key

    def family_rates(self) -> dict[str, float]:
        """Seconds per unit of cost of each family with units to run (empty before the first finished unit).

        The pooled rate of every finished unit is the prior; a family's own finished units pull its rate
        towards what they took, weighted by their cost against :data:`PRIOR_UNITS` of its mean unit cost.
        """
        wall = sum(s[0] for s in self.spent.values())
        cost = sum(s[1] for s in self.spent.values())
        if cost <= 0:
            return {}
        pooled = wall / cost
        by_family: dict[str, list[float]] = {}
        for family, c in self.unit_costs.values():
            by_family.setdefault(family, []).append(c)
        rates = {}
        for family, costs in by_family.items():
            prior = PRIOR_UNITS * sum(costs) / len(costs)
            f_wall, f_cost = self.spent.get(family, (0.0, 0.0))
            rates[family] = (f_wall + prior * pooled) / (f_cost + prior) if f_cost + prior > 0 else pooled
        return rates

    def _cost_eta(self, now: float | None = None) -> float | None:
        """Seconds left, undamped: the cost of the units left at their family's rate, over the actors.

        A group's next unit started when its previous one finished: the time since counts as done (up to
        90% of that unit's estimate; a late unit is counted as nearly done, not as finished).
        """
        rates = self.family_rates()
        if not rates:
            return None
        now = self.clock() if now is None else now
        groups: dict[str, float] = {}
        for k, (f, c) in self.unit_costs.items():
            if k not in self.finished:
                group = self.unit_groups.get(k, k)
                secs = c * rates[f]
                if group not in groups and group in self.group_last:  # its running unit
                    secs -= min(now - self.group_last[group], 0.9 * secs)
                groups[group] = groups.get(group, 0.0) + secs
        if not groups:
            return 0.0
        return max(sum(groups.values()) / max(1, min(self.n_actors, len(groups))), max(groups.values()))

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
            now = self.clock()
            self.group_last[self.unit_groups.get(key, key)] = now
            estimate, shown = self._cost_eta(now), self.eta(now)
            if estimate is not None and shown is not None and shown > 0 and self.remaining > 0:
                estimate = min(max(estimate, shown / MAX_STEP), shown * MAX_STEP)
            self._eta_at = (now, estimate)
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
            return max(eta / 2, eta - ((now if now is not None else self.clock()) - when))
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
            self._write(
                f"lee: [{_stamp()}] running {self.total_units} unit(s), {self.total_images} images, "
                f"on {n_actors} actor(s)\n"
            )
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
