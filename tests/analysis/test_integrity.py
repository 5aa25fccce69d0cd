"""Data files changed after their unit wrote them (docs/integrity.md): bytes flipped in the middle of a file
with its footer kept, and a file rewritten as valid Parquet with other values and the same size. The views,
``lee query``, ``lee sql`` and ``lee report`` leave the unit out with one warning line naming the file;
``lee verify`` lists it (``--full`` also when the size and modification time were kept)."""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.commands.verify_cmd import verify_root
from pipelines.store.integrity import listing_stamp
from pipelines.store.results import Store

from .conftest import lee_columns, write_unit

MODELS = ["resnet18.a1_in1k", "resnet50.a1_in1k", "convnext_atto.d2_in1k"]
VALUES = [0.5, 0.25, 0.125]


def flip_mid_file(path: str) -> None:
    """Flip 16 bytes in the middle of the ``value`` column's data (the footer stays valid); keeps the size."""
    md = pq.ParquetFile(path).metadata
    col = next(
        md.row_group(0).column(i) for i in range(md.num_columns) if md.row_group(0).column(i).path_in_schema == "value"
    )
    start = col.data_page_offset + col.total_compressed_size // 2 - 8
    with open(path, "r+b") as fh:
        fh.seek(start)
        chunk = fh.read(16)
        fh.seek(start)
        fh.write(bytes(b ^ 0xFF for b in chunk))


