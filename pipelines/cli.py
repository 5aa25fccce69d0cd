"""The ``lee`` command line: one console script, one subcommand module each."""

from __future__ import annotations

import argparse
import importlib
import sys

from pipelines.commands import COMMAND_MODULES


class UsageError(Exception):
    """Bad arguments or input: printed as ``lee: error: ...`` with exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lee",
        description="Measure learned equivariance (Lie derivative, LEE) of image models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command still being written must not break the others
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.cluster import prepare_auth

    prepare_auth()  # RAY_AUTH_MODE=token when a token is found: Ray reads it once, when it is imported
    parser = build_parser()
    args = parser.parse_args(argv)
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
