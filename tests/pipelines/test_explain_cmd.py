"""``lee explain``: overlays, layer figures and the index page on a tiny timm model; the docs' commands parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.cli import build_parser, main

DOC = Path(__file__).parents[2] / "docs" / "explain.md"


def test_docs_commands_parse():
    parser = build_parser()
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    lines = [ln for b in blocks for ln in b.splitlines() if ln.strip().startswith("lee ")]
    assert len(lines) >= 5
    for ln in lines:
        parser.parse_args(shlex.split(ln)[1:])


@pytest.mark.slow
def test_lee_explain_writes_overlays_layer_maps_and_an_index(tmp_path, capsys):
    img = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "explain"
    args = [
        "explain",
        "-m",
        "test_resnet.r160_in1k",
        "--img-size",
        "32",
        "--image",
        str(img),
        "--weights",
        "random",
        "-g",
        "translate_x,rotate",
        "--top-layers",
        "2",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    index = (out / "index.html").read_text()
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(pngs) == 3  # one overlay, one layer figure per generator
    for p in pngs:
        assert f'"{p}"' in index  # every figure is linked from the page
        with Image.open(out / p) as im:
            assert im.size[0] > 200 and im.size[1] > 150
    assert "translate_x" in index and "rotate" in index and "LEE" in index
    with pytest.raises(SystemExit):
        main(["explain", "-g", "translate_x", "--limit", "0", "--weights", "nope"])
    assert main(["explain", "-m", "test_resnet.r160_in1k", "--image", str(tmp_path / "missing.png")]) == 2
    assert "cannot read it" in capsys.readouterr().err
