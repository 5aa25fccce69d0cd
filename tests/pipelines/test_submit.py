"""``lee submit`` / ``status`` / ``logs`` against a real Ray head started on loopback by the test."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipelines.store import Store

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_head():
    """`ray start --head --block` on 127.0.0.1 with token auth, in its own process group and temp dir."""
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Unix socket paths live under it
    port, dash = _free_port(), _free_port()
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         "--num-cpus=2", f"--temp-dir={temp}", "--object-store-memory=200000000", "--disable-usage-stats",
         # not the default 52365: the session's local Ray (other tests) may hold it, and then this head has no job agent
         f"--dashboard-agent-listen-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            r = subprocess.run([sys.executable, "-m", "pipelines", "status", "--address", address],
                               env=env, capture_output=True, text=True)
            if r.returncode == 0:
                break
            assert head.poll() is None, "ray head exited"
            time.sleep(1)
        else:
            pytest.fail(f"job server at {address} did not come up: {r.stderr[-2000:]}")
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        try:
            os.killpg(head.pid, signal.SIGKILL)  # any stragglers of the group
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


def _lee(args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "pipelines", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_submit_runs_a_job_to_completion_and_results_land(loopback_head, tmp_path):
    address, env = loopback_head
    from pipelines.commands.submit_cmd import git_revision

    out = tmp_path / "results"
    revs = {git_revision(str(REPO))}  # before and after: others may commit meanwhile
    sub = _lee(["submit", "--address", address, "--", "-m", "test_resnet.r160_in1k", "-d", "sample-test",
                "-n", "4", "--img-size", "32", "-g", "translate_x", "-o", str(out)], env)
    revs.add(git_revision(str(REPO)))
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().splitlines()[-1]
    assert job_id
    st = _lee(["status", job_id, "--address", address, "--wait", "--timeout", "200"], env, timeout=260)
    logs = _lee(["logs", job_id, "--address", address], env)
    assert st.returncode == 0, st.stderr + logs.stdout[-3000:]
    assert "1 computed" in logs.stdout, logs.stdout[-3000:]
    runs = Store(str(out)).runs().to_pylist()
    assert [r["status"] for r in runs] == ["done"]
    # The job's copy has no .git: the revision is the one `lee submit` computed here (LEE_GIT_REV).
    assert runs[0]["git_rev"] is not None and runs[0]["git_rev"] in revs
    assert Store(str(out)).read_table("lee").num_rows == 4
    listing = _lee(["status", "--address", address], env)
    assert job_id in listing.stdout and "SUCCEEDED" in listing.stdout


def test_submit_rejects_bad_arguments_before_submitting(tmp_path):
    r = _lee(["submit", "--address", "http://127.0.0.1:9", "--", "-m", "no_such_model_xyz"], dict(os.environ))
    assert r.returncode == 2 and "no_such_model_xyz" in r.stderr


def test_submit_rejects_an_unknown_dataset_before_contacting_the_server():
    # Nothing listens on port 9: an error about the dataset shows the check ran first.
    r = _lee(["submit", "--address", "http://127.0.0.1:9", "--", "-m", "test_resnet.r160_in1k", "-d", "nosuchds"],
             dict(os.environ))
    assert r.returncode == 2 and "unknown dataset 'nosuchds'" in r.stderr, r.stderr
    assert "job server" not in r.stderr and "submission" not in r.stderr


def test_submit_says_eval_flags_go_after_dashes():
    r = _lee(["submit", "--address", "http://127.0.0.1:9", "-m", "test_resnet.r160_in1k"], dict(os.environ))
    assert r.returncode == 2
    assert "unrecognized arguments: -m" in r.stderr and "go after `--`" in r.stderr, r.stderr
    assert "-- -m test_resnet.r160_in1k" in r.stderr, r.stderr


def test_default_runtime_env_installs_the_projects_requirements_and_carries_the_git_revision(tmp_path):
    import tomllib

    from pipelines.commands.submit_cmd import git_revision, load_runtime_env

    rev = git_revision(str(REPO))
    assert rev is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", rev)
    env = load_runtime_env(None, str(REPO), "0123abc-dirty")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert env["working_dir"] == str(REPO) and ".git" in env["excludes"]
    assert env["pip"]["packages"] == [d for d in deps if not d.startswith("ray")]  # the cluster's Ray is used
    assert any(p.startswith("e2cnn") for p in env["pip"]["packages"])
    assert env["env_vars"] == {"LEE_GIT_REV": "0123abc-dirty"}
    # A runtime_env YAML replaces pip (its own list) and adds to env_vars.
    yaml_env = load_runtime_env(str(REPO / "runtime_env.yaml"), str(REPO), "0123abc")
    assert yaml_env["working_dir"] == str(REPO)
    assert yaml_env["env_vars"]["LEE_GIT_REV"] == "0123abc" and len(yaml_env["env_vars"]) > 1
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
