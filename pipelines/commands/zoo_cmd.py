"""``lee zoo train``: train the offline model zoo and register it as the ``zoo`` catalog."""

from __future__ import annotations

import argparse
import sys
import time

from pipelines.commands.args import Deprecated, ExtendList, add_catalog, add_generators, add_root
from pipelines.errors import UsageError

EPILOG = """examples:
  lee zoo train                              # the small preset (CI, a few minutes) into $LEE_CACHE_DIR/zoo
  lee zoo train --preset full                # the whole grid (under 30 minutes on two CPU cores)
  lee zoo train --preset full --only 'zoo-cnn-*' --out ./zoo
  lee zoo train --preset full --dry-run      # list the grid, train nothing
  lee zoo train --seeds 0,1,2                # the small preset over three seeds (seed 0: the same models)
  lee eval -m zoo -d digits -g rotate,translate_x --images 100   # then measure it
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "zoo",
        help="train the offline model zoo (small CNN / E(2)-CNN / ViT / Mixer classifiers on packaged data)",
        description="The model zoo: classifiers trained offline on rotated digits and photo patches built from "
        "data shipped in scikit-learn / scikit-image, registered as file checkpoints in a catalog.",
    )
    sub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    t = sub.add_parser(
        "train",
        help="train a preset of the grid (cached: trained models are reused) and write zoo.yaml",
        description="Train every model of a preset on the CPU (deterministic given the seed; a model whose "
        "checkpoint exists is reused) and write the catalog file zoo.yaml next to the checkpoints. "
        "Without --out it goes to $LEE_CACHE_DIR/zoo, which the catalog name 'zoo' resolves to.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--preset", choices=("small", "full"), default="small", help="grid preset (default small)")
    t.add_argument("--out", metavar="DIR", help="output folder (default $LEE_CACHE_DIR/zoo: the 'zoo' catalog)")
    t.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="train only the models whose name matches (fnmatch; repeatable)",
    )
    t.add_argument(
        "--seeds",
        type=seed_list,
        default=[0],
        metavar="N[,N...]",
        help="train every configuration from each of these seeds (default 0; seed 0's models are the "
        "preset's own, so 0,1,2 reuses them and adds two seeds)",
    )
    t.add_argument("--force", action="store_true", help="retrain models that are already trained")
    t.add_argument("--threads", type=int, default=2, help="torch threads while training (default 2)")
    t.add_argument("--dry-run", action="store_true", help="list the models of the preset and exit")
    t.add_argument("-v", "--verbose", action="store_true", help="one line per epoch")
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (as lee eval; --no-progress: only the final lines)",
    )
    t.set_defaults(func=run_train)
    s = sub.add_parser(
        "summary",
        help="the zoo's results table (test error next to rotation LEE, correlation, augmentation, gaps) as Markdown",
        description="Join the lee rows of a sweep over the zoo with the models' training provenance and print the "
        "README's results section (the paper's Table 1 in miniature).",
    )
    add_root(s, deprecated=("-o", "--output"))
    add_catalog(s, help="zoo catalog name or zoo.yaml path (default zoo)")
    s.add_argument("-m", "--models", action=Deprecated, new="--catalog", inner=ExtendList, dest="catalog")
    s.add_argument("--task", choices=("digits", "patches"), default="digits", help="task whose models to tabulate")
    add_generators(s, help="the generator (one; default rotate)")
    s.set_defaults(func=run_summary)


def seed_list(text: str) -> list[int]:
    """``0,1,2`` -> ``[0, 1, 2]`` (non-negative integers, duplicates dropped)."""
    try:
        seeds = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative integers, e.g. 0,1,2; got {text!r}")
    return list(dict.fromkeys(seeds))


def run_train(args: argparse.Namespace) -> int:
    import catalog
    from pipelines.zoo.grid import preset
    from pipelines.zoo.train import train_zoo

    try:
        configs = preset(args.preset, args.only, seeds=args.seeds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not configs:
        raise UsageError(f"--only {args.only} matches no model of preset {args.preset!r}")
    out = args.out or str(catalog.zoo_dir())
    if args.dry_run:
        for c in configs:
            print(
                f"{c.name:<42} {c.arch:<14} task={c.task} recipe={c.recipe} n={c.train_n or 'all'} "
                f"epochs={c.epochs} pretrain={c.pretrain or '-'}"
            )
        print(f"\n{len(configs)} models (preset {args.preset}, seeds {','.join(map(str, args.seeds))}, output {out})")
        return 0
    t0 = time.perf_counter()
    result = train_zoo(
        configs,
        out,
        force=args.force,
        preset=args.preset,
        threads=args.threads,
        log=(lambda s: None) if args.progress is False else (lambda s: print(s, flush=True)),
        verbose=args.verbose and args.progress is not False,
    )
    trained = sum(not m.cached for m in result.models)
    wall = time.perf_counter() - t0
    print(
        f"\npreset {args.preset}: {len(result.models)} models ({trained} trained, "
        f"{len(result.models) - trained} cached) in {wall:.1f} s wall",
        file=sys.stdout,
    )
    print(f"catalog: {result.catalog}")
    hint = "zoo" if args.out is None else str(result.catalog)
    print(f"next:    lee eval -m {hint} -d digits -g rotate")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    import catalog
    from pipelines.zoo.summary import collect, render_markdown

    generators = args.generators or ["rotate"]
    if len(generators) != 1:
        raise UsageError(f"lee zoo summary tabulates one generator; got {', '.join(generators)}")
    try:
        specs = [s for name in (args.catalog or ["zoo"]) for s in catalog.load_models(name)]
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    print(render_markdown(collect(args.results, specs, generators[0]), args.task, generators[0]))
    return 0
