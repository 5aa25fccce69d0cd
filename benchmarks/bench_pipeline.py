"""Throughput of a sweep through the pipeline (Ray actors, Parquet) vs. a plain in-process liecore loop.

    python benchmarks/bench_pipeline.py                      # defaults: 4 small timm models, 224 px, 32 images
    python benchmarks/bench_pipeline.py --img-size 96 --images 16   # a smoke-sized sweep: fixed costs dominate

Both sides do the same work: read and decode the dataset once, build each model (same seeded
weights), apply its preprocessing and compute the LEE of every image for every generator. The
loop runs in this process with torch's default threads (decoding with ``catalog.load_dataset``);
the pipeline runs ``lee eval``'s plan (read + decode on Ray Data) + execute (model actors,
Parquet writes) on a local Ray that is already up (Ray start-up is reported separately, not
counted). Loop and pipeline runs alternate (``--repeats`` pairs), each pair printed with the load
average, so other processes' load falls on both alike. Prints images x generators per second,
models per hour, and the ratio pipeline / loop (plan + execute; the execute-only ratio is printed too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

DEFAULT_MODELS = "resnet18.a1_in1k,convnext_atto.d2_in1k,efficientnet_b0.ra_in1k,deit_tiny_patch16_224.fb_in1k"


def loop(cfg, specs, n_images):
    import catalog
    import liecore

    t0 = time.perf_counter()
    images = [im.array for im in catalog.load_dataset(cfg.datasets[0]).images[:n_images]]
    for spec in specs:
        torch.manual_seed(cfg.seed)
        policy = None if spec.source != "hub" else cfg.weights
        loaded = catalog.build_model(spec, weights=policy, device="cpu")
        mean, std = loaded.data_config["mean"], loaded.data_config["std"]
        for i in range(0, len(images), cfg.batch_size):
            x = loaded.preprocess(images[i : i + cfg.batch_size])
            liecore.lee(loaded.model, x, cfg.generators, output=cfg.output_kind, mean=mean, std=std)
    return time.perf_counter() - t0


def main() -> None:
    from pipelines.running.cluster import init_ray
    from pipelines.running.execute import execute
    from pipelines.running.plan import plan
    from pipelines.spec.config import SweepConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--models", default=DEFAULT_MODELS)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    import liecore

    liecore.tune_malloc()  # as the pipeline's CPU workers do, so the plain loop is timed alike

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SweepConfig(
            models=args.models.split(","),
            datasets=["sample-test"],
            images=args.images,
            img_size=args.img_size,
            batch_size=args.batch_size,
            output=f"{tmp}/r",
            force=True,
            weights="random",
        )
        p = plan(cfg, dry_run=True)
        specs = list(dict.fromkeys(u.model for u in p.units))
        n_images = p.units[0].dataset.n_images
        cfg.generators = list(p.units[0].config["generators"])
        work = len(specs) * n_images * len(cfg.generators)
        print(
            f"workload: {len(specs)} models x {n_images} images x {len(cfg.generators)} generators "
            f"at {args.img_size}px, batch {args.batch_size}; torch threads {torch.get_num_threads()}"
        )

        loop(cfg, specs[:1], 1)  # warm-up (imports, first allocations), not counted
        t0 = time.perf_counter()
        init_ray(None)
        import ray

        t_ray = time.perf_counter() - t0
        ray.get([ray.remote(lambda: 0).remote() for _ in range(4)])  # workers warm
        # Loop and pipeline alternate, so load from other processes falls on both alike; each pair's
        # ratio is printed with the load average around it.
        t_loop, t_pipe, t_exec, t_plan, stats = [], [], [], [], []
        for i in range(args.repeats):
            load0 = os.getloadavg()[0]
            t_loop.append(loop(cfg, specs, n_images))
            t0 = time.perf_counter()
            p = plan(cfg)
            t_plan.append(time.perf_counter() - t0)
            r = execute(p)
            assert not r.failed, r.failed
            t_pipe.append(time.perf_counter() - t0)
            t_exec.append(r.wall_s)
            stats.append(r.rows)
            print(
                f"pair {i + 1}: loop {t_loop[-1]:.2f}s, pipeline {t_pipe[-1]:.2f}s, "
                f"ratio {t_loop[-1] / t_pipe[-1]:.2f} "
                f"(load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
            )
        lo, pi, ex = statistics.median(t_loop), statistics.median(t_pipe), statistics.median(t_exec)
        rows = stats[-1]
        compute = sum(r["compute_s"] or 0 for r in rows)
        wall_units = sum(r["wall_s"] or 0 for r in rows)
        print(f"ray start-up (not counted): {t_ray:.1f}s; actors: {ray.cluster_resources().get('CPU')} CPUs")
        print(f"loop     : {lo:7.2f}s  {work / lo:8.1f} image-generators/s  {len(specs) / lo * 3600:8.0f} models/h")
        print(f"pipeline : {pi:7.2f}s  {work / pi:8.1f} image-generators/s  {len(specs) / pi * 3600:8.0f} models/h")
        print(f"ratio pipeline/loop (throughput): {lo / pi:.2f}  (execute only, without plan/decode: {lo / ex:.2f})")
        print(
            f"pipeline breakdown: plan (read + decode, keys, runs table) {statistics.median(t_plan):.1f}s; "
            f"sum over units of liecore+preprocess {compute:.1f}s, of unit wall (incl. model build, Parquet "
            f"writes) {wall_units:.1f}s, execute wall {ex:.1f}s (the rest: actor start, scheduling)"
        )


if __name__ == "__main__":
    main()
