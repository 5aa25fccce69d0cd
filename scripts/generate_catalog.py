"""Generate the model catalogs from the installed timm and timm's published results.

Writes, under ``catalog/models/``:

- ``all.json``: every pretrained ImageNet-1k classifier (1000 classes) that the installed timm lists,
  with its pretrained config (input size, crop, interpolation, mean/std), family, pretraining data,
  recipe, and the published accuracies of ``catalog/data/results-*.csv`` joined on (model, img_size)
  at the model's default eval size. Also the arch -> default tag map and timm's deprecated names.
- ``tiny.yaml``: timm's tiny ``test_*`` architectures with random weights, for tests.
- ``paper.yaml`` / ``paper-sweep.yaml``: the paper's core models and comparison groups / its whole
  sweep, from ``catalog/data/paper-models.tsv`` (2022 names resolved through timm's own deprecation map).

The generation lives in ``catalog._generate`` (``lee reevaluate`` regenerates ``all`` from it too);
this script only writes the files.

Usage::

    python scripts/generate_catalog.py [--out catalog/models]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's catalog package and data, also when not installed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "catalog" / "models")
    args = parser.parse_args(argv)
    from catalog._generate import generate_catalog_files

    generated = generate_catalog_files()
    args.out.mkdir(parents=True, exist_ok=True)
    for fname, text in generated.files.items():
        (args.out / fname).write_text(text)
    print(generated.summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
