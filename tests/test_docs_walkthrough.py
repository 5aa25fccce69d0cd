"""The docs' walk-through, as a newcomer follows it: every ``lee`` command of the pages in the site's order
(first run, sweeps, SQL, report, catalog and own checkpoint, cluster) is either run here, in that order, in
one folder, or listed in ``SKIPPED`` with the reason. A documented command that breaks, or a new one that
is neither run nor skipped with a reason, fails the test.

The first run's ``lee eval`` takes minutes, so its results are stood in for by the checked-in store of
``tests/data/store-schema4`` (lee, alt and layerwise units of ``test_resnet``, random init), copied to
``./lee-results`` where the first run writes; the commands after it read that root. Commands are run
in-process (``pipelines.cli.main``); the docs' ``python -c`` and ``echo`` lines make the files the later
commands read, and ``my-models.yaml`` is saved from its YAML block, as the reader would.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
from pathlib import Path

import yaml

from pipelines.cli import main

ROOT = Path(__file__).parents[1]
STORE = ROOT / "tests" / "data" / "store-schema4"

# Commands not run here (matched by regex on the command line), with why. Everything else is run.
SKIPPED: dict[str, str] = {
    r"^lee eval(?!.*--dry-run)": "a sweep: minutes of CPU (tests/pipelines run sweeps on tiny models)",
    r"^lee eval .*--dry-run": "plans every unit: decodes the sample sets and reads the models (tests/pipelines)",
    r"-r s3://|s3://bucket": "an S3 bucket (tests/pipelines/test_objectstore*.py use a moto server)",
    r"--address|^lee submit|^lee status|^lee logs": "a Ray cluster or job server (tests/pipelines, tests/deploy)",
    r"^lee reevaluate": "a run.yaml and a cluster (tests/pipelines/test_reevaluate*.py)",
    r"^lee report -r \./res ": "a results root of random-init sweeps the page names as an example (./res)",
    r"^lee report .*--output-kind logits": "needs a logits sweep (lee eval --output-kind logits), minutes",
    r"^lee zoo train(?!.*--dry-run)": "trains models: minutes (tests/zoo trains the small preset once)",
    r"watched\.yaml": "an S3 bucket and checkpoint folders of your own (tests/catalog: the watched catalogs)",
    r"^lee zoo summary|^lee explain|^lee repair": "covered by their own tests, on stores those tests build",
    r"^lee catalog ls --catalog paper|^lee catalog ls 'convnext": "lists of the 1,000-model catalogs (tests/catalog)",
}

PAGES = [
    "index.md",
    "sweeps.md",
    "cli.md",
    "store.md",
    "analysis.md",
    "report.md",
    "catalog.md",
    "checkpoints.md",
    "cluster.md",
]  # the nav's order, the pages a newcomer follows


def page_commands(page: str) -> list[str]:
    """The ``lee`` (and ``python -c``, ``echo``) command lines of a page's fenced bash blocks, comments stripped, in
    order.
    """
    text = (ROOT / "docs" / page).read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith(("python -c ", "echo ")):
                out.append(line.strip())
                continue
            line = re.sub(r"\s+#.*$", "", line).strip()
            for part in re.split(r"&&|;", line):
                part = re.sub(r"^python -m pipelines\b", "lee", part.strip())
                if part.startswith("lee "):
                    out.append(part)
    return out


def _skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED.items() if re.search(pattern, command)), None)


def _run(command: str) -> tuple[int, str]:
    """Run one documented command line in-process: ``< FILE`` feeds stdin, ``> FILE`` takes stdout."""
    import sys

    if command.startswith("python -c "):
        exec(compile(shlex.split(command)[2], "<docs>", "exec"), {})
        return 0, ""
    if command.startswith("echo "):
        _, text, redirect, target = shlex.split(command)
        assert redirect == ">", command
        Path(target).write_text(text + "\n")
        return 0, ""
    words = shlex.split(command)[1:]
    stdin = stdout_file = None
    if "<" in words:
        i = words.index("<")
        stdin, words = Path(words[i + 1]).read_text(), words[:i] + words[i + 2 :]
    if ">" in words:
        i = words.index(">")
        stdout_file, words = words[i + 1], words[:i] + words[i + 2 :]
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    try:
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(words)
            except SystemExit as exc:
                rc = int(exc.code or 0)
    finally:
        sys.stdin = old_stdin
    if stdout_file:
        Path(stdout_file).write_text(out.getvalue())
    return rc, out.getvalue() + err.getvalue()


def test_every_documented_command_is_run_or_skipped_with_a_reason():
    commands = [c for p in PAGES for c in page_commands(p)]
    assert len(commands) >= 20
    run = [c for c in commands if _skip_reason(c) is None]
    assert len(run) >= 6, run  # the walk-through is not all skips


def test_docs_walkthrough_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(STORE, tmp_path / "lee-results")  # what the first run leaves (see the module docstring)
    # the catalog file of catalog.md, from its YAML block (the reader saves it)
    catalog_text = (ROOT / "docs" / "catalog.md").read_text()
    my_models = re.search(r"```yaml\n(# my-models.yaml.*?)```", catalog_text, flags=re.S).group(1)
    assert yaml.safe_load(my_models)["models"][0]["checkpoint"] == "lite0.pth"  # the docs' command writes it
    (tmp_path / "my-models.yaml").write_text(my_models)
    ran, skipped = [], []
    for page in PAGES:
        for command in page_commands(page):
            why = _skip_reason(command)
            if why is not None:
                skipped.append((page, command, why))
                continue
            rc, output = _run(command)
            assert rc == 0, f"docs/{page}: `{command}` exited {rc}:\n{output[-2000:]}"
            ran.append(command)
    print("\nran:\n  " + "\n  ".join(ran) + "\nskipped:\n  " + "\n  ".join(f"{c}  ({w})" for _, c, w in skipped))
    assert os.path.exists("report/index.html")
