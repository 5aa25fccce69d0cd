"""The model actor: load a model once, run work units on batches with liecore, write the unit.

:class:`UnitRunner` is a plain class (usable in-process); :mod:`pipelines.running.execute` wraps it in a
Ray actor with ``num_gpus`` on GPU clusters (``num_cpus`` otherwise) and restarts it if it
dies. Every exception inside a unit becomes a ``failed`` ``runs`` row; CUDA/CPU out-of-memory
first halves the batch, down to one image (no number changes: randomness is per image, see
:mod:`pipelines.spec.families`).

Write order of a unit (what makes a kill at any moment harmless): first its ``runs`` row is
replaced by an ``Interrupted`` placeholder (status ``failed``), so the unit no longer counts as
done; then its data file is written under a temporary name and renamed over the old one (the
old data is never deleted first); last the final ``runs`` row replaces the placeholder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
import traceback
from typing import Any

import numpy as np
import pyarrow as pa
import torch

import catalog
import liecore
from pipelines.spec import env
from pipelines.spec.data import resolve_shard
from pipelines.spec.families import FAMILY_IMPLS
from pipelines.store import history, schema
from pipelines.store.results import Store
from pipelines.store.units import WorkUnit

__all__ = ["UnitRunner", "failed_row", "is_oom"]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def is_oom(exc: BaseException) -> bool:
    """CUDA or host out-of-memory raised by torch."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def base_row(unit: WorkUnit, sweep_id: str, attempt: int, git_rev: str | None = None) -> dict[str, Any]:
    """The ``runs`` columns known before the unit runs (``git_rev``: the driver's, default this process's)."""
    spec = unit.model
    return {
        "unit": unit.key,
        "family": unit.family,
        "model": spec.name,
        "arch": spec.arch,
        "model_version": str(spec.version),
        "weights_policy": unit.weights.policy,
        "weights": None,
        "weights_sha256": None,
        "key_mapping": None,
        "dataset": unit.dataset.name,
        "role": unit.dataset.role,
        "dataset_fingerprint": unit.dataset.fingerprint,
        "dataset_version": unit.dataset.version,
        "metric_version": unit.metric_version,
        "key_json": unit.key_json,
        "config_json": json.dumps(unit.config, sort_keys=True),
        "data_config_json": None,
        "seed": unit.seed,
        "n_images": unit.dataset.n_images,
        **skipped_columns(unit),
        "n_rows": 0,
        "batch_size": None,
        "attempt": attempt,
        "error_type": None,
        "error": None,
        "load_s": None,
        "compute_s": None,
        "images_per_s": None,
        "sweep_id": sweep_id,
        "package_versions": env.package_versions(),
        "git_rev": git_rev or env.git_revision(),
        "hostname": env.hostname(),
        "node_id": env.node_id(),
        "pid": os.getpid(),
        "schema_version": schema.SCHEMA_VERSION,
    }


MAX_SKIPPED_LISTED = 1000
"""Skipped images listed in ``runs.skipped_json`` at most (``n_skipped`` counts them all)."""


def skipped_columns(unit: WorkUnit) -> dict[str, Any]:
    """``n_skipped`` and ``skipped_json`` of a unit: the images of its dataset that could not be read or decoded."""
    skipped = list(unit.dataset.skipped)
    listed = [{"id": str(i), "reason": str(r)[:500]} for i, r in skipped[:MAX_SKIPPED_LISTED]]
    return {"n_skipped": len(skipped), "skipped_json": json.dumps(listed)}


def failed_row(
    unit: WorkUnit,
    sweep_id: str,
    attempt: int,
    exc: BaseException | str,
    started=None,
    *,
    error_type: str = "Error",
    git_rev: str | None = None,
) -> dict[str, Any]:
    """A ``failed`` ``runs`` row (also written by the driver when an actor died for good).

    ``error_type`` is used when ``exc`` is a message (an exception gives its class name).
    """
    row = base_row(unit, sweep_id, attempt, git_rev)
    now = _now()
    if isinstance(exc, BaseException):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        row["error_type"] = type(exc).__name__
        row["error"] = f"{type(exc).__name__}: {exc}\n{tb[-4000:]}"
    else:
        row["error_type"] = error_type
        row["error"] = str(exc)
    row.update(
        status="failed",
        started_at=started or now,
        finished_at=now,
        wall_s=(now - (started or now)).total_seconds(),
        hardware=row.get("hardware") or "unknown",
    )
    return row


