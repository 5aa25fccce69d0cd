"""Results stores written by the tests with pipelines' own writer (``pipelines.store.results.Store``), real Parquet.

``planted`` is a store whose numbers follow a known model (see :data:`TRUTH`): ln of a model's LEE is
linear in its top-1 with slope ``b``, plus a family offset, plus ``c`` times log10 of its parameter
count, plus a recipe offset, plus model noise; OOD and train images have LEE ``gap_ood`` and
``gap_train`` times the test images' (ratio of population means); per image the LEE is log-normal.
The models' metadata comes from a user catalog file written next to the store (real timm archs,
planted family / top-1 / params / recipe): an arch's two models have the same size and pretraining
data and differ only in recipe ('a' / 'b').
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.store import schema
from pipelines.store.results import Store

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
_counter = itertools.count()


def runs_row(
    unit: str,
    family: str,
    model: str,
    dataset: str,
    role: str,
    *,
    status: str = "done",
    weights: str | None = "hub",
    config: dict[str, Any] | None = None,
    n_images: int = 4,
    minutes: int = 0,
    n_rows: int = 0,
    sweep_id: str = "s1",
) -> dict[str, Any]:
    """A complete ``runs`` row (every column of ``pipelines.store.schema.RUNS``)."""
    if config is None:
        config = (
            {"metrics": ["m"], "output": "probs"}
            if family == "alt"
            else {"generators": ["rotate"], "output": "probs", "interpolation": "cubic"}
        )
    when = T0 + dt.timedelta(minutes=minutes)
    return {
        "unit": unit,
        "status": status,
        "family": family,
        "model": model,
        "arch": model.split(".")[0],
        "model_version": "1",
        "weights_policy": "auto",
        "weights": weights if status == "done" else None,
        "weights_sha256": None,
        "dataset": dataset,
        "role": role,
        "dataset_fingerprint": f"fp-{dataset}-{n_images}",
        "dataset_version": "1",
        "metric_version": f"test/{family}",
        "key_json": json.dumps({"unit": unit}),
        "config_json": json.dumps(config, sort_keys=True),
        "seed": 0,
        "n_images": n_images,
        "n_rows": n_rows if status == "done" else 0,
        "batch_size": 4,
        "attempt": 1,
        "error_type": None if status == "done" else "RuntimeError",
        "error": None if status == "done" else "RuntimeError: boom",
        "started_at": when,
        "finished_at": when,
        "load_s": 0.1,
        "compute_s": 0.1,
        "wall_s": 0.2,
        "images_per_s": 10.0,
        "sweep_id": sweep_id,
        "package_versions": "{}",
        "git_rev": None,
        "hostname": "test",
        "hardware": "cpu",
        "schema_version": schema.SCHEMA_VERSION,
    }


def data_table(table: str, columns: dict[str, Any], **const: Any) -> pa.Table:
    """Rows of ``table``: per-row ``columns`` (arrays / lists) plus constant columns, cast to the schema."""
    sch = schema.TABLES[table].schema
    n = len(next(iter(columns.values())))
    defaults = {
        "metric": "lee",
        "output": "probs",
        "interpolation": "cubic",
        "method": "exact",
        "label": None,
        "num_probes": None,
        "stderr": None,
        "value_unit": "1",
        "higher_is_better": False,
        "seed": 0,
    }
    arrays = []
    for f in sch:
        if f.name in columns:
            arrays.append(
                pa.array(
                    list(columns[f.name]) if not isinstance(columns[f.name], np.ndarray) else columns[f.name],
                    type=f.type,
                )
            )
        else:
            arrays.append(pa.array([const.get(f.name, defaults.get(f.name))] * n, type=f.type))
    return pa.Table.from_arrays(arrays, schema=sch)


def write_unit(
    store: Store,
    family: str,
    model: str,
    dataset: str,
    role: str,
    columns: dict[str, Any],
    *,
    unit: str | None = None,
    status: str | None = "done",
    weights: str = "hub",
    config: dict[str, Any] | None = None,
    n_images: int | None = None,
    minutes: int | None = None,
    sweep_id: str = "s1",
) -> str:
    """Write one work unit the way a sweep does (data file, then its ``runs`` row unless status is None)."""
    unit = unit or f"u{next(_counter):08d}"
    t = data_table(family, columns, unit=unit, model=model, weights=weights, dataset=dataset, role=role)
    written = store.write_data(family, model, dataset, unit, t)
    if status is not None:
        n_img = n_images if n_images is not None else len(set(columns["sample_id"]))
        row = runs_row(
            unit,
            family,
            model,
            dataset,
            role,
            status=status,
            weights=weights,
            config=config,
            n_images=n_img,
            minutes=next(_counter) if minutes is None else minutes,
            n_rows=t.num_rows,
            sweep_id=sweep_id,
        )
        store.write_run(row | (written.columns() if status == "done" else {}))
    return unit


def lee_columns(values: np.ndarray, generators: list[str]) -> dict[str, Any]:
    """lee-table columns for values shaped (images, generators)."""
    n_img = values.shape[0]
    ids = [f"img{i:03d}" for i in range(n_img)]
    return {
        "sample_id": np.repeat(ids, len(generators)),
        "sample_index": np.repeat(np.arange(n_img, dtype=np.int32), len(generators)),
        "generator": np.tile(generators, n_img),
        "value": values.ravel(),
        "mean_abs": np.sqrt(values.ravel()),
    }


def layerwise_columns(
    layers: list[tuple[str, str, str]], fractions: Any, e2e: Any, generator: str = "rotate"
) -> dict[str, list]:
    """layerwise-table columns: per image ``i``, one row per layer (``layers``: (name, class, layer_kind) in
    call order) with share ``fractions[i, j] * e2e[i]``, the ``end_to_end`` row (``e2e[i]``) and the
    ``unattributed`` row (share ``fractions[i, -1] * e2e[i]``)."""
    fractions, e2e = np.asarray(fractions, float), np.asarray(e2e, float)
    names = (
        "sample_id",
        "sample_index",
        "generator",
        "kind",
        "layer",
        "layer_class",
        "call_index",
        "layer_kind",
        "value",
        "share",
    )
    cols: dict[str, list] = {c: [] for c in names}
    k = len(layers)
    for i in range(len(e2e)):
        rows = [(name, cls, j, kind, "layer", fractions[i, j] * e2e[i]) for j, (name, cls, kind) in enumerate(layers)]
        rows += [
            ("<end_to_end>", "", -1, "end_to_end", "end_to_end", e2e[i]),
            ("<unattributed>", "", -1, "unattributed", "unattributed", fractions[i, k] * e2e[i]),
        ]
        for name, cls, j, lkind, kind, share in rows:
            for c, v in zip(
                names, (f"img{i}", i, generator, kind, name, cls, j, lkind, abs(share), share), strict=True
            ):
                cols[c].append(v)
    return cols


EXPLAIN_ROW_COLUMNS = (
    "sample_id",
    "sample_index",
    "generator",
    "kind",
    "layer",
    "layer_class",
    "call_index",
    "layer_kind",
    "grid_h",
    "grid_w",
    "total",
    "abs_total",
    "cells",
    "border_profile",
    "texture",
    "input_h",
    "input_w",
    "lee",
)
"""The per-row columns of a synthetic ``explain`` unit (what :func:`write_unit` takes besides the unit's key)."""

TWO_CONFIG_LAYERS = [("stem", "Conv2d", "convolution"), ("fc", "Linear", "linear")]


def write_two_configurations(root: str) -> None:
    """One model whose layerwise, alt and lee results were computed in two or three configurations that
    all count (probs / logits output, exact / stochastic layerwise method), 6 layerwise and 5 alt images,
    plus an older layerwise unit whose config names no interpolation (liecore's default, cubic) on fewer
    images: a smaller run of the probs / exact / cubic configuration, shadowed by it."""
    s = Store(root)
    m, ds = "resnet18.a1_in1k", "sample-test"
    exact = {"generators": ["rotate"], "method": "exact", "interpolation": "cubic"}
    for output, conv, e2e in (("probs", 0.9, 1.0), ("logits", 0.1, 10.0)):
        cols = layerwise_columns(TWO_CONFIG_LAYERS, np.tile([conv, 1 - conv, 0.0], (6, 1)), np.full(6, e2e))
        write_unit(s, "layerwise", m, ds, "test", cols, config={**exact, "output": output})
    stoch = layerwise_columns(TWO_CONFIG_LAYERS, np.tile([0.5, 0.4, 0.1], (6, 1)), np.full(6, 1.0))
    n_rows = len(stoch["value"])
    write_unit(
        s,
        "layerwise",
        m,
        ds,
        "test",
        {**stoch, "method": ["stochastic"] * n_rows, "num_probes": [8] * n_rows},
        config={
            "generators": ["rotate"],
            "method": "stochastic",
            "num_probes": 8,
            "output": "probs",
            "interpolation": "cubic",
        },
    )
    older = layerwise_columns(TWO_CONFIG_LAYERS, np.tile([0.7, 0.3, 0.0], (3, 1)), np.full(3, 1.0))
    write_unit(
        s, "layerwise", m, ds, "test", older, config={"generators": ["rotate"], "method": "exact", "output": "probs"}
    )
    for output, metric_value, lee_value in (("probs", 0.01, 1.0), ("logits", 10.0, 100.0)):
        n = 5
        cols = {
            "sample_id": [f"img{i}" for i in range(n)],
            "sample_index": list(range(n)),
            "metric": ["eq_t"] * n,
            "value": [metric_value] * n,
            "higher_is_better": [False] * n,
        }
        write_unit(s, "alt", m, ds, "test", cols, config={"metrics": ["eq_t"], "output": output})
        lee = {**lee_columns(np.full((n, 1), lee_value), ["rotate"]), "output": [output] * n}
        write_unit(
            s, "lee", m, ds, "test", lee, config={"generators": ["rotate"], "output": output, "interpolation": "cubic"}
        )


def write_catalog(path: Path, models: list[dict[str, Any]]) -> Path:
    """A user catalog file (JSON is valid YAML) with planted metadata."""
    entries = [{"source": "random", **m} for m in models]
    path.write_text("name: planted\nmodels:\n" + "".join(f"  - {json.dumps(e)}\n" for e in entries))
    return path


@dataclass
class Planted:
    root: str
    catalog: str
    truth: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)


