"""A real two-node, token-authenticated Ray cluster on the loopback address (the README's recipe).

The session's ``cluster`` fixture (tests/conftest.py, tests/pipelines/loopback.py): two ``ray
start --block`` processes on this machine, each its own node (temp dir, ports, one CPU). ``lee eval
--address``, ``lee submit``, ``status`` and ``logs`` run against it as a user would: with the token in
``RAY_AUTH_TOKEN`` and ``RAY_AUTH_MODE`` unset (``lee`` sets it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from pipelines.store.results import Store
from tests.pipelines.loopback import REPO, lee, lee_all, running_row, user_env

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.cluster]

MODELS = ["test_resnet.r160_in1k", "test_vit.r160_in1k", "test_convnext.r160_in1k"]
SWEEP = ["-d", "sample-test", "-n", "4", "--img-size", "32", "-g", "translate_x"]
_lee, _user_env = lee, user_env


def test_sweep_runs_on_both_nodes_with_the_token_found_by_lee(cluster, tmp_path):
    gcs, _, token, nodes = cluster
    out = tmp_path / "res"
    r = _lee(
        ["eval", "--address", gcs, "-m", ",".join(MODELS[:2]), *SWEEP, "-r", str(out)], _user_env(token, str(tmp_path))
    )
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
    follow = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "logs", job_id, "--address", address, "--follow"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
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
    # The token in ~/.ray/auth_token is found too (RAY_AUTH_MODE unset).
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(cluster[2])
    (eval_, eval_s), (status, _), (logs, _), (submit, _), (found, _) = lee_all(  # independent: all at once
        [
            (["eval", "--address", gcs, "-m", MODELS[0], *SWEEP, "-r", str(tmp_path / "r")], no_token),
            (["status", "--address", address], no_token),
            (["logs", "nosuchjob", "--address", address], bad_token),
            (["submit", "--address", address, "--", "-m", MODELS[0], *SWEEP, "-r", str(tmp_path / "r")], bad_token),
            (["status", "nosuchjob", "--address", address], _user_env(None, str(home))),
        ]
    )
    err = _one_error_line(eval_)
    assert eval_s < 60  # not Ray's 20 s of retries per attempt
    assert "requires token authentication and no token was found" in err and "RAY_AUTH_TOKEN" in err
    assert "ray get-auth-token" in err
    err = _one_error_line(status)
    assert "no token was found" in err and "RAY_AUTH_TOKEN" in err
    err = _one_error_line(logs)
    assert "rejected the token from RAY_AUTH_TOKEN" in err
    err = _one_error_line(submit)
    assert "rejected the token from RAY_AUTH_TOKEN" in err
    assert "does not exist" in _one_error_line(found)  # authenticated: the job server answered


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


def test_submit_reevaluate_runs_as_a_job_and_is_resubmitted_when_its_supervisor_is_killed(cluster, tmp_path):
    _, address, token, nodes = cluster
    from pipelines.commands.submit_cmd import git_revision

    env = _user_env(token, str(tmp_path))
    out = tmp_path / "res"
    revs = {git_revision(str(REPO))}
    # the shipped example run.yaml (sent relative to the uploaded project), its costly keys overridden
    argv = [
        sys.executable,
        "-m",
        "pipelines",
        "submit",
        "--address",
        address,
        "--wait",
        "--",
        "reevaluate",
        "--config",
        "examples/run.yaml",
        "-m",
        ",".join(MODELS),
        *SWEEP,
        "--weights",
        "random",
        "-r",
        str(out),
    ]
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # kill the job's supervisor (and so its driver) once a unit runs: Ray's memory monitor would do the same
        _wait_for(lambda: running_row(out) or proc.poll() is not None, 180, "a unit of the job to start")
        sup = cluster.processes("JobSupervisor")
        assert proc.poll() is None and len(sup) == 1, "the job ended before its supervisor could be killed"
        os.kill(sup[0], 9)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    revs.add(git_revision(str(REPO)))
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    warnings = [line for line in stderr.splitlines() if "lee: warning: job" in line]
    assert len(warnings) == 1 and "its supervisor (the job's driver) died" in warnings[0], stderr[-3000:]
    assert "resubmitting it (try 2 of 2)" in warnings[0]
    assert "Traceback" not in stderr
    assert "Job supervisor actor died" not in stdout  # Ray appends it to the job's log; lee says it in one line
    assert not [line for line in stderr.splitlines() if line.startswith("lee: job ")]  # that line, not a second
    ids = [line for line in stdout.splitlines() if re.fullmatch(r"raysubmit_\w+", line)]
    assert len(ids) == 2 and stdout.strip().splitlines()[-1] == f"{ids[1]}: SUCCEEDED", stdout[-3000:]
    runs = Store(str(out)).runs().to_pylist()
    assert len(runs) == 3 and {row["status"] for row in runs} == {"done"}, runs
    assert {row["node_id"] for row in runs} <= set(nodes) and all(row["pid"] > 0 for row in runs)
    assert {row["git_rev"] for row in runs} <= revs and None not in revs
    assert max(row["attempt"] for row in runs) == 2  # the unit the kill interrupted, redone by the second job


def test_losing_the_worker_node_mid_sweep_finishes_on_the_head(cluster, tmp_path):
    gcs, _, token, _ = cluster
    worker = cluster.worker_node
    out = tmp_path / "res"
    models = [*MODELS, "test_efficientnet.r160_in1k"]
    argv = [
        sys.executable,
        "-m",
        "pipelines",
        "eval",
        "--address",
        gcs,
        "-m",
        ",".join(models),
        "-d",
        "sample-test",
        "-n",
        "8",
        "--img-size",
        "32",
        "-g",
        "translate_x,rotate",
        "--weights",
        "random",
        "-r",
        str(out),
    ]
    proc = subprocess.Popen(
        argv, env=_user_env(token, str(tmp_path)), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        row = _wait_for(lambda: running_row(out, node=worker) or proc.poll(), 180, "a unit to start on the worker node")
        assert isinstance(row, dict), "the sweep ended before a unit ran on the worker node"
        cluster.kill_worker()  # every process of the node at once, as a preempted spot instance
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()  # the `cluster` fixture starts a new worker node for any cluster test after this one
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    lost = [line for line in stderr.splitlines() if "lee: warning: the worker" in line]
    assert len(lost) == 1 and row["model"] in lost[0], stderr[-3000:]
    assert re.search(r"lost with its node|its node was lost", lost[0]) and "retrying it (try 2 of 3)" in lost[0]
    assert "Traceback" not in stderr
    runs = Store(str(out)).runs().to_pandas()
    assert len(runs) == len(models) and runs.unit.is_unique and set(runs.status) == {"done"}, runs
    by_model = runs.set_index("model")
    assert by_model.loc[row["model"], "attempt"] == 2  # started on the lost node, finished on the head
    assert by_model.loc[row["model"], "node_id"] != worker
    import duckdb

    counts = duckdb.sql(
        f"""SELECT model, count(*) AS n, count(DISTINCT (sample_id, generator)) AS distinct_n
            FROM read_parquet('{out}/lee/**/*.parquet', hive_partitioning = true) GROUP BY 1"""
    ).fetchall()
    assert sorted(counts) == sorted((m, 8 * 2, 8 * 2) for m in models)  # each unit once: no row twice
