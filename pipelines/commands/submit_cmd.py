"""``lee submit`` / ``lee status`` / ``lee logs``: run a sweep as a Ray Job on a cluster and follow it.

``lee submit --address http://HEAD:8265 [--runtime-env runtime_env.yaml] -- <lee eval flags>``
validates the flags (models, datasets, generators...) here, uploads the project
(``working_dir``), starts ``python -m pipelines eval <flags>`` on the cluster and prints the job id.

The job's runtime_env: the project as ``working_dir`` (build outputs and ``.git`` excluded), the
checkout's git revision as ``env_vars.LEE_GIT_REV`` (``-dirty`` if modified; the job's copy has no
``.git``, so the runner records this one), and, without ``--runtime-env``, ``pip``: the project's
dependencies from ``pyproject.toml`` (Ray itself excepted: the cluster's Ray is used). A
``--runtime-env`` YAML replaces the keys it sets (``pip`` included) and adds to ``env_vars``.
Clusters with token authentication (``RAY_AUTH_MODE=token``) need the same ``RAY_AUTH_TOKEN`` (or
``~/.ray/auth_token``) on this side.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pipelines.cli import UsageError

DEFAULT_JOB_ADDRESS = "http://127.0.0.1:8265"
EXCLUDES = [".git", "**/__pycache__", "lee-results", "*.parquet", ".pytest_cache", ".ruff_cache", "*.egg-info"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 60.0  # how long to retry a submission the head refuses because its job agent is not up yet


def _address(args) -> str:
    return args.address or os.environ.get("RAY_JOB_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_JOB_ADDRESS


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise UsageError(f"cannot reach the Ray job server at {address!r}: {type(exc).__name__}: {exc}") from None


def _project_dir(explicit: str | None) -> str:
    if explicit:
        if not Path(explicit, "pipelines").is_dir():
            raise UsageError(f"--working-dir {explicit!r} does not contain the pipelines package")
        return str(Path(explicit).resolve())
    for cand in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (cand / "pipelines").is_dir() and (cand / "pyproject.toml").is_file():
            return str(cand)
    raise UsageError("cannot find the project directory to upload; pass --working-dir")


def git_revision(directory: str) -> str | None:
    """``HEAD`` of the git checkout at ``directory`` (``-dirty`` if tracked files are modified); None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "") if rev else None


def project_requirements(working_dir: str) -> list[str]:
    """The ``[project] dependencies`` of ``<working_dir>/pyproject.toml``, without Ray (the cluster's Ray is used)."""
    path = Path(working_dir, "pyproject.toml")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        deps = tomllib.loads(path.read_text())["project"]["dependencies"]
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"cannot read the project's dependencies from {path}: {exc}; pass --runtime-env") from None
    return [d for d in deps if re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower() != "ray"]


def load_runtime_env(path: str | None, working_dir: str, git_rev: str | None = None) -> dict:
    """The job's runtime_env.

    Default: the project as ``working_dir`` with build outputs excluded, ``pip``: the project's
    dependencies (:func:`project_requirements`), and ``env_vars.LEE_GIT_REV`` = ``git_rev``. A YAML
    file replaces the keys it sets (its ``pip``, or none, instead of the default one) and adds its
    ``env_vars`` (a ``LEE_GIT_REV`` there wins).
    """
    env: dict = {"working_dir": working_dir, "excludes": list(EXCLUDES)}
    env_vars = {"LEE_GIT_REV": git_rev} if git_rev else {}
    if path:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"runtime env file {path!r}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"runtime env file {path!r} must be a mapping")
        if data.get("working_dir") in (".", "./"):
            data["working_dir"] = working_dir
        env_vars.update(data.pop("env_vars", None) or {})
        env.update(data)
    else:
        env["pip"] = {"packages": project_requirements(working_dir), "pip_check": False}
    if env_vars:
        env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    return env


def _eval_argv(rest: list[str]) -> list[str]:
    """Validate the forwarded ``lee eval`` flags here (fail before submitting) and absolutise the output."""
    from pipelines.cli import build_parser
    from pipelines.commands.eval_cmd import config_from_args
    from pipelines.sweep import resolve_models, validate

    rest = [a for a in rest if a != "--"] if rest[:1] == ["--"] else rest
    parser = build_parser()
    try:
        ns = parser.parse_args(["eval", *rest])
    except SystemExit:
        raise UsageError(f"bad lee eval flags: {shlex.join(rest)}") from None
    cfg = config_from_args(ns)
    validate(cfg)
    resolve_models(cfg)
    _check_datasets(cfg.datasets)
    argv = list(rest)
    if "://" not in cfg.output and not os.path.isabs(cfg.output):
        argv += ["--output", os.path.abspath(cfg.output)]  # a job's cwd is a temporary copy
        print(f"lee: note: local output {cfg.output!r} sent as {os.path.abspath(cfg.output)!r}; on a "
              f"multi-node cluster use a shared URI (s3://, gs://, NFS)", file=sys.stderr)
    return argv


