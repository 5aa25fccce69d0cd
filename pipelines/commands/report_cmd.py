"""``lee report``: figures (PNG + SVG) and one static HTML page of a results root.

Examples::

    lee report --results ./lee-results --out report/
    lee report -r s3://bucket/lee --out report/ --weights-filter random -d sample-test -g translate_x,rotate
    lee report --out report-logits/ --output-kind logits --derivative-interp spectral
"""

from __future__ import annotations

import argparse
import shlex
import sys

from pipelines.commands.args import (
    add_catalog,
    add_datasets,
    add_derivative_interp,
    add_generators,
    add_output_kind,
    add_root,
    add_weights_filter,
)
from pipelines.errors import UsageError

EPILOG = """examples:
  lee report --out report/                                 # ./lee-results, pretrained weights only
  lee report -r ./res --out report/ --weights-filter random # random-init results (e.g. lee eval -m tiny)
  lee report -r s3://bucket/lee --out rep/ -d imagenet-val -g translate_x,rotate
  lee report --out rep-logits/ --output-kind logits        # LEE of the logits (lee eval --output-kind logits)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lee report``."""
    p = subparsers.add_parser(
        "report",
        help="write the paper's figures (PNG, SVG) and an HTML page with the analyses",
        description="Write figures 1, 4, 5, 6 and 7 of the paper and the named analyses of a results root "
        "into DIR: fig*.png, fig*.svg, tables/*.csv and a self-contained index.html.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_root(p)
    add_catalog(
        p,
        default=[],
        help="catalog (name or file) with the metadata (family, top-1, params ...) of "
        "models the built-in catalogs do not know (repeatable)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    add_weights_filter(p)
    add_output_kind(
        p,
        default="probs",
        deprecated=("--output",),
        help="the output configuration shown: LEE of the class probabilities (probs, default: the "
        "paper's choice) or of the logits (results of lee eval --output-kind logits)",
    )
    add_derivative_interp(
        p,
        default="cubic",
        help="the derivative's image interpolant shown (cubic, default, or spectral; lee eval "
        "--derivative-interp); the alternative metrics have none and are selected by "
        "--output-kind only",
    )
    add_datasets(p)
    add_generators(p)
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the analyses (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.set_defaults(func=run)


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments of ``lee report ARGV`` (for ``lee eval --report``)."""
    parser = argparse.ArgumentParser(prog="lee")
    register(parser.add_subparsers())
    return parser.parse_args(["report", *argv])


def _command(args: argparse.Namespace) -> str:
    """The equivalent command line, for the page."""
    parts = [
        "lee",
        "report",
        "--results",
        args.results,
        "--out",
        str(args.out),
        "--weights-filter",
        args.weights,
        "--output-kind",
        args.output_kind,
        "--derivative-interp",
        args.interpolation,
    ]
    for c in args.catalog:
        parts += ["--catalog", c]
    if args.datasets:
        parts += ["--dataset", ",".join(args.datasets)]
    if args.generators:
        parts += ["--generator", ",".join(args.generators)]
    parts += ["--n-boot", str(args.n_boot), "--seed", str(args.seed), "--level", str(args.level)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Build the report; print each figure's status and the page's path.

    Exit code 0, or 1 when a figure or an analysis raised (the page is written all the same and shows the
    errors); usage errors exit 2 through :class:`pipelines.errors.UsageError`.
    """
    from pipelines.analysis.report import build_report

    if args.n_boot < 1:
        raise UsageError("--n-boot must be at least 1")
    if not 0 < args.level < 1:
        raise UsageError("--level must be between 0 and 1")
    report = build_report(
        args.results,
        args.out,
        weights=args.weights,
        datasets=args.datasets or (),
        generators=args.generators or (),
        n_boot=args.n_boot,
        seed=args.seed,
        level=args.level,
        catalogs=args.catalog,
        command=_command(args),
        output=args.output_kind,
        interpolation=args.interpolation,
    )
    for f in report.figures:
        flag = {"ok": "", "placeholder": "  (placeholder: no data)", "error": "  (FAILED, see the page)"}[f.status]
        print(f"  {f.png}  {f.svg}{flag}")
    failed = [t.name for t in report.tables if t.error]
    print(
        f"{len(report.figures)} figures, {len(report.tables)} tables"
        + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else "")
        + f" -> {report.index}"
    )
    broken = [f.stem for f in report.figures if f.status == "error"] + failed
    if broken:  # everything is written, but a figure or analysis raised: say so in the exit code
        print(
            f"lee report: {len(broken)} figure(s)/table(s) failed: {', '.join(broken)} (errors on the page)",
            file=sys.stderr,
        )
        return 1
    return 0
