"""A results root damaged from outside (a truncated Parquet file): views, ``lee query`` and ``lee report``
leave the file out with a warning line and count it; ``lee verify`` lists it."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from pipelines.analysis.views import ResultsRoot, connect
from pipelines.cli import main
from pipelines.commands.verify_cmd import verify_root
from pipelines.store.results import Store

from .conftest import lee_columns, write_unit

MODELS = ["resnet18.a1_in1k", "resnet50.a1_in1k", "convnext_atto.d2_in1k"]


def _truncate(path: str, keep: int = 100) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(keep)


@pytest.fixture
def damaged(tmp_path) -> tuple[str, str, str]:
    """A root of three done lee units; the data file of the second is truncated. Returns (root, file, unit)."""
    root = str(tmp_path / "r")
    s = Store(root)
    units = [
        write_unit(s, "lee", m, "sample-test", "test", lee_columns(np.full((3, 1), 10.0 ** -(i + 1)), ["rotate"]))
        for i, m in enumerate(MODELS)
    ]
    (path,) = glob.glob(f"{root}/lee/model=*/dataset=*/unit={units[1]}/part-0.parquet")
    _truncate(path)
    return root, path, units[1]


def test_views_skip_an_unreadable_data_file_with_a_warning(damaged, capsys):
    root, path, _ = damaged
    r = ResultsRoot(root)
    con = connect(r, threads=1)
    try:
        models = [m for (m,) in con.execute("SELECT DISTINCT model FROM lee ORDER BY model").fetchall()]
    finally:
        con.close()
    assert models == sorted([MODELS[0], MODELS[2]])  # the damaged unit's rows are left out, the rest stay
    assert [f for f, _ in r.damaged] == [path]
    err = capsys.readouterr().err
    assert f"lee: warning: skipping unreadable lee file {path}" in err and "Traceback" not in err


def test_query_and_sql_survive_a_truncated_file(damaged, capsys):
    root, path, _ = damaged
    assert main(["query", "SELECT count(DISTINCT model) AS n FROM lee", "-r", root, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out == "n\n2\n"
    assert err.count("lee: warning:") == 1 and path in err and "Traceback" not in err
    assert main(["sql", "-r", root]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable lee file(s) left out" in out and path not in out.split("UNION")[0].split("unit=*")[0]


def test_report_counts_unreadable_files(damaged, tmp_path, capsys):
    from pipelines.analysis.report import build_report

    root, path, _ = damaged
    rep = build_report(root, tmp_path / "rep", weights="any", n_boot=20)
    assert rep.meta["damaged_files"] == [(path, rep.meta["damaged_files"][0][1])]
    page = rep.index.read_text()
    assert "<th>unreadable files (skipped)</th><td class='text'>1</td>" in page
    assert "1 data file(s) of this root cannot be read" in page and path in page
    err = capsys.readouterr().err
    assert "lee: warning: skipping unreadable lee file" in err and "Traceback" not in err


def test_a_truncated_runs_file_is_skipped_too(damaged, capsys):
    root, _, _ = damaged
    runs_file = sorted(glob.glob(f"{root}/runs/unit=*/part-0.parquet"))[0]
    _truncate(runs_file, 50)
    assert main(["query", "SELECT count(*) AS n FROM runs", "-r", root, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out == "n\n2\n" and f"skipping unreadable runs file {runs_file}" in err
    assert len(Store(root).runs()) == 2  # the store's reader skips it as well


def test_verify_lists_what_is_damaged(damaged, capsys):
    root, path, unit = damaged
    assert main(["verify", "-r", root]) == 1
    out, err = capsys.readouterr()
    line = next(ln for ln in out.splitlines() if path in ln)
    assert line.split()[:3] == ["DAMAGED", "data", "unreadable"] and unit in line
    assert "1 damaged" in err and "Traceback" not in err
    # a done unit whose data file was deleted, and a row count that does not match runs.n_rows
    os.remove(path)
    findings, _ = verify_root(root)
    assert [(f.kind, f.unit) for f in findings if f.damage] == [("data missing", unit)]


def test_verify_full_reads_every_row_and_a_clean_root_passes(tmp_path, capsys):
    root = str(tmp_path / "r")
    s = Store(root)
    write_unit(s, "lee", MODELS[0], "sample-test", "test", lee_columns(np.ones((2, 1)), ["rotate"]))
    assert main(["verify", "-r", root, "--full"]) == 0
    assert "0 damaged" in capsys.readouterr().err
    assert main(["verify", "-r", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("lee: error: no results under")


def test_verify_notes_locks_and_temporary_files_without_calling_them_damage(tmp_path, capsys):
    root = str(tmp_path / "r")
    s = Store(root)
    unit = write_unit(s, "lee", MODELS[0], "sample-test", "test", lee_columns(np.ones((2, 1)), ["rotate"]))
    (unit_dir,) = glob.glob(f"{root}/lee/model=*/dataset=*/unit={unit}")
    open(f"{unit_dir}/_tmp-dead.partial", "wb").close()
    with s.unit_lock(unit) as locked:
        assert locked and s.lock_held(unit)
        findings, _ = verify_root(root)
        assert {(f.kind, f.damage) for f in findings} == {("lock", False), ("temporary file", False)}
        assert next(f for f in findings if f.kind == "lock").detail.startswith("held")
        assert main(["verify", "-r", root]) == 0
    assert not s.lock_held(unit) and [f.kind for f in verify_root(root)[0]] == ["temporary file"]
    capsys.readouterr()
