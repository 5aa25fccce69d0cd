"""The import rules of the three packages, checked in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

RULES = {
    # package: modules it must never import (directly or indirectly) at import time
    "liecore": ["ray", "duckdb", "pyarrow", "fsspec", "timm", "wandb", "catalog", "pipelines", "scipy", "pandas"],
    "catalog": ["ray", "duckdb", "liecore", "pipelines", "timm", "torch", "e2cnn", "sklearn", "scipy"],
}


def _source_imports(root):
    """(file, absolute module name) of every import statement under ``root``, inside functions too."""
    import ast

    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield from ((path, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                yield path, node.module or ""


@pytest.mark.parametrize("package", list(RULES))
def test_package_imports_stay_within_their_rules(package):
    code = f"import sys, json, {package}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & set(RULES[package]), sorted(loaded & set(RULES[package]))


def test_liecore_source_imports_only_torch_and_numpy():
    import pathlib

    import liecore

    allowed = {"torch", "numpy", "liecore", "__future__"}
    root = pathlib.Path(liecore.__file__).parent
    stdlib = set(sys.stdlib_module_names)
    for path, name in _source_imports(root):
        top = name.split(".")[0]
        assert top in allowed or top in stdlib, f"{path.name} imports {name}"


def test_nothing_imports_pipelines():
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    for pkg in ("liecore", "catalog"):
        for path in (root / pkg).rglob("*.py"):
            text = path.read_text()
            assert "import pipelines" not in text and "from pipelines" not in text, path


def test_liecore_modules_import_no_private_names_from_each_other():
    """A name with a leading underscore stays inside its module: what two liecore modules
    share is public (``from ._layers import LayerErrors``, never ``_LayerErrors``)."""
    import ast
    import pathlib

    import liecore

    root = pathlib.Path(liecore.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 0 and not (node.module or "").startswith("liecore"):
                continue
            found += [f"{path.relative_to(root)}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, found


def test_interpolation_flags_offer_liecores_interpolations_without_importing_torch():
    """``--interpolation`` of ``lee eval`` and ``lee report`` takes liecore's list (one definition),
    and building the ``lee`` parser still imports no torch (``lee query`` must start fast)."""
    code = (
        "import sys, json\n"
        "from pipelines.cli import build_parser\n"
        "p = build_parser()\n"
        "before = 'torch' in sys.modules\n"
        "sub = next(a for a in p._actions if a.dest == 'command')\n"
        "ch = {c: list(next(a for a in sub.choices[c]._actions if a.dest == 'interpolation').choices)\n"
        "      for c in ('eval', 'report')}\n"
        "import liecore\n"
        "print(json.dumps([before, ch, list(liecore.INTERPOLATIONS)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    torch_loaded, choices, expected = json.loads(out.strip().splitlines()[-1])
    assert not torch_loaded
    assert choices == {"eval": expected, "report": expected}


def test_only_the_command_line_imports_the_command_line():
    """Library code raises ``pipelines.errors.UsageError``; only ``pipelines/commands`` (and the entry
    points) import ``pipelines.cli``, which maps the error to exit code 2."""
    import ast
    import pathlib

    import pipelines

    root = pathlib.Path(pipelines.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] == "commands" or rel.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pipelines.cli":
                found.append(f"{rel}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and node.module == "pipelines" and any(
                a.name == "cli" for a in node.names
            ):
                found.append(f"{rel}:{node.lineno}")
    assert not found, found
    from pipelines import cli, errors

    assert cli.UsageError is errors.UsageError


def test_catalog_source_never_imports_the_zoo_packages():
    """Not even lazily: e2cnn and scikit-learn belong to the zoo (``pipelines.zoo``)."""
    import pathlib

    import catalog

    for path, name in _source_imports(pathlib.Path(catalog.__file__).parent):
        assert name.split(".")[0] not in ("e2cnn", "sklearn", "pipelines"), f"{path.name} imports {name}"


def test_catalog_lookups_and_the_sample_set_load_neither_e2cnn_nor_sklearn(tmp_path):
    code = """if True:
        import json, sys
        import catalog
        specs = catalog.load_models("tiny")
        zoo = catalog.spec_from_entry({"name": "zoo-x", "arch": "zoo_cnn", "num_classes": 10, "source": "random"})
        assert catalog.is_zoo_arch(zoo.arch) and not catalog.is_zoo_arch(specs[0].arch)
        catalog.load_datasets("zoo")
        imset = catalog.load_dataset("sample-test")
        assert len(imset) == 100 and {im.label for im in imset.images} >= {"china", "flower"}
        print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
    """
    env = {**os.environ, "LEE_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & {"e2cnn", "sklearn", "pipelines"}, sorted(loaded & {"e2cnn", "sklearn", "pipelines"})


def test_catalog_builds_a_zoo_model_and_zoo_data_in_a_fresh_process(tmp_path):
    """Without ``pipelines`` imported first: the catalog imports the registered zoo provider by name."""
    code = """if True:
        import sys
        import catalog
        assert "pipelines" not in sys.modules
        spec = catalog.spec_from_entry({"name": "zoo-x", "arch": "zoo_cnn", "num_classes": 10,
                                        "model_kwargs": {"width": 8}, "source": "random"})
        loaded = catalog.build_model(spec)
        import torch
        assert loaded.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        assert "pipelines.zoo" in sys.modules
        imset = catalog.load_dataset("patches-ood")
        assert len(imset) == 200 and {im.array.shape for im in imset.images} == {(32, 32, 3)}
        print("ok")
    """
    env = {**os.environ, "LEE_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
