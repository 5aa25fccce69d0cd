"""A ``checkpoints:`` catalog entry: a folder or a glob of checkpoints, local or fsspec, one model per file."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest
import torch

import catalog
from pipelines.cli import main


def _save(path: Path, seed: int) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


def _catalog(tmp_path: Path, entry: str) -> Path:
    path = tmp_path / f"models-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(f"models:\n  - {entry}\n")
    return path


def test_a_folder_and_a_glob_give_one_file_model_per_checkpoint(tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpts"
    _save(ckpts / "ep1.safetensors", 1)
    _save(ckpts / "ep2.pth", 2)
    (ckpts / "notes.txt").write_text("not a checkpoint")
    (ckpts / "old").mkdir()

    folder = catalog.load_catalog_file(_catalog(tmp_path, f"{{checkpoints: '{ckpts}', arch: test_resnet}}"))
    assert [(s.name, s.checkpoint, s.source, s.checkpoints) for s in folder] == [
        ("test_resnet@ep1", f"{ckpts}/ep1.safetensors", "file", str(ckpts)),
        ("test_resnet@ep2", f"{ckpts}/ep2.pth", "file", str(ckpts)),
    ]
    base = catalog.get_model("test_resnet")  # the arch's preprocessing, none of its published numbers
    assert all(s.arch == "test_resnet" and s.img_size == base.img_size and s.tag is None for s in folder)

    glob = catalog.load_catalog_file(
        _catalog(
            tmp_path,
            f"{{checkpoints: '{ckpts}/ep*.safetensors', arch: test_resnet, name: 'r-{{stem}}', "
            "key_map: {rename: [['^module\\.', '']]}}",
        )
    )
    assert [(s.name, s.checkpoint) for s in glob] == [("r-ep1", f"{ckpts}/ep1.safetensors")]
    assert glob[0].key_map == {"rename": [["^module\\.", ""]], "by_order": False}
    catalog.validate_checkpoint(glob[0])  # the file loads and fits

    # A relative folder stays relative in each checkpoint (unit keys do not depend on where it was listed).
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rel = catalog.load_catalog_file(_catalog(tmp_path, "{checkpoints: ./ckpts, arch: test_resnet}"))
    finally:
        os.chdir(cwd)
    assert [s.checkpoint for s in rel] == ["./ckpts/ep1.safetensors", "./ckpts/ep2.pth"]


def test_fsspec_globs_and_the_watch_rule() -> None:
    fs = fsspec.filesystem("memory")
    base = f"/ck-{uuid.uuid4().hex[:8]}"
    for p in ("r50-1.safetensors", "r50-2.safetensors", "sub/r50-3.safetensors", "other.pth"):
        fs.pipe(f"{base}/{p}", b"x")
    try:
        assert catalog.list_checkpoints(f"memory://{base}/r50-*.safetensors") == [
            f"memory://{base}/r50-1.safetensors",
            f"memory://{base}/r50-2.safetensors",
        ]
        assert (
            catalog.list_checkpoints(f"memory://{base}/**/*.safetensors")[-1]
            == f"memory://{base}/sub/r50-3.safetensors"
        )
        assert catalog.list_checkpoints(f"memory://{base}") == [
            f"memory://{base}/other.pth",
            f"memory://{base}/r50-1.safetensors",
            f"memory://{base}/r50-2.safetensors",
        ]
        assert catalog.list_checkpoints(f"memory://{base}/nothing-*.pt") == []
    finally:
        fs.rm(base, recursive=True)
    # what a pattern would list, by name only (gone files): * stays in its folder, ** crosses folders
    assert catalog.watches("s3://b/ck/r50-*.pt", "s3://b/ck/r50-9.pt")
    assert not catalog.watches("s3://b/ck/r50-*.pt", "s3://b/ck/old/r50-9.pt")
    assert catalog.watches("s3://b/ck/**/*.pt", "s3://b/ck/old/r50-9.pt")
    assert catalog.watches("./ck", "./ck/a.safetensors") and not catalog.watches("./ck", "./ck/a.txt")
    assert not catalog.watches("./ck", "./ck2/a.pth")


def test_names_that_collide_are_errors_naming_both(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "ep1.pth", 1)
    _save(tmp_path / "b" / "ep1.pth", 2)
    with pytest.raises(catalog.CatalogError, match=r"two models the name 'test_resnet@ep1'.*a/ep1\.pth.*b/ep1\.pth"):
        catalog.load_catalog_file(_catalog(tmp_path, f"{{checkpoints: '{tmp_path}/*/ep1.pth', arch: test_resnet}}"))
    two = catalog.load_catalog_file(
        _catalog(tmp_path, f"{{checkpoints: '{tmp_path}/*/ep1.pth', arch: test_resnet, name: '{{parent}}-{{stem}}'}}")
    )
    assert [s.name for s in two] == ["a-ep1", "b-ep1"]
    path = tmp_path / "both.yaml"
    path.write_text(
        f"models:\n  - {{checkpoints: '{tmp_path}/a', arch: test_resnet}}\n"
        f"  - {{name: test_resnet@ep1, arch: test_resnet, source: file, checkpoint: '{tmp_path}/b/ep1.pth'}}\n"
    )
    with pytest.raises(
        catalog.CatalogError, match=r"models\[1\]: model name 'test_resnet@ep1' is also given by .*models\[0\]"
    ):
        catalog.load_catalog_file(path)
    with pytest.raises(catalog.CatalogError, match="a built-in model's name"):
        catalog.load_catalog_file(
            _catalog(tmp_path, f"{{checkpoints: '{tmp_path}/a', arch: test_resnet, name: test_resnet.r160_in1k}}")
        )
    with pytest.raises(catalog.CatalogError, match=r"unknown placeholder\(s\) \{epoch\}"):
        catalog.load_catalog_file(
            _catalog(tmp_path, f"{{checkpoints: '{tmp_path}/a', arch: test_resnet, name: '{{epoch}}'}}")
        )
    with pytest.raises(catalog.CatalogError, match="need 'arch'"):
        catalog.load_catalog_file(_catalog(tmp_path, f"{{checkpoints: '{tmp_path}/a'}}"))


def test_a_glob_or_folder_that_matches_nothing_is_one_clear_line(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (f"{tmp_path}/ckpts/resnet50-*.safetensors", "the glob matches nothing"),
        (str(empty), "the folder has no .safetensors/.pth/.pt/.bin/.ckpt file"),
        (f"{tmp_path}/missing", "no such folder"),
    ]
    for pattern, why in cases:
        yaml_path = _catalog(tmp_path, f"{{checkpoints: '{pattern}', arch: test_resnet}}")
        for argv in (
            ["catalog", "validate", str(yaml_path)],
            [
                "eval",
                "--dry-run",
                "-m",
                str(yaml_path),
                "-d",
                "sample-test",
                "-n",
                "2",
                "--img-size",
                "32",
                "-r",
                str(tmp_path / "res"),
            ],
        ):
            assert main(argv) == 2
            captured = capsys.readouterr()
            lines = captured.err.strip().splitlines()
            assert lines == [f"lee: error: {yaml_path} models[0]: checkpoints {pattern!r} match no file ({why})"], (
                captured.err
            )
            assert "Errno" not in captured.err and "Is a directory" not in captured.err


def test_validate_and_ls_show_the_files_found(tmp_path: Path, capsys) -> None:
    _save(tmp_path / "ck" / "ep1.safetensors", 1)
    _save(tmp_path / "ck" / "ep2.safetensors", 2)
    path = _catalog(tmp_path, f"{{checkpoints: '{tmp_path}/ck/*.safetensors', arch: test_resnet}}")
    assert main(["catalog", "validate", str(path)]) == 0
    assert "ok: 2 models (2 checkpoints load and fit)" in capsys.readouterr().out
    assert main(["catalog", "ls", "--catalog", str(path)]) == 0
    out = capsys.readouterr().out
    assert "test_resnet@ep2  " in out and f"{tmp_path}/ck/ep2.safetensors" in out and "(2 models)" in out


def test_a_folder_or_glob_given_as_one_checkpoint_says_to_use_checkpoints(tmp_path: Path, capsys) -> None:
    _save(tmp_path / "ck" / "ep1.pth", 1)
    for given, what in ((f"{tmp_path}/ck/*.pth", "has glob characters"), (f"{tmp_path}/ck", "is a folder")):
        path = _catalog(tmp_path, f"{{name: mine, arch: test_resnet, source: file, checkpoint: '{given}'}}")
        assert main(["catalog", "validate", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"lee: error: checkpoint {given!r} {what}: name one file, or use `checkpoints:` (a folder or "
            "glob: one model per file) in the catalog entry"
        ], err
