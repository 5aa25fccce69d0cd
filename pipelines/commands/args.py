"""Flags that several ``lee`` subcommands share (not a subcommand: ``COMMAND_MODULES`` does not list it)."""

from __future__ import annotations

import argparse

from pipelines.config import DEFAULT_OUTPUT

__all__ = ["ExtendList", "add_results_arguments", "split_list"]


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


class ExtendList(argparse.Action):
    """A repeatable, comma-separated list flag: ``-g a,b -g c`` -> ``["a", "b", "c"]``."""

    def __call__(self, parser, namespace, values, option_string=None):
        cur = getattr(namespace, self.dest) or []
        setattr(namespace, self.dest, cur + split_list(values))


def add_results_arguments(p: argparse.ArgumentParser) -> None:
    """``--results``, ``--models`` and ``--catalog`` of ``lee sql`` and ``lee query``."""
    p.add_argument("-r", "--results", default=DEFAULT_OUTPUT, metavar="URI",
                   help=f"results root, any fsspec URI (default {DEFAULT_OUTPUT}, where `lee eval` writes)")
    p.add_argument("--models", choices=("results", "all"), default="results",
                   help="rows of the `models` metadata table: the models in the results (default) or the "
                        "whole catalog")
    p.add_argument("--catalog", action="append", default=[], metavar="FILE",
                   help="catalog file with the metadata (family, top-1, params ...) of models the built-in "
                        "catalogs do not know (repeatable)")
