"""The import rules of the three packages, checked in fresh interpreters."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import pathlib
import subprocess
import sys

import pytest

RULES = {
    # package: modules it must never import (directly or indirectly) at import time
    "liecore": ["ray", "duckdb", "pyarrow", "fsspec", "timm", "wandb", "catalog", "pipelines", "scipy", "pandas"],
    "catalog": ["ray", "duckdb", "liecore", "pipelines", "timm", "torch", "e2cnn", "sklearn", "scipy"],
    "lee_names": ["torch", "numpy", "yaml", "ray", "duckdb", "liecore", "catalog", "pipelines"],
}


def _dynamic_import(node, constants):
    """The module a call ``importlib.import_module("m")``, ``import_module("m")`` or ``__import__("m")``
    names: a string literal, or a module-level string constant of the same module (``PROVIDER = "m"``); else
    None."""
    if not (isinstance(node, ast.Call) and node.args):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__"):
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        target = arg.value
    elif isinstance(arg, ast.Name) and arg.id in constants:
        target = constants[arg.id]
    else:
        return None
    return None if target.startswith(".") else target  # relative: needs its package, not an absolute import


def _imports(tree):
    """``(node, module names, inside_a_function)`` of every import in ``tree``: import statements (absolute; a
    relative ``from`` gives ``[]`` here) and the dynamic imports of :func:`_dynamic_import`."""
    constants = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function |= {id(n) for n in ast.walk(node) if n is not node}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif (target := _dynamic_import(node, constants)) is not None:
            names = [target]
        else:
            continue
        yield node, names, id(node) in in_function


def _source_imports(root, *, with_scope=False):
    """(file, absolute module name) of every import under ``root``, inside functions too,
    ``importlib.import_module`` and ``__import__`` of a string included; with ``with_scope``, (file, name,
    inside_a_function)."""
    for path in sorted(root.rglob("*.py")):
        for _, names, lazy in _imports(ast.parse(path.read_text())):
            yield from ((path, n, lazy) if with_scope else (path, n) for n in names)


@pytest.mark.parametrize("package", list(RULES))
def test_package_imports_stay_within_their_rules(package):
    code = f"import sys, json, {package}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & set(RULES[package]), sorted(loaded & set(RULES[package]))


def test_liecore_source_imports_only_torch_and_numpy():
    import pathlib

    import liecore

    allowed = {"torch", "numpy", "liecore", "lee_names", "__future__"}  # lee_names: stdlib only (below)
    root = pathlib.Path(liecore.__file__).parent
    stdlib = set(sys.stdlib_module_names)
    for path, name in _source_imports(root):
        top = name.split(".")[0]
        assert top in allowed or top in stdlib, f"{path.name} imports {name}"


def test_lee_names_imports_only_the_standard_library():
    """``lee_names`` (the one "did you mean") sits below liecore and catalog: both import it."""
    import lee_names

    root = pathlib.Path(lee_names.__file__).parent
    found = [
        f"{path.name} imports {name}"
        for path, name in _source_imports(root)
        if name.split(".")[0] not in {*sys.stdlib_module_names, "lee_names", "__future__"}
    ]
    assert not found, found


def test_nothing_imports_pipelines():
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    for pkg in ("lee_names", "liecore", "catalog"):
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


def test_liecores_names_listed_for_torch_free_checks_are_liecores():
    """The flag checks that need no torch (``pipelines.spec.flagcheck``, ``lee submit``) list liecore's names."""
    import liecore
    from liecore.metrics import METRICS
    from pipelines.running import checks
    from pipelines.spec import config, flagcheck

    assert flagcheck.GENERATORS == tuple(liecore.GENERATORS)
    assert flagcheck.ALT_METRICS == tuple(METRICS)
    assert tuple(config.INTERPOLATIONS) == tuple(liecore.INTERPOLATIONS)
    assert checks.MIN_IMG_SIZE == flagcheck.MIN_IMG_SIZE


