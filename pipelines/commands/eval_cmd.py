"""``lee eval``: run a sweep of models x datasets x metric families into the results store."""

from __future__ import annotations

import argparse
import sys

from pipelines.commands import report_cmd
from pipelines.commands.args import (
    ExtendList,
    add_catalog,
    add_datasets,
    add_derivative_interp,
    add_generators,
    add_output_kind,
    add_root,
    add_stat,
)
from pipelines.errors import UsageError
from pipelines.running.progress import format_table
from pipelines.spec.config import FAMILIES, WEIGHT_POLICIES, SweepConfig, load_yaml

EPILOG = """examples:
  lee eval --limit 8                                   # quickstart models on the sample set, 8 images
  lee eval -m tiny --img-size 64 --limit 16 -r ./res   # timm's tiny test models, small inputs
  lee eval -m 'resnet*' -m vit_base_patch16_224.augreg2_in21k_ft_in1k --metrics lee,alt
  lee eval --config run.yaml --images 50               # YAML base, flags override
  lee eval -m paper --dry-run                          # list the units, compute nothing
  lee eval --catalog zoo -d digits-test                # the trained model zoo (lee zoo train)
  lee eval -m offline --metrics lee,layerwise,alt      # ImageNet-pretrained EfficientNet-Lites, no hub needed
  lee eval --model tf_efficientnet_lite0 --checkpoint lite0.pth --map-keys-by-order   # your own checkpoint
  lee eval --address ray://head:10001 -r s3://bucket/lee   # join a Ray cluster
"""


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep flags (shared by ``eval``, ``submit`` and ``reevaluate``)."""
    what = p.add_argument_group("what to evaluate")
    what.add_argument(
        "-m",
        "--models",
        action=ExtendList,
        metavar="SEL",
        help="catalog names (quickstart, paper, all, tiny), a YAML path, model names or fnmatch "
        "patterns; comma-separated or repeated (default: quickstart)",
    )
    add_catalog(
        what,
        help="every model of a catalog: a name (quickstart, paper, all, tiny, zoo: the trained zoo) "
        "or a catalog YAML file; the same as -m, adding to its list (comma-separated or "
        "repeated)",
    )
    add_datasets(what, help="catalog datasets (default: sample)")
    add_generators(what, help="liecore generators (default: the paper's eight)")
    what.add_argument(
        "--metrics", action=ExtendList, metavar="FAMILY", help=f"metric families: {', '.join(FAMILIES)} (default: lee)"
    )
    what.add_argument("-n", "--images", type=int, help="images per dataset (default: 100, the paper's)")
    what.add_argument("--limit", type=int, help="smoke runs: at most this many images per dataset")
    what.add_argument(
        "--weights",
        choices=WEIGHT_POLICIES,
        help="weights policy (default auto: for hub models the pretrained hub weights, cached or "
        "downloaded; random init only when the hub (HF_ENDPOINT) is unreachable or HF_HUB_OFFLINE "
        "is set and they are not cached, with a warning, recorded per row; file/random models "
        "use their own source; spec: each spec's source; hub: hub weights or fail)",
    )
    ckpt = p.add_argument_group("a checkpoint of your own (any key naming)")
    ckpt.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="evaluate this checkpoint (path, fsspec URI, or package://MODULE/PATH) as one more model; "
        "without -m it is the only one; loaded safely (safetensors or weights_only)",
    )
    ckpt.add_argument("--arch", metavar="NAME", help="timm architecture of --checkpoint (e.g. tf_efficientnet_lite0)")
    ckpt.add_argument(
        "--model",
        metavar="NAME",
        help="as timm's validate.py: with --checkpoint the architecture (as --arch), else one more model (as -m)",
    )
    ckpt.add_argument(
        "--model-name", metavar="NAME", help="name of the checkpoint's model in the results (default ARCH@FILE-STEM)"
    )
    ckpt.add_argument(
        "--map-keys-by-order",
        action="store_true",
        default=None,
        help="pair the checkpoint's tensors with the architecture's by order (only when every shape "
        "matches in order: key_map {by_order: true})",
    )
    ckpt.add_argument(
        "--rename-keys",
        action="append",
        metavar="REGEX=REPL",
        help="rename the checkpoint's keys with re.sub(REGEX, REPL) before loading (repeatable, "
        "applied in order: key_map {rename})",
    )
    what.add_argument("--img-size", type=int, help="override every model's input size (smoke runs)")
    add_output_kind(what, help="differentiate probs (default) or logits")
    add_derivative_interp(what, help="image interpolant of the derivative: cubic (default) or spectral")
    what.add_argument("--layerwise-method", choices=("exact", "stochastic"), help="layerwise method (default exact)")
    what.add_argument(
        "--layerwise-generators",
        action=ExtendList,
        metavar="NAME",
        help="generators of the layerwise family (default: the first generator)",
    )
    what.add_argument("--num-probes", type=int, help="probes of the stochastic layerwise method (default 8)")
    what.add_argument("--alt-metrics", action=ExtendList, metavar="NAME", help="alternative metrics (default: all)")
    what.add_argument("--seed", type=int, help="seed of every unit (default 0)")
    where = p.add_argument_group("where and how")
    add_root(where, default=None, deprecated=("-o", "--output"))
    where.add_argument("--config", metavar="YAML", help="run.yaml with the same keys; flags override it")
    where.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    where.add_argument(
        "--actors", type=int, help="model actors (default: one per GPU, else one per CPU; with --gpus one per model)"
    )
    where.add_argument(
        "--gpus",
        dest="gpus_per_actor",
        type=float,
        metavar="N",
        help="GPUs every actor requests, even if the cluster has none yet (autoscaling GPU "
        "workers from zero); default: num_gpus=1 only if GPUs are present",
    )
    where.add_argument("--batch-size", type=int, help="images per liecore call (default 16; halved on OOM)")
    where.add_argument("--force", action="store_true", default=None, help="recompute units that are already done")


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    data = load_yaml(args.config) if args.config else {}
    base = SweepConfig.from_dict(data, source=args.config) if args.config else SweepConfig()
    overrides = {name: getattr(args, name, None) for name in SweepConfig.field_names()}
    overrides["output"] = getattr(args, "results", None)
    if getattr(args, "catalog", None):
        overrides["models"] = (overrides.get("models") or []) + args.catalog
    model = getattr(args, "model", None)
    if model and (overrides.get("checkpoint") or base.checkpoint):
        if overrides.get("arch") and overrides["arch"] != model:
            raise UsageError(
                f"--model {model!r} and --arch {overrides['arch']!r} name two architectures of --checkpoint: give one"
            )
        overrides["arch"] = model
    elif model:
        overrides["models"] = (overrides.get("models") or []) + [model]
    deprecated = getattr(args, "deprecated_flags", None) or []
    if overrides["output"] in ("probs", "logits") and {"-o", "--output"} & set(deprecated):
        raise UsageError(
            f"--output {overrides['output']} names the results root; for the network output "
            f"differentiated, use --output-kind {overrides['output']}"
        )
    cfg = base.merged(overrides)
    if cfg.checkpoint and overrides.get("models") is None and "models" not in (data or {}):
        cfg.models = []  # --checkpoint alone: that model only, not the default catalog
    return cfg


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="run a sweep (models x datasets x metrics) into the results store",
        description="Evaluate learned equivariance of catalog models on Ray; results go to hive-partitioned "
        "Parquet under --results. Completed units are skipped on rerun (--force redoes them).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sweep_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="list the units (todo / done) and exit")
    p.add_argument(
        "--report",
        metavar="DIR",
        help="after the sweep, write `lee report` of the results root into DIR (figures, tables, "
        "index.html): the pretrained results, or the random-init ones when the root has no others",
    )
    add_stat(
        p,
        help="the statistic of the closing table: lee (the LEE, mean of squares; default) or mean_abs "
        "(mean_c |L_X f(x)_c|, what the paper's end-to-end tables store), named in its header",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default on): a line updated in place on a terminal; off one "
        "(Ray Job logs, cron) a log line per finished unit and every 30 s",
    )
    p.set_defaults(func=run)


def print_units(plan, out=None) -> None:
    from pipelines.running.execute import describe_actors
    from pipelines.running.plan import damage_reason
    from pipelines.running.summary import print_dataset_errors

    out = out or sys.stdout
    todo = {u.key for u in plan.todo}
    rows = [
        {
            "unit": u.key,
            "family": u.family,
            "model": u.model.name,
            "dataset": u.dataset.name,
            "n": u.dataset.n_images,
            "state": "todo" if u.key in todo else "done",
            "prev": damage_reason(plan.damaged[u.key]) if u.key in plan.damaged else plan.status.get(u.key, "-"),
        }
        for u in plan.units
    ]
    print(
        format_table(
            rows,
            [
                ("unit", "unit"),
                ("family", "family"),
                ("model", "model"),
                ("dataset", "dataset"),
                ("n", "images"),
                ("state", "action"),
                ("prev", "stored"),
            ],
        ),
        file=out,
    )
    print(
        f"\n{len(plan.units)} units, {len(plan.todo)} to run, {len(plan.units) - len(plan.todo)} already done "
        f"(output {plan.store.uri})",
        file=out,
    )
    print(describe_actors(plan), file=out)
    print_dataset_errors(plan, out)


def warn_fallbacks(plan) -> None:
    """On stderr, before any work: the models ``--weights auto`` runs on random init, and why."""
    from pipelines.running.plan import fallback_warning

    warning = fallback_warning(plan)
    if warning:
        print(warning, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from pipelines.running.execute import run_plan
    from pipelines.running.plan import plan
    from pipelines.running.summary import print_summary

    cfg = config_from_args(args)
    if args.dry_run:
        p = plan(cfg, check_writable=False, dry_run=True)
        print_units(p)
        warn_fallbacks(p)
        return 0
    p = plan(cfg)
    warn_fallbacks(p)
    result = run_plan(p, show_progress=args.progress)
    print_summary(result, stat=args.stat or "lee")
    rc = 1 if result.failed else 0
    if args.report:
        files = [m for m in cfg.models or [] if m.endswith((".yaml", ".yml", ".json"))]
        rc = max(rc, write_report(p.store.uri, args.report, files))
    print(closing_lines(p.store.uri, args.report))
    return rc


def closing_lines(results: str, report: str | None) -> str:
    """The two lines after the table: what the numbers mean, and where the report is (or how to write it)."""
    meaning = (
        "Lower is more equivariant (0: the output does not change under the infinitesimal transformation); "
        "compare models with each other, and see docs/paper.md before comparing with the paper's numbers."
    )
    if report:
        where = (
            f"Report: {report.rstrip('/')}/index.html (open it in a browser); SQL: lee query -r {results} "
            '"FROM lee_summary"'
        )
    else:
        where = (
            f"Report: none written; `lee report -r {results} --out lee-report` writes one, "
            f'`lee query -r {results} "FROM lee_summary"` queries the numbers.'
        )
    return f"\n{meaning}\n{where}"


def write_report(results: str, out: str, catalogs: list[str] | None = None) -> int:
    """``lee report --results RESULTS --out OUT`` after a sweep: pretrained results, else the random-init ones."""
    from pipelines.analysis.views import connect

    con = connect(results)
    kinds = {w for (w,) in con.execute("SELECT DISTINCT weights FROM runs WHERE status = 'done'").fetchall()}
    weights = "pretrained" if kinds & {"hub", "file"} or not kinds else "random"
    args = report_cmd.parse(
        [
            "--results",
            results,
            "--out",
            out,
            "--weights-filter",
            weights,
            *[a for c in catalogs or [] for a in ("--catalog", c)],
        ]
    )
    print(f"\nlee report --results {results} --out {out} --weights-filter {weights}")
    return report_cmd.run(args)
