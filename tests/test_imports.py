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


def test_catalog_source_never_imports_the_zoo_packages():
    """Not even lazily: e2cnn and scikit-learn belong to the zoo (``pipelines.zoo``)."""
    import ast
    import pathlib

    import catalog

    for path in pathlib.Path(catalog.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
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