TRUTH = {
    "b": -0.08,  # d ln LEE / d top-1
    "family": {"cnn": 0.0, "hybrid": -0.6, "vit": 1.0},
    "c": 0.5,  # d ln LEE / d log10 params
    "recipe_b": -0.4,  # ln LEE offset of recipe 'b' vs 'a' (same arch)
    "sigma_model": 0.2,
    "sigma_image": 0.3,  # per-image log-normal noise
    "gap_ood": 2.5,
    "gap_train": 0.8,
    "top1_sd": 4.0,
    "log10_params_sd": 0.3,
    "n_images": 16,
    "models_per_family": 24,
    "gap_models_per_family": 8,  # models with train and ood images too
}


def _archs(family: str, n: int) -> list[str]:
    import catalog

    out: list[str] = []
    for s in catalog.load_models("all"):
        if s.family == family and "blur" not in s.arch and s.arch not in out:
            out.append(s.arch)
    return out[:n]


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    """72 models in 3 families x 2 generators on test images (24 on train and OOD images too), and two
    alternative metrics for 36 of them."""
    t = TRUTH
    rng = np.random.default_rng(1234)
    base = tmp_path_factory.mktemp("planted")
    root = str(base / "results")
    store = Store(root)
    models = []
    for fam in sorted(t["family"]):
        archs = _archs(fam, t["models_per_family"] // 2)
        for i in range(t["models_per_family"]):
            top1 = 75.0 + rng.normal(0, t["top1_sd"])
            lp = 1.5 + rng.normal(0, t["log10_params_sd"])
            if i % 2:  # an arch's two models: the same size and data, recipes 'a' and 'b'
                lp = math.log10(models[-1]["params_m"])
            recipe = "a" if i % 2 == 0 else "b"
            mu = (
                -8.0
                + t["b"] * (top1 - 75.0)
                + t["family"][fam]
                + t["c"] * (lp - 1.5)
                + (t["recipe_b"] if recipe == "b" else 0.0)
                + rng.normal(0, t["sigma_model"])
            )
            models.append(
                {
                    "name": f"{fam}_{i:02d}",
                    "arch": archs[i // 2],
                    "family": fam,
                    "top1": round(top1, 4),
                    "params_m": round(10**lp, 4),
                    "recipe": recipe,
                    "pretrain_data": "in1k" if (i // 2) % 3 else "in21k",
                    "mu": mu,
                }
            )
    gens = ["rotate", "translate_x"]
    s2 = t["sigma_image"] ** 2
    rotate_test_mean = {}
    for i, m in enumerate(models):
        roles = [("synth-test", "test", 1.0)]
        if i % t["models_per_family"] < t["gap_models_per_family"]:  # the gap needs fewer models
            roles += [("synth-train", "train", t["gap_train"]), ("synth-ood", "ood", t["gap_ood"])]
        for dataset, role, gapf in roles:
            # per-image log-normal with population mean exp(mu) * gap: ln v = mu + ln gap - s2/2 + eps
            v = np.exp(m["mu"] + math.log(gapf) - s2 / 2 + rng.normal(0, t["sigma_image"], (t["n_images"], 2)))
            write_unit(
                store,
                "lee",
                m["name"],
                dataset,
                role,
                lee_columns(v, gens),
                config={"generators": gens, "output": "probs", "interpolation": "cubic"},
            )
            if role == "test":
                rotate_test_mean[m["name"]] = float(v[:, 0].mean())
    # alt on the test set, every other model: 'err_like' = 2 x the model's mean rotate LEE on the same
    # images (perfect rank agreement, lower is better); 'unrelated' = noise (no agreement)
    metrics = ["err_like", "unrelated"]
    for m in models[::2]:
        n = t["n_images"]
        vals = np.column_stack([np.full(n, 2 * rotate_test_mean[m["name"]]), rng.random(n)])
        cols = {
            "sample_id": np.repeat([f"img{i:03d}" for i in range(n)], 2),
            "sample_index": np.repeat(np.arange(n, dtype=np.int32), 2),
            "metric": np.tile(metrics, n),
            "value": vals.ravel(),
            "higher_is_better": [False] * (2 * n),
        }
        write_unit(store, "alt", m["name"], "synth-test", "test", cols, config={"metrics": metrics, "output": "probs"})
    cat = write_catalog(base / "planted.yaml", [{k: v for k, v in m.items() if k != "mu"} for m in models])
    return Planted(root=root, catalog=str(cat), truth=dict(t), models=models)


@pytest.fixture(scope="session")
def planted_con(planted: Planted):
    from pipelines.analysis.views import connect

    con = connect(planted.root, catalogs=[planted.catalog], threads=1)
    yield con
    con.close()
