"""``lee submit``'s checks and runtime_env (a job on a real two-node cluster: ``test_cluster.py``)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from pipelines.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lee(capsys, monkeypatch):
    """``lee ARGS`` run in this process (``pipelines.cli.main``: no interpreter to start, torch and timm already
    imported) with the environment ``env`` (default: this process's); its exit status and output as a
    CompletedProcess. The environment is restored afterwards (``lee`` may set ``RAY_AUTH_MODE``)."""

    def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        from pipelines.cli import main

        before = dict(os.environ)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        monkeypatch.chdir(REPO)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's errors
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os.environ.clear()
            os.environ.update(before)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["lee", *args], code, out, err)

    return run


def test_submit_rejects_bad_arguments_before_submitting(lee):
    r = lee(["submit", "--address", "http://127.0.0.1:9", "--", "-m", "no_such_model_xyz"])
    assert r.returncode == 2 and "no_such_model_xyz" in r.stderr


def test_submit_rejects_an_unknown_dataset_before_contacting_the_server(lee):
    # Nothing listens on port 9: an error about the dataset shows the check ran first.
    r = lee(["submit", "--address", "http://127.0.0.1:9", "--", "-m", "test_resnet.r160_in1k", "-d", "nosuchds"])
    assert r.returncode == 2 and "unknown dataset 'nosuchds'" in r.stderr, r.stderr
    assert "job server" not in r.stderr and "submission" not in r.stderr


def test_submit_says_eval_flags_go_after_dashes(lee):
    r = lee(["submit", "--address", "http://127.0.0.1:9", "-m", "test_resnet.r160_in1k"])
    assert r.returncode == 2
    assert "unrecognized arguments: -m" in r.stderr and "go after `--`" in r.stderr, r.stderr
    assert "-- -m test_resnet.r160_in1k" in r.stderr, r.stderr


def test_default_runtime_env_installs_nothing_and_carries_the_git_revision(tmp_path):
    import tomllib

    from pipelines.commands.submit_cmd import git_revision, load_runtime_env

    rev = git_revision(str(REPO))
    assert rev is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", rev)
    env = load_runtime_env(None, str(REPO), "0123abc-dirty")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert env["working_dir"] == str(REPO) and ".git" in env["excludes"]
    assert set(env) == {"working_dir", "excludes", "env_vars"}  # the cluster's Python as it is: no pip, no uv
    # --pip: the project's dependencies, for a cluster whose Python lacks them (the cluster's Ray is used)
    pip = load_runtime_env(None, str(REPO), None, pip=True)["pip"]
    assert pip["packages"] == [d for d in deps if not d.startswith("ray")]
    assert any(p.startswith("e2cnn") for p in pip["packages"])
    assert env["env_vars"] == {"LEE_GIT_REV": "0123abc-dirty", "PYTHONUNBUFFERED": "1"}
    # Never uploaded: virtualenvs, caches, results, version control.
    assert {".git", ".venv", "venv", ".cache", "lee-results", "*.parquet"} <= set(env["excludes"])
    assert "/out/res" in load_runtime_env(None, str(REPO), None, ["/out/res"])["excludes"]
    # A runtime_env YAML replaces pip (its own list) and adds to env_vars.
    yaml_env = load_runtime_env(str(REPO / "runtime_env.yaml"), str(REPO), "0123abc")
    assert yaml_env["working_dir"] == str(REPO)
    assert yaml_env["env_vars"]["LEE_GIT_REV"] == "0123abc" and len(yaml_env["env_vars"]) > 1
    assert ".venv" in yaml_env["excludes"]  # its excludes add to the defaults

    # runtime_env.yaml lists every dependency but those of the cluster image (torch, torchvision and Ray).
    def names(reqs):
        return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    assert names(deps) - {"torch", "torchvision", "ray"} <= names(yaml_env["pip"]["packages"])


def test_git_revision_marks_modified_checkouts(tmp_path):
    from pipelines.commands.submit_cmd import git_revision

    assert git_revision(str(tmp_path)) is None  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_revision(str(tmp_path)) == head
    (tmp_path / "f.txt").write_text("b")
    assert git_revision(str(tmp_path)) == head + "-dirty"


def test_an_output_root_inside_the_project_is_not_uploaded(tmp_path):
    from pipelines.commands.submit_cmd import _inside

    assert _inside(str(tmp_path / "proj" / "res"), str(tmp_path / "proj")) == "res"
    assert _inside(str(tmp_path / "elsewhere"), str(tmp_path / "proj")) is None
    assert _inside("s3://bucket/lee", str(tmp_path)) is None


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("lee: error: "), r.stderr[-3000:]
    return lines[0]


def test_an_address_nothing_listens_on_is_one_line(tmp_path, lee):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")} | {
        "HOME": str(tmp_path)
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _one_line(lee(["status", "--address", f"http://127.0.0.1:{port}"], env))
    assert "cannot reach the Ray job server" in err and "is the cluster up" in err
    err = _one_line(lee(["logs", "x", "--address", f"http://127.0.0.1:{port}"], env))
    assert "cannot reach the Ray job server" in err


def test_submit_validates_each_sweep_command_with_its_own_parser(lee):
    # reevaluate's own flag (--dry-run) passes; a flag no sweep command has fails naming the command and the flag,
    # before the cluster is contacted (nothing listens on port 9).
    from pipelines.commands.submit_cmd import sweep_argv

    cmd, argv, out = sweep_argv(["--", "reevaluate", "-m", "tiny", "-d", "sample-test", "--dry-run", "-r", "/tmp/x"])
    assert (cmd, argv, out) == (
        "reevaluate",
        ["-m", "tiny", "-d", "sample-test", "--dry-run", "-r", "/tmp/x"],
        "/tmp/x",
    )
    assert sweep_argv(["-m", "test_resnet.r160_in1k", "-r", "/tmp/x"])[0] == "eval"  # today's form: eval
    assert sweep_argv(["eval", "-m", "test_resnet.r160_in1k", "-r", "/tmp/x"])[:2] == (
        "eval",
        ["-m", "test_resnet.r160_in1k", "-r", "/tmp/x"],
    )
    with pytest.raises(UsageError, match=r"bad lee reevaluate flags \(unrecognized arguments: --bogus-flag\)"):
        sweep_argv(["reevaluate", "--bogus-flag"])
    with pytest.raises(UsageError, match="unknown dataset 'nosuchds'"):
        sweep_argv(["reevaluate", "-d", "nosuchds"])
    r = lee(["submit", "--address", "http://127.0.0.1:9", "--", "reevaluate", "--images", "x"])
    assert r.returncode == 2 and "bad lee reevaluate flags" in r.stderr and "--images" in r.stderr, r.stderr
    assert "job server" not in r.stderr


def test_a_config_inside_the_project_is_sent_relative_to_it(tmp_path):
    from pipelines.commands.submit_cmd import sweep_argv

    cfg = REPO / "examples" / "run.yaml"
    cmd, argv, _ = sweep_argv(["reevaluate", "--config", str(cfg), "-r", "/tmp/x"], str(REPO))
    assert argv[-2:] == ["--config", "examples/run.yaml"]  # the job runs from the uploaded copy
    outside = tmp_path / "run.yaml"
    outside.write_text("images: 2\n")
    _, argv, _ = sweep_argv(["reevaluate", "--config", str(outside), "-r", "/tmp/x"], str(REPO))
    assert str(outside) in argv


def test_a_job_whose_supervisor_was_killed_is_one_line(tmp_path):
    from types import SimpleNamespace

    from pipelines.commands.submit_cmd import failure_line, infrastructure_failure

    # Ray's job message when its memory monitor killed the supervisor (its first lines; the rest is a process table)
    oom = (
        "Unexpected error occurred: Task was killed due to the node running low on memory.\n"
        "Memory on the node (IP: 10.0.0.5, ID: 8f2e) where the task (actor ID: 1a, name=JobSupervisor, pid=4242, "
        "memory used=0.41GB) was running was 7.12GB / 7.48GB (0.951872), which exceeds the memory usage threshold "
        "of 0.95. Ray killed this worker (ID: 9c) because it was the most recently scheduled task; ...\n"
        + "\n".join(f"{i}\t0.1\tray::IDLE" for i in range(40))
    )
    info = SimpleNamespace(status="FAILED", message=oom, error_type="JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE")
    line = infrastructure_failure(info)
    assert line == (
        "Ray's memory monitor killed its supervisor (the job's driver) (node memory 7.12GB / 7.48GB = "
        "0.95, above its threshold 0.95)"
    )
    assert "\n" not in failure_line(info)
    died = SimpleNamespace(
        status="FAILED",
        message="Job supervisor actor died: The actor died unexpectedly...",
        error_type="JOB_SUPERVISOR_ACTOR_DIED",
    )
    assert infrastructure_failure(died).startswith("its supervisor (the job's driver) died")
    # the sweep itself failing is not retried
    failed = SimpleNamespace(
        status="FAILED",
        message="Job entrypoint command failed with exit code 1, last available logs ...",
        error_type="JOB_ENTRYPOINT_COMMAND_ERROR",
    )
    assert infrastructure_failure(failed) is None
    assert failure_line(failed).startswith("Job entrypoint command failed with exit code 1")


def test_following_a_job_leaves_out_rays_dump_when_its_supervisor_died():
    """Ray's job manager appends the supervisor's death (its memory monitor's dump: 45 lines and more) to the
    job's log; ``lee submit --wait`` and ``lee logs --follow`` echo the log without it (the one line says why)."""
    import io

    from pipelines.commands.submit_cmd import LogEcho

    dump = (
        "Job supervisor actor died: The actor died unexpectedly before finishing this task.\n"
        "\tclass_name: JobSupervisor\n\tactor_id: 1a\n\tpid: 4242\n"
        "1 worker(s) were killed due to the node running low on memory.\n"
        + "\n".join(f"{i}\t0.1\tray::IDLE" for i in range(40))
    )
    log = "lee: 1/3 units done\nlee: 2/3 units done\n" + dump
    for size in (1, 7, 30, len(log)):  # however the log is cut into chunks
        out = io.StringIO()
        echo = LogEcho(out)
        for i in range(0, len(log), size):
            echo.write(log[i : i + size])
        echo.close()
        assert out.getvalue() == "lee: 1/3 units done\nlee: 2/3 units done\n", size
    out = io.StringIO()
    echo = LogEcho(out)
    echo.write("progress 3/8 Jo")  # an end that could begin a marker is held, then written
    echo.write("b done\n")
    echo.close()
    assert out.getvalue() == "progress 3/8 Job done\n"


def test_ray_2_60s_message_of_a_supervisor_killed_for_memory_is_one_line():
    """The job's message as Ray 2.60's job manager writes it (``Job supervisor actor died: {ActorDiedError}``), the
    error built by Ray's own class from the memory monitor's context (its text as a real kill gave it)."""
    from types import SimpleNamespace

    from ray.core.generated.common_pb2 import ActorDiedErrorContext
    from ray.exceptions import ActorDiedError

    from pipelines.commands.submit_cmd import failure_line

    ctx = ActorDiedErrorContext(
        class_name="JobSupervisor",
        actor_id=bytes.fromhex("1a" * 16),
        pid=4242,
        node_ip_address="127.0.0.1",
        name="_ray_internal_job_actor_raysubmit_X",
        ray_namespace="SUPERVISOR_ACTOR_RAY_NAMESPACE",
        error_message="1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: "
        "127.0.0.1, ID: 9d9d) was 22.27GB used / 23.59GB limit (0.944137)\nOOM kill reason: Memory usage "
        "24075300864B exceeded threshold of 24058705920B (95.0% of 25324953600B limit)\n"
        "Top 10 memory users: PID\tMEM(GB)\tCOMMAND\n" + "\n".join(f"{i}\t0.1\tray::IDLE" for i in range(10)),
    )
    info = SimpleNamespace(
        status="FAILED",
        message=f"Job supervisor actor died: {ActorDiedError(ctx)}",
        error_type="JOB_SUPERVISOR_ACTOR_DIED",
    )
    assert failure_line(info) == (
        "Ray's memory monitor killed its supervisor (the job's driver) (node memory 22.27GB / "
        "23.59GB = 0.94, above its threshold 0.95)"
    )