def test_the_submitting_side_imports_no_torch_and_still_refuses_bad_flags(tmp_path):
    """``lee submit`` checks a job's flags and builds its runtime env without torch, timm, liecore or Ray Data
    (the job's driver imports them; here they would be a second start-up), and a bad flag is still one error
    before anything is submitted."""
    code = f"""if True:
        import json, sys
        from pipelines.commands import submit_cmd
        from pipelines.running.cluster import job_client
        from pipelines.errors import UsageError
        import ray.job_submission
        out = {{}}
        good = ["-m", "test_resnet.r160_in1k,tiny", "-d", "sample-test", "-n", "8", "--img-size", "64",
                "-g", "translate_x,rotate", "--metrics", "lee,alt,layerwise", "--alt-metrics", "eq_t",
                "--layerwise-generators", "rotate", "--derivative-interp", "spectral", "--output-kind", "logits",
                "--weights", "random", "-r", {str(tmp_path / "res")!r}]
        out["eval"] = submit_cmd.sweep_argv(["--", "eval", *good], ".")[0]
        out["reevaluate"] = submit_cmd.sweep_argv(["reevaluate", *good], ".")[0]
        submit_cmd.load_runtime_env(None, ".", "abc")
        bad = {{"generator": ["-g", "rotat"], "model": ["-m", "no_such_model_x"], "img": ["--img-size", "4"],
               "interp": ["--derivative-interp", "linear"], "alt": ["--metrics", "alt", "--alt-metrics", "eq_z"],
               "dataset": ["-d", "no-such-set"], "flag": ["--bogus"]}}
        for name, flags in bad.items():
            try:
                submit_cmd.sweep_argv(["-m", "tiny", "-d", "sample-test", *flags], ".")
                out[name] = None
            except UsageError as exc:
                out[name] = str(exc)
        heavy = ("torch", "timm", "liecore", "ray.data", "pipelines.running.plan")
        out["loaded"] = sorted(m for m in heavy if m in sys.modules)
        print(json.dumps(out))
    """
    env = {**os.environ, "LEE_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("loaded") == []
    assert (out.pop("eval"), out.pop("reevaluate")) == ("eval", "reevaluate")
    assert "unknown generator 'rotat'; did you mean 'rotate'" in out["generator"]
    assert "no_such_model_x" in out["model"]
    assert "--img-size 4 is too small" in out["img"]
    assert "invalid choice: 'linear'" in out["interp"] and out["interp"].startswith("bad lee eval flags")
    assert "unknown alt metric 'eq_z'" in out["alt"]
    assert "no-such-set" in out["dataset"]
    assert "unrecognized arguments: --bogus" in out["flag"]


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
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module == "pipelines"
                and any(a.name == "cli" for a in node.names)
            ):
                found.append(f"{rel}:{node.lineno}")
    assert not found, found
    from pipelines import cli, errors

    assert cli.UsageError is errors.UsageError


ZOO_PACKAGES = ("e2cnn", "sklearn")
"""What only the zoo's builders need: ``catalog`` imports them inside functions only."""


def _catalog_source_problems(root: pathlib.Path) -> list[str]:
    """Imports in the catalog source at ``root`` of ``pipelines`` (anywhere, ``import_module`` and
    ``__import__`` of a string included) or of a zoo package outside a function."""
    problems = []
    for path, name, lazy in _source_imports(root, with_scope=True):
        top = name.split(".")[0]
        if top == "pipelines" or (top in ZOO_PACKAGES and not lazy):
            problems.append(f"{path.name} imports {name}" + ("" if lazy else " at module level"))
    return problems


def test_catalog_source_never_imports_pipelines_and_loads_the_zoo_packages_lazily():
    """Not even by name: the catalog is below ``pipelines``; e2cnn and scikit-learn only when a zoo model or
    zoo dataset is built."""
    import catalog

    problems = _catalog_source_problems(pathlib.Path(catalog.__file__).parent)
    assert not problems, problems


