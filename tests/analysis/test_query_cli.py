"""``lee query``: SQL and named analyses in every output format; errors are ``lee: error:`` lines."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.analysis.analyses import ANALYSES
from pipelines.cli import main
from pipelines.commands import COMMAND_MODULES
from pipelines.commands.query_cmd import ANALYSIS_NAMES
from pipelines.store.results import Store

from .conftest import lee_columns, write_unit

SQL = "SELECT model, generator, n, mean_lee FROM lee_summary WHERE dataset = 'sample-test' ORDER BY model, generator"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("q") / "r")
    s = Store(root)
    for i, m in enumerate(
        ["resnet18.a1_in1k", "resnet50.a1_in1k", "convnext_atto.d2_in1k", "deit_tiny_patch16_224.fb_in1k"]
    ):
        for ds, role in (("sample-test", "test"), ("sample-ood", "ood")):
            v = np.full((3, 2), 10.0 ** -(i + 1)) * (2.0 if role == "ood" else 1.0)
            write_unit(
                s,
                "lee",
                m,
                ds,
                role,
                lee_columns(v, ["rotate", "translate_x"]),
                config={"generators": ["rotate", "translate_x"], "output": "probs", "interpolation": "cubic"},
            )
    return root


def test_commands_are_registered():
    assert {"pipelines.commands.sql_cmd", "pipelines.commands.query_cmd"} <= set(COMMAND_MODULES)
    assert ANALYSIS_NAMES == tuple(ANALYSES)


def test_table_format(root, capsys):
    assert main(["query", SQL + " LIMIT 3", "--results", root]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["model", "generator", "n", "mean_lee"]
    assert out[2].split() == ["convnext_atto.d2_in1k", "rotate", "3", "0.001"]
    assert out[-1] == "(3 rows)"


def test_csv_json_parquet(root, capsys, tmp_path):
    assert main(["query", SQL, "-r", root, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8 and rows[0]["model"] == "convnext_atto.d2_in1k" and float(rows[0]["mean_lee"]) == 0.001
    assert (
        main(["query", "SELECT unit, items, finished_at FROM done_units LIMIT 1", "-r", root, "--format", "json"]) == 0
    )
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["items"] == ["rotate", "translate_x"] and rec["finished_at"].startswith("2026-01-01")
    out = tmp_path / "x.parquet"
    assert main(["query", SQL, "-r", root, "--format", "parquet", "--out", str(out)]) == 0
    t = pq.read_table(out)
    assert t.num_rows == 8 and t.schema.field("n").type.bit_width == 64
    assert main(["query", SQL, "-r", root, "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 0
    assert (tmp_path / "x.csv").read_text().startswith("model,generator,n,mean_lee")


def test_sql_from_stdin(root, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT count(*) AS n FROM lee"))
    assert main(["query", "-", "-r", root, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n48\n"


def test_analysis(root, capsys):
    assert main(["query", "--analysis", "gap", "-r", root, "-g", "rotate", "--n-boot", "100", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ratios = [r for r in rows if r["statistic"] == "ratio"]
    assert len(ratios) == 4 and all(r["estimate"] == pytest.approx(2.0) for r in ratios)
    assert all(r["generator"] == "rotate" and r["weights"] == "pretrained" for r in rows)
    assert main(["query", "--analysis", "accuracy", "-r", root, "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    assert "analysis: accuracy" in out and "pearson_r" in out and "spearman_rho" in out


def test_analysis_filters_split_on_commas(root, capsys):
    """-g / -d take comma-separated lists, like lee report and lee eval, and may be repeated."""
    for argv in (
        ["-g", "translate_x,rotate"],
        ["-g", "translate_x", "-g", "rotate"],
        ["-g", "rotate", "-d", "sample-test,sample-ood", "-g", "translate_x"],
    ):
        assert main(["query", "--analysis", "gap", "-r", root, *argv, "--n-boot", "50", "--format", "json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        ratios = [r for r in rows if r["statistic"] == "ratio"]
        assert {r["generator"] for r in ratios} == {"rotate", "translate_x"} and len(ratios) == 8, argv


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["query", "SELEC 1"], "query failed: Parser Error"),
        (["query", "SELECT * FROM no_such_view"], "no_such_view"),
        (["query", SQL, "--format", "parquet"], "--format parquet needs --out"),
        (["query"], "no query"),
        (["query", SQL, "--analysis", "gap"], "either SQL or --analysis"),
        (["query", "--analysis", "gap", "--level", "95"], "--level must be between 0 and 1"),
        (["query", SQL, "--format", "csv", "--out", "/proc/nope/x.csv"], "cannot write"),
    ],
)
def test_errors_are_usage_errors(root, argv, needle, capsys):
    assert main([*argv, "-r", root]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lee: error:") and needle in err and "Traceback" not in err


def test_missing_root(tmp_path, capsys):
    assert main(["query", SQL, "-r", str(tmp_path / "none")]) == 2
    assert "no results under" in capsys.readouterr().err
    assert main(["query", "--analysis", "gap", "-r", "nosuchproto://b/x"]) == 2
    assert "nosuchproto://b/x" in capsys.readouterr().err


def test_default_root_is_where_lee_eval_writes(root, capsys, monkeypatch, tmp_path):
    import shutil

    shutil.copytree(root, tmp_path / "lee-results")
    monkeypatch.chdir(tmp_path)
    assert main(["query", "SELECT count(DISTINCT model) AS n FROM lee", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n4\n"


def _refused(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lee: error:") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line
    for needle in needles:
        assert needle in err, err
    return err


def test_query_is_read_only_by_default(root, capsys, tmp_path):
    import glob
    import os

    outside = tmp_path / "x.csv"
    _refused(["query", f"COPY (SELECT 1 AS a) TO '{outside}'", "-r", root], capsys, "read-only", "COPY")
    assert not outside.exists()
    # a COPY into the root could plant a data file that looks like results: refused too
    unit_dir = glob.glob(f"{root}/lee/model=*/dataset=*/unit=*")[0]
    planted = f"{unit_dir}/part-1.parquet"
    _refused(["query", f"COPY (FROM lee LIMIT 1) TO '{planted}' (FORMAT parquet)", "-r", root], capsys, "COPY")
    assert not os.path.exists(planted)
    _refused(["query", f"ATTACH '{tmp_path / 'new.db'}'", "-r", root], capsys, "ATTACH")
    assert not (tmp_path / "new.db").exists()
    for sql in (
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "PRAGMA threads=1",
        "SELECT 1; COPY (SELECT 1) TO 'x.csv'",
    ):
        _refused(["query", sql, "-r", root], capsys, "read-only")
    # reading anything outside the root is refused by DuckDB's own access settings
    secret = tmp_path / "secret.txt"
    secret.write_text("hostname")
    _refused(
        ["query", f"SELECT * FROM read_text('{secret}')", "-r", root],
        capsys,
        "query refused",
        "Permission Error",
        "--unrestricted",
    )
    _refused(["query", "SELECT * FROM glob('/etc/*')", "-r", root], capsys, "query refused")
    # queries over the root (also reading its files directly) still work
    assert (
        main(
            [
                "query",
                f"SELECT count(*) AS n FROM read_parquet('{root}/runs/*/*.parquet')",
                "-r",
                root,
                "--format",
                "csv",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "n\n8\n"
    assert main(["query", "CREATE TABLE t AS SELECT 1 AS a; SELECT a FROM t", "-r", root, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "a\n1\n"


def test_unrestricted_opens_it_up(root, capsys, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hello")
    assert (
        main(["query", f"SELECT content FROM read_text('{secret}')", "-r", root, "--format", "csv", "--unrestricted"])
        == 0
    )
    assert capsys.readouterr().out == "content\nhello\n"
    out = tmp_path / "copied.csv"
    assert main(["query", f"COPY (SELECT 1 AS a) TO '{out}'", "-r", root, "--unrestricted"]) == 0
    assert out.read_text().strip().splitlines() == ["a", "1"]


def test_memory_root_is_read_only_too(root, capsys):
    import os
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    base = f"/lee-ro-{uuid.uuid4().hex[:8]}"
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            fs.pipe(f"{base}/{os.path.relpath(path, root)}", open(path, "rb").read())
    fs.pipe("/lee-other/secret.csv", b"a\n1\n")
    try:
        assert (
            main(["query", "SELECT count(DISTINCT model) AS n FROM lee", "-r", f"memory://{base}", "--format", "csv"])
            == 0
        )
        assert capsys.readouterr().out == "n\n4\n"
        _refused(
            ["query", "FROM read_csv('memory://lee-other/secret.csv')", "-r", f"memory://{base}"],
            capsys,
            "query refused",
        )
    finally:
        fs.rm(base, recursive=True)
        fs.rm("/lee-other", recursive=True)
