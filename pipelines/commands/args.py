"""Flags that several ``lee`` subcommands share, and the one vocabulary they follow.

Not a subcommand: ``COMMAND_MODULES`` does not list it. Every flag that more than one subcommand takes is
added here, so that a name has one meaning (destination, type, choices) everywhere; ``conflicts`` finds a
name that has two, and ``vocabulary_markdown`` writes the table of ``docs/cli.md``. Old spellings stay for
one version as :class:`Deprecated` aliases that print a one-line notice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from pipelines.spec.config import DEFAULT_OUTPUT, INTERPOLATIONS, WEIGHTS_FILTERS

__all__ = [
    "Deprecated",
    "ExtendList",
    "add_catalog",
    "add_datasets",
    "add_derivative_interp",
    "add_generators",
    "add_output_kind",
    "add_results_arguments",
    "add_root",
    "add_stat",
    "add_weights_filter",
    "conflicts",
    "flags",
    "split_list",
    "vocabulary_markdown",
]


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [t.strip() for t in text.split(",") if t.strip()]


class ExtendList(argparse.Action):
    """A repeatable, comma-separated list flag: ``-g a,b -g c`` -> ``["a", "b", "c"]``."""

    def __call__(self, parser, namespace, values, option_string=None):
        cur = getattr(namespace, self.dest) or []
        setattr(namespace, self.dest, cur + split_list(values))


class Deprecated(argparse.Action):
    """An old spelling kept for one version: does what ``inner`` does and prints a one-line notice.

    Its help is hidden; ``flags`` and ``docs/cli.md`` list it with the spelling that replaces it.
    """

    def __init__(self, option_strings, dest, *, new: str, inner: type[argparse.Action] | None = None, **kwargs) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        kwargs["help"] = argparse.SUPPRESS
        self.new = new
        self.inner = (inner or argparse._StoreAction)(option_strings, dest, **kwargs)
        super().__init__(
            option_strings,
            dest,
            nargs=self.inner.nargs,
            const=self.inner.const,
            type=self.inner.type,
            choices=self.inner.choices,
            default=kwargs["default"],
            help=argparse.SUPPRESS,
            metavar=self.inner.metavar,
        )

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"lee: warning: {option_string} is deprecated and will be removed in the next version; use {self.new}",
            file=sys.stderr,
        )
        used = list(getattr(namespace, "deprecated_flags", None) or [])
        namespace.deprecated_flags = used + [option_string]
        self.inner(parser, namespace, values, option_string)


def add_root(p, *, default: str | None = DEFAULT_OUTPUT, deprecated: tuple[str, ...] = ()) -> None:
    """``-r/--results URI``: the results root (``deprecated``: old spellings, e.g. ``-o/--output``)."""
    p.add_argument(
        "-r",
        "--results",
        default=default,
        metavar="URI",
        dest="results",
        help=f"results root, any fsspec URI (default {default or DEFAULT_OUTPUT})",
    )
    if deprecated:
        p.add_argument(*deprecated, action=Deprecated, new="-r/--results", dest="results", metavar="URI")


def add_datasets(p, *, help: str = "only these datasets (repeatable, comma-separated; default all)") -> None:
    """``-d/--datasets`` (``--dataset`` alike): catalog datasets."""
    p.add_argument("-d", "--datasets", "--dataset", action=ExtendList, dest="datasets", metavar="NAME", help=help)


def add_generators(p, *, help: str = "only these generators (repeatable, comma-separated; default all)") -> None:
    """``-g/--generators`` (``--generator`` alike): liecore generators."""
    p.add_argument("-g", "--generators", "--generator", action=ExtendList, dest="generators", metavar="NAME", help=help)


def add_catalog(p, *, help: str, default: list[str] | None = None) -> None:
    """``--catalog NAME_OR_FILE``: a catalog, by built-in name or file (repeatable, comma-separated)."""
    p.add_argument("--catalog", action=ExtendList, dest="catalog", default=default, metavar="NAME_OR_FILE", help=help)


def add_output_kind(p, *, default: str | None = None, help: str, deprecated: tuple[str, ...] = ()) -> None:
    """``--output-kind probs|logits``: which network output is differentiated (or shown)."""
    p.add_argument("--output-kind", choices=("probs", "logits"), default=default, dest="output_kind", help=help)
    if deprecated:
        p.add_argument(
            *deprecated, action=Deprecated, new="--output-kind", dest="output_kind", choices=("probs", "logits")
        )


def add_derivative_interp(p, *, default: str | None = None, help: str) -> None:
    """``--derivative-interp cubic|spectral``: liecore's image interpolant of the derivative.

    Not ``--interpolation``, which timm's scripts use for the resize filter (kept as a deprecated alias).
    """
    p.add_argument(
        "--derivative-interp", choices=INTERPOLATIONS, default=default, dest="interpolation", metavar="NAME", help=help
    )
    p.add_argument(
        "--interpolation",
        action=Deprecated,
        new="--derivative-interp",
        dest="interpolation",
        choices=INTERPOLATIONS,
        metavar="NAME",
    )


def add_stat(p, *, help: str) -> None:
    """``--stat lee|mean_abs``: the per-image statistic a summary shows (``mean_abs``: the paper's tables')."""
    p.add_argument("--stat", choices=("lee", "mean_abs"), default=None, dest="stat", help=help)


def add_weights_filter(p) -> None:
    """``--weights-filter pretrained|random|any``: which stored results to use (``--weights`` is what to load)."""
    choices = tuple(WEIGHTS_FILTERS)
    p.add_argument(
        "--weights-filter",
        choices=choices,
        default="pretrained",
        dest="weights",
        help="results of pretrained weights (hub + file, default; falls back to random init, saying "
        "so, when there is nothing else), random (random init), or any (both)",
    )
    p.add_argument("--weights", action=Deprecated, new="--weights-filter", dest="weights", choices=choices)


def add_results_arguments(p: argparse.ArgumentParser) -> None:
    """``--results``, ``--model-rows`` and ``--catalog`` of ``lee sql`` and ``lee query``."""
    add_root(p)
    p.add_argument(
        "--model-rows",
        choices=("results", "all"),
        default="results",
        dest="model_rows",
        help="rows of the `models` metadata table: the models in the results (default) or the whole catalog",
    )
    p.add_argument("--models", action=Deprecated, new="--model-rows", dest="model_rows", choices=("results", "all"))
    add_catalog(
        p,
        default=[],
        help="catalog (name or file) with the metadata (family, top-1, params ...) of models "
        "the built-in catalogs do not know (repeatable)",
    )


def _walk(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prefix} {name}".strip())
        elif action.option_strings and action.dest != "help":
            yield prefix, action


def flags(parser: argparse.ArgumentParser) -> list[dict]:
    """Every option of every subcommand: command, spellings, dest, type, choices, deprecation, help."""
    rows = []
    for command, action in _walk(parser):
        rows.append(
            {
                "command": command,
                "flags": tuple(action.option_strings),
                "dest": action.dest,
                "type": getattr(action.type, "__name__", None) if action.type else None,
                "choices": tuple(action.choices) if action.choices else None,
                "kind": type(action.inner if isinstance(action, Deprecated) else action).__name__,
                "deprecated_for": action.new if isinstance(action, Deprecated) else None,
                "help": action.help if action.help != argparse.SUPPRESS else "",
            }
        )
    return rows


def conflicts(parser: argparse.ArgumentParser) -> list[str]:
    """Flag names that mean two things (another dest, type or choice set) in two subcommands.

    Deprecated spellings are left out: they keep their old meaning for one version and say so when used.
    """
    meanings: dict[str, dict[tuple, list[str]]] = {}
    for row in flags(parser):
        if row["deprecated_for"]:
            continue
        meaning = (row["dest"], row["type"], row["choices"])
        for flag in row["flags"]:
            meanings.setdefault(flag, {}).setdefault(meaning, []).append(row["command"])
    return [
        f"{flag}: "
        + "; ".join(f"dest={m[0]} type={m[1]} choices={m[2]} in {', '.join(cmds)}" for m, cmds in by.items())
        for flag, by in sorted(meanings.items())
        if len(by) > 1
    ]


def vocabulary_markdown(parser: argparse.ArgumentParser) -> str:
    """The table of ``docs/cli.md``: one row per flag spelling, its meaning and the subcommands taking it."""
    by_flag: dict[tuple, list[str]] = {}
    info: dict[tuple, dict] = {}
    for row in flags(parser):
        key = (" / ".join(row["flags"]), row["dest"], row["deprecated_for"] or "")
        by_flag.setdefault(key, []).append(row["command"])
        if key not in info or (row["help"] and not info[key]["help"]):
            info[key] = row  # the first subcommand's wording (eval's, for the sweep flags)
    lines = ["| flag | meaning | values | subcommands |", "|---|---|---|---|"]
    for key in sorted(by_flag, key=lambda k: (bool(k[2]), k[0].lstrip("-").lower())):
        row = info[key]
        values = "`" + "` \\| `".join(row["choices"]) + "`" if row["choices"] else (row["type"] or "")
        if row["kind"] in ("_StoreTrueAction", "BooleanOptionalAction"):
            values = "switch"
        meaning = (
            f"deprecated: use `{row['deprecated_for']}`"
            if row["deprecated_for"]
            else row["help"].replace("|", "\\|").replace("\n", " ")
        )
        cmds = ", ".join(f"`{c}`" for c in dict.fromkeys(by_flag[key]))
        lines.append(f"| `{key[0]}` | {meaning} | {values} | {cmds} |")
    return "\n".join(lines)
