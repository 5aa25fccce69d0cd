"""``lee reevaluate``: evaluate only what is new or changed since the last runs.

Builds the catalog from the installed timm (model specs resolve against timm's registry and
pretrained configs when they are loaded), plans the same units ``lee eval`` would with the
given flags / ``--config``, and compares their content keys with the ``runs`` table. A unit
is run when its key has no ``done`` row; the reason says why:

* ``new model``: the model has no done unit for this dataset and family;
* ``changed model spec``: same model, different spec (weights source/tag/checkpoint/preprocessing/version);
* ``metric version``: the family's implementation version changed (e.g. a new liecore);
* ``config``: generators, images, output kind... changed;
* ``weights now available``: ``auto`` weights ran on random init and hub weights are now cached;
* ``failed before``: the last attempt failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.commands.eval_cmd import add_sweep_arguments, config_from_args


def _reason(unit, status: dict[str, str], by_model: dict, hub_cached) -> str:
    if status.get(unit.key) == "failed":
        return "failed before"
    prev = by_model.get((unit.family, unit.model.name, unit.dataset.name))
    if not prev:
        return "new model"
    new = json.loads(unit.key_json)
    reasons = set()
    for row in prev:
        old = json.loads(row["key_json"])
        if old.get("model") != new.get("model"):
            reasons.add("changed model spec")
        if old.get("metric_version") != new.get("metric_version"):
            reasons.add("metric version")
        if {k: old.get(k) for k in ("config", "dataset", "seed", "weights")} != {
            k: new.get(k) for k in ("config", "dataset", "seed", "weights")
        }:
            reasons.add("config")
    return ", ".join(sorted(reasons)) or "changed"


def plan_reevaluation(cfg, *, dry_run: bool = False):
    """The eval plan restricted to new/changed units, with a reason per unit.

    Datasets are read and decoded once: on the driver for ``dry_run``, on Ray Data otherwise (the
    plan is then executed as it is).
    """
    from pipelines import sweep

    p = sweep.plan(cfg, check_writable=not dry_run, dry_run=dry_run)
    runs = p.store.runs().to_pylist() if p.status else []
    by_model: dict = {}
    for r in runs:
        if r["status"] == "done":
            by_model.setdefault((r["family"], r["model"], r["dataset"]), []).append(r)
    reasons = {}
    hub_cached = _hub_cached_fn()
    done_random = {
        (r["family"], r["model"], r["dataset"]): r for r in runs if r["status"] == "done" and r["weights"] == "random"
    }
    for u in p.units:
        if p.status.get(u.key) != "done":
            reasons[u.key] = _reason(u, p.status, by_model, hub_cached)
        elif (
            u.weights_policy == "auto"
            and (u.family, u.model.name, u.dataset.name) in done_random
            and u.model.source == "hub"
            and hub_cached is not None
            and hub_cached(u.model)
        ):
            reasons[u.key] = "weights now available"
    if cfg.force:
        reasons = {u.key: reasons.get(u.key, "forced") for u in p.units}
    p.todo = [u for u in p.units if u.key in reasons]
    return p, reasons


def _hub_cached_fn():
    try:
        from catalog import hub_cached_file
    except ImportError:
        return None
    return hub_cached_file


def run(args: argparse.Namespace) -> int:
    from pipelines import sweep
    from pipelines.sweep import format_table

    cfg = config_from_args(args)
    p, reasons = plan_reevaluation(cfg, dry_run=args.dry_run)
    rows = [
        {"unit": u.key, "family": u.family, "model": u.model.name, "dataset": u.dataset.name, "reason": reasons[u.key]}
        for u in p.todo
    ]
    print(format_table(rows, [("unit", "unit"), ("family", "family"), ("model", "model"), ("dataset", "dataset"),
                              ("reason", "reason")]) if rows else "nothing new or changed")
    print(f"{len(p.todo)} of {len(p.units)} units to evaluate (output {p.store.uri})", file=sys.stderr)
    if args.dry_run or not p.todo:
        return 0
    prog = sweep.Progress(len(p.todo), sum(u.dataset.n_images for u in p.todo), enabled=args.progress)
    result = sweep.execute(p, progress=prog)
    sweep.print_summary(result)
    return 1 if result.failed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reevaluate",
        help="evaluate only new or changed units (new models, new weights, new metric versions)",
        description=(__doc__ or "").split("\n\n", 1)[-1],
        epilog="cron (nightly at 02:00):\n  0 2 * * * cd /srv/lee && lee reevaluate --config run.yaml >> reeval.log 2>&1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sweep_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="list the units that would run, and why")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=run)
