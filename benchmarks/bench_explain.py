"""Cost of ``liecore.explain`` against the exact layerwise decomposition (prints ratios; run on purpose).

    python benchmarks/bench_explain.py [--models resnet18 vit_small_patch16_224] [--size 224]
        [--batch 2] [--generator translate_x] [--repeats 3] [--device cpu|cuda]

Random-init timm models. For each model it times, on the same batch and generator,
``liecore.layerwise(method="exact")`` (record, local errors, end-to-end JVP, the vectorized
push-forward of every layer's error) and ``liecore.explain`` (record, local errors,
end-to-end JVP, one forward and backward pass instead of the push-forward), and prints
``explain / layerwise``. The goal is <= 1.5: the backward pass is the only addition to what
both share. It also prints the largest difference between explain's per-layer map sums and
the layerwise shares (over the LEE), which must be at rounding level.

Times are the median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import liecore
from pipelines.spec.families import activation_layouts


def timed(fn, repeats: int, sync) -> tuple[float, object]:
    out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "vit_small_patch16_224"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--generator", default="translate_x")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    print(f"device={dev} size={args.size} batch={args.batch} generator={args.generator} repeats={args.repeats}")
    for name in args.models:
        kw = {"img_size": args.size} if "vit" in name else {}
        model = timm.create_model(name, pretrained=False, **kw).eval().to(dev)
        layouts = activation_layouts(model)
        x = torch.randn(args.batch, 3, args.size, args.size, device=dev)
        t_lw, res = timed(lambda: liecore.layerwise(model, x, args.generator, layouts=layouts), args.repeats, sync)
        t_ex, e = timed(lambda: liecore.explain(model, x, args.generator, layouts=layouts), args.repeats, sync)
        shares = e.layer_shares()
        calls = [r for r in res.records]
        names = list(shares)
        worst = 0.0
        by_index = {e.layers[n][0]: n for n in names}
        for r in calls:
            want = r.share / res.end_to_end
            got = shares[by_index[r.index]] if r.index in by_index else torch.zeros_like(want)
            worst = max(worst, float((got - want).abs().max()))
        print(
            f"{name:26s} layers={len(calls):3d} located={len(e.layer_maps):3d}  layerwise exact={t_lw:8.3f}s  "
            f"explain={t_ex:8.3f}s  explain/layerwise={t_ex / t_lw:6.3f}  max|map sum - share|={worst:.1e}"
        )


if __name__ == "__main__":
    main()
