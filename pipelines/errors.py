"""The errors ``pipelines`` raises for bad input: one module below every other, so library code never
imports the command line to raise them; ``pipelines.cli.main`` maps them to ``lee: error: ...``, exit 2."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad arguments or input (a name, a file, a value, an unreachable address): printed as
    ``lee: error: ...`` with exit code 2 and no traceback; nothing has been computed or written."""
