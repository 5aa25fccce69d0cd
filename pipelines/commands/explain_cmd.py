"""``lee explain``: PNG overlays of where in the image, and in which layer, the equivariance error arises."""

from __future__ import annotations

import argparse
import shlex
import sys

from pipelines.commands.args import ExtendList
from pipelines.errors import UsageError
from pipelines.spec.config import WEIGHT_POLICIES

EPILOG = """examples:
  lee explain -m offline -d sample-test --limit 4 -g translate_x,rotate
  lee explain -m offline --weights random -d sample-test --limit 4 -o ./explain-random
  lee explain -m test_vit --img-size 64 --image photo.jpg -g translate_x
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="PNG overlays: where in the image and in which layer the LEE arises (liecore.explain)",
        description="Exact spatial maps of the equivariance error: for each model, image and generator the signed "
        "share of the image's LEE per pixel (every layer's share at each location of its feature map, "
        "resampled to the input grid) over the image, on one colour scale for all models, the "
        "feature-map shares of the layers that carry most of it, and an index page.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-m",
        "--models",
        action=ExtendList,
        metavar="SEL",
        help="catalog names (offline, quickstart, tiny ...), model names or patterns (default quickstart)",
    )
    p.add_argument(
        "-d",
        "--datasets",
        action=ExtendList,
        metavar="NAME",
        help="catalog datasets (default sample-test; ignored with --image)",
    )
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="an image file (repeatable)")
    p.add_argument(
        "-g",
        "--generators",
        action=ExtendList,
        metavar="NAME",
        help="liecore generators, one panel each (default translate_x,rotate)",
    )
    p.add_argument("--limit", type=int, default=4, help="images per dataset (default 4)")
    p.add_argument(
        "--weights",
        choices=WEIGHT_POLICIES,
        default="spec",
        help="weights: each spec's source (default), or random init to compare",
    )
    p.add_argument("--img-size", type=int, help="override every model's input size")
    p.add_argument(
        "--output-kind", choices=("probs", "logits"), default="probs", help="differentiate probs (default) or logits"
    )
    p.add_argument("--top-layers", type=int, default=4, help="layers drawn per image and generator (default 4)")
    p.add_argument("--border", type=int, default=8, help="border band in px for the index page's border share")
    p.add_argument("-o", "--out", default="explain", metavar="DIR", help="output folder (default ./explain)")
    p.add_argument("--device", default=None, help="torch device (default cuda when available)")
    p.set_defaults(func=run)


def _images(args) -> list[tuple[str, object]]:
    import numpy as np
    from PIL import Image

    import catalog

    if args.image:
        out = []
        for path in args.image:
            try:
                with Image.open(path) as im:
                    out.append((path, np.asarray(im.convert("RGB"))))
            except OSError as exc:
                raise UsageError(f"--image {path}: cannot read it: {exc}") from None
        return out
    out = []
    for sel in args.datasets or ["sample-test"]:
        try:
            specs = catalog.load_datasets(sel)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None
        for spec in specs:
            imset = catalog.load_dataset(spec)
            for im in imset.images[: args.limit]:
                out.append((f"{spec.name}/{im.image_id}", im.array))
    if not out:
        raise UsageError("no images selected")
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    import catalog
    import liecore
    from pipelines.analysis import explain_maps as em
    from pipelines.spec.families import activation_layouts, border_share

    if args.limit < 1:
        raise UsageError("--limit must be >= 1")
    gens = args.generators or ["translate_x", "rotate"]
    try:
        liecore.resolve_generators(gens)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        specs = [s for sel in (args.models or ["quickstart"]) for s in catalog.load_models(sel)]
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    if not specs:
        raise UsageError(f"model selection {args.models} matches no model")
    if args.img_size:
        specs = [s.replace(img_size=int(args.img_size)) for s in specs]
    images = _images(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # compute every map first: one colour scale across models needs them all
    results = []
    for spec in specs:
        loaded = catalog.build_model(spec, weights=None if args.weights == "spec" else args.weights, device=device)
        x = loaded.preprocess([a for _, a in images]).to(device)
        mean, std = loaded.data_config["mean"], loaded.data_config["std"]
        expl = {}
        for i in range(x.shape[0]):  # one image at a time: bounded memory on the CPU
            expl_i = liecore.explain_all(
                loaded.model,
                x[i : i + 1],
                gens,
                output=args.output_kind,
                layouts=activation_layouts(loaded.model),
                mean=mean,
                std=std,
            )
            for g, e in expl_i.items():
                expl.setdefault(g, []).append(e)
        results.append((spec, loaded, x.cpu().numpy(), mean, std, expl))
        print(f"{spec.name} ({loaded.weights}): {len(images)} images x {len(gens)} generators", file=sys.stderr)
    vmax = em.robust_vmax([e.image_map.numpy() for *_, expl in results for es in expl.values() for e in es])

    entries = []
    for spec, loaded, xs, mean, std, expl in results:
        tag = f"{spec.name}.{loaded.weights}".replace("/", "_")
        for i, (image_id, _) in enumerate(images):
            safe = image_id.replace("/", "_").replace("\\", "_")
            entry = em.ExplainEntry(spec.name, loaded.weights, image_id, f"{tag}/{safe}.png")
            maps, notes = {}, {}
            for g in gens:
                e = expl[g][i]
                m = e.image_map[0].numpy()
                maps[g] = m
                entry.lee[g] = float(e.lee[0])
                entry.border[g] = float(border_share(m, args.border))
                entry.remainder[g] = float(e.remainder[0])
                notes[g] = f"LEE {entry.lee[g]:.3g} · border {args.border}px {entry.border[g]:.2f}"
                top = e.top_layers(args.top_layers)
                shares = {n: float(v[0]) for n, v in e.layer_shares().items()}
                fig = em.layer_figure(
                    {n: e.layer_maps[n][0].numpy() for n in top},
                    shares,
                    f"{spec.name} ({loaded.weights}) · {image_id} · {g}: top layers",
                )
                rel = f"{tag}/{safe}.{g}.layers.png"
                em.save(fig, out / rel)
                entry.layers[g] = rel
            fig = em.overlay_figure(
                em.display_image(xs[i], mean, std),
                maps,
                vmax,
                f"{spec.name} ({loaded.weights}) · {image_id} · output {args.output_kind}",
                notes,
            )
            em.save(fig, out / entry.overlay)
            entries.append(entry)
    command = "lee explain " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else "lee explain"
    index = em.write_index(out, entries, generators=gens, vmax=vmax, border_px=args.border, command=command)
    print(f"wrote {len(entries)} overlays and {len(entries) * len(gens)} layer figures; open {index}")
    return 0
