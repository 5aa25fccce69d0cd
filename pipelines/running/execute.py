"""Executing a plan: run the missing units on Ray actors, one model per actor.

Group the units by model and hand each group, costliest first, to one model actor (Ray core actors
spread over the nodes; several actors, so several models run at once) with the dataset's block refs;
each actor loads the model once, applies the model's own preprocessing, runs liecore and writes the
unit (placeholder ``runs`` row, data file, final ``runs`` row; see :mod:`pipelines.running.runner`).

Actors: with ``gpus_per_actor`` (``--gpus``) every actor asks for that many GPUs and there is one
actor per model (capped by ``--actors``), whatever the cluster has now, so an autoscaler starts GPU
workers from zero; an actor with nothing left to do is released at once, so its GPU goes to an
actor still waiting. Without it the cluster's current resources decide (auto-detect).

The scheduler is :class:`ActorScheduler` rather than Ray's public pools, which do not do its job:
``ray.util.ActorPool`` hands each value to whichever actor is idle (a model actor would build other
models), runs one task per actor at a time (the actor waits on a round trip to the driver between
units), drops a dead actor without a replacement and keeps no count of a unit's tries; Ray Data's
``map_batches`` with an actor pool (``concurrency=``) maps rows to rows with one callable built once
for every actor, restarts dead actors and retries their tasks itself (its defaults
``max_restarts=-1``, ``max_task_retries=-1``) without saying what died or counting tries, and gives
no result per unit until its output is consumed.
"""

from __future__ import annotations

import itertools
import re
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from pipelines.running.cluster import init_ray, memory_kill
from pipelines.running.plan import Plan
from pipelines.running.progress import FAMILY_COST, Progress
from pipelines.running.runner import UnitRunner, failed_row
from pipelines.spec import env
from pipelines.spec.config import SweepConfig
from pipelines.spec.data import resolve_shard
from pipelines.store.units import WorkUnit

__all__ = [
    "MAX_UNIT_RETRIES",
    "ActorScheduler",
    "SweepResult",
    "actor_plan",
    "describe_actors",
    "execute",
    "run_plan",
    "unit_cost",
]


@dataclass
class SweepResult:
    plan: Plan
    rows: list[dict[str, Any]]
    wall_s: float
    ray_s: float = 0.0

    @property
    def done(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "done"]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "done"]