class UnitRunner:
    """Runs work units; keeps the last loaded model so consecutive units of a model share it.

    Args:
        root: results root (fsspec URI); data files and ``runs`` rows are written from here.
        device: torch device (default: CUDA if visible, else CPU).
        git_rev: code revision to record (the driver's; default: this process's checkout).
    """

    def __init__(self, root: str, device: str | None = None, *, git_rev: str | None = None):
        self.store = Store(root)
        self.git_rev = git_rev
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            liecore.tune_malloc()  # reuse freed activations instead of page-faulting them in per pass
        self._cache_key = None
        self._loaded = None

    def ping(self) -> str:
        return f"{env.hostname()} {env.hardware(self.device)}"

    def _load(self, unit: WorkUnit):
        key = (unit.model, unit.weights.source, unit.seed)
        if key != self._cache_key:
            self._loaded = self._cache_key = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            torch.manual_seed(
                unit.seed
            )  # torch's global RNG; random init does not use it: catalog seeds it with RANDOM_SEED
            self._loaded = catalog.build_model(unit.model, weights=unit.weights.source, device=str(self.device))
            self._cache_key = key
        return self._loaded

    def run(
        self,
        unit: WorkUnit,
        shards: list,
        sweep_id: str,
        *,
        attempt: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, Any]:
        """Compute one unit and write it (placeholder row, data, final ``runs`` row). Returns a summary.

        Concurrent runs on one root: the unit is computed under its lock (:meth:`Store.unit_lock`; local
        roots), and its ``runs`` row is read again under it. A row started after the driver planned
        (its ``attempt`` is at least the planned one) that is ``done`` was computed meanwhile by another run:
        the unit is not computed again (the summary says ``skipped``). Otherwise this attempt is the stored
        row's ``attempt`` + 1, read under the lock, so ``attempt`` counts every start.

        Args:
            attempt: The attempt the driver planned (the stored row's ``attempt`` + 1 when it planned);
                None: no plan, compute whatever is stored.
        """
        with self.store.unit_lock(unit.key):
            stored = self.store.run_row(unit.key)
            prev = int(stored.get("attempt") or 0) if stored else 0
            if stored is not None and attempt is not None and stored["status"] == "done" and prev >= attempt:
                return _summary(stored) | {"skipped": f"computed meanwhile by sweep {stored.get('sweep_id')}"}
            try:  # new weights under the same unit key: the earlier weights' results go to history/ first
                history.keep_previous(self.store, unit, stored)
            except history.HistoryError as exc:  # nothing written: the stored results stay as they were
                return _summary(
                    failed_row(unit, sweep_id, prev + 1, exc, error_type="HistoryError", git_rev=self.git_rev)
                )
            return self._compute(unit, shards, sweep_id, attempt=prev + 1, batch_size=batch_size)

    def _compute(self, unit: WorkUnit, shards: list, sweep_id: str, *, attempt: int, batch_size: int) -> dict[str, Any]:
        """:meth:`run` once the unit is locked and its attempt known."""
        started = _now()
        t0 = time.perf_counter()
        loaded = None
        try:
            # The unit stops counting as done before its data is touched (a killed --force rerun
            # leaves a failed placeholder, so the next run redoes the unit).
            self.store.write_run(
                failed_row(
                    unit,
                    sweep_id,
                    attempt,
                    f"started {started:%Y-%m-%d %H:%M:%S} UTC on {env.hostname()} by sweep {sweep_id} and did not "
                    "finish: the process was killed or its node lost (or it is still running)",
                    started,
                    error_type="Interrupted",
                    git_rev=self.git_rev,
                )
                | {"hardware": env.hardware(self.device)}
            )
            self.store.clear_partials(unit.table, unit.model.name, unit.dataset.name, unit.key)
            loaded = self._load(unit)
            load_s = time.perf_counter() - t0
            impl = FAMILY_IMPLS[unit.family]
            cfg = loaded.data_config
            mean, std = cfg.get("mean"), cfg.get("std")
            parts: list[dict] = []
            ids: list[str] = []
            labels: list[Any] = []
            compute_s = 0.0
            bs = batch_size
            for shard in shards:
                shard = resolve_shard(shard)
                tc = time.perf_counter()
                x = loaded.preprocess(list(shard["images"])).to(self.device)
                margin = impl.margin(unit.config)
                x_margin = loaded.preprocess(list(shard["images"]), margin=margin).to(self.device) if margin else None
                offset = len(ids)
                cols, bs = _compute_with_oom_retry(
                    impl.compute, loaded.model, x, unit, mean, std, bs, offset, x_margin=x_margin
                )
                compute_s += time.perf_counter() - tc
                cols["sample_pos"] = np.asarray(cols["sample_pos"]) + offset
                parts.append(cols)
                ids.extend(str(i) for i in shard["ids"])
                labels.extend(shard["labels"])
            table = _assemble(unit, loaded.weights, parts, ids, labels)
            written = self.store.write_data(unit.table, unit.model.name, unit.dataset.name, unit.key, table)
            row = base_row(unit, sweep_id, attempt, self.git_rev)
            now = _now()
            row.update(
                status="done",
                weights=loaded.weights,
                weights_sha256=loaded.weights_sha256,
                key_mapping=_key_mapping_json(loaded),
                data_config_json=_data_config_json(loaded),
                n_rows=table.num_rows,
                **written.columns(),  # data_sha256, data_bytes, data_stamp: what later checks compare
                batch_size=bs,
                started_at=started,
                finished_at=now,
                load_s=load_s,
                compute_s=compute_s,
                wall_s=time.perf_counter() - t0,
                images_per_s=(len(ids) / compute_s) if compute_s > 0 else None,
                hardware=env.hardware(self.device),
            )
        except Exception as exc:  # noqa: BLE001 - failure isolation: every error becomes a failed row
            row = failed_row(unit, sweep_id, attempt, exc, started, git_rev=self.git_rev)
            row["hardware"] = env.hardware(self.device)
            row["wall_s"] = time.perf_counter() - t0
            loaded = loaded or self._loaded
            if loaded is not None:
                row["weights"] = loaded.weights
                row["weights_sha256"] = loaded.weights_sha256
                row["key_mapping"] = _key_mapping_json(loaded)
                row["data_config_json"] = _data_config_json(loaded)
            if is_oom(exc):  # do not keep a model that filled the device
                self._loaded = self._cache_key = None
        self.store.write_run(row)
        return _summary(row)


