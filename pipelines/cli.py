"""The ``lee`` command line: one console script, one subcommand module each."""

from __future__ import annotations

import argparse
import importlib
import sys

from pipelines.commands import COMMAND_MODULES
from pipelines.errors import UsageError
from pipelines.running.cluster import prepare_auth

__all__ = ["UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lee",
        description="Measure learned equivariance (Lie derivative, LEE) of image models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    prepare_auth()  # RAY_AUTH_MODE=token when a token is found: Ray reads it once, when it is imported
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed (`lee reevaluate --print-cron` echoes it)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"lee: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lee: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
