"""A unit whose worker process dies (Ray's memory monitor, a signal) is retried on a new actor, counted in
``runs.attempt``, and the user sees one line saying what died and why."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import duckdb
import pytest

from pipelines.running.execute import MAX_UNIT_RETRIES, death_pid, death_reason, execute
from pipelines.running.plan import plan
from pipelines.running.progress import Progress
from pipelines.spec.config import SweepConfig
from pipelines.store.results import Store
from tests.pipelines.loopback import running_row

MODELS = ["test_resnet.r160_in1k", "test_vit.r160_in1k"]


def test_rays_memory_monitor_message_becomes_a_few_words():
    from ray.exceptions import OutOfMemoryError

    oom = OutOfMemoryError(
        "Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.5, ID: 90ef) where "
        "the task (actor ID: 1a2b, name=UnitRunner.__init__, pid=91085, memory used=24.99GB) was running was "
        "32.62GB / 33.28GB (0.980175), which exceeds the memory usage threshold of 0.96. Ray killed this worker "
        "(ID: a810) because it was the most recently scheduled task; ...\nTop 10 memory users:\nPID\tMEM(GB)\tCOMMAND\n"
        + "\n".join(f"{i}\t0.1\tray::IDLE" for i in range(30))
    )
    assert death_reason(oom) == (
        "was killed by Ray's memory monitor (node memory 32.62GB / 33.28GB = 0.98, above its threshold 0.96)"
    )
    assert death_pid(oom) == 91085


@pytest.mark.ray
@pytest.mark.slow
def test_a_unit_whose_worker_is_killed_mid_run_is_retried_and_counted_with_one_line(ray_session, tmp_path):
    out = tmp_path / "res"
    cfg = SweepConfig(
        models=list(MODELS),
        datasets=["sample-test"],
        generators=["translate_x", "rotate"],
        images=8,
        img_size=32,
        output=str(out),
        batch_size=2,
        actors=1,
        weights="random",
    )
    p = plan(cfg)
    stream = io.StringIO()
    prog = Progress(len(p.todo), sum(u.dataset.n_images for u in p.todo), stream=stream, plain=True)
    killed: list[dict] = []

    def kill_the_first_unit_that_runs():
        deadline = time.time() + 180
        while time.time() < deadline:
            row = running_row(out, not_pid=os.getpid())
            if row:
                os.kill(row["pid"], signal.SIGKILL)  # as the kernel's OOM killer would
                killed.append(row)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_unit_that_runs)
    killer.start()
    result = execute(p, progress=prog)
    killer.join()
    assert killed, "no unit was seen running"
    lines = [line for line in stream.getvalue().splitlines() if "lee: warning:" in line]
    assert len(lines) == 1, stream.getvalue()
    (line,) = lines
    assert f"the worker pid {killed[0]['pid']}" in line and f"{killed[0]['model']}@sample-test" in line
    assert "exited unexpectedly" in line and f"retrying it (try 2 of {MAX_UNIT_RETRIES + 1})" in line
    assert [r["status"] for r in result.rows] == ["done", "done"]
    runs = {r["model"]: r for r in Store(str(out)).runs().to_pylist()}
    assert runs[killed[0]["model"]]["attempt"] == 2  # the killed start and the retry
    assert runs[killed[0]["model"]]["pid"] != killed[0]["pid"]
    assert {m: r["attempt"] for m, r in runs.items() if m != killed[0]["model"]} == {
        m: 1 for m in MODELS if m != killed[0]["model"]
    }
    counts = duckdb.sql(
        f"""SELECT model, count(*), count(DISTINCT (sample_id, generator))
            FROM read_parquet('{out}/lee/**/*.parquet', hive_partitioning = true) GROUP BY 1"""
    ).fetchall()
    assert sorted(counts) == sorted((m, 16, 16) for m in MODELS)


def test_ray_2_60s_memory_monitor_message_becomes_a_few_words():
    """The message of Ray 2.60's memory monitor, as a real kill on the loopback cluster gave it (abridged: the
    object store's figures and the process table are cut). It lists every worker it killed: none of their pids
    is taken for the unit's (the sweep names the pid of the unit's placeholder row instead)."""
    from ray.exceptions import OutOfMemoryError

    oom = OutOfMemoryError(
        "4 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 192.0.2.2, ID: "
        "9d9d67b8fe8e806068d920d6e2d89d82a85f8515c278e811cae1ef14) was 22.27GB used / 23.59GB limit (0.944137)\n"
        "OOM kill reason: Memory usage 24075300864B exceeded threshold of 24058705920B (95.0% of 25324953600B "
        "limit)\nObject store memory usage: [- objects spillable: 5\n- bytes spillable: 1607935]\n"
        "Ray killed 4 worker(s) based on the killing policy\nConsidered workers: [\n"
        "Selected to kill: (Actor(0f2c7623c41cfa23918241f70d000000): job ID=0d000000, task name=AutoscalingCoordinator:"
        "_AutoscalingCoordinatorActor.__init__, required resources={}, pid=22388, actual memory used=0.11GB)\n"
        "Selected to kill: (Actor(d9909d475f981873cf8b56b60d000000): job ID=0d000000, task name=UnitRunner.__init__, "
        "required resources={CPU: 1}, pid=22750, actual memory used=0.41GB)\n]\n"
        "Top 10 memory users: PID\tMEM(GB)\tCOMMAND\n" + "\n".join(f"{i}\t0.1\tray::IDLE" for i in range(10))
    )
    assert death_reason(oom) == (
        "was killed by Ray's memory monitor (node memory 22.27GB / 23.59GB = 0.94, above its threshold 0.95)"
    )
    assert death_pid(oom) is None
