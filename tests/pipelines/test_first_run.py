"""A first run that explains itself: the layerwise summary, the paper's statistic, the closing lines, and a
timm-style ``--model ARCH --checkpoint FILE`` (one tiny model at 32 px on the session's local Ray)."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow.parquet as pq
import pytest
import timm
import torch

from pipelines.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _table(root, name):
    return pd.concat([pq.ParquetFile(f).read().to_pandas() for f in sorted(root.glob(f"{name}/**/*.parquet"))])


def test_first_run_explains_itself(ray_session, tmp_path, capsys):
    ckpt = tmp_path / "resnet.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), ckpt)
    root = tmp_path / "res"
    common = [
        "--model",
        "test_resnet",
        "--checkpoint",
        str(ckpt),
        "-d",
        "sample-test",
        "-g",
        "translate_x,rotate",
        "--img-size",
        "32",
        "-r",
        str(root),
        "--no-progress",
    ]

    # 1. The layerwise step: a summary by layer type and the top layers, not "(no rows)".
    assert main(["eval", *common, "--metrics", "layerwise", "--layerwise-generators", "rotate", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "(no rows)" not in out
    assert "share of the end-to-end LEE by layer type" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("test_resnet@resnet"))
    types = dict((k, float(v)) for k, v in re.findall(r"([a-z_]+) (-?\d+\.\d+)", line.split("  rotate  ")[1]))
    assert "convolution" in types and abs(sum(types.values()) - 1) < 0.02, types  # shares sum to 1
    lw = _table(root, "layerwise")
    e2e = lw[lw.kind == "end_to_end"]
    conv = lw[(lw.kind == "layer") & (lw.layer_kind == "convolution")]
    assert types["convolution"] == pytest.approx(conv.share.sum() / e2e.value.sum(), abs=0.006)
    assert "Lower is more equivariant" in out and f"lee report -r {root}" in out  # the two closing lines

    # 2. The LEE step by the paper's statistic, named as such in the header, then where the report is.
    report = tmp_path / "rep"
    assert (
        main(["eval", *common, "--metrics", "lee", "--limit", "3", "--stat", "mean_abs", "--report", str(report)]) == 0
    )
    out = capsys.readouterr().out
    assert "mean_abs = E_x mean_c |L_X f(x)_c| (the paper's tables' statistic, not the LEE)" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("model "))
    assert "translate_x mean_abs" in header and "rotate mean_abs" in header
    lee = _table(root, "lee")
    want = lee[lee.generator == "rotate"].mean_abs.mean()
    row = next(ln for ln in out.splitlines() if ln.startswith("test_resnet@resnet"))
    assert float(row.split()[-2].split("±")[0]) == pytest.approx(want, rel=2e-3)
    assert f"Report: {report}/index.html" in out and (report / "index.html").exists()

    # 3. lee query summarises by the same statistic in one flag.
    assert main(["query", "-r", str(root), "--stat", "mean_abs", "-g", "rotate", "--format", "csv"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert "mean_mean_abs" in text[0] and "se_mean_abs" in text[0]
    cols = text[0].split(",")
    assert float(text[1].split(",")[cols.index("mean_mean_abs")]) == pytest.approx(want, rel=1e-9)
