"""Wall time of ``lee zoo train`` per preset, from scratch (fresh output folder, no cached model).

    python benchmarks/bench_zoo.py                      # small, then full (into one temp folder)
    python benchmarks/bench_zoo.py --preset small --threads 2

``full`` reuses the models ``small`` trained (same configs, same keys), so the full line also reports the
time it would take alone (small + full). Budgets: small well under 5 minutes (CI), full under 30 minutes
on two CPU cores. Timings on a shared machine are pessimistic.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=("small", "full"), help="presets in order (default both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="output folder (default: a fresh temp folder)")
    args = ap.parse_args()
    from pipelines.zoo import preset, train_zoo

    out = args.out or tempfile.mkdtemp(prefix="bench-zoo-")
    total = 0.0
    for name in args.preset or ["small", "full"]:
        t0 = time.perf_counter()
        res = train_zoo(preset(name), out, preset=name, threads=args.threads, log=lambda s: print(s, flush=True))
        wall = time.perf_counter() - t0
        total += wall
        trained = [m for m in res.models if not m.cached]
        per = {m.config.family: 0.0 for m in trained}
        for m in trained:
            per[m.config.family] += m.meta["train_wall_s"]
        print(
            f"preset {name}: {len(res.models)} models, {len(trained)} trained in {wall:.1f} s wall "
            f"(cumulative {total:.1f} s); per family: " + ", ".join(f"{k} {v:.0f} s" for k, v in per.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
