"""``lee submit`` / ``lee status`` / ``lee logs``: run a sweep command as a Ray Job on a cluster and follow it.

``lee submit --address http://HEAD:8265 [--runtime-env YAML] [--pip] -- [eval|reevaluate] <flags>``
validates the command's flags with that command's own parser (``eval``: models, datasets,
generators...; no command: ``eval``) here, uploads the project's source (``working_dir``), starts
``python -m pipelines <command> <flags>`` on the cluster and prints the job id.

The job's runtime_env: the project's source as ``working_dir`` (never ``.git``, virtualenvs,
caches, build outputs or results roots: :data:`EXCLUDES`, plus the sweep's output root when it lies
in the project), the checkout's git revision as ``env_vars.LEE_GIT_REV`` (``-dirty`` if modified;
the job's copy has no ``.git``, so the runner records this one). Nothing is installed: the job runs
in the cluster's Python (the image has the project's dependencies); ``--pip`` adds ``pip``: the
dependencies of ``pyproject.toml`` (Ray excepted), for a cluster whose Python lacks them. A
``--runtime-env`` YAML replaces the keys it sets and adds to ``env_vars`` and ``excludes``. The job
writes its progress as log lines (``lee logs --follow``).

``--wait`` follows the job; when its supervisor (the driver) is killed by Ray's memory monitor or
lost with its node, one line says so and the job is resubmitted (``--retries``, default 1): done
units are skipped, the interrupted one is redone with its attempt counted.

Token authentication (:mod:`pipelines.running.cluster`): the token is found here (``RAY_AUTH_TOKEN``,
``~/.ray/auth_token``) and ``RAY_AUTH_MODE=token`` set for this process; every failure to reach the
job server or to authenticate is one ``lee: error:`` line naming the fix.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

from pipelines.commands import eval_cmd
from pipelines.errors import UsageError
from pipelines.running.cluster import describe_error, job_client, memory_kill
from pipelines.spec import env, flagcheck

DEFAULT_JOB_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded: version control, virtualenvs, caches, build outputs, results (and the sweep's own
# output root when it lies inside the project: added by submit). Ray also skips what .gitignore lists.
EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    ".env",
    "/env",
    ".tox",
    ".nox",
    ".conda",
    "**/__pycache__",
    "*.pyc",
    ".cache",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    "/build",
    "/dist",
    "lee-results",
    "/results",
    "/reports",
    "*.parquet",
    ".ipynb_checkpoints",
    "node_modules",
    "/wandb",
]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
AGENT_WAIT_S = 60.0  # how long to retry a submission the head refuses because its job agent is not up yet


def _address(args) -> str:
    return args.address or os.environ.get("RAY_JOB_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_JOB_ADDRESS


def _client(address: str):
    import logging

    # Ray's packaging and SDK notices (files skipped by .gitignore, websocket closed) are not for lee's users.
    logging.getLogger("ray").setLevel(logging.ERROR)
    return job_client(address)


def _job_call(address: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the job client; an unknown job id, a lost connection or a refused token
    becomes one :class:`UsageError` line."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # the job server's answer, e.g. "Job ... does not exist"
        if "authentication" in str(exc).lower():
            raise UsageError(describe_error(address, exc)) from None
        raise UsageError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from None
    except Exception as exc:  # noqa: BLE001 - connection and auth errors come in many types
        raise UsageError(describe_error(address, exc)) from None


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
    return env.git_head(directory)


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


def load_runtime_env(
    path: str | None,
    working_dir: str,
    git_rev: str | None = None,
    extra_excludes: list[str] | None = None,
    *,
    pip: bool = False,
) -> dict:
    """The job's runtime_env.

    Default: the project as ``working_dir`` with build outputs and virtualenvs excluded (:data:`EXCLUDES`
    and ``extra_excludes``, e.g. the output root), ``env_vars.LEE_GIT_REV`` = ``git_rev`` and
    ``PYTHONUNBUFFERED=1``, and no ``pip``: the job runs in the cluster's own Python, which has the
    project's dependencies (the image of ``Dockerfile``/``cluster.yaml``), so nothing is installed or
    copied but the source. ``pip=True`` (``lee submit --pip``) adds ``pip``: the project's dependencies
    (:func:`project_requirements`), a virtualenv over the cluster's site-packages that Ray builds once
    per node and list, for clusters whose Python lacks them. A YAML file replaces the keys it sets (its
    ``pip`` included) and adds its ``env_vars`` (a ``LEE_GIT_REV`` there wins) and ``excludes``.
    """
    env: dict = {"working_dir": working_dir, "excludes": list(dict.fromkeys(EXCLUDES + (extra_excludes or [])))}
    env_vars = {"PYTHONUNBUFFERED": "1"}  # the job's log shows progress as it happens
    if git_rev:
        env_vars["LEE_GIT_REV"] = git_rev
    if pip:
        env["pip"] = {"packages": project_requirements(working_dir), "pip_check": False}
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
        if "excludes" in data:  # the defaults (virtualenvs, caches, .git) are never uploaded either
            data["excludes"] = list(dict.fromkeys(env["excludes"] + list(data["excludes"] or [])))
        env.update(data)
    if env_vars:
        env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    return env


SWEEP_COMMANDS = {"eval": "pipelines.commands.eval_cmd", "reevaluate": "pipelines.commands.reevaluate_cmd"}
"""The ``lee`` commands ``lee submit`` runs as a job (``lee submit -- -m tiny`` without one is ``eval``)."""


def sweep_argv(rest: list[str], working_dir: str | None = None) -> tuple[str, list[str], str]:
    """Validate a sweep command's flags here, with that command's own parser (fail before submitting).

    ``rest``: what follows ``--``: ``[eval|reevaluate] FLAGS`` (no command: ``eval``). The flags are
    checked as the command checks them (``eval``: models, datasets, generators...; ``reevaluate``: all
    but the models, which resolve on the cluster against the catalog its timm regenerates), by
    :mod:`pipelines.spec.flagcheck`, which imports no torch, timm or Ray: the job's driver imports them anyway,
    and here they would cost a second start-up (35-45 s on a loaded machine). What needs a model's
    architecture (``--img-size`` against its stride, a checkpoint's tensors) is checked by the driver. A local
    relative output root is made absolute (the job's cwd is a temporary copy); a local ``--config``
    file inside ``working_dir`` is passed relative to it (the job runs from the copy), one outside it
    as an absolute path (the cluster must see it).

    Returns:
        The command, the flags to forward, and the output root (absolute when local).
    """
    import importlib

    rest = [a for a in rest if a != "--"] if rest[:1] == ["--"] else list(rest)
    command = rest[0] if rest[:1] and rest[0] in SWEEP_COMMANDS else "eval"
    flags = rest[1:] if rest[:1] == [command] else rest
    parser = argparse.ArgumentParser(prog="lee")
    importlib.import_module(SWEEP_COMMANDS[command]).register(parser.add_subparsers())
    try:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args([command, *flags])
    except SystemExit:
        why = err.getvalue().strip().splitlines()[-1:] or [""]
        why = why[0].split("error: ", 1)[-1]
        raise UsageError(f"bad lee {command} flags ({why}): {shlex.join(flags)}") from None
    cfg = eval_cmd.config_from_args(ns)
    flagcheck.validate(cfg)
    if command == "eval":
        flagcheck.select_models(cfg)
    _check_datasets(cfg.datasets)
    argv = list(flags)
    if ns.config and "://" not in ns.config:
        inside = _inside(ns.config, working_dir) if working_dir else None
        sent = inside or os.path.abspath(ns.config)
        if sent != ns.config:
            argv += ["--config", sent]
        if not inside:
            print(
                f"lee: note: config {ns.config!r} lies outside the uploaded project: sent as {sent!r}, which "
                "the cluster must see (put it in the project, or on shared storage: s3://, gs://, NFS)",
                file=sys.stderr,
            )
    output = cfg.output
    if "://" not in cfg.output and not os.path.isabs(cfg.output):
        output = os.path.abspath(cfg.output)
        argv += ["--results", output]  # a job's cwd is a temporary copy
        print(
            f"lee: note: local output {cfg.output!r} sent as {output!r}; on a "
            f"multi-node cluster use a shared URI (s3://, gs://, NFS)",
            file=sys.stderr,
        )
    return command, argv, output


def _inside(path: str, directory: str) -> str | None:
    """``path`` relative to ``directory`` when it lies inside it (an exclude pattern), else None."""
    if "://" in path:
        return None
    rel = os.path.relpath(os.path.abspath(path), directory)
    return None if rel == "." or rel.startswith("..") else rel.replace(os.sep, "/")


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
    command, argv, output = sweep_argv(args.eval_args or [], wd)
    inside = _inside(output, wd)
    runtime_env = load_runtime_env(
        args.runtime_env, wd, git_revision(wd), [f"/{inside}"] if inside else None, pip=args.pip
    )
    address = _address(args)
    client = _client(address)
    # Progress: plain log lines (the job's stderr is no terminal), which `lee logs --follow` shows.
    entrypoint = shlex.join(["python", "-m", "pipelines", command, *argv])

    def start(submission_id: str | None) -> str:
        deadline = time.time() + AGENT_WAIT_S
        while True:
            try:
                return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id)
            except Exception as exc:  # noqa: BLE001
                # A head that has just started answers before its job agent is up ("try again later").
                if "try again later" in str(exc) and time.time() < deadline:
                    time.sleep(1.0)
                    continue
                raise UsageError(f"job submission failed: {describe_error(address, exc)}") from None

    job_id = start(args.job_id)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    for retry in range(args.retries + 1):
        # the log has ended: soon terminal; why it failed is said below, in one line
        rc, info = _wait(client, job_id, follow=True, poll=0.25, address=address, explain=False)
        cause = infrastructure_failure(info)
        if rc == 0 or cause is None or retry == args.retries:
            if str(getattr(info, "status", "")).split(".")[-1] == "FAILED" and failure_line(info):
                print(f"lee: job {job_id} failed: {failure_line(info)}", file=sys.stderr, flush=True)
            return rc
        # The supervisor (the job's driver) was killed or lost, not the sweep failing: a new job resumes it
        # (done units are skipped; the one that was running is redone, its attempt counted).
        print(
            f"lee: warning: job {job_id} failed because {cause}; resubmitting it "
            f"(try {retry + 2} of {args.retries + 1})",
            file=sys.stderr,
            flush=True,
        )
        job_id = start(f"{args.job_id}-retry{retry + 1}" if args.job_id else None)
        print(job_id, flush=True)
    return 1


def infrastructure_failure(info) -> str | None:
    """Why a FAILED job failed, in one line, when its supervisor died (Ray's memory monitor, a lost node, a
    signal) rather than its entrypoint exiting non-zero; None otherwise (also for jobs that did not fail)."""
    if info is None or str(getattr(info, "status", "")).split(".")[-1] != "FAILED":
        return None
    message = str(getattr(info, "message", "") or "")
    kind = str(getattr(info, "error_type", "") or "").split(".")[-1]
    low = message.lower()
    usage = memory_kill(message)
    if usage is not None:
        return f"Ray's memory monitor killed its supervisor (the job's driver){usage}"
    if kind in ("JOB_SUPERVISOR_ACTOR_DIED", "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE") or "supervisor actor died" in low:
        why = (
            "its node was lost"
            if "node" in low and ("died" in low or "dead" in low)
            else ("its process was killed or crashed")
        )
        return f"its supervisor (the job's driver) died: {why}"
    return None


def failure_line(info) -> str:
    """A FAILED job's message in one line (Ray's may be a 45-line dump)."""
    cause = infrastructure_failure(info)
    if cause:
        return cause
    message = str(getattr(info, "message", "") or "").strip()
    return message.splitlines()[0][:300] if message else ""


def _wait(
    client,
    job_id: str,
    *,
    follow: bool,
    poll: float = 1.0,
    timeout: float | None = None,
    address: str = "",
    explain: bool = True,
) -> tuple[int, object]:
    """Wait for the job (``follow``: stream its log meanwhile); print ``ID: STATUS`` on stdout (and, with
    ``explain``, on stderr why a failed job failed, in one line). Returns the exit code and the job's info."""
    t0 = time.time()
    if follow:
        _tail(client, job_id, address)
    while True:
        info = _job_call(address, client.get_job_info, job_id)
        status = str(info.status).split(".")[-1]
        if status in TERMINAL:
            break
        if timeout and time.time() - t0 > timeout:
            print(f"{job_id}: still {status} after {timeout:.0f}s")
            return 3, info
        time.sleep(poll)
    print(f"{job_id}: {status}", flush=True)
    if explain and status == "FAILED" and failure_line(info):
        print(f"lee: job {job_id} failed: {failure_line(info)}", file=sys.stderr, flush=True)
    return (0 if status == "SUCCEEDED" else 1), info


RAY_FAILURE_MARKERS = ("Job supervisor actor died: ", "Unexpected error occurred: ")
"""How the messages start that Ray's job manager appends to a job's log when the job's supervisor died (its
memory monitor's dump among them: 45 lines or more); the same text is the job's message, which lee says in
one line (:func:`failure_line`)."""


class LogEcho:
    """Echo a job's log chunks, leaving out what Ray appends when the job's supervisor died (from the first
    :data:`RAY_FAILURE_MARKERS` on: it is the last thing in the log)."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.held = ""  # an end that may be the start of a marker split across two chunks
        self.cut = False

    def write(self, chunk: str) -> None:
        if self.cut:
            return
        text = self.held + chunk
        found = [i for i in (text.find(m) for m in RAY_FAILURE_MARKERS) if i >= 0]
        if found:
            self.cut = True
            text, self.held = text[: min(found)], ""
        else:  # hold back an end that may begin a marker (log chunks end with a newline: nothing is held)
            k = next(
                (
                    k
                    for k in range(min(len(text), max(map(len, RAY_FAILURE_MARKERS)) - 1), 0, -1)
                    if any(m.startswith(text[-k:]) for m in RAY_FAILURE_MARKERS)
                ),
                0,
            )
            text, self.held = (text[:-k], text[-k:]) if k else (text, "")
        if text:
            self.out.write(text)
            self.out.flush()

    def close(self) -> None:
        if self.held and not self.cut:
            self.out.write(self.held)
            self.out.flush()
        self.held = ""


def _tail(client, job_id: str, address: str) -> None:
    """Stream the job's log to stdout until it ends (without Ray's dump when its supervisor died)."""
    import asyncio

    echo = LogEcho()

    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            echo.write(chunk)

    try:
        _job_call(address, asyncio.run, tail())
    finally:
        echo.close()


def status(args) -> int:
    address = _address(args)
    client = _client(address)
    if args.job_id is None:
        for job in _job_call(address, client.list_jobs):
            print(f"{job.submission_id or job.job_id}\t{str(job.status).split('.')[-1]}\t{job.entrypoint}")
        return 0
    if args.wait:
        return _wait(client, args.job_id, follow=False, timeout=args.timeout, address=address)[0]
    info = _job_call(address, client.get_job_info, args.job_id)
    status = str(info.status).split(".")[-1]
    print(f"{args.job_id}\t{status}\t{failure_line(info) if status == 'FAILED' else (info.message or '')}")
    return 0


def logs(args) -> int:
    address = _address(args)
    client = _client(address)
    if args.follow:
        _tail(client, args.job_id, address)
    else:
        echo = LogEcho()
        echo.write(_job_call(address, client.get_job_logs, args.job_id))
        echo.close()
    return 0


def _reject_flags_before_dashes(parser: argparse.ArgumentParser) -> None:
    """Make ``lee submit`` say that the sweep's flags go after ``--`` when they are given without it.

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
        help="run a sweep (eval or reevaluate) as a Ray Job on a cluster; prints the job id",
        description="Submit `lee eval` or `lee reevaluate` as a Ray Job. Everything after `--` is the command "
        "and its flags (validated here first; no command: eval).",
        epilog="examples:\n  lee submit --address http://head:8265 -- -m paper -r s3://bucket/lee\n"
        "  lee submit --address http://head:8265 --wait -- reevaluate --config run.yaml\n"
        "  lee status JOB_ID --wait; lee logs JOB_ID --follow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", help=addr_help)
    p.add_argument("--runtime-env", metavar="YAML", help="runtime_env YAML (pip, env_vars, excludes...)")
    p.add_argument("--working-dir", help="project directory to upload (default: this checkout)")
    p.add_argument("--job-id", help="submission id to use (default: generated)")
    p.add_argument(
        "--pip",
        action="store_true",
        help="pip-install pyproject.toml's dependencies in the job's environment (clusters whose Python "
        "lacks them; default: the cluster's Python as it is, only the source is uploaded)",
    )
    p.add_argument("--wait", action="store_true", help="wait for the job, print its logs, exit 0 iff it succeeded")
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help="with --wait: resubmit a job whose supervisor was killed (Ray's memory monitor, a lost "
        "node) up to N times; done units are not redone (default 1)",
    )
    p.add_argument(
        "eval_args",
        nargs=argparse.REMAINDER,
        help="-- then a sweep command and its flags: `eval ...` or `reevaluate ...` (no command: eval)",
    )
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
