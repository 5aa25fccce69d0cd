"""Inputs refused before they cost anything: an ``--img-size`` whose derivative cannot fit in memory, and two
models with one name in a selection (a user entry may not shadow a built-in model)."""

from __future__ import annotations

import re

import pytest

import catalog
from pipelines.cli import main
from pipelines.errors import UsageError
from pipelines.running.checks import JVP_FACTOR, available_memory, check_img_size, derivative_bytes

MODEL = "test_resnet.r160_in1k"


def test_an_img_size_beyond_memory_is_refused_with_the_numbers(tmp_path, capsys):
    code = main(
        [
            "eval",
            "-m",
            MODEL,
            "-d",
            "sample-test",
            "-g",
            "rotate",
            "-n",
            "2",
            "--img-size",
            "100000",
            "-r",
            str(tmp_path / "r"),
            "--dry-run",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not (tmp_path / "r").exists()
    have, where = available_memory()
    need, ref, side = derivative_bytes(catalog.get_model(MODEL), 100000)
    assert need == int(ref * (100000 / side) ** 2 * JVP_FACTOR) and need > have
    m = re.search(
        r"--img-size 100000 is too large for test_resnet\.r160_in1k: one image's derivative needs at least "
        r"([\d.]+) TiB .* this machine has ([\d.]+) GiB \((.*)\); sizes above about (\d+) px cannot fit",
        err,
    )
    assert m, err
    assert float(m[1]) == pytest.approx(need / 2**40, rel=1e-2) and float(m[2]) == pytest.approx(have / 2**30, rel=1e-2)
    assert m[3] == where
    limit = int(m[4])
    assert (
        derivative_bytes(catalog.get_model(MODEL), limit)[0]
        <= have
        < derivative_bytes(catalog.get_model(MODEL), limit + 2)[0]
    )


def test_the_bound_follows_the_memory_given():
    spec = catalog.get_model(MODEL)
    need_64 = derivative_bytes(spec, 64)[0]
    check_img_size(64, [spec], memory=(need_64 + 1, "test"))  # fits: no error
    with pytest.raises(UsageError, match=r"--img-size 64 is too large for test_resnet\.r160_in1k.*\(test\)"):
        check_img_size(64, [spec], memory=(need_64 - 1, "test"))
    # measured once at the model's own size, scaled by the pixel count
    assert derivative_bytes(spec, 320)[0] == pytest.approx(4 * derivative_bytes(spec, 160)[0], rel=1e-6)


def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return str(path)


def test_two_entries_with_one_name_are_an_error_naming_both(tmp_path, capsys):
    path = _yaml(tmp_path, "models:\n  - {name: mine, arch: test_resnet}\n  - {name: mine, arch: test_vit}\n")
    assert main(["catalog", "validate", path]) == 2
    err = capsys.readouterr().err
    assert f"model 'mine' is defined twice, by {path} models[0] and {path} models[1]" in err
    assert main(["eval", "-m", path, "-d", "sample-test", "-r", str(tmp_path / "r"), "--dry-run"]) == 2
    assert "defined twice" in capsys.readouterr().err


def test_a_user_entry_may_not_shadow_a_built_in_model(tmp_path, capsys):
    path = _yaml(tmp_path, f"models:\n  - {{name: {MODEL}, arch: test_vit}}\n")
    assert main(["catalog", "validate", path]) == 2
    err = capsys.readouterr().err
    assert f"{path} models[0]: '{MODEL}' is the name of a built-in model (arch 'test_resnet'" in err
    assert "gives arch 'test_vit'" in err
    # the same name with other settings, selected next to the built-in one: both sources named, in either order
    other = _yaml(tmp_path, f"models:\n  - {{name: {MODEL}, img_size: 96}}\n")
    for models in ([other, MODEL], [MODEL, other]):
        args = ["eval", "-d", "sample-test", "-r", str(tmp_path / "r"), "--dry-run"]
        for m in models:
            args += ["-m", m]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"two different models are named '{MODEL}'" in err and f"-m {other}" in err and f"-m {MODEL}" in err
    assert catalog.load_catalog_file(other)[0].img_size == 96  # overriding a built-in's settings stays allowed
