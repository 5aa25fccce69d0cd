"""The ``explain`` metric family: a sweep on a tiny timm model, its table, resume, and the named analyses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.cli import main
from pipelines.running.execute import execute
from pipelines.running.plan import plan
from pipelines.store import schema
from pipelines.store.results import Store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL = "test_resnet.r160_in1k"
GENS = ["translate_x", "rotate"]
IMG, N = 32, 2


def _config(output, **kw):
    from pipelines.spec.config import SweepConfig

    base = dict(
        models=[MODEL],
        datasets=["sample-test"],
        generators=list(GENS),
        images=N,
        img_size=IMG,
        output=str(output),
        batch_size=4,
        metrics=["explain"],
    )
    base.update(kw)
    return SweepConfig(**base)


@pytest.fixture(scope="module")
def explain_sweep(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "results"
    cfg = _config(out)
    result = execute(plan(cfg))
    return cfg, result


def test_explain_units_write_the_documented_table_and_add_up(explain_sweep):
    cfg, result = explain_sweep
    assert [r["status"] for r in result.rows] == ["done"], result.rows
    files = sorted(Path(cfg.output).glob("explain/model=*/dataset=*/unit=*/*.parquet"))
    assert len(files) == 1
    assert pq.read_schema(files[0]).remove_metadata() == schema.EXPLAIN.schema.remove_metadata()
    t = Store(cfg.output).read_table("explain").to_pandas()
    # special: the global pool's flattened output does not move (its share has no location)
    assert set(t.kind) == {"layer", "special", "image", "remainder"} and set(t.generator) == set(GENS)
    for (i, g), d in t.groupby(["sample_index", "generator"]):
        parts = d[d.kind != "image"]["total"].sum()
        assert abs(parts - 1) < 1e-5, (i, g, parts)  # layer + special + remainder rows = the image's LEE
        img = d[d.kind == "image"].iloc[0]
        located = d[d.kind == "layer"]["total"].sum()
        assert abs(img.total - located) < 1e-6
        assert abs(np.sum(img.border_profile) - img.total) < 1e-6
        assert (img.grid_h, img.grid_w, img.input_h, img.input_w) == (16, 16, IMG, IMG)
        assert len(img.border_profile) == IMG // 2
        assert len(img.texture) == 16 * 16 and abs(np.sum(img.texture) - 1) < 1e-9 and min(img.texture) >= 0
        assert all(t is None for t in d[d.kind != "image"]["texture"])
        for row in d[d.kind == "layer"].itertuples():
            assert len(row.cells) == row.grid_h * row.grid_w and abs(np.sum(row.cells) - row.total) < 1e-9


def test_explain_rows_equal_liecore_directly(explain_sweep):
    import catalog
    import liecore
    from pipelines.spec.families import activation_layouts, pool_map, texture_map

    cfg, _ = explain_sweep
    images = catalog.load_dataset(catalog.get_dataset("sample-test")).images[:N]
    loaded = catalog.build_model(catalog.get_model(MODEL).replace(img_size=IMG), weights="auto", device="cpu")
    x = loaded.preprocess([im.array for im in images])
    res = liecore.explain_all(
        loaded.model,
        x,
        GENS,
        layouts=activation_layouts(loaded.model),
        mean=loaded.data_config["mean"],
        std=loaded.data_config["std"],
    )
    t = Store(cfg.output).read_table("explain").to_pandas()
    for g, e in res.items():
        img = t[(t.kind == "image") & (t.generator == g)].sort_values("sample_index")
        want = pool_map(e.image_map).flatten(1).numpy()
        np.testing.assert_allclose(np.stack(img.cells.to_numpy()), want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(img.lee.to_numpy(), e.lee.numpy(), rtol=1e-4)
        torch.testing.assert_close(torch.tensor(img.total.to_numpy()), e.image_map.sum((1, 2)), rtol=1e-4, atol=1e-6)
        # texture: the input's gradient energy by central differences, summed on the 16 x 16 cells (2 x 2 px each)
        xd = x.to(torch.float64)
        gy = torch.cat(
            [xd[:, :, 1:2] - xd[:, :, :1], (xd[:, :, 2:] - xd[:, :, :-2]) / 2, xd[:, :, -1:] - xd[:, :, -2:-1]], 2
        )
        gx = torch.cat([xd[..., 1:2] - xd[..., :1], (xd[..., 2:] - xd[..., :-2]) / 2, xd[..., -1:] - xd[..., -2:-1]], 3)
        energy = (gy**2 + gx**2).sum(1)
        torch.testing.assert_close(texture_map(x), energy)
        cells = energy.reshape(N, 16, 2, 16, 2).sum((2, 4)).flatten(1)
        np.testing.assert_allclose(
            np.stack(img.texture.to_numpy()), (cells / cells.sum(1, keepdim=True)).numpy(), rtol=1e-9, atol=1e-12
        )


def test_explain_units_skip_resume_and_reevaluate(explain_sweep, tmp_path, capsys):
    cfg, result = explain_sweep
    assert plan(cfg).todo == []  # done: skipped
    root = tmp_path / "copy"
    shutil.copytree(cfg.output, root)
    unit = result.rows[0]["unit"]
    shutil.rmtree(root / "runs" / f"unit={unit}")  # as if killed before its runs row
    assert [u.key for u in plan(_config(root)).todo] == [unit]
    args = [
        "reevaluate",
        "--dry-run",
        "-r",
        str(root),
        "-m",
        MODEL,
        "-d",
        "sample-test",
        "-g",
        ",".join(GENS),
        "-n",
        str(N),
        "--img-size",
        str(IMG),
        "--metrics",
        "explain",
    ]
    assert main(args) == 0
    assert unit in capsys.readouterr().out


@pytest.mark.parametrize(
    "analysis, statistics",
    [
        ("border_share", {"border_share", "located_share"}),
        ("layer_location", {"layer_share", "cell_share"}),
        ("texture", {"texture_rho", "textured_share"}),
    ],
)
def test_named_analyses_answer_in_lee_query(explain_sweep, tmp_path, analysis, statistics):
    cfg, _ = explain_sweep
    out = tmp_path / f"{analysis}.json"
    assert (
        main(
            [
                "query",
                "-r",
                cfg.output,
                "--analysis",
                analysis,
                "--weights",
                "any",
                "--n-boot",
                "200",
                "--format",
                "json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert {r["statistic"] for r in rows} == statistics
    assert {r["generator"] for r in rows} == set(GENS)
    for r in rows:
        assert r["n"] == N and r["ci_low"] <= r["estimate"] + 1e-12 <= r["ci_high"] + 2e-12, r
    if analysis == "border_share":
        by_k = {(r["generator"], r["border_px"]): r for r in rows if r["statistic"] == "border_share"}
        for g in GENS:  # more of the image, more of the share... not necessarily, but the area grows
            assert by_k[(g, 16)]["area_fraction"] == 1.0 and by_k[(g, 1)]["area_fraction"] == pytest.approx(
                1 - 30 * 30 / 32**2
            )
            located = next(r for r in rows if r["generator"] == g and r["statistic"] == "located_share")
            assert by_k[(g, 16)]["estimate"] == pytest.approx(located["estimate"], abs=1e-9)  # all pixels


def test_report_shows_where_the_lee_lives(explain_sweep, tmp_path):
    import re

    cfg, _ = explain_sweep
    out = tmp_path / "report"
    assert main(["report", "-r", cfg.output, "--out", str(out), "--weights", "random", "--n-boot", "50"]) == 0
    svg = re.sub(r"\s+", " ", (out / "fig8_where_lee_lives.svg").read_text())
    assert "NO DATA" not in svg and "Where the LEE lives" in svg and "translate_x" in svg
    page = (out / "index.html").read_text()
    assert "fig8_where_lee_lives.png" in page and "table-border_share" in page and "table-layer_location" in page
