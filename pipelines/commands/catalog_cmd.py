"""``lee catalog``: list and validate model catalogs, list datasets.

Examples::

    lee catalog ls 'resnet50*' --exclude '*gluon*'
    lee catalog ls resnet50            # a bare arch lists its tags (resnet50.*); old timm names resolve
    lee catalog ls --catalog paper
    lee catalog validate my_models.yaml
    lee catalog datasets
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import catalog
from pipelines.commands.args import add_catalog
from pipelines.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lee catalog ls|validate|datasets``."""
    parser = subparsers.add_parser(
        "catalog",
        help="list and validate model catalogs and datasets",
        description="List and validate what the evaluation can run on.",
        epilog="examples:\n  lee catalog ls 'vit_*' --catalog paper\n  lee catalog validate models.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="catalog_command", metavar="SUBCOMMAND", required=True)

    ls = sub.add_parser("ls", help="list models (fnmatch PATTERN)")
    ls.add_argument("pattern", nargs="*", metavar="PATTERN", help="fnmatch pattern(s) on the model name")
    add_catalog(
        ls, help=f"built-in catalog ({', '.join(catalog.list_catalogs())}) or a catalog file (default: all; repeatable)"
    )
    ls.add_argument("--exclude", action="append", default=[], metavar="PAT", help="drop names matching PAT")
    ls.set_defaults(func=cmd_ls)

    validate = sub.add_parser("validate", help="validate a model or dataset catalog file")
    validate.add_argument("file", metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    datasets = sub.add_parser("datasets", help="list the built-in datasets")
    datasets.set_defaults(func=cmd_datasets)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def cmd_ls(args: argparse.Namespace) -> int:
    """Print name, family, params_m, top1, img_size and source of the matching models.

    fnmatch patterns filter the catalog; a plain name that is not a catalog name resolves through the
    catalog's lookup (a deprecated timm name -> its current name, a bare arch -> all its tags). A plain
    name that resolves to nothing is reported with close matches (exit 1).
    """
    try:
        names = args.catalog or ["all"]
        pool = [s for name in names for s in catalog.list_models(None, args.exclude or None, catalog=name)]
        keep: set[str] = set()
        unknown = []
        for pat in args.pattern:
            found = [s.name for s in pool if fnmatch.fnmatchcase(s.name, pat)]
            if not found and not _is_pattern(pat):
                found = catalog.names_for(pat, pool)
                if not found:
                    unknown.append(pat)
            keep.update(found)
    except catalog.CatalogError as exc:
        raise UsageError(str(exc)) from None
    specs = [s for s in pool if s.name in keep] if args.pattern else pool
    for name in unknown:
        where = "catalog " + repr(", ".join(args.catalog or ["all"]))
        print(f"lee: error: {catalog.unknown_model_error(name, pool, where)}", file=sys.stderr)
    if unknown and not specs:
        return 1
    rows = [[s.name, _fmt(s.family), _fmt(s.params_m), _fmt(s.top1), _fmt(s.img_size), s.source] for s in specs]
    header = ["name", "family", "params_m", "top1", "img_size", "source"]
    if any(s.checkpoint for s in specs):  # file models: which file (a folder or glob entry lists one per file)
        rows = [r + [_fmt(s.checkpoint)] for r, s in zip(rows, specs, strict=True)]
        header.append("checkpoint")
    print(_table(header, rows))
    print(f"({len(specs)} models)")
    return 1 if unknown else 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Load a catalog file with full validation; print ``ok: N models`` (or datasets)."""
    path = Path(args.file)
    try:
        if path.suffix in (".yaml", ".yml") and "datasets" in _top_keys(path):
            specs, _ = catalog.load_dataset_file(path)
            print(f"ok: {len(specs)} datasets")
        else:
            specs = catalog.load_catalog_file(path)
            checked = 0
            for spec in specs:  # every checkpoint exists, loads safely and fits its architecture
                if spec.source == "file" and spec.checkpoint:
                    catalog.validate_checkpoint(spec)
                    checked += 1
            print(f"ok: {len(specs)} models" + (f" ({checked} checkpoints load and fit)" if checked else ""))
    except catalog.CatalogError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _top_keys(path: Path) -> set[str]:
    from catalog import read_catalog_file

    try:
        return set(read_catalog_file(path))
    except catalog.CatalogError as exc:
        raise UsageError(str(exc)) from None


def cmd_datasets(args: argparse.Namespace) -> int:
    """Print the built-in datasets."""
    rows = [[d.name, d.role, d.domain, d.format, _fmt(d.n), d.uri] for d in catalog.list_datasets()]
    print(_table(["name", "role", "domain", "format", "n", "uri"], rows))
    return 0
