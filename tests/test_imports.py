"""The import rules of the three packages, checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RULES = {
    # package: modules it must never import (directly or indirectly) at import time
    "liecore": ["ray", "duckdb", "pyarrow", "fsspec", "timm", "wandb", "catalog", "pipelines", "scipy", "pandas"],
    "catalog": ["ray", "duckdb", "liecore", "pipelines", "timm", "torch"],
}


@pytest.mark.parametrize("package", list(RULES))
def test_package_imports_stay_within_their_rules(package):
    code = f"import sys, json, {package}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & set(RULES[package]), sorted(loaded & set(RULES[package]))


def test_liecore_source_imports_only_torch_and_numpy():
    import ast
    import pathlib

    import liecore

    allowed = {"torch", "numpy", "liecore", "__future__"}
    root = pathlib.Path(liecore.__file__).parent
    stdlib = set(sys.stdlib_module_names)
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in stdlib, f"{path.name} imports {name}"


def test_nothing_imports_pipelines():
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    for pkg in ("liecore", "catalog"):
        for path in (root / pkg).rglob("*.py"):
            text = path.read_text()
            assert "import pipelines" not in text and "from pipelines" not in text, path
