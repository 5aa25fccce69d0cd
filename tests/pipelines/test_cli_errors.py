"""Bad arguments fail before any work starts, exit 2, with a message naming the problem (no Ray)."""

from __future__ import annotations

import pytest

from pipelines.cli import main
from pipelines.store import schema

BASE = ["eval", "-m", "test_resnet.r160_in1k", "-d", "sample-test", "--limit", "2"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["-m", "resnet5O_typo"], "resnet5O_typo"),
        (["-g", "rotat"], "rotat"),
        (["--metrics", "leee"], "leee"),
        (["-d", "no-such-dataset"], "no-such-dataset"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(extra, needle, tmp_path, capsys):
    assert main([*BASE, *extra, "-r", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lee: error:") and needle in err
    assert not (tmp_path / "r" / "runs").exists()


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*BASE, "-r", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_unreachable_uri(capsys):
    assert main([*BASE, "-r", "nosuchproto://bucket/x"]) == 2
    assert "nosuchproto://bucket/x" in capsys.readouterr().err


def test_config_file_base_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "models: [test_resnet.r160_in1k, test_vit.r160_in1k]\ndatasets: sample-test\nlimit: 3\ngenerators: [rotate]\n"
    )
    assert main(["eval", "--config", str(cfg), "--limit", "2", "-r", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "test_vit.r160_in1k" in out and "2 units, 2 to run" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("modles: [x]\n")
    assert main(["eval", "--config", str(bad), "--dry-run"]) == 2
    assert "did you mean 'models'" in capsys.readouterr().err


def test_schema_tables_are_documented():
    for t in schema.TABLES.values():
        assert len(set(t.names)) == len(t.names)
        assert all(c.doc and c.unit for c in t.columns)
        assert set(t.partition_by) <= set(t.names)
    assert "| `value` |" in schema.markdown()
