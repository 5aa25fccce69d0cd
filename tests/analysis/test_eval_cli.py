"""`lee eval --catalog NAME_OR_FILE` (issue 6 spells the zoo sweep `lee eval --catalog zoo`): the same
models as `-m`, adding to its list. --dry-run lists the units and computes nothing."""

from __future__ import annotations

import re

from pipelines.cli import main


def _models(capsys, argv: list[str], root: str) -> list[str]:
    base = ["eval", "--dry-run", "-d", "sample-test", "-g", "rotate", "-n", "2", "-r", root]
    assert main([*base, *argv]) == 0
    out = capsys.readouterr().out
    return sorted(set(re.findall(r"^\w{20}\s+lee\s+(\S+)\s", out, flags=re.M)))


def test_catalog_flag_adds_a_catalogs_models(tmp_path, capsys):
    import catalog

    root = str(tmp_path / "r")
    tiny = sorted(s.name for s in catalog.load_models("tiny"))
    assert _models(capsys, ["-m", "tiny"], root) == tiny
    assert _models(capsys, ["--catalog", "tiny"], root) == tiny
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\nmodels:\n  - resnet18.a1_in1k\n")
    # repeatable, a file, and together with -m: one list
    both = _models(capsys, ["--catalog", "tiny", "--catalog", str(own)], root)
    assert both == sorted([*tiny, "resnet18.a1_in1k"])
    assert _models(capsys, ["-m", "resnet50.a1_in1k", "--catalog", str(own)], root) == [
        "resnet18.a1_in1k",
        "resnet50.a1_in1k",
    ]


def test_catalog_flag_is_in_the_help(capsys):
    try:
        main(["eval", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "--catalog NAME_OR_FILE" in out and "zoo" in out