def _check_datasets(selection: list[str]) -> None:
    """Dataset names, groups and YAML files resolve (their URIs are the cluster's to read)."""
    import catalog

    if not selection:
        raise UsageError("no datasets selected")
    for sel in selection:
        try:
            catalog.load_datasets(sel)
        except (ValueError, FileNotFoundError) as exc:  # CatalogError is a ValueError
            raise UsageError(str(exc)) from None


def submit(args) -> int:
    wd = _project_dir(args.working_dir)
    argv = _eval_argv(args.eval_args or [])
    runtime_env = load_runtime_env(args.runtime_env, wd, git_revision(wd))
    client = _client(_address(args))
    entrypoint = shlex.join(["python", "-m", "pipelines", "eval", "--no-progress", *argv])
    deadline = time.time() + AGENT_WAIT_S
    while True:
        try:
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=args.job_id)
            break
        except Exception as exc:  # noqa: BLE001
            # A head that has just started answers before its job agent is up ("try again later").
            if "try again later" in str(exc) and time.time() < deadline:
                time.sleep(1.0)
                continue
            raise UsageError(f"job submission to {_address(args)} failed: {type(exc).__name__}: {exc}") from None
    print(job_id)
    if args.wait:
        return _wait(client, job_id, follow=True)
    return 0


def _wait(client, job_id: str, *, follow: bool, poll: float = 1.0, timeout: float | None = None) -> int:
    t0 = time.time()
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        if status in TERMINAL:
            break
        if timeout and time.time() - t0 > timeout:
            print(f"{job_id}: still {status} after {timeout:.0f}s", file=sys.stderr)
            return 3
        time.sleep(poll)
    if follow:
        sys.stdout.write(client.get_job_logs(job_id))
    print(f"{job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def status(args) -> int:
    client = _client(_address(args))
    if args.job_id is None:
        for job in client.list_jobs():
            print(f"{job.submission_id or job.job_id}\t{str(job.status).split('.')[-1]}\t{job.entrypoint}")
        return 0
    try:
        if args.wait:
            return _wait(client, args.job_id, follow=False, timeout=args.timeout)
        info = client.get_job_info(args.job_id)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.job_id}\t{str(info.status).split('.')[-1]}\t{info.message or ''}")
    return 0


def logs(args) -> int:
    client = _client(_address(args))
    try:
        if args.follow:
            import asyncio

            async def tail():
                async for chunk in client.tail_job_logs(args.job_id):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()

            asyncio.run(tail())
        else:
            sys.stdout.write(client.get_job_logs(args.job_id))
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _reject_flags_before_dashes(parser: argparse.ArgumentParser) -> None:
    """Make ``lee submit`` say that `lee eval` flags go after ``--`` when they are given without it.

    (Left alone, argparse's top-level parser answers ``lee submit -m x`` with just "unrecognized
    arguments: -m".) The subcommand parser's ``parse_known_args`` is wrapped: leftovers become its error.
    """
    parse_known_args = parser.parse_known_args

    def parse(args=None, namespace=None):
        ns, extra = parse_known_args(args, namespace)
        if extra:
            stray = shlex.join(extra + list(getattr(ns, "eval_args", None) or []))
            parser.error(
                f"unrecognized arguments: {shlex.join(extra)}; `lee eval` flags go after `--`, e.g. "
                f"lee submit [--address URL] [--runtime-env YAML] -- {stray}"
            )
        return ns, extra

    parser.parse_known_args = parse  # type: ignore[method-assign]


def register(subparsers) -> None:
    addr_help = f"Ray job server (dashboard) address (default $RAY_ADDRESS or {DEFAULT_JOB_ADDRESS})"
    p = subparsers.add_parser(
        "submit",
        help="run a sweep as a Ray Job on a cluster; prints the job id",
        description="Submit `lee eval` as a Ray Job. Everything after `--` is passed to `lee eval` "
                    "(validated here first).",
        epilog="example:\n  lee submit --address http://head:8265 --runtime-env runtime_env.yaml -- "
               "-m paper -o s3://bucket/lee\n  lee status JOB_ID --wait; lee logs JOB_ID --follow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", help=addr_help)
    p.add_argument("--runtime-env", metavar="YAML", help="runtime_env YAML (pip, env_vars, excludes...)")
    p.add_argument("--working-dir", help="project directory to upload (default: this checkout)")
    p.add_argument("--job-id", help="submission id to use (default: generated)")
    p.add_argument("--wait", action="store_true", help="wait for the job, print its logs, exit 0 iff it succeeded")
    p.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- then `lee eval` flags")
    p.set_defaults(func=submit)
    _reject_flags_before_dashes(p)

    s = subparsers.add_parser("status", help="status of a Ray Job (or list the jobs)")
    s.add_argument("job_id", nargs="?")
    s.add_argument("--address", help=addr_help)
    s.add_argument("--wait", action="store_true", help="wait until the job ends; exit 0 iff it succeeded")
    s.add_argument("--timeout", type=float, help="give up waiting after this many seconds (exit 3)")
    s.set_defaults(func=status)

    lg = subparsers.add_parser("logs", help="logs of a Ray Job")
    lg.add_argument("job_id")
    lg.add_argument("--address", help=addr_help)
    lg.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")
    lg.set_defaults(func=logs)
