"""Speed of liecore's LEE and layerwise decomposition (prints ratios; run on purpose).

    python benchmarks/bench_liecore.py [--models resnet18 vit_small_patch16_224] [--size 224]
        [--batches 1 8] [--repeats 5] [--device cpu|cuda]

Random-init models. For each model and batch size it prints

* ``lee / fwd9``: LEE for the paper's 8 generators (one primal + 8 tangent passes, vmapped)
  divided by a plain forward pass over a batch nine times as large (the cost floor);
* ``baseline / lee``: the classic double-backward JVP (two reverse passes per generator,
  one image at a time, as the published implementations do) per image, divided by ours;
* layerwise exact vs stochastic (100 probes) times for one generator.

On the CPU every figure is printed twice: with glibc's default allocator, then after
``liecore.tune_malloc()`` (what ``lee``'s CPU workers run with).

Times are the median of ``--repeats`` runs after one warm-up; ratios come from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import liecore


def timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def double_backward_jvp(f, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """J u by the double-backward trick: two reverse passes (both building a graph, as the
    published code does)."""
    with torch.enable_grad():
        y = f(t)
        v = torch.ones_like(y, requires_grad=True)
        (vj,) = torch.autograd.grad(y, [t], [v], create_graph=True)
        (ju,) = torch.autograd.grad(vj, [v], [u], create_graph=True)
    return ju


def _transformed(x: torch.Tensor, gen: liecore.Generator, t: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` at e^{tA} p (differentiable in the scalar t), colour by e^t."""
    import torch.nn.functional as F

    if gen.is_spatial:
        flow = torch.linalg.matrix_exp(t * gen.homogeneous(dtype=x.dtype, device=x.device))
        grid = F.affine_grid(flow[:2].unsqueeze(0).expand(x.shape[0], 2, 3), list(x.shape), align_corners=True)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    if gen.is_color:
        x = x * torch.exp(t)  # contrast (the paper's tables use contrast only)
    return x


def baseline_lee(model, x, gens, mean, std) -> torch.Tensor:
    """The published recipe: one image at a time, each generator its own forward pass and a
    double-backward JVP in the flow parameter t through the transformation."""
    vals = torch.zeros(x.shape[0], len(gens))
    with liecore.differentiable_mode(model, grad=True):  # eval mode, math attention (2022 timm had no fused kernel)
        for i in range(x.shape[0]):
            _baseline_image(model, x[i : i + 1], gens, vals[i])
    return vals


def _baseline_image(model, xi, gens, out) -> None:
    for j, name in enumerate(gens):
        g = liecore.get_generator(name)
        t = torch.zeros((), requires_grad=True, device=xi.device)
        d = double_backward_jvp(lambda s: torch.softmax(model(_transformed(xi, g, s)), -1), t, torch.ones_like(t))
        out[j] = d.detach().square().mean()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet18", "vit_small_patch16_224"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--baseline-images", type=int, default=2, help="images timed for the slow baseline")
    p.add_argument("--no-layerwise", action="store_true")
    p.add_argument(
        "--no-tune", action="store_true", help="only glibc's default allocator (no liecore.tune_malloc() phase)"
    )
    args = p.parse_args()

    import timm

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gens = liecore.PAPER_GENERATORS
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    print(f"device={dev} torch={torch.__version__} threads={torch.get_num_threads()} size={args.size}")
    models = {name: timm.create_model(name, pretrained=False).eval().to(dev) for name in args.models}
    # glibc's default allocator first, then liecore.tune_malloc() (what lee's CPU workers run
    # with; it cannot be undone within a process, so it comes second)
    phases = ["default", "tuned"] if dev.type == "cpu" and not args.no_tune else ["default"]
    for phase in phases:
        if phase == "tuned":
            print(f"liecore.tune_malloc() -> {liecore.tune_malloc()}")
        for name, model in models.items():
            for b in args.batches:
                x = torch.randn(b, 3, args.size, args.size, device=dev)
                big = x.repeat(9, 1, 1, 1)

                def fwd():
                    with liecore.differentiable_mode(model):
                        model(big)

                t_fwd = timed(fwd, args.repeats, sync)
                t_lee = timed(lambda: liecore.lee(model, x, gens, mean=mean, std=std), args.repeats, sync)
                nb = min(b, args.baseline_images)
                t_base = timed(lambda: baseline_lee(model, x[:nb], gens, mean, std), 1, sync) / nb
                ours_per_image = t_lee / b
                print(
                    f"[malloc {phase}] {name:24s} batch={b:3d}  fwd9x={t_fwd:7.3f}s  lee={t_lee:7.3f}s  "
                    f"lee/fwd9={t_lee / t_fwd:5.2f}  baseline/image={t_base:7.3f}s  ours/image={ours_per_image:7.3f}s  "
                    f"baseline/ours={t_base / ours_per_image:5.1f}x  images/s ours={b / t_lee:6.2f} "
                    f"baseline={1 / t_base:6.2f}",
                    flush=True,
                )
            if not args.no_layerwise and "resnet" in name:
                x = torch.randn(1, 3, args.size, args.size, device=dev)
                t_ex = timed(lambda: liecore.layerwise(model, x, "translate_x", method="exact", chunk_size=16), 1, sync)
                t_st = timed(
                    lambda: liecore.layerwise(model, x, "translate_x", method="stochastic", num_probes=100), 1, sync
                )
                print(
                    f"[malloc {phase}] {name:24s} layerwise batch=1: exact={t_ex:7.2f}s  "
                    f"stochastic(100 probes)={t_st:7.2f}s  stochastic/exact={t_st / t_ex:5.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