def rewrite_values_same_size(path: str) -> None:
    """Rewrite the file as valid Parquet (the store's own write options) with other values in ``value`` and the
    same size (tries a few multiples of the values until the size matches)."""
    t = pq.read_table(path)
    size = os.path.getsize(path)
    i = t.schema.get_field_index("value")
    values = np.asarray(t.column("value").to_pylist())
    for factor in (3.0, 5.0, 7.0, 1.5, 0.75, 6.0, 9.0, 11.0, 13.0):
        candidate = t.set_column(i, t.schema.field(i), pa.array(values * factor, type=pa.float64()))
        sink = pa.BufferOutputStream()
        pq.write_table(candidate, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        if len(data) == size:
            with open(path, "wb") as fh:
                fh.write(data)
            return
    raise AssertionError("no rewrite of the same size found")


@pytest.fixture
def root(tmp_path) -> tuple[str, list[str], list[str]]:
    """Three done lee units (values 0.5, 0.25, 0.125). Returns (root, units, their data files)."""
    root = str(tmp_path / "r")
    s = Store(root)
    units = [
        write_unit(s, "lee", m, "sample-test", "test", lee_columns(np.full((3, 1), v), ["rotate"]))
        for m, v in zip(MODELS, VALUES, strict=True)
    ]
    paths = [glob.glob(f"{root}/lee/model=*/dataset=*/unit={u}/part-0.parquet")[0] for u in units]
    return root, units, paths


def test_the_runs_row_records_what_was_written(root):
    r, units, paths = root
    row = Store(r).run_row(units[0])
    data = open(paths[0], "rb").read()
    assert row["data_sha256"] == hashlib.sha256(data).hexdigest() and row["data_bytes"] == len(data)
    assert row["data_stamp"] == listing_stamp(Store(r).fs.info(paths[0])) and row["data_stamp"].startswith("mtime:")
    assert main(["verify", "-r", r, "--full"]) == 0


DAMAGE = {"flipped": flip_mid_file, "rewritten": rewrite_values_same_size}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_query_sql_and_verify_leave_out_a_changed_file(root, how, capsys):
    r, units, paths = root
    size = os.path.getsize(paths[1])
    DAMAGE[how](paths[1])
    assert os.path.getsize(paths[1]) == size
    assert (
        main(
            [
                "query",
                "SELECT model, avg(value) AS v FROM lee GROUP BY model ORDER BY model",
                "-r",
                r,
                "--format",
                "csv",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out.splitlines()[1:] == ["convnext_atto.d2_in1k,0.125", "resnet18.a1_in1k,0.5"]  # the other two, exact
    assert err.count("lee: warning:") == 1 and err.count("\n") == 1 and paths[1] in err and units[1] in err
    assert "Traceback" not in err
    assert main(["query", "SELECT unit, kind FROM damaged_units", "-r", r, "--format", "csv"]) == 0
    assert capsys.readouterr().out == f"unit,kind\n{units[1]},data changed\n"
    assert main(["sql", "-r", r]) == 0
    script = capsys.readouterr().out
    assert f"('{units[1]}', 'data changed'" in script
    lee_files = next(ln for ln in script.splitlines() if ln.startswith("CREATE OR REPLACE VIEW lee_files AS"))
    assert f"unit={units[0]}/" in lee_files and f"unit={units[1]}/" not in lee_files  # its file is left out
    # verify: listed without --full (the listing's stamp changed, then the sha256 differs), and with it (which
    # reads every row: flipped bytes do not decode)
    for flags, kind in (([], "changed"), (["--full"], "unreadable" if how == "flipped" else "changed")):
        assert main(["verify", "-r", r, *flags]) == 1
        out, _ = capsys.readouterr()
        (line,) = [ln for ln in out.splitlines() if paths[1] in ln]
        assert line.split()[:3] == ["DAMAGED", "data", kind] and units[1] in line


@pytest.mark.parametrize("how", list(DAMAGE))
def test_only_verify_full_sees_a_change_that_kept_size_and_mtime(root, how, capsys):
    """What each check guarantees: a change that keeps the size and the modification time (bit rot, a rewrite
    that restored the mtime) is invisible to a listing; only the sha256 of ``lee verify --full`` finds it."""
    r, units, paths = root
    st = os.stat(paths[1])
    DAMAGE[how](paths[1])
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [f.kind for f in verify_root(r)[0]] == []
    kind = "data unreadable" if how == "flipped" else "data changed"
    assert [(f.kind, f.unit) for f in verify_root(r, full=True)[0]] == [(kind, units[1])]
    capsys.readouterr()
    assert (
        main(
            [
                "query",
                "SELECT model, avg(value) AS v FROM lee GROUP BY model ORDER BY model",
                "-r",
                r,
                "--format",
                "csv",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    if how == "rewritten":  # valid Parquet, size and mtime kept: read as it is (only verify --full sees it)
        rows = dict(line.split(",") for line in out.splitlines()[1:])
        assert len(rows) == 3 and float(rows[MODELS[1]]) != VALUES[1] and "warning" not in err
    else:  # pages that do not decode: the query fails, every file is compared with its sha256, it is left out
        assert out.splitlines()[1:] == ["convnext_atto.d2_in1k,0.125", "resnet18.a1_in1k,0.5"]
        assert err.count("lee: warning:") == 1 and paths[1] in err and f"lee verify -r {r} --full" in err


@pytest.mark.parametrize("how", list(DAMAGE))
def test_report_leaves_out_a_changed_file_without_a_traceback(root, how, tmp_path, capsys):
    from pipelines.analysis.report import build_report

    r, units, paths = root
    DAMAGE[how](paths[1])
    rep = build_report(r, tmp_path / "rep", weights="any", n_boot=20)
    assert [f for f, _ in rep.meta["damaged_files"]] == [paths[1]]
    assert rep.meta["damaged_files"][0][1].startswith("changed: ")
    err = capsys.readouterr().err
    assert err.count("lee: warning:") == 1 and paths[1] in err and "Traceback" not in err
    assert "<th>unreadable files (skipped)</th><td class='text'>1</td>" in rep.index.read_text()


def test_old_units_without_a_record_stay_done(root, capsys):
    """A row written before schema 6 (no checksum, size or stamp) is not checkable: never damaged for that."""
    r, units, paths = root
    s = Store(r)
    row = s.run_row(units[0])
    s.write_run(row | {"data_sha256": None, "data_bytes": None, "data_stamp": None})
    rewrite_values_same_size(paths[0])
    assert verify_root(r, full=True)[0] == []
    assert main(["query", "SELECT count(DISTINCT model) AS n FROM lee", "-r", r, "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out == "n\n3\n" and "warning" not in err


@pytest.mark.slow
def test_verify_full_exits_cleanly_every_time(root):
    """``lee verify --full`` 30 times in fresh interpreters: exit 0 each time (it once aborted at exit, 3 in 31,
    with Arrow's dataset-scan threads still running: verify reads every file on its own thread now)."""
    r, _, _ = root
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    for _ in range(15):  # two at a time: the interpreters start up (most of each run) on both cores
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "pipelines", "verify", "-r", r, "--full"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(2)
        ]
        for p, (_, stderr) in [(p, p.communicate(timeout=60)) for p in procs]:
            assert p.returncode == 0 and "terminate" not in stderr, (p.returncode, stderr)
            assert "0 damaged" in stderr
