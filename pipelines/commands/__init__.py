"""Subcommands of ``lee``. Each module defines ``register(subparsers)`` that adds its parser(s)
and sets ``func`` (called with the parsed namespace, returning an exit code)."""

COMMAND_MODULES = (
    "pipelines.commands.eval_cmd",
    "pipelines.commands.catalog_cmd",
    "pipelines.commands.submit_cmd",
    "pipelines.commands.reevaluate_cmd",
    "pipelines.commands.zoo_cmd",
    "pipelines.commands.sql_cmd",
    "pipelines.commands.query_cmd",
    "pipelines.commands.report_cmd",
    "pipelines.commands.verify_cmd",
    "pipelines.commands.explain_cmd",
)
