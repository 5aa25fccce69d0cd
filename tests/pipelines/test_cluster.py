"""A real two-node, token-authenticated Ray cluster on the loopback address (the README's recipe).

Two ``ray start --block`` processes on this machine, each its own node (temp dir, ports, one CPU),
started once for this module under their own process groups and stopped by those groups (never
``ray stop``, which would end every Ray on the machine). ``lee eval --address``, ``lee submit``,
``status`` and ``logs`` run against it as a user would: with the token in ``RAY_AUTH_TOKEN`` and
``RAY_AUTH_MODE`` unset (``lee`` sets it).
"""

from __future__ import annotations

import json
import os
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

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
MODELS = ["test_resnet.r160_in1k", "test_vit.r160_in1k", "test_convnext.r160_in1k"]
SWEEP = ["-d", "sample-test", "-n", "4", "--img-size", "32", "-g", "translate_x"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    """Ports of one node's own processes (two nodes on one machine must not share any)."""
    return [f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"]


def _user_env(token: str | None, home: str) -> dict[str, str]:
    """A user's environment: the token (if any) in RAY_AUTH_TOKEN, RAY_AUTH_MODE unset, no ~/.ray."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                                                            "RAY_AUTH_TOKEN_PATH")}
    env["HOME"] = home
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return env


def _lee(args, env, timeout=240):
    return subprocess.run([sys.executable, "-m", "pipelines", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (raylet, GCS, workers)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster():
    """Head + worker node on 127.0.0.1 with token auth. Yields (GCS address, job server URL, token, node ids)."""
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    temps = [tempfile.mkdtemp(prefix="rc", dir="/tmp") for _ in range(2)]  # short: Unix socket paths
    port, dash = _free_port(), _free_port()
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=150000000",
              "--disable-usage-stats"]
    procs = [subprocess.Popen(
        ["ray", "start", "--head", *common, f"--port={port}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
         f"--temp-dir={temps[0]}", *_node_ports()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    gcs, address = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the job server answers once the head is up
            r = _lee(["status", "--address", address], env)
            if r.returncode == 0:
                break
            assert procs[0].poll() is None, "ray head exited"
            time.sleep(1)
        else:
            pytest.fail(f"job server at {address} did not come up: {r.stderr[-2000:]}")
        procs.append(subprocess.Popen(
            ["ray", "start", f"--address={gcs}", *common, f"--temp-dir={temps[1]}", *_node_ports()],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        code = (f"import json, ray; ray.init(address={gcs!r}, log_to_driver=False); "
                "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))")
        nodes: list[str] = []
        while time.time() < deadline and len(nodes) < 2:
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
            nodes = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else []
            assert procs[1].poll() is None, "ray worker node exited"
            if len(nodes) < 2:
                time.sleep(1)
        assert len(nodes) == 2, f"the worker node did not join: {r.stderr[-2000:]}"
        yield gcs, address, token, nodes
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def test_sweep_runs_on_both_nodes_with_the_token_found_by_lee(cluster, tmp_path):
    gcs, _, token, nodes = cluster
    out = tmp_path / "res"
    r = _lee(["eval", "--address", gcs, "-m", ",".join(MODELS[:2]), *SWEEP, "-r", str(out)],
             _user_env(token, str(tmp_path)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 computed" in r.stdout
    # Progress off a terminal: one log line per finished unit, naming the node that ran it.
    assert r.stderr.count(" done: lee ") == 2, r.stderr
    runs = Store(str(out)).runs().to_pylist()
    assert {row["status"] for row in runs} == {"done"}
    assert sorted(row["node_id"] for row in runs) == nodes  # one actor per node (one CPU each, SPREAD)
    assert all(isinstance(row["pid"], int) and row["pid"] > 0 for row in runs)
    assert len({row["hostname"] for row in runs}) == 1  # one machine: the hostname cannot tell the nodes apart
    assert all(row["git_rev"] for row in runs)


def test_job_runs_on_both_nodes_and_its_log_shows_progress_while_it_runs(cluster, tmp_path):
    _, address, token, nodes = cluster
    from pipelines.commands.submit_cmd import git_revision

    env = _user_env(token, str(tmp_path))
    out = tmp_path / "res"
    revs = {git_revision(str(REPO))}  # before and after: others may commit meanwhile
    sub = _lee(["submit", "--address", address, "--", "-m", ",".join(MODELS), *SWEEP, "-r", str(out)], env)
    revs.add(git_revision(str(REPO)))
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().splitlines()[-1]
    follow = subprocess.Popen([sys.executable, "-m", "pipelines", "logs", job_id, "--address", address, "--follow"],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, bufsize=1)
    arrivals = []  # (seconds since start, line) as `lee logs --follow` prints them
    t0 = time.time()
    try:
        for line in follow.stdout:
            arrivals.append((time.time() - t0, line.rstrip("\n")))
        follow.wait(timeout=30)
    finally:
        follow.kill()
    st = _lee(["status", job_id, "--address", address, "--wait", "--timeout", "60"], env)
    log = "\n".join(line for _, line in arrivals)
    assert st.returncode == 0 and st.stdout.strip() == f"{job_id}: SUCCEEDED", st.stdout + st.stderr + log[-3000:]
    first = next(t for t, line in arrivals if " unit 1/3 done: lee " in line)
    summary = next(t for t, line in arrivals if "3 computed" in line)
    assert summary - first > 0.5, log  # the unit's line came while the job still ran, not with the table
    runs = Store(str(out)).runs().to_pylist()
    assert len(runs) == 3 and {row["status"] for row in runs} == {"done"}
    assert {row["node_id"] for row in runs} == set(nodes)  # both nodes did work
    # The job's copy has no .git: the revision is the one `lee submit` computed here (LEE_GIT_REV).
    assert {row["git_rev"] for row in runs} <= revs and None not in revs


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("lee: error: "), r.stderr[-3000:]
    return lines[0]


def test_auth_failures_are_one_error_line_naming_the_fix(cluster, tmp_path):
    gcs, address, _, _ = cluster
    no_token, bad_token = _user_env(None, str(tmp_path)), _user_env("0" * 64, str(tmp_path))
    t0 = time.time()
    err = _one_error_line(_lee(["eval", "--address", gcs, "-m", MODELS[0], *SWEEP, "-r", str(tmp_path / "r")],
                               no_token))
    assert time.time() - t0 < 60  # not Ray's 20 s of retries per attempt
    assert "requires token authentication and no token was found" in err and "RAY_AUTH_TOKEN" in err
    assert "ray get-auth-token" in err
    err = _one_error_line(_lee(["status", "--address", address], no_token))
    assert "no token was found" in err and "RAY_AUTH_TOKEN" in err
    err = _one_error_line(_lee(["logs", "nosuchjob", "--address", address], bad_token))
    assert "rejected the token from RAY_AUTH_TOKEN" in err
    err = _one_error_line(_lee(["submit", "--address", address, "--", "-m", MODELS[0], *SWEEP,
                                "-r", str(tmp_path / "r")], bad_token))
    assert "rejected the token from RAY_AUTH_TOKEN" in err
    # The token in ~/.ray/auth_token is found too (RAY_AUTH_MODE unset).
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(cluster[2])
    r = _lee(["status", "nosuchjob", "--address", address], _user_env(None, str(home)))
    assert "does not exist" in _one_error_line(r)  # authenticated: the job server answered
