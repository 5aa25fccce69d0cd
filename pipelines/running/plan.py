"""Planning a sweep: validate everything, resolve the models and their weights, load the datasets,
build the work units and find which are done (or damaged) before any work.

Flow: validate everything (models, generators, families, datasets, output root) before any
work; read and decode each dataset once with Ray Data (:mod:`pipelines.spec.data`: the blocks stay
in the object store, their refs from the public ``Dataset.to_arrow_refs``). Dry runs decode on the
driver instead and need no Ray. The plan is run by :func:`pipelines.running.execute.execute` and summarised by
:mod:`pipelines.running.summary`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

import catalog
from pipelines.errors import UsageError
from pipelines.running.checks import check_img_size, check_root_usable
from pipelines.running.cluster import init_ray
from pipelines.spec import data
from pipelines.spec.config import SweepConfig
from pipelines.spec.data import LoadedDataset
from pipelines.spec.flagcheck import select_models, validate
from pipelines.store import history, integrity
from pipelines.store.results import Store, StoreError
from pipelines.store.units import UnitWeights, WorkUnit, family_config, make_unit, resolve_unit_weights

__all__ = ["Plan", "fallback_warning", "plan", "resolve_weights"]


@dataclass
class Plan:
    config: SweepConfig
    store: Store
    units: list[WorkUnit]
    todo: list[WorkUnit]
    status: dict[str, str]
    datasets: dict[str, LoadedDataset] = field(repr=False)
    attempts: dict[str, int] = field(default_factory=dict)
    """unit key -> ``attempt`` of its stored ``runs`` row (absent: never started)."""
    hub: Any = None
    """``catalog.HubStatus`` of this sweep's one check of the hub (None: not needed, every hub model cached)."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """model name -> why ``--weights auto`` runs it on random init (hub offline or unreachable, not cached)."""
    damaged: dict[str, str] = field(default_factory=dict)
    """unit key -> why its data file cannot be trusted (missing, unreadable, or changed since it was written),
    for units whose ``runs`` row says done: they are redone (reason: :func:`damage_reason`)."""
    gone: list = field(default_factory=list)
    """``lee reevaluate``: checkpoints a watched folder or glob no longer lists, whose results are kept."""

    @property
    def skipped(self) -> list[WorkUnit]:
        todo = {u.key for u in self.todo}
        return [u for u in self.units if u.key not in todo]


def _message(exc: BaseException) -> str:
    """The text of an exception (a KeyError's own message, without the quotes ``str`` adds)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def _usage(exc: Exception) -> UsageError:
    return UsageError(_message(exc))


_CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "RefreshError")


def _fs_problem(uri: str, exc: BaseException) -> str | None:
    """What is missing to open ``uri`` when ``exc`` says a filesystem package or credentials are missing."""
    text = _message(exc)
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    if isinstance(exc, ImportError):
        return (
            f"the {protocol}:// filesystem needs a package that is not installed ({text}); "
            "pip install 'lee-eval[cloud]' (s3fs, gcsfs) or the fsspec package for it"
        )
    name = type(exc).__name__
    if name in _CREDENTIAL_ERRORS or "credential" in text.lower():
        return f"no usable credentials for {protocol}:// ({name}: {text})"
    return None


@contextlib.contextmanager
def _dataset_errors(name: str, uri: str) -> Iterator[None]:
    """Turn what listing or reading a dataset raises into a usage error naming it (a missing
    filesystem package, credentials, a bad path); any other exception passes through."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - filesystems raise anything (missing package, credentials)
        problem = _fs_problem(uri, exc)
        if problem is None and not isinstance(exc, ValueError | OSError):
            raise
        raise UsageError(f"dataset {name!r} ({uri}) cannot be loaded: {problem or _message(exc)}") from None


def resolve_models(cfg: SweepConfig) -> list:
    """The selected models (:func:`pipelines.spec.flagcheck.select_models`) with ``--img-size`` applied and checked."""
    return with_img_size(select_models(cfg), cfg)


def check_checkpoints(specs: list, weights: dict[str, UnitWeights], known: set[str] = frozenset()) -> None:
    """Every checkpoint the sweep would load exists, loads safely and fits its architecture (before Ray starts).

    ``weights``: each model's resolved weights (:func:`resolve_weights`); ``known``: names of models whose
    checkpoint a done unit loaded as it is now (:func:`pipelines.store.history.loaded_before`): not read again.
    """
    for spec in specs:
        if spec.name in known or weights[spec.name].source != "file":
            continue
        try:
            catalog.validate_checkpoint(spec, "file")
        except ValueError as exc:  # CatalogError
            raise _usage(exc) from None