def actor_plan(cfg: SweepConfig, n_groups: int, resources: dict[str, float] | None) -> tuple[int, dict[str, Any]]:
    """(number of model actors, Ray actor options) for ``n_groups`` models to run.

    Args:
        cfg: the sweep (``actors``, ``gpus_per_actor``, ``cpus_per_actor``).
        n_groups: models to run (one group of units per model and weights policy).
        resources: ``ray.cluster_resources()`` now; None when unknown (dry runs).

    With ``gpus_per_actor`` the actors ask for GPUs whatever ``resources`` says and their number
    comes from the work (one per model, at most ``actors``): the autoscaler sees the demand and
    starts GPU workers. Otherwise one actor per GPU present (``num_gpus=1``), else per
    ``cpus_per_actor`` CPUs.
    """
    if cfg.gpus_per_actor:
        n = min(cfg.actors or n_groups, n_groups)
        return max(1, n), {"num_gpus": cfg.gpus_per_actor, "num_cpus": 1}
    res = resources or {}
    gpus = int(res.get("GPU", 0))
    if gpus:
        n = cfg.actors or gpus
        opts = {"num_gpus": 1, "num_cpus": 1}
    else:
        cpus = float(res.get("CPU", 1))
        n = cfg.actors or max(1, int(cpus // cfg.cpus_per_actor))
        opts = {"num_cpus": cfg.cpus_per_actor}
    return max(1, min(n, n_groups)), opts


def describe_actors(p: Plan) -> str:
    """One line for ``--dry-run``: the actors the sweep will ask Ray for."""
    cfg = p.config
    n_groups = len({(u.model.name, u.weights.policy) for u in p.todo})
    if not n_groups:
        return "actors: none (nothing to run)"
    if cfg.gpus_per_actor:
        n, opts = actor_plan(cfg, n_groups, None)
        return (
            f"actors: {n} (one per model{f', at most --actors {cfg.actors}' if cfg.actors else ''}), each "
            f"num_gpus={opts['num_gpus']:g} num_cpus={opts['num_cpus']:g}: GPUs are requested whether or not "
            "the cluster has them now (an autoscaler starts GPU workers)"
        )
    return (
        f"actors: auto-detected at run time from the cluster's resources ({n_groups} model(s); "
        "num_gpus=1 per actor only if GPUs are present then; --gpus N to request them always)"
    )


def _actor_resources(cfg: SweepConfig, n_groups: int) -> tuple[int, dict[str, Any]]:
    import ray

    return actor_plan(cfg, n_groups, ray.cluster_resources())


def unit_cost(u: WorkUnit) -> float:
    """A unit's relative cost, for long-first scheduling and the ETA: parameters (millions) x pixels x images
    x the family's factor (:data:`FAMILY_COST`; 1 for a family it does not list); unknown parameter counts
    count as 25 M."""
    spec = u.model
    params = float(getattr(spec, "params_m", None) or 25.0)
    side = float(getattr(spec, "img_size", None) or 224)
    return params * side * side * max(1, u.dataset.n_images) * FAMILY_COST.get(u.family, 1.0)


MAX_UNIT_RETRIES = 2
"""A unit whose worker process dies (Ray's memory monitor, a signal, a lost node) is run again on a new
actor at most this many times; each start counts in ``runs.attempt``."""

MAX_UNSTARTED_DEATHS = 8
"""Actors that may die before starting any unit (placed on a node that was dying) without it counting."""


def death_pid(exc: BaseException) -> int | None:
    """The pid of the dead worker, when Ray's error names it (not from the list of workers that Ray's memory
    monitor considered or killed with it: any of them may come first)."""
    m = re.search(r"\bpid[=:]\s*(\d+)", str(exc).split("Considered workers:", 1)[0])
    return int(m.group(1)) if m else None


def death_reason(exc: BaseException) -> str:
    """Why a Ray worker died, in a few words, from Ray's (many-line) error: ``was killed by Ray's memory
    monitor (node memory 7.1GB / 7.5GB = 0.95 above its threshold 0.95)``, ``was lost with its node``..."""
    import ray

    text = str(exc)
    low = text.lower()
    usage = memory_kill(text)
    if isinstance(exc, ray.exceptions.OutOfMemoryError) or usage is not None:
        return f"was killed by Ray's memory monitor{usage or ''}"
    if getattr(exc, "preempted", False):
        return "was lost with its node (preempted)"
    if isinstance(exc, ray.exceptions.ActorUnavailableError):  # the connection broke before Ray declared it dead
        return "became unreachable: its process or its node was lost"
    if "node has died" in low or "node died" in low or "its node" in low or "raylet" in low:
        return "was lost with its node (the node died or left the cluster)"
    if getattr(exc, "actor_init_failed", False):
        first = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
        return f"its constructor failed: {first[:200]}"
    if "worker process has died" in low or "exit" in low:
        return "died: its process exited unexpectedly (killed by a signal, e.g. the kernel's OOM killer, or crashed)"
    return f"died ({type(exc).__name__})"


def execute(p: Plan, *, progress: Progress | None = None, sweep_id: str | None = None) -> SweepResult:
    """Run ``p.todo`` on Ray actors. Returns the ``runs`` rows of this invocation.

    The units are grouped by model (one model build per actor) and the groups handed out longest
    first (:func:`unit_cost`), so the costliest model does not start last and hold the sweep up.
    Actors are spread over the nodes (``SPREAD``); each unit gets the dataset's decoded images as
    object refs the driver put (they survive a lost worker node) and writes itself. An actor whose
    process dies (Ray's memory monitor, a signal, its node lost) is replaced: one line says what died
    and why, and the unit it ran is retried (:data:`MAX_UNIT_RETRIES`), its attempt counted
    (:class:`ActorScheduler`).
    """
    t0 = time.perf_counter()
    sweep_id = sweep_id or uuid.uuid4().hex[:12]
    if not p.todo:
        return SweepResult(p, [], 0.0)

    cfg = p.config
    init_ray(cfg.address)
    import ray

    t_ray = time.perf_counter() - t0

    # Each block's images are put once by the driver, so they live on the driver's node and are owned by it: a
    # worker node that is lost (a preempted spot instance) takes no dataset with it (a Ray Data block stored there
    # would be lost, and Ray Data's outputs are not rebuilt). A plan decoded on the driver (dry run) is put alike.
    shards = {name: [ray.put(resolve_shard(s)) for s in d.shards] for name, d in p.datasets.items()}
    groups: dict[tuple, list[WorkUnit]] = defaultdict(list)
    for u in p.todo:
        groups[(u.model.name, u.weights.source)].append(u)
    queue = sorted(groups.values(), key=lambda g: -sum(unit_cost(u) for u in g))  # longest first
    n_actors, opts = _actor_resources(cfg, len(queue))
    if opts.get("num_gpus") and cfg.gpus_per_actor:
        have = float(ray.cluster_resources().get("GPU", 0))
        if have < n_actors * opts["num_gpus"]:
            print(
                f"lee: {n_actors} actor(s) ask for {opts['num_gpus']:g} GPU each; the cluster has {have:g} GPU(s) "
                "now: actors wait until the autoscaler adds GPU workers",
                file=sys.stderr,
            )
    # No restarts or task retries by Ray: a dead actor's units are handed to a new actor here, so that
    # what died, and why, is one line (Ray would retry silently or print its dump) and the retries are counted.
    actor_cls = ray.remote(UnitRunner).options(max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD", **opts)
    git_rev = env.git_revision()  # the driver's code: workers' copies (Ray Jobs, rsync) have no .git

    def new_actor():
        return actor_cls.remote(p.store.uri, git_rev=git_rev)

    scheduler = ActorScheduler(
        p, queue, new_actor, n_actors, shards=shards, sweep_id=sweep_id, git_rev=git_rev, progress=progress
    )
    rows = scheduler.run()
    return SweepResult(p, rows, time.perf_counter() - t0, t_ray)


def run_plan(p: Plan, *, show_progress: bool | None = None, stream: TextIO | None = None) -> SweepResult:
    """:func:`execute` with the progress display of ``lee eval`` and ``lee reevaluate`` on ``stream`` (default
    stderr); ``show_progress=False`` (``--no-progress``) turns it off."""
    total_images = sum(u.dataset.n_images for u in p.todo)
    return execute(p, progress=Progress(len(p.todo), total_images, stream=stream, enabled=show_progress))


@dataclass
class _Handed:
    """A unit handed to an actor slot and not finished yet."""

    slot: int
    unit: WorkUnit
    order: int
    """Submission order: an actor runs its units in this order."""


class ActorScheduler:
    """Hands a plan's groups of units (one model each) to model actors, and takes each unit's row as it comes
    back, until every unit has a row.

    Its state, all named here:

    - ``waiting``: the groups not handed out yet, costliest first (a dead actor's unfinished units go back in
      front: they were started first);
    - ``actors``, ``idle``, ``left``: the actor of each slot, the slots with no group, and per busy slot its
      units not finished yet (an actor whose group is done and finds nothing waiting is released at once, so
      its GPU or CPUs go to actors still waiting for a node);
    - ``handed``: object ref -> the unit it returns, for every unit handed out and not finished;
    - ``attempts``, ``deaths``, ``seen_attempt``, ``unstarted``: per unit key the ``runs.attempt`` of its next
      start, the times the worker running it died, and its stored attempt at its last death; the actors that
      died before they started any unit;
    - ``rows``: the ``runs`` rows of this invocation, in the order the units finished.

    Three events change it: a unit's row comes back (:meth:`_finished`), its actor dies
    (:meth:`_actor_died`: the retry rules), or its task fails otherwise (a failed row the driver writes).
    """

    def __init__(
        self,
        p: Plan,
        waiting: list[list[WorkUnit]],
        new_actor: Callable[[], Any],
        n_actors: int,
        *,
        shards: dict[str, list],
        sweep_id: str,
        git_rev: str | None,
        progress: Progress | None = None,
    ):
        self.p = p
        self.store = p.store
        self.waiting = waiting
        self.new_actor = new_actor
        self.shards = shards
        self.sweep_id = sweep_id
        self.git_rev = git_rev
        self.progress = progress
        self.batch_size = p.config.batch_size
        self.actors = [new_actor() for _ in range(n_actors)]
        self.idle = list(range(n_actors))
        self.left: dict[int, int] = {}
        self.handed: dict[Any, _Handed] = {}
        self.rows: list[dict] = []
        self.attempts = {u.key: p.attempts.get(u.key, 0) + 1 for u in p.todo}
        self.deaths: dict[str, int] = defaultdict(int)
        self.seen_attempt: dict[str, int] = {}
        self.unstarted = 0
        self._order = itertools.count()

    def run(self) -> list[dict]:
        """Hand out every group and wait for every unit; the actors are killed at the end. Returns :attr:`rows`."""
        import ray

        if self.progress:
            self.progress.set_costs(
                (u.key, u.family, unit_cost(u), f"{u.model.name}|{u.weights.source}") for u in self.p.todo
            )
            self.progress.start(len(self.actors))
        self._dispatch()
        try:
            while self.handed:
                ready, _ = ray.wait(list(self.handed), num_returns=1, timeout=1.0)
                if self.progress:
                    self.progress.render()
                for ref in ready:
                    task = self.handed.get(ref)
                    if task is None:  # an actor's death already handled it
                        continue
                    try:
                        row = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
                        self._actor_died(task.slot, exc)  # the worker process died (memory monitor, signal, lost node)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. a task that could not be deserialized
                        del self.handed[ref]
                        self._finished(task, self._driver_row(task.unit, exc))
                        continue
                    del self.handed[ref]
                    self._finished(task, row)
        finally:
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            if self.progress:
                self.progress.close()
        return self.rows

    def _dispatch(self) -> None:
        """Give each idle slot the next waiting group (all its units at once: the actor runs them in turn)."""
        while self.idle and self.waiting:
            a = self.idle.pop(0)
            group = self.waiting.pop(0)
            self.left[a] = len(group)
            for u in group:
                ref = self.actors[a].run.remote(
                    u,
                    self.shards[u.dataset.name],
                    self.sweep_id,
                    attempt=self.attempts[u.key],
                    batch_size=self.batch_size,
                )
                self.handed[ref] = _Handed(a, u, next(self._order))

    def _finished(self, task: _Handed, row: dict) -> None:
        a, u = task.slot, task.unit
        self._record(u, row)
        self.left[a] -= 1
        if self.left[a] == 0:
            if self.waiting:
                self.idle.append(a)
                self._dispatch()
            else:  # nothing left for it: free its GPU/CPUs for actors still waiting for a node
                import ray

                ray.kill(self.actors[a], no_restart=True)

    def _actor_died(self, a: int, exc: BaseException) -> None:
        """Slot ``a``'s actor died: one line saying what and why; its units go to a new actor (the one it
        was running at most :data:`MAX_UNIT_RETRIES` more times), or fail if its constructor failed."""
        import ray

        mine = sorted((t for t in self.handed.items() if t[1].slot == a), key=lambda t: t[1].order)
        for ref, _ in mine:
            del self.handed[ref]
        units = [t.unit for _, t in mine]
        running = units[0]  # an actor runs its units in submission order: the first unfinished one was running
        stored = self.store.run_row(running.key) or {}
        # Started by this actor: its placeholder row is this sweep's, with an attempt not seen at an earlier death.
        attempt_now = int(stored.get("attempt") or 0) if stored.get("sweep_id") == self.sweep_id else 0
        started = stored.get("status") == "failed" and attempt_now > self.seen_attempt.get(running.key, 0)
        self.seen_attempt[running.key] = max(attempt_now, self.seen_attempt.get(running.key, 0))
        ray.kill(self.actors[a], no_restart=True)
        self.left[a] = 0
        self.unstarted += not started
        init_failed = getattr(exc, "actor_init_failed", False)
        if not started and self.unstarted <= MAX_UNSTARTED_DEATHS and not init_failed:
            # An actor that died before it ran anything (placed on a node that was dying): nothing was lost; its
            # units go to a new actor without a line or a counted try.
            self.waiting.insert(0, units)
            self._replace(a)
            return
        deaths = self.deaths[running.key] = self.deaths[running.key] + 1
        if init_failed:  # its constructor failed: a new one would fail alike
            self._note(f"lee: error: a model actor could not start ({death_reason(exc)}); {len(units)} unit(s) failed")
            for u in units:
                self._record_failed(u, f"actor died: {exc}")
            units = []
        else:
            retry = deaths <= MAX_UNIT_RETRIES
            what = f"{running.family} {running.model.name}@{running.dataset.name}"
            pid = (stored.get("pid") if started else None) or death_pid(exc)  # the unit's placeholder row: its worker
            node = stored.get("node_id") if started else None
            where = "".join(x for x in (f" pid {pid}" if pid else "", f" on node {str(node)[:8]}" if node else ""))
            verdict = (
                f"retrying it (try {deaths + 1} of {MAX_UNIT_RETRIES + 1})"
                if retry
                else f"not retried: its worker died {deaths} times"
            )
            self._note(f"lee: warning: the worker{where} running unit {what} {death_reason(exc)}; {verdict}")
            if not retry:
                self._record_failed(running, f"actor died {deaths} times: {death_reason(exc)}: {exc}")
                units = units[1:]
        if units:
            self.waiting.insert(0, units)  # ahead of the groups not yet started: it was started first
        if self.waiting:
            self._replace(a)

    def _replace(self, a: int) -> None:
        """A new actor in slot ``a`` (its old one is dead), given the next waiting group."""
        self.actors[a] = self.new_actor()
        self.idle.append(a)
        self._dispatch()

    def _driver_row(self, u: WorkUnit, exc, **kw) -> dict:
        """A failed row the driver writes (the actor is gone): where it ran is unknown."""
        stored = self.store.run_row(u.key) or {}
        attempt = max(self.attempts[u.key], int(stored.get("attempt") or 0))  # the worker counted its starts
        row = failed_row(u, self.sweep_id, attempt, exc, git_rev=self.git_rev, **kw)
        row.update(hardware="unknown", node_id=stored.get("node_id"), pid=stored.get("pid"))
        self.store.write_run(row)
        return row

    def _record_failed(self, u: WorkUnit, message: str) -> None:
        self._record(u, self._driver_row(u, message, error_type="ActorDied"))

    def _record(self, u: WorkUnit, row: dict) -> None:
        self.rows.append(row)
        if self.progress:
            self.progress.update(row["status"], u.dataset.n_images, row, key=u.key)

    def _note(self, line: str) -> None:
        if self.progress:
            self.progress.note(line)
        else:
            print(line, file=sys.stderr, flush=True)
