"""README promises that code can check."""

from __future__ import annotations

import pathlib
import re

import pipelines.schema

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "lee eval" in main_job
    assert "pytest" in tests
    ci = (pathlib.Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert tests.split("&&")[-1].strip() in ci


def test_readme_schema_is_generated_from_the_code():
    section = README.split("<!-- schema:begin -->")[1].split("<!-- schema:end -->")[0]
    assert section.strip() == pipelines.schema.markdown().strip()
