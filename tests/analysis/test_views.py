"""The DuckDB views over real Parquet written by pipelines.store.results: visibility, several runs, evolving
columns, fsspec roots, partition pruning, and `lee sql` output that loads in a fresh connection."""

from __future__ import annotations

import json
import os
import uuid

import duckdb
import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.analysis.views import connect, sql_files
from pipelines.cli import UsageError, main
from pipelines.store import schema
from pipelines.store.results import Store

from .conftest import (
    TWO_CONFIG_LAYERS,
    data_table,
    layerwise_columns,
    lee_columns,
    runs_row,
    write_two_configurations,
    write_unit,
)

GENS = ["rotate", "translate_x"]
CFG = {"generators": GENS, "output": "probs", "interpolation": "cubic"}


def _lee(n_img: int, level: float) -> dict:
    return lee_columns(np.full((n_img, len(GENS)), level), GENS)


@pytest.fixture()
def mixed_root(tmp_path):
    """One model's units in every state a store can hold, plus a second sweep and an older file format."""
    root = str(tmp_path / "r")
    s = Store(root)
    m, ds = "resnet18.a1_in1k", "sample-test"
    units = {
        "done": write_unit(s, "lee", m, ds, "test", _lee(4, 1.0), config=CFG, minutes=10),
        "failed": write_unit(s, "lee", "resnet50.a1_in1k", ds, "test", _lee(4, 100.0), config=CFG, status="failed"),
        "no_runs_row": write_unit(
            s, "lee", "resnet50.a1_in1k", "sample-ood", "ood", _lee(4, 100.0), config=CFG, status=None
        ),
        # an earlier smoke run of the same configuration on 2 images: visible in lee_all, shadowed in lee
        "smoke": write_unit(s, "lee", m, ds, "test", _lee(2, 7.0), config=CFG, minutes=20, sweep_id="s0"),
        # a later sweep on another dataset
        "other_sweep": write_unit(s, "lee", m, "sample-ood", "ood", _lee(3, 2.0), config=CFG, sweep_id="s2"),
        "random": write_unit(s, "lee", m, "sample-train", "train", _lee(4, 5.0), config=CFG, weights="random"),
    }
    # a file from an older writer: no mean_abs / interpolation columns, value stored as float32
    old = "old0000001"
    t = data_table(
        "lee",
        _lee(3, 3.0),
        unit=old,
        model="vit_tiny_patch16_224.augreg_in21k_ft_in1k",
        weights="hub",
        dataset=ds,
        role="test",
    )
    t = t.drop_columns(["mean_abs", "interpolation"])
    t = t.set_column(t.schema.get_field_index("value"), "value", t.column("value").cast(pa.float32()))
    s.write_data("lee", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", ds, old, t)
    s.write_run(runs_row(old, "lee", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", ds, "test", config=CFG, n_images=3))
    units["old"] = old
    # a file from a newer writer: an extra column the schema does not know yet
    new = "new0000001"
    t = data_table(
        "lee", _lee(3, 4.0), unit=new, model="convnext_atto.d2_in1k", weights="hub", dataset=ds, role="test"
    ).append_column("brand_new", pa.array(["x"] * 6))
    s.write_data("lee", "convnext_atto.d2_in1k", ds, new, t)
    s.write_run(runs_row(new, "lee", "convnext_atto.d2_in1k", ds, "test", config=CFG, n_images=3))
    units["new"] = new
    return root, units


def _units(con, view: str) -> set[str]:
    return {r[0] for r in con.execute(f"SELECT DISTINCT unit FROM {view}").fetchall()}


def test_views_count_only_done_units(mixed_root):
    root, u = mixed_root
    con = connect(root, threads=1)
    visible = _units(con, "lee")
    assert u["failed"] not in visible and u["no_runs_row"] not in visible
    assert _units(con, "lee_all") == {u["done"], u["smoke"], u["other_sweep"], u["random"], u["old"], u["new"]}
    # the smoke run is a second run of the done unit's configuration: only the larger one counts
    assert visible == {u["done"], u["other_sweep"], u["random"], u["old"], u["new"]}
    assert con.execute("SELECT count(*) FROM lee_files WHERE unit = ?", [u["failed"]]).fetchall() == [(8,)]
    summary = con.sql("SELECT model, dataset, weights, generator, n, n_units, mean_lee FROM lee_summary").df()
    assert (summary["n_units"] == 1).all()
    r18 = summary[(summary.model == "resnet18.a1_in1k") & (summary.dataset == "sample-test")]
    assert set(r18["n"]) == {4} and np.allclose(r18["mean_lee"], 1.0)
    assert set(summary.loc[summary.dataset == "sample-train", "weights"]) == {"random"}
    assert "resnet50.a1_in1k" not in set(summary["model"])
    con.close()


def test_evolving_columns_and_catalog_join(mixed_root):
    root, u = mixed_root
    con = connect(root, threads=1)
    old = con.sql(f"SELECT value, mean_abs, interpolation FROM lee WHERE unit = '{u['old']}'").df()
    assert len(old) == 6 and old["mean_abs"].isna().all() and old["interpolation"].isna().all()
    assert np.allclose(old["value"], 3.0)
    assert con.execute(f"SELECT DISTINCT brand_new FROM lee WHERE unit = '{u['new']}'").fetchall() == [("x",)]
    s = con.sql(
        "SELECT model, family, top1, params_m, interpolation, n FROM lee_summary "
        "WHERE dataset = 'sample-test' ORDER BY model"
    ).df()
    assert list(s["model"].unique()) == [
        "convnext_atto.d2_in1k",
        "resnet18.a1_in1k",
        "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    ]
    vit = s[s.model.str.startswith("vit")]
    assert set(vit["family"]) == {"vit"} and vit["top1"].notna().all() and vit["interpolation"].isna().all()
    assert con.execute("SELECT count(*) FROM models").fetchall() == [(3,)]  # the models with visible results
    con.close()


def test_runs_is_a_snapshot(mixed_root):
    root, _ = mixed_root
    con = connect(root, threads=1)
    before = con.execute("SELECT count(*) FROM lee").fetchall()
    write_unit(Store(root), "lee", "resnet34.a1_in1k", "sample-test", "test", _lee(4, 1.0), config=CFG)
    assert con.execute("SELECT count(*) FROM lee").fetchall() == before  # data + runs row both invisible
    con.close()
    con = connect(root, threads=1)
    assert con.execute("SELECT count(*) FROM lee").fetchall()[0][0] == before[0][0] + 8
    con.close()


def test_empty_tables_are_typed_and_missing_root_is_a_usage_error(tmp_path):
    root = str(tmp_path / "r")
    write_unit(Store(root), "lee", "resnet18.a1_in1k", "sample-test", "test", _lee(2, 1.0), config=CFG)
    con = connect(root, threads=1)
    for view in (
        "alt",
        "alt_summary",
        "metric_pairs",
        "layerwise",
        "layerwise_layers",
        "layer_type_shares",
        "layerwise_cumulative",
    ):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchall() == [(0,)]
    assert [r[0] for r in con.execute("DESCRIBE layerwise").fetchall()][:3] == ["unit", "model", "weights"]
    con.close()
    with pytest.raises(UsageError, match="no results under"):
        connect(str(tmp_path / "nothing"))
    with pytest.raises(UsageError, match="cannot be opened|no results"):
        connect("nosuchproto://bucket/x")


def test_memory_root_through_fsspec(mixed_root):
    root, u = mixed_root
    fs = fsspec.filesystem("memory")
    base = f"/lee-test-{uuid.uuid4().hex[:8]}"
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".parquet"):
                path = os.path.join(dirpath, f)
                fs.pipe(f"{base}/{os.path.relpath(path, root)}", open(path, "rb").read())
    try:
        con = connect(f"memory://{base}", threads=1)
        local = connect(root, threads=1)
        q = "SELECT model, dataset, generator, n, mean_lee FROM lee_summary ORDER BY ALL"
        assert con.execute(q).fetchall() == local.execute(q).fetchall()
        con.close()
        local.close()
    finally:
        fs.rm(base, recursive=True)


def test_lee_sql_output_loads_in_a_fresh_connection(mixed_root, capsys):
    root, _ = mixed_root
    assert main(["sql", "--results", root]) == 0
    script = capsys.readouterr().out
    assert "read_parquet(" in script and "hive_types" in script and "CREATE OR REPLACE TABLE models" in script
    fresh = duckdb.connect()
    fresh.execute(script)
    ref = connect(root, threads=1)
    for view in ("lee_summary", "lee", "lee_all", "runs", "done_units"):
        q = f"SELECT * FROM {view} ORDER BY ALL"
        assert fresh.sql(q).to_arrow_table().equals(ref.sql(q).to_arrow_table()), view
    fresh.close()
    ref.close()
    assert main(["sql", "--results", root, "--model-rows", "all"]) == 0
    script = capsys.readouterr().out
    assert script.count("INSERT INTO models") == 1 and "'resnet152.a1_in1k'" in script


def test_lee_sql_bad_root(tmp_path, capsys):
    assert main(["sql", "-r", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("lee: error: no results under")


def test_layer_kind_macro_matches_liecore():
    from liecore._layerwise import _KIND_RULES, layer_kind

    names = [k for _, keys in _KIND_RULES for k in keys]
    names += [
        "Conv2dNormActivation",
        "BatchNormAct2d",
        "SelectAdaptivePool2d",
        "Mlp",
        "GluMlp",
        "Identity",
        "LayerNorm2d",
        "StdConv2dSame",
        "BlurPool2d",
        "EffectiveSEModule",
        "MixerBlock",
        "Foo",
    ]
    con = duckdb.connect()
    con.execute(dict(sql_files())["03_layerwise.sql"].split("-- The report's layer types")[0])
    got = {n: con.execute("SELECT lee_layer_kind(?)", [n]).fetchall()[0][0] for n in names}
    assert got == {n: layer_kind(n) for n in names}


def test_every_layer_type_of_the_views_has_a_place_in_the_figures():
    """``lee_layer_type`` of every liecore layer kind is one of ``figures.LAYER_TYPES`` (drawing order and colour),
    and every figure type is reachable."""
    from liecore._layerwise import _KIND_RULES
    from pipelines.analysis.figures import LAYER_TYPES

    kinds = [k for k, _ in _KIND_RULES] + ["other", "unattributed"]
    con = duckdb.connect()
    con.execute(dict(sql_files())["03_layerwise.sql"].split("-- Visible layerwise rows")[0])
    types = {con.execute("SELECT lee_layer_type(?)", [k]).fetchall()[0][0] for k in kinds}
    assert types <= set(LAYER_TYPES), types - set(LAYER_TYPES)
    assert set(LAYER_TYPES) <= types, set(LAYER_TYPES) - types


def _parquet_scans(con, sql: str) -> tuple[list[dict], int]:
    """The READ_PARQUET operators' extra info of EXPLAIN ANALYZE, and the bytes the query read."""
    plan = json.loads(con.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}").fetchall()[0][-1])
    scans = []

    def walk(node):
        info = node.get("extra_info", {})
        if info.get("Function") == "READ_PARQUET":
            scans.append(info)
        for child in node.get("children", []):
            walk(child)

    for node in plan["operator"]:
        walk(node)
    return scans, int(plan["io"]["total_bytes_read"])


@pytest.mark.parametrize("store", ["mixed", "uniform"])
def test_per_model_summary_reads_only_that_models_files(store, mixed_root, planted):
    """Hive partition pruning through the visibility join: only the model's files are opened. With one
    schema across files (a store written by one version) not even the other files' footers are read."""
    if store == "mixed":  # files of several writer versions: union_by_name
        root, catalogs, model = mixed_root[0], [], "resnet18.a1_in1k"
    else:
        root, catalogs, model = planted.root, [planted.catalog], "vit_05"
    con = connect(root, catalogs=catalogs, threads=1)
    fs = Store(root).fs
    files = fs.glob(f"{root}/lee/*/*/*/*.parquet")
    mine = fs.glob(f"{root}/lee/model={schema.partition_value(model)}/*/*/*.parquet")
    assert 0 < len(mine) < len(files)
    scans, read = _parquet_scans(con, f"SELECT * FROM lee_summary WHERE model = '{model}'")
    assert scans, "no Parquet scan in the plan"
    for info in scans:
        assert int(info["Total Files Read"]) == len(mine), info
    if store == "uniform":  # a few times the model's own bytes (DuckDB reads ahead), far from the store's
        total = sum(fs.size(f) for f in files)
        assert read < total / 10, (read, total)
    con.close()


def test_older_layerwise_files_get_kinds_and_share_fallback(tmp_path):
    root = str(tmp_path / "r")
    s = Store(root)
    n = 2
    cols = {
        "sample_id": ["a"] * 4 + ["b"] * 4,
        "sample_index": [0] * 4 + [1] * 4,
        "generator": ["rotate"] * 8,
        "kind": ["layer", "layer", "end_to_end", "unattributed"] * n,
        "layer": ["conv", "act", "<end_to_end>", "<unattributed>"] * n,
        "layer_class": ["Conv2d", "ReLU", "", ""] * n,
        "call_index": [0, 1, -1, -1] * n,
        "layer_kind": ["convolution", "activation", "end_to_end", "unattributed"] * n,
        "value": [0.6, 0.3, 1.0, 0.1] * n,
        "share": [0.6, 0.3, 1.0, 0.1] * n,
    }
    cfg = {"generators": ["rotate"], "method": "exact", "output": "probs", "interpolation": "cubic"}
    unit = write_unit(s, "layerwise", "resnet18.a1_in1k", "sample-test", "test", cols, config=cfg)
    t = data_table(
        "layerwise",
        cols,
        unit="v1unit0001",
        model="resnet50.a1_in1k",
        weights="hub",
        dataset="sample-test",
        role="test",
    ).drop_columns(["share", "layer_kind"])
    s.write_data("layerwise", "resnet50.a1_in1k", "sample-test", "v1unit0001", t)
    s.write_run(runs_row("v1unit0001", "layerwise", "resnet50.a1_in1k", "sample-test", "test", config=cfg, n_images=2))
    con = connect(root, threads=1)
    rows = con.sql(
        "SELECT unit, layer, layer_kind, layer_type, share, share_additive FROM layerwise "
        "WHERE kind = 'layer' AND sample_id = 'a' ORDER BY unit, layer"
    ).df()
    old = rows[rows.unit == "v1unit0001"]
    assert list(old["layer_kind"]) == ["activation", "convolution"] and not old["share_additive"].any()
    assert list(old["layer_type"]) == ["activation", "convolution"] and np.allclose(old["share"], [0.3, 0.6])
    assert rows[rows.unit == unit]["share_additive"].all()
    shares = con.sql(
        "SELECT model, layer_type, share_fraction FROM layer_type_shares "
        "WHERE model = 'resnet18.a1_in1k' ORDER BY layer_type"
    ).df()
    assert dict(zip(shares.layer_type, shares.share_fraction, strict=True)) == pytest.approx(
        {"activation": 0.3, "convolution": 0.6, "unattributed": 0.1}
    )
    cum = con.sql(
        "SELECT layer, depth, cumulative_fraction FROM layerwise_cumulative "
        "WHERE model = 'resnet18.a1_in1k' ORDER BY depth"
    ).df()
    assert list(cum["layer"]) == ["conv", "act"] and np.allclose(cum["cumulative_fraction"], [0.6, 0.9])
    con.close()


def test_lee_files_holds_every_file(mixed_root):
    root, _ = mixed_root
    con = connect(root, threads=1)
    files = Store(root).fs.glob(f"{root}/lee/*/*/*/*.parquet")
    assert (
        sum(pq.read_metadata(f).num_rows for f in files)
        == con.execute("SELECT count(*) FROM lee_files").fetchall()[0][0]
    )
    con.close()


def test_layerwise_and_alt_configurations_are_never_pooled(tmp_path):
    root = str(tmp_path / "r")
    write_two_configurations(root)
    con = connect(root, threads=1)
    key = ["output", "interpolation", "method", "num_probes"]
    shares = con.sql("SELECT * FROM layer_type_shares").df()
    assert len(shares) == 3 * 3 and (shares["n"] == 6).all()  # 3 configurations x 3 types, 6 images each
    got = {
        (o, i, me, None if pd.isna(p) else int(p), t): f
        for o, i, me, p, t, f in shares[[*key, "layer_type", "share_fraction"]].itertuples(index=False)
    }
    assert got == pytest.approx(
        {
            ("probs", "cubic", "exact", None, "convolution"): 0.9,
            ("probs", "cubic", "exact", None, "MLP"): 0.1,
            ("probs", "cubic", "exact", None, "unattributed"): 0.0,
            ("logits", "cubic", "exact", None, "convolution"): 0.1,
            ("logits", "cubic", "exact", None, "MLP"): 0.9,
            ("logits", "cubic", "exact", None, "unattributed"): 0.0,
            ("probs", "cubic", "stochastic", 8, "convolution"): 0.5,
            ("probs", "cubic", "stochastic", 8, "MLP"): 0.4,
            ("probs", "cubic", "stochastic", 8, "unattributed"): 0.1,
        }
    )
    assert set(shares.groupby(["output", "method"])["mean_end_to_end"].first().round(6)) == {1.0, 10.0}
    layers = con.sql(
        "SELECT output, method, layer, n, end_to_end, share_fraction FROM layerwise_layers "
        "ORDER BY output, method, call_index"
    ).df()
    assert len(layers) == 3 * 2 and (layers["n"] == 6).all()
    assert list(layers["end_to_end"]) == pytest.approx([10.0, 10.0, 1.0, 1.0, 1.0, 1.0])
    assert list(layers["share_fraction"]) == pytest.approx([0.1, 0.9, 0.9, 0.1, 0.5, 0.4])
    cum = con.sql(
        "SELECT output, method, depth, cumulative_fraction FROM layerwise_cumulative ORDER BY output, method, depth"
    ).df()
    assert list(cum["depth"]) == [0.0, 1.0] * 3
    assert list(cum["cumulative_fraction"]) == pytest.approx([0.1, 1.0, 0.9, 1.0, 0.5, 0.9])
    alt = con.sql("SELECT output, interpolation, n, mean_value FROM alt_summary ORDER BY output").df()
    assert list(alt["output"]) == ["logits", "probs"] and (alt["n"] == 5).all()
    assert list(alt["mean_value"]) == pytest.approx([10.0, 0.01]) and alt["interpolation"].isna().all()
    pairs = con.sql("SELECT output, mean_lee, mean_value FROM metric_pairs ORDER BY output").df()
    assert pairs.values.tolist() == [["logits", 100.0, 10.0], ["probs", 1.0, 0.01]]
    con.close()


def test_layerwise_and_alt_summaries_of_one_model_read_only_its_files(tmp_path):
    """The config join of the layerwise and alt views (output, interpolation) keeps partition pruning."""
    root = str(tmp_path / "r")
    write_two_configurations(root)
    s = Store(root)
    for m in ("resnet50.a1_in1k", "resnet34.a1_in1k"):
        write_unit(
            s,
            "layerwise",
            m,
            "sample-test",
            "test",
            layerwise_columns(TWO_CONFIG_LAYERS, np.tile([0.5, 0.5, 0.0], (4, 1)), np.ones(4)),
            config={"generators": ["rotate"], "method": "exact", "output": "probs", "interpolation": "cubic"},
        )
        write_unit(
            s,
            "alt",
            m,
            "sample-test",
            "test",
            {
                "sample_id": ["a", "b"],
                "sample_index": [0, 1],
                "metric": ["eq_t"] * 2,
                "value": [1.0, 2.0],
                "higher_is_better": [False] * 2,
            },
            config={"metrics": ["eq_t"], "output": "probs"},
        )
    con = connect(root, threads=1)
    for view in ("layerwise_layers", "layerwise_cumulative", "layer_type_shares", "alt_summary"):
        scans, _ = _parquet_scans(con, f"SELECT * FROM {view} WHERE model = 'resnet50.a1_in1k'")
        assert scans and all(int(info["Total Files Read"]) == 1 for info in scans), (view, scans)
    con.close()