def checked_before(specs: list, runs) -> set[str]:
    """The ``file`` models whose checkpoint need not be checked again (see
    :func:`pipelines.store.history.loaded_before`).
    """
    if runs is None or not any(s.source == "file" and s.checkpoint for s in specs):
        return set()
    cache = history.DigestCache()
    try:
        return history.loaded_before(specs, runs.to_pylist(), cache)
    finally:
        cache.save()


def with_img_size(specs: list, cfg: SweepConfig) -> list:
    """``--img-size`` applied to every spec (smoke runs), checked against each architecture's minimum first."""
    if cfg.img_size is not None:
        check_img_size(int(cfg.img_size), specs)
        specs = [s.replace(img_size=int(cfg.img_size)) for s in specs]
    return specs


def load_images(cfg: SweepConfig, *, dry_run: bool = False) -> dict[str, LoadedDataset]:
    """Read and decode each dataset once: ``{name: LoadedDataset}``.

    The datasets are resolved and listed on the driver first (bad names, unset variables and missing
    folders fail here, before Ray starts); then each is decoded on Ray Data (on the driver for dry runs).
    """
    specs = []
    for sel in cfg.datasets:
        try:
            specs.extend(catalog.load_datasets(sel))
        except (ValueError, FileNotFoundError) as exc:
            raise _usage(exc) from None
    listed = {}
    for spec in specs:
        with _dataset_errors(spec.name, spec.uri):
            listed[spec.name] = (spec, data.select_items(spec))
    if not dry_run:
        init_ray(cfg.address)
    out = {}
    for name, (spec, items) in listed.items():
        with _dataset_errors(name, spec.uri):
            out[name] = data.load_dataset(spec, cfg.n_images, batch_size=cfg.batch_size, driver=dry_run, items=items)
    return out


def plan(cfg: SweepConfig, *, check_writable: bool = True, dry_run: bool = False, specs: list | None = None) -> Plan:
    """Resolve and validate everything, load the datasets, build the units, and find which are done.

    Args:
        cfg: The sweep.
        check_writable: Probe the output root with a write.
        dry_run: Decode the datasets on the driver (no Ray); the units and keys are the same.
        specs: The models, already resolved (``lee reevaluate``: from the regenerated catalog);
            default: ``cfg.models`` through the packaged catalog.
    """
    validate(cfg)
    specs = resolve_models(cfg) if specs is None else with_img_size(specs, cfg)  # --img-size checked here
    try:
        store = Store(cfg.output)
        if store.in_process and not dry_run:
            raise UsageError(
                f"output root {cfg.output!r} is an in-process filesystem ({store.protocol}://): the rows are "
                "written by Ray actors in other processes and would be lost; use a local path or a shared "
                "store (s3://, gs://, ...)"
            )
        if check_writable:
            store.check_writable()
        else:  # dry runs write nothing, but a root that could never be written is an error all the same
            check_root_usable(store)
        runs = store.runs() if store.fs.exists(f"{store.path}/runs") else None
        status = store.run_status(runs) if runs is not None else {}
        attempts = store.run_attempts(runs) if runs is not None else {}
    except UsageError:
        raise
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - unreachable URIs raise anything
        problem = _fs_problem(cfg.output, exc) or f"{type(exc).__name__}: {_message(exc)}"
        raise UsageError(f"output root {cfg.output!r} cannot be read: {problem}") from None
    if cfg.gpus_per_actor and not dry_run and not (cfg.address or os.environ.get("RAY_ADDRESS")):
        if torch.cuda.device_count() < cfg.gpus_per_actor:
            raise UsageError(
                f"--gpus {cfg.gpus_per_actor:g}: this machine has {torch.cuda.device_count()} GPU(s) and no --address "
                "was given, so the local Ray could never place the actors; drop --gpus or join a cluster"
            )
    resolved, fallbacks, hub = resolve_weights(cfg, specs)
    check_checkpoints(specs, resolved, known=checked_before(specs, runs))
    datasets = load_images(cfg, dry_run=dry_run)
    units = []
    fam_cfgs = {f: family_config(f, cfg) for f in cfg.metrics}
    infos = [dataclasses.replace(d.info, skipped=tuple(d.errors)) for d in datasets.values()]  # -> runs.n_skipped
    for spec in specs:
        for ds in infos:
            for fam in cfg.metrics:
                units.append(make_unit(fam, spec, ds, cfg, fam_cfgs[fam], resolved[spec.name]))
    damaged = find_damaged(store, units, status, runs)
    todo = [u for u in units if cfg.force or status.get(u.key) != "done" or u.key in damaged]
    return Plan(cfg, store, units, todo, status, datasets, attempts, hub=hub, fallbacks=fallbacks, damaged=damaged)


