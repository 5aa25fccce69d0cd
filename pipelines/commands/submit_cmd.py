"""``lee submit`` / ``lee status`` / ``lee logs``: run a sweep as a Ray Job on a cluster and follow it.

``lee submit --address http://HEAD:8265 [--runtime-env runtime_env.yaml] -- <lee eval flags>``
uploads the project (``working_dir``), starts ``python -m pipelines eval <flags>`` on the
cluster and prints the job id. Clusters with token authentication (``RAY_AUTH_MODE=token``)
need the same ``RAY_AUTH_TOKEN`` (or ``~/.ray/auth_token``) on this side.
"""

from __future__ import annotations

import argparse
import os
import shlex
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


def load_runtime_env(path: str | None, working_dir: str) -> dict:
    """Default: the project as ``working_dir`` with build outputs excluded; a YAML file adds to it."""
    env: dict = {"working_dir": working_dir, "excludes": list(EXCLUDES)}
    if path:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise UsageError(f"runtime env file {path!r}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"runtime env file {path!r} must be a mapping")
        if data.get("working_dir") in (".", "./"):
            data["working_dir"] = working_dir
        env.update(data)
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
    argv = list(rest)
    if "://" not in cfg.output and not os.path.isabs(cfg.output):
        argv += ["--output", os.path.abspath(cfg.output)]  # a job's cwd is a temporary copy
        print(f"lee: note: local output {cfg.output!r} sent as {os.path.abspath(cfg.output)!r}; on a "
              f"multi-node cluster use a shared URI (s3://, gs://, NFS)", file=sys.stderr)
    return argv


def submit(args) -> int:
    wd = _project_dir(args.working_dir)
    argv = _eval_argv(args.eval_args or [])
    runtime_env = load_runtime_env(args.runtime_env, wd)
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
