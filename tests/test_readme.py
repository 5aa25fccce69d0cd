"""README and docs promises that code can check."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

import pipelines.store.schema
from pipelines.cli import build_parser

ROOT = pathlib.Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = {"README.md": README} | {f"docs/{p.name}": p.read_text() for p in DOCS}


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "lee eval" in main_job
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci, "CI runs the README's test command verbatim"
    assert "ruff check" in tests and "ruff format --check" in tests
    first_40 = "\n".join(README.splitlines()[:40])
    assert main_job in first_40 and tests in first_40, "the two commands belong in the README's first 40 lines"
    assert "git clone" in first_40 and "Python 3.10" in first_40


def test_readme_is_a_front_page_that_links_every_docs_page():
    assert len(README.splitlines()) <= 260
    linked = set(re.findall(r"\(docs/([\w-]+\.md)", README))
    assert linked == {p.name for p in DOCS}, "README's documentation table must link every docs page"


def test_schema_page_is_generated_from_the_code():
    page = (ROOT / "docs" / "store.md").read_text()
    section = page.split("<!-- schema:begin -->")[1].split("<!-- schema:end -->")[0]
    assert section.strip() == pipelines.store.schema.markdown().strip()


def lee_commands(text: str) -> list[str]:
    """Every ``lee ...`` (or ``python -m pipelines ...``) command line of the text's fenced bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;|\|", line):
                part = part.strip()
                part = re.sub(r"^python -m pipelines\b", "lee", part)
                if part.startswith("lee "):
                    commands.append(part)
    return commands


def argv_of(command: str) -> list[str]:
    tokens = shlex.split(command, comments=True)[1:]
    for i, tok in enumerate(tokens):
        if tok in (">", ">>", "<", "2>&1") or tok.startswith((">", "2>")):
            tokens = tokens[:i]
            break
    return ["JOB_ID" if re.fullmatch(r"<[\w-]+>", t) else t for t in tokens]


def test_every_documented_lee_command_parses_with_todays_parser():
    parser = build_parser()
    seen = 0
    for page, text in PAGES.items():
        for command in lee_commands(text):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    parser.parse_args(argv_of(command))
                except SystemExit as exc:
                    pytest.fail(f"{page}: `{command}` does not parse (exit {exc.code}): {err.getvalue()}")
            assert "deprecated" not in err.getvalue(), f"{page}: `{command}` uses a deprecated spelling"
            seen += 1
    assert seen >= 40  # the walk found the docs' commands


def test_the_command_walk_catches_a_wrong_command():
    bad = "```bash\nlee eval --no-such-flag 3   # comment\nlee query x && lee report --out r\n```\n"
    cmds = lee_commands(bad)
    assert cmds == ["lee eval --no-such-flag 3   # comment", "lee query x", "lee report --out r"]
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(argv_of(cmds[0]))


def test_mkdocs_builds_strict(tmp_path):
    """A broken link, a missing page or a page missing from the nav fails the build."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-q",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "paper" / "index.html").exists()
