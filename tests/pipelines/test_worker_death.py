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

from pipelines.config import SweepConfig
from pipelines.execute import MAX_UNIT_RETRIES, death_pid, death_reason, execute
from pipelines.plan import plan
from pipelines.progress import Progress
from pipelines.store import Store
from tests.pipelines.loopback import running_row

MODELS = ["test_resnet.r160_in1k", "test_vit.r160_in1k"]


def test_rays_memory_monitor_message_becomes_a_few_words():
    from ray.exceptions import OutOfMemoryError

    oom = OutOfMemoryError(
        "Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.5, ID: 90ef) where "
        "the task (actor ID: 1a2b, name=UnitRunner.__init__, pid=91085, memory used=24.99GB) was running was "
        "32.62GB / 33.28GB (0.980175), which exceeds the memory usage threshold of 0.96. Ray killed this worker "
        "(ID: a810) because it was the most recently scheduled task; ...\nTop 10 memory users:\nPID\tMEM(GB)\tCOMMAND\n"
        + "\n".join(f"{i}\t0.1\tray::IDLE" for i in range(30)))
    assert death_reason(oom) == ("was killed by Ray's memory monitor (node memory 32.62GB / 33.28GB = 0.98, above its "
                                 "threshold 0.96)")
    assert death_pid(oom) == 91085


@pytest.mark.ray
@pytest.mark.slow
def test_a_unit_whose_worker_is_killed_mid_run_is_retried_and_counted_with_one_line(ray_session, tmp_path):
    out = tmp_path / "res"
    cfg = SweepConfig(models=list(MODELS), datasets=["sample-test"], generators=["translate_x", "rotate"], images=8,
                      img_size=32, output=str(out), batch_size=2, actors=1, weights="random")
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
        m: 1 for m in MODELS if m != killed[0]["model"]}
    counts = duckdb.sql(
        f"""SELECT model, count(*), count(DISTINCT (sample_id, generator))
            FROM read_parquet('{out}/lee/**/*.parquet', hive_partitioning = true) GROUP BY 1"""
    ).fetchall()
    assert sorted(counts) == sorted((m, 16, 16) for m in MODELS)