def _key_mapping_json(loaded) -> str | None:
    return json.dumps(loaded.key_mapping, sort_keys=True) if loaded.key_mapping else None


def _data_config_json(loaded) -> str | None:
    """timm's resolved eval data config of a loaded model (input_size, interpolation, crop_pct, crop_mode,
    mean, std) as JSON."""
    if loaded.data_config is None:
        return None
    clean = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(loaded.data_config).items()}
    return json.dumps(clean, sort_keys=True, default=str)


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "unit",
        "status",
        "family",
        "model",
        "weights",
        "dataset",
        "n_images",
        "n_rows",
        "error",
        "compute_s",
        "wall_s",
        "attempt",
        "started_at",
        "hostname",
        "node_id",
        "pid",
    )
    return {k: row.get(k) for k in keep}


def _compute_with_oom_retry(compute, model, x, unit, mean, std, bs, first_index: int = 0, *, x_margin=None):
    """Run ``compute`` over ``x`` in chunks of ``bs`` images, halving ``bs`` on out-of-memory.

    ``x_margin`` (the same images cropped larger, for families with a margin) is chunked alike and passed on.

    ``first_index`` is the position of ``x[0]`` in the evaluated dataset; each chunk is told its own
    (``first_index``), from which the families seed each image's random draws, so chunking changes
    no value.
    """
    out: list[dict] = []
    start = 0
    while start < x.shape[0]:
        chunk = x[start : start + bs]
        extra = {} if x_margin is None else {"x_margin": x_margin[start : start + bs]}
        try:
            torch.manual_seed(unit.seed)  # anything drawing from torch's global RNG sees the same state
            cols = compute(
                model,
                chunk,
                config=unit.config,
                mean=mean,
                std=std,
                seed=unit.seed,
                first_index=first_index + start,
                **extra,
            )
        except Exception as exc:
            if is_oom(exc) and bs > 1:
                bs = max(1, bs // 2)
                if x.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            raise
        cols["sample_pos"] = np.asarray(cols["sample_pos"]) + start
        out.append(cols)
        start += chunk.shape[0]
    merged = {k: _cat([c[k] for c in out]) for k in out[0]}
    return merged, bs


def _cat(values):
    if isinstance(values[0], np.ndarray):
        return np.concatenate(values)
    return [v for part in values for v in part]


def _assemble(unit: WorkUnit, weights: str, parts: list[dict], ids: list[str], labels: list[Any]) -> pa.Table:
    """Family columns + key columns, cast to the table's schema."""
    cols = {k: _cat([p[k] for p in parts]) for k in parts[0]}
    pos = np.asarray(cols.pop("sample_pos"), dtype=np.int64)
    n = len(pos)
    lab = [None if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in labels]
    data = {
        "unit": [unit.key] * n,
        "model": [unit.model.name] * n,
        "weights": [weights] * n,
        "dataset": [unit.dataset.name] * n,
        "role": [unit.dataset.role] * n,
        "sample_id": [ids[i] for i in pos],
        "sample_index": pos.astype(np.int32),
        "label": [lab[i] for i in pos],
        **cols,
    }
    sch = schema.TABLES[unit.table].schema
    return pa.table({name: pa.array(data[name], type=sch.field(name).type) for name in sch.names}, schema=sch)
