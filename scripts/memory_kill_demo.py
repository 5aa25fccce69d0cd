"""A real kill by Ray's memory monitor, of a unit's worker and of a job's supervisor, and lee's one-line retry.

    PYTHONPATH=$PWD python scripts/memory_kill_demo.py [--only unit|job]

Starts one loopback Ray node (tests/pipelines/loopback.py: token authentication, one CPU) whose raylet
kills a worker once the machine's memory use, counted as Ray counts it, is above
``RAY_memory_usage_threshold=0.85`` (``RAY_memory_monitor_refresh_ms=50``; other Ray nodes kill at 0.95).
Nothing is faked: when the sweep is at the moment to hit, a separate process (the "hog", no Ray worker)
takes what is left below the threshold and 1 GiB more; Ray's memory monitor then picks one of its
workers and kills it; the hog lets go as soon as that worker is gone, and the retry runs. On a machine
shared with other work, that work may cross the threshold too: Ray then kills at other moments (a Ray
Data task, a second try), and the checks below say so.

* ``unit``: ``lee eval --address`` of one tiny model; the hog starts when the unit's worker is running
  (its placeholder ``runs`` row). lee prints one line, retries the unit, and its ``runs`` row has
  ``attempt`` 2.
* ``job``: ``lee submit --wait --retries 1``; the hog starts when the job's supervisor runs, before
  its driver has started any unit. lee prints one line, resubmits the job, and it succeeds.

Prints lee's own output (stdout and stderr) of each case, and what it checked.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.store.results import Store  # noqa: E402
from tests.pipelines.loopback import running_row, start_cluster, user_env  # noqa: E402

GIB = 1024**3
CEILING = 0.85  # the threshold, at most: other Ray nodes on the machine kill at 0.95 (Ray's default)
ROOM = 4.0  # GiB between the memory in use now and the threshold, at least (what other work may take meanwhile)
OVER = 1.0  # GiB the hog takes beyond the threshold; it lets go as soon as the worker is killed
SWEEP = [
    "-m",
    "test_resnet.r160_in1k",
    "-d",
    "sample-test",
    "-n",
    "48",
    "--img-size",
    "64",
    "-g",
    "translate_x,rotate",
    "--weights",
    "random",
    "--batch-size",
    "4",
]


def node_memory() -> tuple[float, float]:
    """(GiB in use, GiB in all) as Ray's memory monitor counts them: the cgroup's usage less its inactive
    page cache (cgroup v1 or v2) when there is a cgroup, else MemTotal - MemAvailable; over MemTotal."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0]) * 1024
    total = info["MemTotal"]
    for usage, stat, inactive in (
        ("/sys/fs/cgroup/memory/memory.usage_in_bytes", "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
        ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
    ):
        try:
            used = int(Path(usage).read_text())
            fields = dict(line.split() for line in Path(stat).read_text().splitlines())
        except (OSError, ValueError):
            continue
        return (used - int(fields.get(inactive, 0))) / GIB, total / GIB
    return (total - info["MemAvailable"]) / GIB, total / GIB


class Hog:
    """A process (no Ray worker) that takes memory, 256 MiB at a time, up to ``gib``: until Ray's memory monitor
    has killed the worker (the caller stops it then), and never past 1 GiB left on the machine."""

    def __init__(self, gib: float):
        code = (
            "import time\n"
            "def available():\n"
            "    for line in open('/proc/meminfo'):\n"
            "        if line.startswith('MemAvailable:'):\n"
            "            return int(line.split()[1]) * 1024\n"
            "held, chunks = 0, []\n"
            f"while held < {int(gib * GIB)} and available() > {GIB}:\n"
            "    chunks.append(b'\\x01' * (256 << 20))\n"
            "    held += 256 << 20\n"
            "    time.sleep(0.02)\n"
            "time.sleep(600)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code])
        self.started = time.time()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def hog_until_dead(find_pid, done: threading.Event, threshold_gib: float, timeout: float = 300) -> dict:
    """Wait for ``find_pid()`` to name a process, take memory until that process is gone, then let go (give up
    when ``done`` is set: lee has ended)."""
    deadline = time.time() + timeout
    pid = None
    while pid is None and time.time() < deadline and not done.is_set():
        pid = find_pid()
        time.sleep(0.05)
    if pid is None:
        return {"error": "the process to hit was never seen"}
    gib = max(0.0, threshold_gib - node_memory()[0]) + OVER + 2.0  # the page cache it evicts first
    hog = Hog(gib)
    t0 = time.time()
    try:
        while alive(pid) and time.time() < deadline:
            time.sleep(0.02)
    finally:
        hog.stop()
    return {"pid": pid, "killed": not alive(pid), "hog_gib": round(gib, 1), "after_s": round(time.time() - t0, 1)}


def run(argv, env, hit) -> tuple[subprocess.CompletedProcess, dict]:
    found: dict = {}
    done = threading.Event()
    watcher = threading.Thread(target=lambda: found.update(hit(done)))
    watcher.start()
    t0 = time.time()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines", *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
    finally:
        done.set()
        watcher.join()
    found["wall_s"] = round(time.time() - t0, 1)
    return proc, found


def raylet_lines(cluster, needles=("above threshold", "Selected to kill"), limit: int = 2) -> list[str]:
    """The node's own log lines about its memory monitor (the threshold crossed, the worker it picked), for the
    record."""
    out = []
    for path in sorted({p.resolve() for p in Path(cluster.temps[0]).glob("session_*/logs/raylet.out")}):
        lines = path.read_text(errors="replace").splitlines()
        for needle in needles:
            out += [ln[:400] for ln in lines if needle in ln][:limit]
    return out


def show(title: str, proc: subprocess.CompletedProcess, found: dict) -> None:
    print(f"\n===== {title}: exit {proc.returncode}; hit {found}")
    print("----- stdout (last 15 lines)")
    print("\n".join(proc.stdout.splitlines()[-15:]))
    print("----- stderr")
    print(proc.stderr.rstrip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("unit", "job"))
    args = ap.parse_args()
    used, total = node_memory()
    deadline = time.time() + 300
    while (used + ROOM) / total > CEILING:  # a shared machine: never push it near the other nodes' threshold
        if time.time() > deadline:
            print(f"memory in use {used:.1f} / {total:.1f} GiB leaves no room for the demonstration; try later")
            return 2
        time.sleep(5)
        used, total = node_memory()
    threshold = CEILING
    limit = threshold * total
    print(
        f"memory in use {used:.1f} / {total:.1f} GiB; node started with RAY_memory_usage_threshold={threshold} "
        f"({limit:.1f} GiB); the hog takes what is left below it + {OVER} GiB; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    cluster = start_cluster(
        workers=0, node_env={"RAY_memory_usage_threshold": str(threshold), "RAY_memory_monitor_refresh_ms": "50"}
    )
    tmp = tempfile.mkdtemp(prefix="memkill-")
    env = user_env(cluster.token, tmp)
    env.setdefault("HF_HUB_OFFLINE", "1")
    ok = True
    try:
        if args.only in (None, "unit"):
            out = Path(tmp, "unit")
            proc, found = run(
                ["eval", "--address", cluster.gcs, *SWEEP, "-r", str(out)],
                env,
                lambda done: hog_until_dead(lambda: (running_row(out) or {}).get("pid"), done, limit),
            )
            show("a unit's worker", proc, found)
            print("----- Ray's own log of the kill (raylet.out)", *raylet_lines(cluster), sep="\n")
            lines = [ln for ln in proc.stderr.splitlines() if "lee: warning:" in ln]
            runs = Store(str(out)).runs().to_pylist() if (out / "runs").exists() else []
            checks = {
                "exit 0": proc.returncode == 0,
                "one warning line": len(lines) == 1,
                "it names Ray's memory monitor": bool(lines) and "killed by Ray's memory monitor" in lines[0],
                "it names the killed pid": bool(lines) and f"pid {found.get('pid')}" in lines[0],
                "unit done with attempt 2": [(r["status"], r["attempt"]) for r in runs] == [("done", 2)],
                "no Ray dump": "Top 10 memory users" not in proc.stderr + proc.stdout,
            }
            print(f"checks: {checks}")
            ok &= all(checks.values())
        if args.only in (None, "job"):
            out = Path(tmp, "job")
            proc, found = run(
                ["submit", "--address", cluster.address, "--wait", "--retries", "1", "--", *SWEEP, "-r", str(out)],
                env,
                lambda done: hog_until_dead(
                    lambda: next(iter(cluster.processes("ray::JobSupervisor")), None), done, limit
                ),
            )
            show("a job's supervisor", proc, found)
            from pipelines.running.cluster import job_client

            os.environ["RAY_AUTH_TOKEN"] = cluster.token
            jobs = job_client(cluster.address).list_jobs()
            failed = [j for j in jobs if str(j.status).endswith("FAILED")]
            print(
                "----- the killed job's message, as Ray stores it (first 4 lines)",
                *[ln[:600] for j in failed[:1] for ln in str(j.message).splitlines()[:4]],
                sep="\n",
            )
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("lee:")]
            runs = Store(str(out)).runs().to_pylist() if (out / "runs").exists() else []
            checks = {
                "exit 0": proc.returncode == 0,
                "one line, naming Ray's memory monitor and the resubmission": len(lines) == 1
                and (
                    "failed because Ray's memory monitor killed its supervisor" in lines[0]
                    and "resubmitting it (try 2 of 2)" in lines[0]
                ),
                "the resubmitted job succeeded": proc.stdout.rstrip().endswith("SUCCEEDED"),
                "unit done": [r["status"] for r in runs] == ["done"],
                "no Ray dump": "Top 10 memory users" not in proc.stderr,
            }
            print(f"checks: {checks}")
            ok &= all(checks.values())
    finally:
        cluster.stop()
    print("\nALL CHECKS PASSED" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
