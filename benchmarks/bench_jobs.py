"""A sweep as a Ray Job (``lee submit --wait``) against the same sweep run directly (``lee eval --address``),
on the two-node loopback cluster of the tests (tests/pipelines/loopback.py: two ``ray start`` nodes, one CPU
each, token authentication).

    PYTHONPATH=$PWD python benchmarks/bench_jobs.py               # 3 tiny models x 8 images, 64 px, 2 generators
    PYTHONPATH=$PWD python benchmarks/bench_jobs.py --repeats 5 --pip   # the job also gets `--pip`

Each side is timed from the start of its ``lee`` process to its end, as a user waits for it: the
submitting side's checks and the job's own start-up count. First one direct run and one job are run
and not counted (warm: the cluster's workers started, the job's ``working_dir`` uploaded and unpacked
on each node); then ``--repeats`` pairs, alternating which goes first, each writing a fresh output root.
Prints every pair with the load average, the job's overhead parts (upload size), and the ratio
job / direct (median and each pair).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pipelines.loopback import start_cluster, user_env  # noqa: E402

MODELS = "test_resnet.r160_in1k,test_vit.r160_in1k,test_convnext.r160_in1k"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "pipelines", *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"lee {' '.join(argv[:3])} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return dt, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="counted direct/job pairs (default 3)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--pip", action="store_true", help="submit with --pip (pyproject's dependencies in a virtualenv)")
    args = ap.parse_args()

    sweep = [
        "-m",
        MODELS,
        "-d",
        "sample-test",
        "-n",
        str(args.images),
        "--img-size",
        str(args.img_size),
        "-g",
        "translate_x,rotate",
        "--weights",
        "random",
    ]
    print(f"starting the two-node loopback cluster (load {os.getloadavg()[0]:.1f}) ...", flush=True)
    cluster = start_cluster()
    tmp = tempfile.mkdtemp(prefix="bench-jobs-")
    env = user_env(cluster.token, tmp)
    env.setdefault("HF_HUB_OFFLINE", "1")
    n = iter(range(10_000))

    def direct() -> float:
        dt, r = timed(["eval", "--address", cluster.gcs, *sweep, "-r", f"{tmp}/direct-{next(n)}"], env)
        assert " computed" in r.stdout, r.stdout
        return dt

    def job() -> float:
        dt, r = timed(
            [
                "submit",
                "--address",
                cluster.address,
                *(["--pip"] if args.pip else []),
                "--wait",
                "--",
                *sweep,
                "-r",
                f"{tmp}/job-{next(n)}",
            ],
            env,
        )
        assert "SUCCEEDED" in r.stdout, r.stdout[-2000:]
        return dt

    try:
        print(f"warm-up (not counted): direct {direct():.1f}s, first job {job():.1f}s", flush=True)
        pairs = []
        for i in range(args.repeats):
            load = os.getloadavg()[0]
            if i % 2 == 0:
                d, j = direct(), job()
            else:
                j, d = job(), direct()
            pairs.append((d, j))
            print(f"pair {i + 1}: direct {d:.1f}s, job {j:.1f}s, job/direct {j / d:.2f}x (load {load:.1f})", flush=True)
        ratios = [j / d for d, j in pairs]
        print(
            f"\njob / direct over {len(pairs)} warm pairs: median {statistics.median(ratios):.2f}x "
            f"(each: {', '.join(f'{r:.2f}x' for r in ratios)}); direct median "
            f"{statistics.median(d for d, _ in pairs):.1f}s, job median {statistics.median(j for _, j in pairs):.1f}s; "
            f"{os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.1f}"
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
