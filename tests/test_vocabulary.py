"""One name, one meaning: every subcommand's flags follow one vocabulary (docs/cli.md)."""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib

import pytest

from pipelines.cli import build_parser
from pipelines.commands import args as vocab
from pipelines.commands import eval_cmd, report_cmd
from pipelines.errors import UsageError

PAGE = pathlib.Path(__file__).parents[1] / "docs" / "cli.md"


def test_no_flag_name_has_two_meanings():
    assert vocab.conflicts(build_parser()) == []


def test_a_planted_conflicting_flag_is_caught():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    # `--results` meaning an output file in one more subcommand: another dest than the results root.
    sub.choices["verify"].add_argument("--planted", dest="results_file")
    sub.choices["sql"].add_argument("--planted", dest="other")
    sub.choices["catalog"]._subparsers._group_actions[0].choices["datasets"].add_argument(
        "--n-boot", type=float
    )  # same dest as query's, another type
    found = vocab.conflicts(parser)
    assert any(c.startswith("--planted:") for c in found), found
    assert any(c.startswith("--n-boot:") and "type=float" in c for c in found), found


def test_a_choice_set_conflict_is_caught():
    parser = argparse.ArgumentParser(prog="lee")
    sub = parser.add_subparsers()
    sub.add_parser("a").add_argument("--output-kind", choices=("probs", "logits"), dest="output_kind")
    sub.add_parser("b").add_argument("--output-kind", choices=("probs",), dest="output_kind")
    assert [c.split(":")[0] for c in vocab.conflicts(parser)] == ["--output-kind"]


def test_docs_table_is_generated_from_the_parsers():
    text = PAGE.read_text()
    section = text.split("<!-- vocabulary:begin -->")[1].split("<!-- vocabulary:end -->")[0]
    assert section.strip() == vocab.vocabulary_markdown(build_parser()).strip()


def _parse(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        ns = build_parser().parse_args(argv)
    return ns, err.getvalue()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["eval", "-o", "R"], ["eval", "-r", "R"]),
        (["eval", "--output", "R"], ["eval", "--results", "R"]),
        (["eval", "--interpolation", "spectral"], ["eval", "--derivative-interp", "spectral"]),
        (["report", "--out", "D", "--output", "logits"], ["report", "--out", "D", "--output-kind", "logits"]),
        (["report", "--out", "D", "--weights", "random"], ["report", "--out", "D", "--weights-filter", "random"]),
        (["query", "x", "--models", "all"], ["query", "x", "--model-rows", "all"]),
        (["zoo", "summary", "-o", "R", "-m", "zoo"], ["zoo", "summary", "-r", "R", "--catalog", "zoo"]),
    ],
)
def test_old_spellings_work_with_a_one_line_notice(old, new):
    ns_old, err_old = _parse(old)
    ns_new, err_new = _parse(new)
    assert err_new == ""
    assert err_old.count("\n") == len([a for a in old if a.startswith("-") and a not in new])
    assert "deprecated" in err_old
    for k, v in vars(ns_new).items():
        assert getattr(ns_old, k) == v, k


def test_singular_and_plural_selections_are_alike():
    for cmd in (["eval"], ["query", "x"], ["report", "--out", "D"]):
        a, _ = _parse([*cmd, "--dataset", "x,y", "--generator", "rotate"])
        b, _ = _parse([*cmd, "-d", "x", "--datasets", "y", "--generators", "rotate"])
        assert a.datasets == b.datasets == ["x", "y"] and a.generators == b.generators == ["rotate"]


def test_model_with_checkpoint_names_the_architecture_as_in_timm():
    ns, _ = _parse(["eval", "--model", "test_resnet", "--checkpoint", "w.pth"])
    cfg = eval_cmd.config_from_args(ns)
    assert cfg.arch == "test_resnet" and cfg.checkpoint == "w.pth" and cfg.models == []
    ns, _ = _parse(["eval", "--model", "resnet18", "-m", "tiny"])
    assert eval_cmd.config_from_args(ns).models == ["tiny", "resnet18"]
    ns, _ = _parse(["eval", "--model", "a", "--arch", "b", "--checkpoint", "w.pth"])
    with pytest.raises(UsageError, match="two architectures"):
        eval_cmd.config_from_args(ns)


def test_eval_output_logits_is_not_a_results_root():
    ns, err = _parse(["eval", "--output", "logits"])
    with pytest.raises(UsageError, match="--output-kind logits"):
        eval_cmd.config_from_args(ns)


def test_report_command_line_on_the_page_uses_the_vocabulary():
    args = report_cmd.parse(["--out", "D", "--dataset", "a"])
    line = report_cmd._command(args)
    assert "--weights-filter pretrained" in line and "--output-kind probs" in line
    assert "--derivative-interp cubic" in line
    _, err = _parse(line.split()[1:])
    assert err == ""