CHANGED = "changed since written:"
"""How :attr:`Plan.damaged` starts for a unit whose data file reads but no longer matches its record."""


def damage_reason(problem: str) -> str:
    """The reason a damaged unit is redone (``lee eval --dry-run``, ``lee reevaluate``): ``data damaged`` (the
    file reads but changed since it was written) or ``data unreadable`` (missing, or it does not read)."""
    return "data damaged" if problem.startswith(CHANGED) else "data unreadable"


def find_damaged(store: Store, units: list[WorkUnit], status: dict[str, str], runs: Any = None) -> dict[str, str]:
    """The done units whose data file is missing, cannot be read, or no longer matches what its ``runs`` row
    recorded when it was written (:func:`pipelines.store.integrity.check_store`: one listing, checksums only of
    the files written again since), with the problem.

    Such a unit is redone (its ``runs`` row says done, but its rows cannot be trusted). ``runs`` files that
    could not be read are named too: their units count as never started. Each is a ``lee: warning:`` line.

    Args:
        runs: The stored ``runs`` rows (a table); default: read them.
    """
    keys = {u.key for u in units if status.get(u.key) == "done"}
    damaged: dict[str, str] = {}
    if keys:
        t = store.runs() if runs is None else runs
        rows = [r for r in t.to_pylist() if r["unit"] in keys]
        found = integrity.check_store(store, rows)
        for u in units:
            d = found.get(u.key)
            if d is None:
                continue
            damaged[u.key] = d.detail if d.kind != "data changed" else f"{CHANGED} {d.detail}"
            what = {
                "data missing": "is missing",
                "data unreadable": f"is unreadable ({d.detail})",
                "data changed": f"no longer matches what was written ({d.detail})",
            }[d.kind]
            if d.kind == "data missing":
                damaged[u.key] = "missing"
            print(
                f"lee: warning: unit {u.describe()} is done but its data file {d.path} {what}: it is redone",
                file=sys.stderr,
            )
    for path, problem in store.unreadable.items():
        print(
            f"lee: warning: skipping unreadable runs file {path} ({problem}): its unit counts as not started",
            file=sys.stderr,
        )
    return damaged


def resolve_weights(cfg: SweepConfig, specs: list) -> tuple[dict[str, UnitWeights], dict[str, str], Any]:
    """``--weights`` resolved once, on the driver, for every model (:func:`pipelines.store.units.resolve_unit_weights`):
    ``auto`` gives a hub model ``hub`` when its weights are cached or the hub answers (the actor downloads them;
    a failed download fails that unit), else ``random``.

    The hub is checked at most once per sweep (``catalog.check_hub``: one quick request, none under
    ``HF_HUB_OFFLINE``), and only when some model's weights are not cached.

    Returns:
        (model name -> its weights, model name -> why random, the hub status or None if not checked).
    """
    checked: list = []

    def hub_status():
        if not checked:
            checked.append(catalog.check_hub())
        return checked[0]

    resolved = {spec.name: resolve_unit_weights(cfg.weights, spec, hub_status) for spec in specs}
    fallbacks = {name: w.fallback for name, w in resolved.items() if w.fallback}
    return resolved, fallbacks, (checked[0] if checked else None)


def fallback_warning(p: Plan) -> str | None:
    """The loud line(s) naming the models that ``--weights auto`` runs on random init, why, and the way out."""
    if not p.fallbacks:
        return None
    by_reason: dict[str, list[str]] = defaultdict(list)
    for name, why in p.fallbacks.items():
        by_reason[why].append(name)
    lines = [
        f"lee: warning: RANDOM-INIT (untrained) weights for {len(p.fallbacks)} model(s): --weights auto "
        "fell back to random init"
    ]
    for why, names in by_reason.items():
        shown = ", ".join(names[:10]) + (f" ... (+{len(names) - 10})" if len(names) > 10 else "")
        lines.append(f"  {shown}: {why}")
    lines.append(
        "  Their LEE measures untrained networks. For pretrained weights: go online (or set HF_ENDPOINT to a "
        "reachable mirror), or fill the Hugging Face cache (HF_HOME) where the hub is reachable and set "
        "HF_HUB_OFFLINE=1 here; --weights random asks for random init."
    )
    return "\n".join(lines)