def test_the_catalog_rule_catches_a_planted_import_module_of_pipelines(tmp_path):
    """The rule itself, on a copy of the package with planted dynamic and module-level imports."""
    import shutil

    import catalog

    root = tmp_path / "catalog"
    shutil.copytree(pathlib.Path(catalog.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert _catalog_source_problems(root) == []
    (root / "_planted.py").write_text(
        "import importlib\n"
        "from importlib import import_module\n\n"
        "import e2cnn\n\n"
        'PROVIDER = "pipelines.zoo"\n\n\n'
        "def hook():\n"
        '    importlib.import_module("pipelines.running.plan")\n'
        "    importlib.import_module(PROVIDER)\n"
        '    import_module("pipelines.running.runner")\n'
        '    return __import__("pipelines")\n'
    )
    problems = _catalog_source_problems(root)
    names = ("pipelines.running.plan", "pipelines.zoo", "pipelines.running.runner", "pipelines")
    expected = [f"_planted.py imports {m}" for m in names]
    assert sorted(problems) == sorted([*expected, "_planted.py imports e2cnn at module level"]), problems


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
    """The zoo's definitions are the catalog's own: ``pipelines`` is never imported."""
    code = """if True:
        import sys
        import catalog
        assert "pipelines" not in sys.modules
        spec = catalog.spec_from_entry({"name": "zoo-x", "arch": "zoo_cnn", "num_classes": 10,
                                        "model_kwargs": {"width": 8}, "source": "random"})
        loaded = catalog.build_model(spec)
        import torch
        assert loaded.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        imset = catalog.load_dataset("patches-ood")
        assert len(imset) == 200 and {im.array.shape for im in imset.images} == {(32, 32, 3)}
        assert "pipelines" not in sys.modules
        print("ok")
    """
    env = {**os.environ, "LEE_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_pipelines_uses_only_the_public_names_of_liecore_and_catalog():
    """No ``catalog._x`` or ``liecore._x`` module, no ``_name``: what pipelines needs, the two packages export."""
    import pipelines

    found = []
    root = pathlib.Path(pipelines.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found += [
                f"{path.relative_to(root)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("catalog", "liecore") and any(p.startswith("_") for p in n.split("."))
            ]
    assert not found, found


# ------------------------------------------------------------------------------------ pipelines' layers
PIPELINES_LAYERS = (
    # Top to bottom. A module imports only modules of its own layer or of the layers below it, the import graph
    # has no cycle, and every module is listed (an exact name wins over a pattern). The subpackages are the
    # layers: running/ (summary over execute over plan over the runner's parts), analysis/, store/, spec/.
    ("entry", ("pipelines.cli", "pipelines.__main__")),
    ("commands", ("pipelines.commands", "pipelines.commands.*")),
    ("running: summary, report", ("pipelines.running.summary", "pipelines.analysis.report", "pipelines.zoo.train")),
    ("running: execute", ("pipelines.running.execute",)),
    ("running: plan", ("pipelines.running.plan",)),
    ("running: runner, cluster, checks, progress", ("pipelines.running", "pipelines.running.*")),
    ("analysis", ("pipelines.analysis", "pipelines.analysis.*", "pipelines.zoo.summary")),
    ("store", ("pipelines.store", "pipelines.store.*")),
    (
        "spec",
        ("pipelines", "pipelines.errors", "pipelines.spec", "pipelines.spec.*", "pipelines.zoo", "pipelines.zoo.*"),
    ),
)
LAZY_IMPORTERS = ("pipelines.cli", "pipelines.__main__", "pipelines.commands.*")
"""Where an import of another ``pipelines`` module may sit inside a function: the command line, whose modules are
all imported to build the parser, so that ``lee --help`` and ``lee query`` do not load torch, Ray or the sweep.
Everywhere else such imports are at the top of the module (none is needed to dodge a cycle)."""


def _layer(module: str) -> int | None:
    for i, (_, names) in enumerate(PIPELINES_LAYERS):
        if module in names:
            return i
    for i, (_, names) in enumerate(PIPELINES_LAYERS):
        if any("*" in n and fnmatch.fnmatchcase(module, n) for n in names):
            return i
    return None


def _pipelines_imports(root: pathlib.Path):
    """``(importer, imported, lineno, inside_a_function)`` of every import of a ``pipelines`` module under
    ``root`` (the package folder), ``importlib.import_module`` and ``__import__`` of a string included, with the
    parent packages an import executes (``pipelines.zoo`` for ``pipelines.zoo.train``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node, names, lazy in _imports(ast.parse(path.read_text())):
            targets = names
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            for target in targets:
                if target.split(".")[0] != "pipelines":
                    continue
                parts = target.split(".")
                for k in range(2, len(parts) + 1):  # pipelines.a.b executes pipelines.a first
                    imported = ".".join(parts[:k])
                    if imported in modules and not name.startswith(imported + ".") and imported != name:
                        yield name, imported, node.lineno, lazy


def _layer_problems(root: pathlib.Path) -> list[str]:
    problems, edges = [], {}
    for importer, imported, line, lazy in _pipelines_imports(root):
        a, b = _layer(importer), _layer(imported)
        for module, layer in ((importer, a), (imported, b)):
            if layer is None:
                problems.append(f"{module} is in no layer of PIPELINES_LAYERS")
        if a is not None and b is not None and b < a:
            problems.append(
                f"{importer}:{line} imports {imported}: up from {PIPELINES_LAYERS[a][0]} to {PIPELINES_LAYERS[b][0]}"
            )
        if lazy and not any(fnmatch.fnmatchcase(importer, p) for p in LAZY_IMPORTERS):
            problems.append(f"{importer}:{line} imports {imported} inside a function")
        edges.setdefault(importer, set()).add(imported)
    state: dict[str, int] = {}

    def visit(node, path):  # depth-first search for a cycle
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                problems.append("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return sorted(set(problems))


def test_pipelines_modules_import_only_their_layer_and_below():
    """``commands`` -> ``running`` (summary/report -> execute -> plan -> runner) -> ``analysis`` -> ``store``
    -> ``spec``: no import goes up a layer, none forms a cycle, and outside the command line none hides inside a
    function."""
    import pipelines

    problems = _layer_problems(pathlib.Path(pipelines.__file__).parent)
    assert not problems, "\n".join(problems)


def test_the_layer_rule_catches_an_upward_import_a_cycle_and_a_lazy_import(tmp_path):
    """The rule itself, on a copy of the package with four planted faults (one an upward ``import_module``)."""
    import shutil

    import pipelines

    root = tmp_path / "pipelines"
    shutil.copytree(pathlib.Path(pipelines.__file__).parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    assert _layer_problems(root) == []
    with (root / "store" / "results.py").open("a") as f:
        f.write("\nfrom pipelines.running.plan import plan  # planted: up\n")
    with (root / "store" / "schema.py").open("a") as f:
        f.write("\nfrom pipelines.store import results  # planted: a cycle with results -> schema\n")
    with (root / "running" / "runner.py").open("a") as f:
        f.write("\n\ndef planted():\n    from pipelines import store\n\n    return store\n")
    with (root / "store" / "units.py").open("a") as f:
        f.write('\nimport importlib\n\nRUNNER = importlib.import_module("pipelines.running.runner")  # planted: up\n')
    (root / "newmodule.py").write_text("from pipelines import errors\n")
    problems = "\n".join(_layer_problems(root))
    assert "pipelines.store.results:" in problems and "imports pipelines.running.plan: up from store" in problems
    assert "pipelines.store.units:" in problems and "imports pipelines.running.runner: up from store" in problems
    assert "import cycle: " in problems and "pipelines.store.schema" in problems
    assert "pipelines.running.runner:" in problems and "inside a function" in problems
    assert "pipelines.newmodule is in no layer" in problems
