"""A sweep: plan the work units, run the missing ones on Ray actors, summarise.

Flow: validate everything (models, generators, families, datasets, output root) before any
work; read and decode each dataset once with Ray Data (:mod:`pipelines.data`: the blocks stay
in the object store, their refs from the public ``Dataset.to_arrow_refs``); group the units by
model and hand each group, costliest first, to one model actor (Ray core actors spread over the
nodes; several actors, so several models run at once) with the dataset's block refs; each actor loads the
model once, applies the model's own preprocessing, runs liecore and writes the unit (placeholder
``runs`` row, data file, final ``runs`` row; see :mod:`pipelines.runner`). Dry runs decode on the
driver instead and need no Ray.

Actors: with ``gpus_per_actor`` (``--gpus``) every actor asks for that many GPUs and there is one
actor per model (capped by ``--actors``), whatever the cluster has now, so an autoscaler starts GPU
workers from zero; an actor with nothing left to do is released at once, so its GPU goes to an
actor still waiting. Without it the cluster's current resources decide (auto-detect).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
import socket
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import duckdb
import torch

import catalog
import liecore
from liecore import GENERATORS
from liecore.metrics import METRICS
from pipelines import data, env, history, integrity
from pipelines.checks import check_img_size, check_root_usable
from pipelines.cluster import auth_fix, check_gcs, memory_kill, prepare_auth
from pipelines.config import FAMILIES, WEIGHT_POLICIES, SweepConfig
from pipelines.data import LoadedDataset, resolve_shard
from pipelines.errors import UsageError
from pipelines.progress import FAMILY_COST, Progress, format_table
from pipelines.runner import UnitRunner, failed_row
from pipelines.store import Store, StoreError
from pipelines.units import WorkUnit, effective_weights, family_config, make_unit

__all__ = ["Plan", "SweepResult", "execute", "fallback_warning", "plan", "resolve_weights", "run_sweep", "summary_table"]



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


# --------------------------------------------------------------------------------------------- plan
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
        return (f"the {protocol}:// filesystem needs a package that is not installed ({text}); "
                "pip install 'lee-eval[cloud]' (s3fs, gcsfs) or the fsspec package for it")
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


def checkpoint_spec(cfg: SweepConfig):
    """The model of ``--checkpoint PATH --arch NAME`` (with its key mapping flags), as a catalog spec."""
    if not cfg.arch:
        raise UsageError("--checkpoint needs --arch: the timm architecture the checkpoint belongs to")
    stem = os.path.basename(cfg.checkpoint.rstrip("/")).split(".")[0] or "checkpoint"
    rename = []
    for rule in cfg.rename_keys or []:
        pattern, sep, repl = rule.partition("=")
        if not sep or not pattern:
            raise UsageError(f"--rename-keys {rule!r}: expected REGEX=REPLACEMENT")
        rename.append([pattern, repl])
    key_map = {"rename": rename, "by_order": bool(cfg.map_keys_by_order)} if rename or cfg.map_keys_by_order else None
    entry = {"name": cfg.model_name or f"{cfg.arch}@{stem}", "arch": cfg.arch, "source": "file",
             "checkpoint": cfg.checkpoint, "key_map": key_map}
    try:
        return catalog.spec_from_entry(entry, where="--checkpoint")
    except ValueError as exc:
        raise _usage(exc) from None


def resolve_models(cfg: SweepConfig) -> list:
    if not cfg.models and not cfg.checkpoint:
        raise UsageError("no models selected")
    try:
        found = []  # (spec, the -m entry it came from)
        for sel in cfg.models or []:  # each entry: catalog name, YAML path, model name or pattern
            found.extend((s, f"-m {sel}") for s in catalog.load_models(sel))
    except (ValueError, FileNotFoundError) as exc:  # CatalogError is a ValueError
        raise _usage(exc) from None
    if cfg.checkpoint:
        found.append((checkpoint_spec(cfg), f"--checkpoint {cfg.checkpoint}"))
    specs = unique_models(found)
    if not specs:
        raise UsageError(f"model selection {cfg.models} matches no model")
    return with_img_size(specs, cfg)


def unique_models(found: list[tuple[Any, str]]) -> list:
    """The specs of a selection, each name once: ``found`` is (spec, where it came from) in selection order.

    One model reached twice (``-m tiny -m test_resnet.r160_in1k``) is kept once; two different specs with one
    name (a user YAML's entry and a built-in model, two YAML files) are an error naming both sources.
    """
    out: dict[str, tuple[Any, str]] = {}
    for spec, where in found:
        if spec.name in out and out[spec.name][0] != spec:
            raise UsageError(f"two different models are named {spec.name!r}: one from {out[spec.name][1]} (arch "
                             f"{out[spec.name][0].arch}), one from {where} (arch {spec.arch}); rename one of them")
        out.setdefault(spec.name, (spec, where))
    return [spec for spec, _ in out.values()]


def check_checkpoints(specs: list, cfg: SweepConfig, known: set[str] = frozenset()) -> None:
    """Every checkpoint the sweep would load exists, loads safely and fits its architecture (before Ray starts).

    ``known``: names of models whose checkpoint a done unit loaded as it is now (:func:`pipelines.history.loaded_before`):
    not read again.
    """
    for spec in specs:
        if spec.name in known:
            continue
        policy = effective_weights(cfg.weights, spec) or spec.source
        if policy != "file" and not (policy == "auto" and spec.source == "file"):
            continue
        try:
            catalog.validate_checkpoint(spec, policy)
        except ValueError as exc:  # CatalogError
            raise _usage(exc) from None


def checked_before(specs: list, runs) -> set[str]:
    """The ``file`` models whose checkpoint need not be checked again (see :func:`pipelines.history.loaded_before`)."""
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


def validate(cfg: SweepConfig) -> None:
    """Cheap checks of everything that is not a model or dataset."""
    bad = [m for m in cfg.metrics if m not in FAMILIES]
    if bad:
        raise UsageError(f"unknown metric family {bad[0]!r} (choose from {', '.join(FAMILIES)})")
    if not cfg.metrics:
        raise UsageError("no metric family selected")
    try:
        liecore.resolve_generators(cfg.generators)
        if cfg.layerwise_generators:
            liecore.resolve_generators(cfg.layerwise_generators)
    except ValueError as exc:
        raise _usage(exc) from None
    if cfg.weights not in WEIGHT_POLICIES:
        raise UsageError(f"unknown weights policy {cfg.weights!r} (choose from {', '.join(WEIGHT_POLICIES)})")
    if cfg.output_kind not in ("probs", "logits"):
        raise UsageError(f"--output-kind must be probs or logits, got {cfg.output_kind!r}")
    if cfg.interpolation not in liecore.INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {cfg.interpolation!r} (choose from {', '.join(liecore.INTERPOLATIONS)})")
    if cfg.images < 1 or (cfg.limit is not None and cfg.limit < 1):
        raise UsageError("--images and --limit must be positive")
    if cfg.batch_size < 1:
        raise UsageError("--batch-size must be positive")
    if cfg.img_size is not None:
        check_img_size(cfg.img_size, [])  # positive, and not below the floor of every model
    if cfg.actors is not None and cfg.actors < 1:
        raise UsageError("--actors must be positive")
    if cfg.gpus_per_actor is not None and cfg.gpus_per_actor <= 0:
        raise UsageError(f"--gpus must be positive (GPUs per actor), got {cfg.gpus_per_actor}")
    if "layerwise" in cfg.metrics:
        if cfg.layerwise_method not in ("exact", "stochastic"):
            raise UsageError(f"--layerwise-method must be exact or stochastic, got {cfg.layerwise_method!r}")
    if "alt" in cfg.metrics:
        unknown = [n for n in (cfg.alt_metrics or []) if n not in METRICS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(METRICS), n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown alt metric {unknown[0]!r}{hint} (known: {', '.join(sorted(METRICS))})")


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
    check_checkpoints(specs, cfg, known=checked_before(specs, runs))
    resolved, fallbacks, hub = resolve_weights(cfg, specs)
    datasets = load_images(cfg, dry_run=dry_run)
    units = []
    fam_cfgs = {f: family_config(f, cfg) for f in cfg.metrics}
    infos = [dataclasses.replace(d.info, skipped=tuple(d.errors)) for d in datasets.values()]  # -> runs.n_skipped
    for spec in specs:
        for ds in infos:
            for fam in cfg.metrics:
                units.append(make_unit(fam, spec, ds, cfg, fam_cfgs[fam], resolved.get(spec.name)))
    damaged = find_damaged(store, units, status, runs)
    todo = [u for u in units if cfg.force or status.get(u.key) != "done" or u.key in damaged]
    return Plan(cfg, store, units, todo, status, datasets, attempts, hub=hub, fallbacks=fallbacks, damaged=damaged)


CHANGED = "changed since written:"
"""How :attr:`Plan.damaged` starts for a unit whose data file reads but no longer matches its record."""


def damage_reason(problem: str) -> str:
    """The reason a damaged unit is redone (``lee eval --dry-run``, ``lee reevaluate``): ``data damaged`` (the
    file reads but changed since it was written) or ``data unreadable`` (missing, or it does not read)."""
    return "data damaged" if problem.startswith(CHANGED) else "data unreadable"


def find_damaged(store: Store, units: list[WorkUnit], status: dict[str, str],
                 runs: Any = None) -> dict[str, str]:
    """The done units whose data file is missing, cannot be read, or no longer matches what its ``runs`` row
    recorded when it was written (:func:`pipelines.integrity.check_store`: one listing, checksums only of
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
            what = {"data missing": "is missing", "data unreadable": f"is unreadable ({d.detail})",
                    "data changed": f"no longer matches what was written ({d.detail})"}[d.kind]
            if d.kind == "data missing":
                damaged[u.key] = "missing"
            print(f"lee: warning: unit {u.describe()} is done but its data file {d.path} {what}: it is redone",
                  file=sys.stderr)
    for path, problem in store.unreadable.items():
        print(f"lee: warning: skipping unreadable runs file {path} ({problem}): its unit counts as not started",
              file=sys.stderr)
    return damaged


def resolve_weights(cfg: SweepConfig, specs: list) -> tuple[dict[str, str], dict[str, str], Any]:
    """``--weights auto`` decided once, on the driver, for every hub model: ``hub`` when its weights are
    cached or the hub answers (the actor downloads them; a failed download fails that unit), else ``random``.

    The hub is checked at most once per sweep (``catalog.check_hub``: one quick request, none under
    ``HF_HUB_OFFLINE``), and only when some model's weights are not cached.

    Returns:
        (model name -> ``hub`` | ``random``, model name -> why random, the hub status or None if not checked).
    """
    if cfg.weights != "auto":
        return {}, {}, None
    checked: list = []

    def hub_status():
        if not checked:
            checked.append(catalog.check_hub())
        return checked[0]

    resolved: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    for spec in specs:
        if spec.source != "hub":
            continue  # 'auto' on a file or random model is the spec's own source
        try:
            resolved[spec.name], why = catalog.auto_weights(spec, hub_status)
        except Exception:  # noqa: BLE001 - e.g. an arch timm does not know: the unit fails with the reason
            continue
        if why:
            fallbacks[spec.name] = why
    return resolved, fallbacks, (checked[0] if checked else None)


def fallback_warning(p: Plan) -> str | None:
    """The loud line(s) naming the models that ``--weights auto`` runs on random init, why, and the way out."""
    if not p.fallbacks:
        return None
    by_reason: dict[str, list[str]] = defaultdict(list)
    for name, why in p.fallbacks.items():
        by_reason[why].append(name)
    lines = [f"lee: warning: RANDOM-INIT (untrained) weights for {len(p.fallbacks)} model(s): --weights auto "
             "fell back to random init"]
    for why, names in by_reason.items():
        shown = ", ".join(names[:10]) + (f" ... (+{len(names) - 10})" if len(names) > 10 else "")
        lines.append(f"  {shown}: {why}")
    lines.append("  Their LEE measures untrained networks. For pretrained weights: go online (or set HF_ENDPOINT to a "
                 "reachable mirror), or fill the Hugging Face cache (HF_HOME) where the hub is reachable and set "
                 "HF_HUB_OFFLINE=1 here; --weights random asks for random init.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ execute
def probe_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a Ray address nothing listens on, or whose GCS refuses this side's token
    (``ray.init`` would retry for 20 s or minutes, then raise a traceback).

    ``host:port`` (the GCS) is asked for its cluster id with the token (:func:`pipelines.cluster.check_gcs`);
    ``ray://host:port`` (Ray Client) is probed with a TCP connect; ``auto``, ``local`` and other forms are
    left to Ray.
    """
    client = address.startswith("ray://")
    target = address.removeprefix("ray://")
    if "://" in target or address in ("auto", "local"):
        return
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"Ray address {address!r} is not host:port or ray://host:port")
    host = host.strip("[]") or "127.0.0.1"
    if not client:
        check_gcs(f"{host}:{port}", timeout=timeout)
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UsageError(
            f"Ray address {address!r} is unreachable ({type(exc).__name__}: {exc or 'timed out'} within {timeout:g}s); "
            "is the cluster up?"
        ) from None


def init_ray(address: str | None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start an embedded local Ray.

    The address is probed first (:func:`probe_address`: unreachable, token missing or refused). The
    token mode is set before Ray is imported (:func:`pipelines.cluster.prepare_auth`); an embedded Ray
    is started with ``RAY_AUTH_MODE=token`` stated (Ray's default for new local clusters, without its
    notice) unless the mode is set.
    """
    prepare_auth()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        probe_address(address)
    elif "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:  # embedded local Ray
            ray.init(include_dashboard=False, **kwargs)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        cause = f"{exc} {exc.__cause__ or ''}"
        fix = auth_fix() if "auth" in cause.lower() else "is the cluster up, and is this its GCS address (HEAD:6379)?"
        raise UsageError(f"cannot join the Ray cluster at {address!r}: {fix}") from None


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
    n_groups = len({(u.model.name, u.weights_policy) for u in p.todo})
    if not n_groups:
        return "actors: none (nothing to run)"
    if cfg.gpus_per_actor:
        n, opts = actor_plan(cfg, n_groups, None)
        return (f"actors: {n} (one per model{f', at most --actors {cfg.actors}' if cfg.actors else ''}), each "
                f"num_gpus={opts['num_gpus']:g} num_cpus={opts['num_cpus']:g}: GPUs are requested whether or not "
                "the cluster has them now (an autoscaler starts GPU workers)")
    return (f"actors: auto-detected at run time from the cluster's resources ({n_groups} model(s); "
            "num_gpus=1 per actor only if GPUs are present then; --gpus N to request them always)")


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
    """The pid of the dead worker, when Ray's error names it."""
    m = re.search(r"\bpid[=:]\s*(\d+)", str(exc))
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
        return ("died: its process exited unexpectedly (killed by a signal, e.g. the kernel's OOM killer, "
                "or crashed)")
    return f"died ({type(exc).__name__})"


def execute(p: Plan, *, progress: Progress | None = None, sweep_id: str | None = None) -> SweepResult:
    """Run ``p.todo`` on Ray actors. Returns the ``runs`` rows of this invocation.

    The units are grouped by model (one model build per actor) and the groups handed out longest
    first (:func:`unit_cost`), so the costliest model does not start last and hold the sweep up.
    Actors are spread over the nodes (``SPREAD``); each unit gets the dataset's decoded images as
    object refs the driver put (they survive a lost worker node) and writes itself. An actor whose
    process dies (Ray's memory monitor, a signal, its node lost) is replaced: one line says what died
    and why, and the unit it ran is retried (:data:`MAX_UNIT_RETRIES`), its attempt counted.
    """
    t0 = time.perf_counter()
    sweep_id = sweep_id or uuid.uuid4().hex[:12]
    if not p.todo:
        return SweepResult(p, [], 0.0)

    cfg = p.config
    init_ray(cfg.address)
    import ray

    t_ray = time.perf_counter() - t0

    bs = cfg.batch_size
    # Each block's images are put once by the driver, so they live on the driver's node and are owned by it: a
    # worker node that is lost (a preempted spot instance) takes no dataset with it (a Ray Data block stored there
    # would be lost, and Ray Data's outputs are not rebuilt). A plan decoded on the driver (dry run) is put alike.
    shards = {name: [ray.put(resolve_shard(s)) for s in d.shards] for name, d in p.datasets.items()}
    groups: dict[tuple, list[WorkUnit]] = defaultdict(list)
    for u in p.todo:
        groups[(u.model.name, u.weights or u.weights_policy)].append(u)
    queue = sorted(groups.values(), key=lambda g: -sum(unit_cost(u) for u in g))  # longest first
    n_actors, opts = _actor_resources(cfg, len(queue))
    if opts.get("num_gpus") and cfg.gpus_per_actor:
        have = float(ray.cluster_resources().get("GPU", 0))
        if have < n_actors * opts["num_gpus"]:
            print(f"lee: {n_actors} actor(s) ask for {opts['num_gpus']:g} GPU each; the cluster has {have:g} GPU(s) "
                  "now: actors wait until the autoscaler adds GPU workers", file=sys.stderr)
    # No restarts or task retries by Ray: a dead actor's units are handed to a new actor here, so that
    # what died, and why, is one line (Ray would retry silently or print its dump) and the retries are counted.
    actor_cls = ray.remote(UnitRunner).options(max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD",
                                               **opts)
    git_rev = env.git_revision()  # the driver's code: workers' copies (Ray Jobs, rsync) have no .git

    def new_actor():
        return actor_cls.remote(p.store.uri, git_rev=git_rev)

    actors = [new_actor() for _ in range(n_actors)]
    idle = list(range(n_actors))
    pending: dict[Any, tuple[int, WorkUnit, int]] = {}  # ref -> (actor slot, unit, submission order)
    remaining_in_group: dict[int, int] = {}
    rows: list[dict] = []
    attempts = {u.key: p.attempts.get(u.key, 0) + 1 for u in p.todo}
    deaths: dict[str, int] = defaultdict(int)  # unit key -> times the worker running it died
    seen_attempt: dict[str, int] = {}  # unit key -> its stored attempt at its last death
    unstarted = [0]  # actors that died before they started a unit
    seq = iter(range(1 << 62))

    def driver_row(u: WorkUnit, exc, **kw) -> dict:
        """A failed row the driver writes (the actor is gone): where it ran is unknown."""
        stored = p.store.run_row(u.key) or {}
        attempt = max(attempts[u.key], int(stored.get("attempt") or 0))  # the worker counted its starts
        row = failed_row(u, sweep_id, attempt, exc, git_rev=git_rev, **kw)
        row.update(hardware="unknown", node_id=stored.get("node_id"), pid=stored.get("pid"))
        p.store.write_run(row)
        return row

    def dispatch():
        while idle and queue:
            a = idle.pop(0)
            group = queue.pop(0)
            remaining_in_group[a] = len(group)
            for u in group:
                ref = actors[a].run.remote(u, shards[u.dataset.name], sweep_id, attempt=attempts[u.key], batch_size=bs)
                pending[ref] = (a, u, next(seq))

    def finished(a: int, u: WorkUnit, row: dict) -> None:
        rows.append(row)
        if progress:
            progress.update(row["status"], u.dataset.n_images, row, key=u.key)
        remaining_in_group[a] -= 1
        if remaining_in_group[a] == 0:
            if queue:
                idle.append(a)
                dispatch()
            else:  # nothing left for it: free its GPU/CPUs for actors still waiting for a node
                ray.kill(actors[a], no_restart=True)

    def actor_died(a: int, exc: BaseException) -> None:
        """Slot ``a``'s actor died: one line saying what and why; its units go to a new actor (the one it
        was running at most :data:`MAX_UNIT_RETRIES` more times), or fail if its constructor failed."""
        mine = sorted(((s, ref, u) for ref, (b, u, s) in pending.items() if b == a), key=lambda t: t[0])
        for _, ref, _ in mine:
            del pending[ref]
        units = [u for _, _, u in mine]
        running = units[0]  # an actor runs its units in submission order: the first unfinished one was running
        stored = p.store.run_row(running.key) or {}
        # Started by this actor: its placeholder row is this sweep's, with an attempt not seen at an earlier death.
        attempt_now = int(stored.get("attempt") or 0) if stored.get("sweep_id") == sweep_id else 0
        started = stored.get("status") == "failed" and attempt_now > seen_attempt.get(running.key, 0)
        seen_attempt[running.key] = max(attempt_now, seen_attempt.get(running.key, 0))
        ray.kill(actors[a], no_restart=True)
        remaining_in_group[a] = 0
        unstarted[0] += not started
        if not started and unstarted[0] <= MAX_UNSTARTED_DEATHS and not getattr(exc, "actor_init_failed", False):
            # An actor that died before it ran anything (placed on a node that was dying): nothing was lost; its
            # units go to a new actor without a line or a counted try.
            queue.insert(0, units)
            actors[a] = new_actor()
            idle.append(a)
            dispatch()
            return
        deaths[running.key] += 1
        if getattr(exc, "actor_init_failed", False):  # its constructor failed: a new one would fail alike
            note(f"lee: error: a model actor could not start ({death_reason(exc)}); {len(units)} unit(s) failed")
            for u in units:
                record_failed(u, f"actor died: {exc}")
            units = []
        else:
            retry = deaths[running.key] <= MAX_UNIT_RETRIES
            what = f"{running.family} {running.model.name}@{running.dataset.name}"
            pid = death_pid(exc) or (stored.get("pid") if started else None)
            node = stored.get("node_id") if started else None
            where = "".join(x for x in (f" pid {pid}" if pid else "", f" on node {str(node)[:8]}" if node else ""))
            verdict = (f"retrying it (try {deaths[running.key] + 1} of {MAX_UNIT_RETRIES + 1})" if retry
                       else f"not retried: its worker died {deaths[running.key]} times")
            note(f"lee: warning: the worker{where} running unit {what} {death_reason(exc)}; {verdict}")
            if not retry:
                record_failed(running, f"actor died {deaths[running.key]} times: {death_reason(exc)}: {exc}")
                units = units[1:]
        if units:
            queue.insert(0, units)  # ahead of the groups not yet started: it was started first
        if queue:
            actors[a] = new_actor()
            idle.append(a)
            dispatch()

    def record_failed(u: WorkUnit, message: str) -> None:
        row = driver_row(u, message, error_type="ActorDied")
        rows.append(row)
        if progress:
            progress.update(row["status"], u.dataset.n_images, row, key=u.key)

    def note(line: str) -> None:
        if progress:
            progress.note(line)
        else:
            print(line, file=sys.stderr, flush=True)

    if progress:
        progress.set_costs((u.key, u.family, unit_cost(u), f"{u.model.name}|{u.weights or u.weights_policy}") for u in p.todo)
        progress.start(n_actors)
    dispatch()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if progress:
                progress.render()
            for ref in ready:
                if ref not in pending:  # an actor's death already handled it
                    continue
                a, u, _ = pending[ref]
                try:
                    row = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
                    actor_died(a, exc)  # the worker process died (memory monitor, signal, lost node)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. a task that could not be deserialized
                    del pending[ref]
                    finished(a, u, driver_row(u, exc))
                    continue
                del pending[ref]
                finished(a, u, row)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if progress:
            progress.close()
    return SweepResult(p, rows, time.perf_counter() - t0, t_ray)


def run_sweep(cfg: SweepConfig, *, show_progress: bool | None = None, stream: TextIO | None = None) -> SweepResult:
    p = plan(cfg)
    total_images = sum(u.dataset.n_images for u in p.todo)
    prog = Progress(len(p.todo), total_images, stream=stream, enabled=show_progress)
    return execute(p, progress=prog)


# ------------------------------------------------------------------------------------------ summary
def summary_table(store: Store, units: list[WorkUnit]) -> list[dict[str, Any]]:
    """Mean LEE ± stderr per model, weights, dataset and generator over the done ``lee`` units."""
    keys = [u.key for u in units if u.family == "lee"]
    t = store.read_table("lee", keys)  # noqa: F841 - read by DuckDB below
    rel = duckdb.sql(
        """
        SELECT model, weights, dataset, generator,
               avg(value) AS lee, stddev_samp(value) / sqrt(count(*)) AS stderr,
               avg(mean_abs) AS mean_abs, stddev_samp(mean_abs) / sqrt(count(*)) AS stderr_abs, count(*) AS n
        FROM t GROUP BY ALL ORDER BY model, dataset, generator
        """
    )
    cols = rel.columns
    return [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]


STATS = ("lee", "mean_abs")
"""Per-image statistics the summaries can show: the LEE (mean of squares), or ``mean_abs`` = mean_c |L_X f(x)_c|,
the statistic the paper's end-to-end tables store."""

STAT_HEADERS = {
    "lee": "LEE = E_x ||L_X f(x)||^2 / dim(out), mean ± standard error over n images:",
    "mean_abs": "mean_abs = E_x mean_c |L_X f(x)_c| (the paper's tables' statistic, not the LEE), "
                "mean ± standard error over n images:",
}


def pivot_summary(rows: list[dict[str, Any]], stat: str = "lee") -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """``summary_table`` rows pivoted for reading: one row per model, weights and dataset, one column per
    generator holding ``mean ± stderr`` of ``stat`` (``lee`` or ``mean_abs``; a ``mean_abs`` column's header
    says so), and the number of images. Generators keep liecore's order."""
    if stat not in STATS:
        raise UsageError(f"unknown statistic {stat!r}: one of {', '.join(STATS)}")
    value, err = ("lee", "stderr") if stat == "lee" else ("mean_abs", "stderr_abs")
    order = {name: i for i, name in enumerate(GENERATORS)}
    generators = sorted({r["generator"] for r in rows}, key=lambda g: (order.get(g, len(order)), g))
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["model"], r["weights"], r["dataset"])
        row = table.setdefault(key, {"model": key[0], "weights": key[1], "dataset": key[2], "n": r["n"]})
        se = r[err]
        row[r["generator"]] = f"{r[value]:.3g}±{se:.2g}" if se is not None and se == se else f"{r[value]:.3g}"
        row["n"] = max(row["n"], r["n"])
    columns = [("model", "model"), ("weights", "weights"), ("dataset", "dataset")]
    columns += [(g, g if stat == "lee" else f"{g} mean_abs") for g in generators] + [("n", "n")]
    return list(table.values()), columns


def layerwise_summary(store: Store, units: list[WorkUnit], top: int = 3) -> list[dict[str, Any]]:
    """Per model, dataset and generator of the done ``layerwise`` units: the end-to-end LEE, each layer type's
    share of it and the ``top`` layers with the largest shares.

    Shares are ratios of means over the images (sum of the signed additive shares over sum of the end-to-end
    values), so the types plus ``unattributed`` sum to 1.
    """
    keys = [u.key for u in units if u.family == "layerwise"]
    if not keys:
        return []
    t = store.read_table("layerwise", keys)  # noqa: F841 - read by DuckDB below
    if not t.num_rows:
        return []
    con = duckdb.connect()
    con.register("t", t)
    base = "model, dataset, generator, method"
    e2e = {tuple(r[:4]): (r[4], r[5]) for r in con.execute(
        f"SELECT {base}, sum(value), count(*) FROM t WHERE kind = 'end_to_end' GROUP BY ALL").fetchall()}
    by_kind: dict[tuple, list[tuple[str, float]]] = defaultdict(list)
    for *k, kind, share in con.execute(
            f"SELECT {base}, CASE WHEN kind = 'layer' THEN layer_kind ELSE kind END, sum(share) FROM t "
            f"WHERE kind <> 'end_to_end' GROUP BY ALL ORDER BY {base}, 6 DESC, 5").fetchall():
        by_kind[tuple(k)].append((kind, share))
    layers: dict[tuple, list[tuple[str, float]]] = defaultdict(list)
    for *k, layer, share in con.execute(
            f"SELECT {base}, layer, sum(share) FROM t WHERE kind = 'layer' GROUP BY ALL "
            f"ORDER BY {base}, 6 DESC, 5").fetchall():
        layers[tuple(k)].append((layer, share))
    rows = []
    for k, (total, n) in sorted(e2e.items()):
        if not total:
            continue
        rows.append({
            "model": k[0], "dataset": k[1], "generator": k[2], "method": k[3], "lee": total / n, "n": n,
            "types": ", ".join(f"{kind} {s / total:.2f}" for kind, s in by_kind[k]),
            "top": ", ".join(f"{layer} {s / total:.2f}" for layer, s in layers[k][:top]),
        })
    return rows


def print_layerwise_summary(store: Store, units: list[WorkUnit], out: TextIO | None = None) -> bool:
    """Print :func:`layerwise_summary` (nothing when the units have no layerwise rows). True if printed."""
    out = out or sys.stdout
    rows = layerwise_summary(store, units)
    if not rows:
        return False
    print("Layerwise: share of the end-to-end LEE by layer type and the top layers (signed additive shares, "
          "ratio of means over n images; types plus unattributed sum to 1):", file=out)
    print(format_table(rows, [("model", "model"), ("dataset", "dataset"), ("generator", "generator"),
                              ("lee", "end-to-end LEE"), ("n", "n"), ("types", "share by layer type"),
                              ("top", "top layers")]), file=out)
    return True


def print_summary(result: SweepResult, out: TextIO | None = None, *, stat: str = "lee") -> None:
    """The sweep's table (``stat``, mean ± stderr over images, per generator; the layerwise summary when the
    sweep has only layerwise units) and what was done, skipped, failed."""
    out = out or sys.stdout
    p = result.plan
    rows, columns = pivot_summary(summary_table(p.store, p.units), stat)
    layerwise = print_layerwise_summary(p.store, p.units, out)
    for r in rows:
        if r["weights"] == "random" and r["model"] in p.fallbacks:
            r["weights"] = "random*"  # not asked for: --weights auto fell back (warning below)
    if rows:
        print(("\n" if layerwise else "") + STAT_HEADERS[stat], file=out)
    if rows or not layerwise:
        print(format_table(rows, columns), file=out)
    if any(r["weights"].startswith("random") for r in rows):
        print(
            "weights=random: random-init models (no pretrained weights here). Their softmax output is near uniform,\n"
            "so LEE is small; some sit at 0 or the float floor (ResMLP: timm zero-inits its classifier;\n"
            "EfficientNet: random-init features barely vary with the input). Learned equivariance needs trained weights: `lee eval -m offline` (ImageNet-pretrained, no hub),\n"
            "the hub (--weights auto/hub), or `lee zoo train`.",
            file=out,
        )
    warning = fallback_warning(p)
    if warning:
        print("* " + warning.removeprefix("lee: warning: "), file=out)
    n_failed = len(result.failed)
    meanwhile = [r for r in result.done if r.get("skipped")]  # done by a concurrent run on the same root
    other = f"{len(meanwhile)} computed meanwhile by another run (not redone), " if meanwhile else ""
    print(
        f"\n{len(p.units)} units: {len(result.done) - len(meanwhile)} computed, {other}{len(p.skipped)} already "
        f"done (skipped), {n_failed} failed; {result.wall_s:.1f}s. Results: {p.store.uri}",
        file=out,
    )
    for r in result.failed:
        first = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
        print(f"  FAILED {r['family']}:{r['model']}@{r['dataset']} [{r['unit']}]: {first}", file=out)
    print_dataset_errors(p, out)


def print_dataset_errors(p: Plan, out: TextIO | None = None, limit: int = 5) -> None:
    """Images of the datasets that could not be read or decoded (skipped; the next ones were used)."""
    out = out or sys.stdout
    for name, d in p.datasets.items():
        if d.errors:
            print(f"  dataset {name}: {len(d.errors)} image(s) skipped (unreadable or undecodable), "
                  f"{d.info.n_images} used:", file=out)
            for image_id, msg in d.errors[:limit]:
                print(f"    {image_id}: {msg}", file=out)
            if len(d.errors) > limit:
                print(f"    ... and {len(d.errors) - limit} more", file=out)


def as_dict(cfg: SweepConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
