"""Speed of the analysis views over a large synthetic results store, and hive partition pruning.

    python benchmarks/bench_analysis.py                         # 10M layerwise rows in a temp dir
    python benchmarks/bench_analysis.py --root /tmp/lee-bench   # keep (and reuse) the store
    python benchmarks/bench_analysis.py --models 50 --repeats 1 # smaller

Writes a store in the results layout of ``pipelines.store.schema`` with pyarrow directly (same schemas,
hive directories, zstd Parquet, one ``runs`` row per unit): ``--models`` real catalog names (so the
``models`` metadata join has families and top-1) x 4 datasets (train, test, two OOD sets). Each unit
of the ``layerwise`` table has ``--images`` x 2 generators x (``--layers`` + 2) rows, so the defaults
(500 models, 50 images, 48 layers) give 10,000,000 layerwise rows in 2,000 files; the ``lee`` table
has 8 generators per image (2,000 files), ``alt`` 6 metrics on the test set (500 files). About 1% of
units failed and 1% have no ``runs`` row (their files exist but must not count), and a second, older
run of 5% of the lee units on fewer images must be shadowed by the current one.

Then it times each summary and correlation query (best of ``--repeats`` runs, fresh connection built
once, ``--threads`` DuckDB threads) and prints DuckDB's EXPLAIN ANALYZE of the per-model summary
queries filtered to one model: the Parquet scans list the files they read after hive partition
pruning (``Total Files Read``), which must be that model's files only.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.store import schema

DATASETS = (("imagenet-train", "train"), ("imagenet-val", "test"), ("cifar100", "ood"), ("colorectal-histology", "ood"))
GENERATORS = ("translate_x", "translate_y", "rotate", "shear_x", "shear_y", "stretch_x", "stretch_y", "contrast")
LAYERWISE_GENERATORS = ("translate_x", "rotate")
LAYER_CLASSES = ("PatchEmbed", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Attention", "Linear", "LayerNorm")
LAYER_KINDS = (
    "patch_embedding",
    "convolution",
    "normalization",
    "activation",
    "downsampling",
    "attention",
    "linear",
    "normalization",
)
ALT_METRICS = (
    "circular_shift_consistency",
    "eq_r",
    "eq_t",
    "eq_t_frac",
    "sampled_equivariance_error",
    "shift_consistency",
)


def _const(value: object, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array([value], type=type_).take(pa.array(np.zeros(n, dtype=np.int32)))


def _table(name: str, static: dict[str, pa.Array], const: dict[str, object], values: dict[str, np.ndarray]) -> pa.Table:
    sch = schema.TABLES[name].schema
    n = len(next(iter(values.values())))
    cols = []
    for f in sch:
        if f.name in static:
            cols.append(static[f.name])
        elif f.name in values:
            cols.append(pa.array(values[f.name], type=f.type))
        else:
            cols.append(_const(const.get(f.name), n, f.type))
    return pa.Table.from_arrays(cols, schema=sch)


def _write(path: str, table: pa.Table) -> None:
    os.makedirs(path, exist_ok=True)
    pq.write_table(table, f"{path}/part-0.parquet", compression="zstd")


def _run_row(
    unit: str,
    family: str,
    model: str,
    dataset: str,
    role: str,
    status: str,
    n_images: int,
    config: dict,
    finished: int,
    n_rows: int,
) -> dict:
    ts = np.datetime64("2026-01-01T00:00:00", "us") + np.timedelta64(finished, "s")
    return {
        "unit": unit,
        "status": status,
        "family": family,
        "model": model,
        "arch": model.split(".")[0],
        "model_version": "1",
        "weights_policy": "auto",
        "weights": "hub" if status == "done" else None,
        "weights_sha256": None,
        "dataset": dataset,
        "role": role,
        "dataset_fingerprint": f"fp-{dataset}-{n_images}",
        "dataset_version": "1",
        "metric_version": f"liecore-0.1.0/{family}",
        "key_json": "{}",
        "config_json": json.dumps(config, sort_keys=True),
        "seed": 0,
        "n_images": n_images,
        "n_rows": n_rows if status == "done" else 0,
        "batch_size": 16,
        "attempt": 1,
        "error_type": None if status == "done" else "RuntimeError",
        "error": None if status == "done" else "boom",
        "started_at": ts.astype(object),
        "finished_at": ts.astype(object),
        "load_s": 1.0,
        "compute_s": 1.0,
        "wall_s": 2.0,
        "images_per_s": 1.0,
        "sweep_id": "bench",
        "package_versions": "{}",
        "git_rev": None,
        "hostname": "bench",
        "hardware": "cpu",
        "schema_version": schema.SCHEMA_VERSION,
    }


def generate(root: str, n_models: int, n_images: int, n_layers: int, seed: int = 0) -> dict[str, int]:
    """Write the synthetic store; returns row and file counts."""
    import catalog

    rng = np.random.default_rng(seed)
    specs = [s for s in catalog.load_models("all") if s.top1 is not None][:n_models]
    if len(specs) < n_models:
        raise SystemExit(f"the catalog has only {len(specs)} models with a top-1")
    sample_ids = [f"img{i:05d}" for i in range(n_images)]

    # static columns of one lee / layerwise / alt unit (the same for every unit)
    n_gen = len(GENERATORS)
    lee_static = {
        "sample_id": pa.array(np.repeat(sample_ids, n_gen)),
        "sample_index": pa.array(np.repeat(np.arange(n_images, dtype=np.int32), n_gen)),
        "generator": pa.array(np.tile(GENERATORS, n_images)),
    }
    per_img = n_layers + 2
    n_lw = n_images * len(LAYERWISE_GENERATORS) * per_img
    kinds = np.array(["layer"] * n_layers + ["end_to_end", "unattributed"])
    layer_names = np.array([f"blocks.{i}.op" for i in range(n_layers)] + ["<end_to_end>", "<unattributed>"])
    classes = np.array([LAYER_CLASSES[i % len(LAYER_CLASSES)] for i in range(n_layers)] + ["", ""])
    lkinds = np.array([LAYER_KINDS[i % len(LAYER_KINDS)] for i in range(n_layers)] + ["end_to_end", "unattributed"])
    calls = np.array(list(range(n_layers)) + [-1, -1], dtype=np.int32)
    reps = n_images * len(LAYERWISE_GENERATORS)
    lw_static = {
        "sample_id": pa.array(np.repeat(sample_ids, len(LAYERWISE_GENERATORS) * per_img)),
        "sample_index": pa.array(np.repeat(np.arange(n_images, dtype=np.int32), len(LAYERWISE_GENERATORS) * per_img)),
        "generator": pa.array(np.tile(np.repeat(LAYERWISE_GENERATORS, per_img), n_images)),
        "method": _const("exact", n_lw, pa.string()),
        "kind": pa.array(np.tile(kinds, reps)),
        "layer": pa.array(np.tile(layer_names, reps)).dictionary_encode().cast(pa.string()),
        "layer_class": pa.array(np.tile(classes, reps)),
        "call_index": pa.array(np.tile(calls, reps)),
        "layer_kind": pa.array(np.tile(lkinds, reps)),
    }
    n_alt = n_images * len(ALT_METRICS)
    alt_static = {
        "sample_id": pa.array(np.repeat(sample_ids, len(ALT_METRICS))),
        "sample_index": pa.array(np.repeat(np.arange(n_images, dtype=np.int32), len(ALT_METRICS))),
        "metric": pa.array(np.tile(ALT_METRICS, n_images)),
        "value_unit": _const("fraction", n_alt, pa.string()),
        "higher_is_better": _const(True, n_alt, pa.bool_()),
    }

    counts = {"lee_rows": 0, "layerwise_rows": 0, "alt_rows": 0, "files": 0}
    runs: list[dict] = []
    clock = 0
    for mi, spec in enumerate(specs):
        level = np.log(1e-4) - 0.05 * (spec.top1 - 75.0) + rng.normal(0, 0.3)
        for di, (dataset, role) in enumerate(DATASETS):
            gap = {"train": 0.9, "test": 1.0, "ood": 1.5}[role]
            for family in ("lee", "layerwise", "alt"):
                if family == "alt" and role != "test":
                    continue
                unit = f"{family[:2]}{mi:05d}{di}"
                const = {
                    "unit": unit,
                    "model": spec.name,
                    "weights": "hub",
                    "dataset": dataset,
                    "role": role,
                    "metric": "lee",
                    "output": "probs",
                    "interpolation": "cubic",
                    "seed": 0,
                }
                if family == "lee":
                    v = np.exp(level + rng.normal(0, 0.5, n_images * n_gen)) * gap
                    t = _table("lee", lee_static, const, {"value": v, "mean_abs": np.sqrt(v)})
                    config = {"generators": list(GENERATORS), "output": "probs", "interpolation": "cubic"}
                elif family == "layerwise":
                    e2e = np.exp(level + rng.normal(0, 0.5, reps)) * gap
                    w = rng.dirichlet(np.ones(n_layers + 1), size=reps)  # layer shares + unattributed
                    share = np.concatenate([w * e2e[:, None], e2e[:, None]], axis=1)[
                        :, [*range(n_layers), n_layers + 1, n_layers]
                    ]
                    value = np.abs(share) * (1 + 0.1 * rng.random(share.shape))
                    value[:, n_layers] = e2e
                    t = _table("layerwise", lw_static, const, {"value": value.ravel(), "share": share.ravel()})
                    config = {
                        "generators": list(LAYERWISE_GENERATORS),
                        "method": "exact",
                        "output": "probs",
                        "interpolation": "cubic",
                    }
                else:
                    v = rng.random(n_alt) * (1 - 0.003 * (spec.top1 - 75.0))
                    t = _table("alt", alt_static, const, {"value": v, "seed": np.zeros(n_alt, dtype=np.int64)})
                    config = {"metrics": list(ALT_METRICS), "output": "probs"}
                _write(schema.data_path(root, family, spec.name, dataset, unit), t)
                counts[f"{family}_rows"] += t.num_rows
                counts["files"] += 1
                clock += 1
                r = rng.random()
                if r < 0.01:
                    runs.append(_run_row(unit, family, spec.name, dataset, role, "failed", n_images, config, clock, 0))
                elif r >= 0.02:  # 1%: no runs row at all
                    runs.append(
                        _run_row(unit, family, spec.name, dataset, role, "done", n_images, config, clock, t.num_rows)
                    )
                if family == "lee" and r > 0.95:  # an older smoke run of the same configuration, 10 images
                    old = f"ol{mi:05d}{di}"
                    small = t.slice(0, 10 * n_gen).set_column(0, "unit", _const(old, 10 * n_gen, pa.string()))
                    _write(schema.data_path(root, family, spec.name, dataset, old), small)
                    runs.append(_run_row(old, family, spec.name, dataset, role, "done", 10, config, -clock, 10 * n_gen))
                    counts["files"] += 1
    for row in runs:
        _write(schema.runs_path(root, row["unit"]), pa.Table.from_pylist([row], schema=schema.RUNS.schema))
    counts["files"] += len(runs)
    counts["runs"] = len(runs)
    return counts


QUERIES: dict[str, str] = {
    "lee_summary, one model (per-model summary)": "SELECT * FROM lee_summary WHERE model = '{model}'",
    "layerwise_layers, one model (per-model summary)": "SELECT * FROM layerwise_layers WHERE model = '{model}'",
    "lee_summary, all models": "SELECT count(*), sum(n) FROM lee_summary",
    "alt_summary, all models": "SELECT count(*), sum(n) FROM alt_summary",
    "metric_pairs, all models": "SELECT count(*) FROM metric_pairs",
    "layerwise_layers, all models (10M rows)": "SELECT count(*), sum(n) FROM layerwise_layers",
    "layer_type_shares, all models": "SELECT count(*) FROM layer_type_shares",
    "layerwise_cumulative, all models": "SELECT count(*), max(cumulative_fraction) FROM layerwise_cumulative",
    "LEE vs top-1 correlation per generator (SQL corr)": (
        "SELECT dataset, generator, corr(log_mean_lee, top1) AS pearson, count(*) AS n "
        "FROM lee_summary WHERE weights IN ('hub', 'file') GROUP BY ALL"
    ),
}

ANALYSES = ("accuracy", "scale", "gap", "agreement")


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _explain(con, sql: str) -> tuple[str, list[dict]]:
    """EXPLAIN ANALYZE as an indented operator tree, and the extra info of every Parquet scan."""
    plan = json.loads(con.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql).fetchall()[0][-1])
    q = plan.get("query", {})
    lines: list[str] = [
        f"total {q.get('total_time', float('nan')):.3f} s, "
        f"{plan.get('io', {}).get('total_bytes_read', 0) / 1e6:.1f} MB read, "
        f"{q.get('total_row_groups_scanned', '?')}/{q.get('total_row_groups_to_scan', '?')} row groups"
    ]
    scans: list[dict] = []

    def walk(node: dict, depth: int) -> None:
        info = node.get("extra_info", {})
        kind = node.get("type") or node.get("operator_name", "?")
        if kind in ("RESULT_COLLECTOR", "EXPLAIN_ANALYZE"):
            depth -= 1
        else:
            detail = ""
            if info.get("Function") == "READ_PARQUET":
                scans.append(info)
                kind = "READ_PARQUET"
                names = info.get("Filename(s)", "")
                names = names if isinstance(names, str) else ", ".join(names)
                detail = (
                    f"  File Filters: {info.get('File Filters', '-')} | Scanning Files: "
                    f"{info.get('Scanning Files', '-')} | Total Files Read: {info.get('Total Files Read', '-')}"
                    f" | {names[:160]}{'...' if len(names) > 160 else ''}"
                )
            elif kind == "TABLE_SCAN":
                detail = f"  {info.get('Table', '')}"
            elif "Conditions" in info:
                detail = f"  {info.get('Join Type', '')} on {info['Conditions']}"
            lines.append(
                f"{'  ' * depth}{kind} ({node.get('operator_cardinality', node.get('intermediate_rows', '?'))}"
                f" rows){detail}"
            )
        for child in node.get("children", []):
            walk(child, depth + 1)

    for root in plan["operator"] if isinstance(plan["operator"], list) else [plan["operator"]]:
        walk(root, 0)
    return "\n".join(x for x in lines if x), scans


def main() -> None:
    from pipelines.analysis import analyses
    from pipelines.analysis.views import connect

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="store directory (kept; reused when it already has runs/)")
    ap.add_argument("--models", type=int, default=500)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--full-plans", action="store_true", help="print the whole EXPLAIN ANALYZE operator tree")
    ap.add_argument(
        "--skip-layerwise-all",
        action="store_true",
        help="skip the layerwise analysis of every model (per-image bootstrap over 10M rows: minutes)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or f"{tmp}/store"
        if Path(root, "runs").exists():
            print(f"reusing the store at {root}")
        else:
            t0 = time.perf_counter()
            c = generate(root, args.models, args.images, args.layers)
            print(
                f"generated {root}: {c['layerwise_rows']:,} layerwise rows, {c['lee_rows']:,} lee rows, "
                f"{c['alt_rows']:,} alt rows, {c['runs']:,} runs rows, {c['files']:,} files "
                f"in {time.perf_counter() - t0:.1f} s"
            )

        t0 = time.perf_counter()
        con = connect(root, threads=args.threads)
        print(f"connect (views + done-units snapshot + catalog models table): {time.perf_counter() - t0:.2f} s")
        model = con.execute("SELECT model FROM done_units ORDER BY model LIMIT 1").fetchall()[0][0]

        print(f"\nseconds per query (best of {args.repeats}, {args.threads} DuckDB threads)")
        width = max(len(k) for k in QUERIES) + 12
        for name, sql in QUERIES.items():
            q = sql.format(model=model)
            s = _best(lambda: con.execute(q).fetchall(), args.repeats)
            print(f"  {name:<{width}}{s:8.3f}")
        for name in ANALYSES:
            fn = analyses.ANALYSES[name]
            s = _best(lambda: fn(con, n_boot=args.n_boot), 1)
            print(f"  {'analysis ' + name + f' (n_boot={args.n_boot})':<{width}}{s:8.3f}")
        s = _best(lambda: analyses.ANALYSES["layerwise"](con, n_boot=args.n_boot, model=model), 1)
        print(f"  {'analysis layerwise, one model':<{width}}{s:8.3f}")
        if not args.skip_layerwise_all:
            s = _best(lambda: analyses.ANALYSES["layerwise"](con, n_boot=args.n_boot), 1)
            print(f"  {f'analysis layerwise, all models (n_boot={args.n_boot})':<{width}}{s:8.3f}")

        n_files = {t: len(list(Path(root, t).glob("model=*/dataset=*/unit=*/*.parquet"))) for t in ("lee", "layerwise")}
        n_model = {
            t: len(list(Path(root, t).glob(f"model={schema.partition_value(model)}/dataset=*/unit=*/*.parquet")))
            for t in ("lee", "layerwise")
        }
        for table, view in (("lee", "lee_summary"), ("layerwise", "layerwise_layers")):
            sql = f"SELECT * FROM {view} WHERE model = '{model}'"
            tree, scans = _explain(con, sql)
            print(
                f"\nEXPLAIN ANALYZE {sql}\n  ({table}: {n_files[table]} files in the store, "
                f"{n_model[table]} under model={model})"
            )
            print(
                tree
                if args.full_plans
                else "\n".join(ln.strip() for ln in tree.splitlines() if "READ_PARQUET" in ln or ln.startswith("total"))
            )
            read = {int(i.get("Total Files Read", -1)) for i in scans}
            ok = read == {n_model[table]}
            print(f"  -> Parquet scans read {sorted(read)} file(s) each: {'only that model' if ok else 'NOT PRUNED'}")
        con.close()


if __name__ == "__main__":
    main()
