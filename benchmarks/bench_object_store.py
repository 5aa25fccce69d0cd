"""A tiny sweep's wall time on an ``s3://`` root (moto's S3 server on loopback) against a local root.

    python benchmarks/bench_object_store.py                    # 3 tiny models, 8 images, 2 generators, 32 px
    python benchmarks/bench_object_store.py --models 6 --images 16 --repeats 2

Starts moto's S3 server on a free loopback port (``AWS_ENDPOINT_URL``, dummy credentials), one embedded local
Ray, and runs the same sweep (``pipelines.running.execute.execute``: plan, actors, writes) on a fresh local root and on
a fresh ``s3://`` prefix, alternately, ``--repeats`` times each; then times a ``lee query`` connection and one
summary query on each root. Prints the wall times (best and all runs): the difference is the cost of the
object store (writes, ``runs`` reads, leases) for this sweep.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        import ray
        import s3fs

        from pipelines.analysis.views import connect
        from pipelines.running.execute import execute
        from pipelines.running.plan import plan
        from pipelines.spec.config import SweepConfig

        s3fs.S3FileSystem().mkdir("bench")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        tiny = [
            "test_resnet.r160_in1k",
            "test_vit.r160_in1k",
            "test_convnext.r160_in1k",
            "test_efficientnet.r160_in1k",
            "test_vit2.r160_in1k",
            "test_convnext2.r160_in1k",
        ][: args.models]
        tmp = tempfile.mkdtemp(prefix="lee-bench-os-")
        times: dict[str, list[float]] = {"local": [], "s3": []}
        query: dict[str, list[float]] = {"local": [], "s3": []}
        for rep in range(args.repeats):
            for kind in ("local", "s3"):
                root = f"{tmp}/r{rep}" if kind == "local" else f"s3://bench/r{rep}"
                cfg = SweepConfig(
                    models=tiny,
                    datasets=["sample-test"],
                    generators=["rotate", "translate_x"],
                    images=args.images,
                    img_size=32,
                    output=root,
                    batch_size=8,
                    actors=1,
                )
                t0 = time.perf_counter()
                result = execute(plan(cfg))
                times[kind].append(time.perf_counter() - t0)
                assert all(r["status"] == "done" for r in result.rows), result.rows
                t0 = time.perf_counter()
                con = connect(root, read_only=True)
                con.sql("SELECT model, generator, mean_lee, n FROM lee_summary").fetchall()
                con.close()
                query[kind].append(time.perf_counter() - t0)
        n_units = len(tiny)
        print(
            f"tiny sweep: {n_units} units ({args.images} images, 2 generators, 32 px), one actor, {os.cpu_count()} CPUs"
        )
        for kind in ("local", "s3"):
            print(
                f"  {kind:5s}  sweep {min(times[kind]):6.2f} s (runs: {', '.join(f'{t:.2f}' for t in times[kind])})"
                f"   connect + summary query {min(query[kind]):5.2f} s"
            )
        print(f"  s3 / local sweep: {min(times['s3']) / min(times['local']):.2f}x")
        ray.shutdown()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
