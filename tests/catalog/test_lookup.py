"""Lookup, catalog files (safe loading, key validation) and the ``lee catalog`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest

import catalog
from pipelines.cli import main


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(
        catalog.CatalogError, match=r"unknown model 'resnet50\.a1_in1kk'; did you mean 'resnet50\.a1_in1k'"
    ):
        catalog.get_model("resnet50.a1_in1kk")
    assert issubclass(catalog.CatalogError, ValueError)
    with pytest.raises(catalog.CatalogError, match="did you mean 'sample-train'"):
        catalog.get_dataset("sample-trian")


def test_load_models_mixes_catalogs_names_and_patterns() -> None:
    specs = catalog.load_models(["quickstart", "test_vit*", "resnet50.tv_in1k", "resnet18.a1_in1k"])
    names = [s.name for s in specs]
    assert names[:6] == [s.name for s in catalog.load_models("quickstart")]
    assert {"test_vit.r160_in1k", "test_vit2.r160_in1k", "test_vit3.r160_in1k"} <= set(names)
    assert names.count("resnet18.a1_in1k") == 1 and names[-1] == "resnet50.tv_in1k"
    with pytest.raises(catalog.CatalogError, match="matches no model"):
        catalog.load_models(["nothing_like_this_*"])


def test_list_models_filters_with_fnmatch() -> None:
    names = [s.name for s in catalog.list_models("resnet50.*", exclude=["*gluon*", "*tv*"])]
    assert "resnet50.a1_in1k" in names and "resnet50.tv_in1k" not in names and "resnet50.gluon_in1k" not in names
    tiny = catalog.list_models(catalog="tiny")
    assert tiny and all(s.source == "random" for s in tiny)
    with pytest.raises(catalog.CatalogError, match="did you mean 'quickstart'"):
        catalog.list_models(catalog="quickstrat")


def test_user_catalog_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nmodels:\n"
        "  - resnet18.a1_in1k\n"
        "  - {name: test_resnet.r160_in1k, source: random}\n"
        "  - {name: my_resnet, arch: test_resnet, source: file, checkpoint: 's3://bucket/ckpt.safetensors'}\n"
    )
    specs = catalog.load_models(str(path))
    assert [s.name for s in specs] == ["resnet18.a1_in1k", "test_resnet.r160_in1k", "my_resnet"]
    mine = specs[2]
    assert (mine.arch, mine.source, mine.top1, mine.img_size) == ("test_resnet", "file", None, 160)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  - {name: resnet18.a1_in1k, sorce: random}\n", "unknown key(s) 'sorce'"),
        ("modles:\n  - resnet18.a1_in1k\n", "unknown key(s) 'modles'"),
        ("models:\n  - resnet18.a1_in1kk\n", "did you mean 'resnet18.a1_in1k'"),
        ("models:\n  - {name: x, arch: test_resnet, source: file}\n", "needs a checkpoint"),
        ("models:\n  - {name: resnet18.a1_in1k, img_size: big}\n", "img_size must be an integer"),
        ("models: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    ],
)
def test_invalid_catalog_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(catalog.CatalogError) as info:
        catalog.load_catalog_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_dataset_file_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text("datasets:\n  - {name: x, uri: /tmp/x, formt: flat}\n")
    with pytest.raises(catalog.CatalogError, match="unknown key\\(s\\) 'formt'"):
        catalog.load_dataset_file(path)


def test_cli_ls_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "ls", "resnet50.a1*", "--exclude", "*a1h*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "family", "params_m", "top1", "img_size", "source"]
    assert out[1].split() == ["resnet50.a1_in1k", "cnn", "25.56", "80.38", "224", "hub"]
    assert out[-1] == "(1 models)"
    assert main(["catalog", "ls", "--catalog", "quickstart"]) == 0
    assert "(6 models)" in capsys.readouterr().out


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(catalog.__file__).parent
    assert main(["catalog", "validate", str(root / "models" / "paper.yaml")]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert main(["catalog", "validate", str(root / "datasets.yaml")]) == 0
    assert "datasets" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: resnet18.a1_in1k, weights: hub}\n")
    assert main(["catalog", "validate", str(bad)]) == 2
    assert "unknown key(s) 'weights'" in capsys.readouterr().err


def test_cli_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "sample-train" in out and "${IMAGENET_ROOT}/val" in out


def test_cli_ls_resolves_plain_names(capsys: pytest.CaptureFixture[str]) -> None:
    def listed(*args: str) -> tuple[int, list[str], str]:
        rc = main(["catalog", "ls", *args])
        cap = capsys.readouterr()
        return rc, [ln.split()[0] for ln in cap.out.splitlines()[1:-1]], cap.err

    rc, names, _ = listed("resnet50")  # a bare arch: all its tags
    assert rc == 0 and names == [s.name for s in catalog.list_models("resnet50.*")] and len(names) > 10
    assert listed("tv_resnet50")[:2] == (0, ["resnet50.tv_in1k"])  # an old timm name
    assert listed("resnet50", "--catalog", "paper")[:2] == (
        0,
        [s.name for s in catalog.list_models("resnet50.*", catalog="paper")],
    )
    rc, names, err = listed("resnt50")
    assert rc == 1 and names == [] and "unknown model 'resnt50' in catalog 'all'; did you mean 'resnet50'" in err
    rc, names, err = listed("resnt50", "resnet18.a1_in1k")  # the known one is still listed
    assert rc == 1 and names == ["resnet18.a1_in1k"] and "'resnt50'" in err


def test_unknown_key_error_lists_each_allowed_key_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"models": ["resnet18.a1_in1k"], "modles": []}')
    with pytest.raises(catalog.CatalogError, match="unknown key\\(s\\) 'modles'") as info:
        catalog.load_catalog_file(path)
    allowed = str(info.value).split("allowed: ", 1)[1].split(", ")
    assert "models" in allowed and len(allowed) == len(set(allowed))
