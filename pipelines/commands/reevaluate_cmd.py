"""``lee reevaluate``: evaluate only what is new or changed since the last runs.

Regenerates the ``all`` catalog from the installed timm (into ``$LEE_CACHE_DIR/catalog/all.json``,
with the timm version in its header), so that models and weights a newer timm added are picked
up: ``all``, fnmatch patterns and model names resolve against it, and entries of curated
catalogs (``quickstart``, ``paper``...) take its specs. It then plans the units ``lee eval``
would with the given flags / ``--config`` and compares their content keys with the ``runs``
table. A unit is run when its key has no ``done`` row; the reason says why:

* ``new model``: the model has no done unit for this dataset and family;
* ``new checkpoint``: the same, for a file that a ``checkpoints:`` folder or glob of the catalog lists now
  and did not before;
* ``changed model spec``: same model, different spec (weights source/tag/checkpoint/preprocessing/version);
* ``metric version``: the family's implementation version changed (e.g. a new liecore);
* ``config``: generators, images, output kind... changed;
* ``weights now available``: ``auto`` weights ran on random init (the hub was offline) and hub weights
  are now cached or the hub answers (they are downloaded);
* ``weights changed``: same unit, but the weights file differs from the one the done run recorded
  (``runs.weights_sha256``): a ``file`` checkpoint overwritten under the same path, or a hub cache that
  now holds another revision (hub files are compared when the cache names them by sha256, as the
  Hugging Face cache does for weights; nothing is downloaded);
* ``failed before``: the last attempt failed;
* ``data unreadable``: the unit is done, but its data file is missing or cannot be read (damaged).

A file that a ``checkpoints:`` folder or glob listed before and lists no more is *gone*: its results stay
in the store and it is listed after the plan (``status gone``), not an error. When weights change under
one unit key, the runner keeps the earlier weights' results under ``history/`` (``runs_history`` and
``lee_history`` in ``lee query``; :mod:`pipelines.store.history`). Checkpoint digests are cached by their
listing (size and modification stamp) in ``$LEE_CACHE_DIR/checkpoints/sha256.json``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.commands.eval_cmd import add_sweep_arguments, config_from_args, warn_fallbacks
from pipelines.errors import UsageError
from pipelines.running.progress import format_table

GENERATED_BY = "lee reevaluate (catalog.generate_all_catalog)"


@dataclass(frozen=True)
class FreshCatalog:
    """The ``all`` catalog regenerated from the installed timm.

    Attributes:
        path: Where it was written.
        timm_version: The timm it was generated from.
        specs: name -> ``catalog.ModelSpec``, in catalog order.
        arch_defaults: arch -> default ``arch.tag`` name.
        aliases: deprecated timm name -> current name.
        new: Names that the packaged ``all`` catalog does not have.
    """

    path: Path
    timm_version: str
    specs: dict[str, Any]
    arch_defaults: dict[str, str]
    aliases: dict[str, str]
    new: list[str]

    def lookup(self, name: str) -> Any | None:
        """The spec of an ``arch.tag`` name, a bare arch or a deprecated name; None if not in this catalog."""
        name = self.aliases.get(name, name)
        name = name if name in self.specs else self.arch_defaults.get(name, name)
        return self.specs.get(name)


def regenerate_catalog(cache: str | Path | None = None) -> FreshCatalog:
    """Generate ``all`` from the installed timm into ``<cache>/catalog/all.json`` (default: ``catalog.cache_dir()``)."""
    import catalog

    data = catalog.generate_all_catalog(generated_by=GENERATED_BY)
    path = Path(cache or catalog.cache_dir()) / "catalog" / "all.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(catalog.all_catalog_text(data))
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write the regenerated catalog to {path}: {exc} (set LEE_CACHE_DIR)") from None
    specs = {s.name: s for s in catalog.generated_specs(data, str(path))}
    packaged = {s.name for s in catalog.load_models("all")}
    return FreshCatalog(
        path=path,
        timm_version=str(data["timm_version"]),
        specs=specs,
        arch_defaults=dict(data.get("arch_defaults") or {}),
        aliases=dict(data.get("aliases") or {}),
        new=[n for n in specs if n not in packaged],
    )


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _refreshed(spec, fresh: FreshCatalog):
    """A curated catalog's entry with the regenerated spec, unless the entry overrides the packaged spec."""
    import catalog

    try:
        unchanged = catalog.get_model(spec.name) == spec
    except catalog.CatalogError:
        unchanged = False
    return fresh.specs.get(spec.name, spec) if unchanged else spec


def resolve_fresh(selection: list[str], fresh: FreshCatalog) -> list:
    """Resolve ``--models`` entries as :func:`catalog.load_models` does, against the regenerated ``all``.

    ``all`` is the regenerated catalog; patterns match it and the packaged ``tiny``; names found in it
    (``arch.tag``, bare arch, deprecated name) take its spec; anything else (curated catalogs, YAML
    files, ``tiny`` names) resolves through the packaged catalog, with unmodified entries refreshed.
    """
    import catalog

    out: dict[str, Any] = {}
    try:
        for sel in selection:
            if sel == "all":
                found = list(fresh.specs.values())
            elif _is_pattern(sel):
                found = [s for n, s in fresh.specs.items() if fnmatch.fnmatchcase(n, sel)]
                found += [s for s in catalog.load_models("tiny") if fnmatch.fnmatchcase(s.name, sel)]
                if not found:
                    raise UsageError(
                        f"pattern {sel!r} matches no model in the regenerated 'all' or the 'tiny' catalogs"
                    )
            elif fresh.lookup(sel) is not None:
                found = [fresh.lookup(sel)]
            else:
                found = [_refreshed(s, fresh) for s in catalog.load_models(sel)]
            for spec in found:
                out.setdefault(spec.name, spec)
    except (catalog.CatalogError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    if not out:
        raise UsageError(f"model selection {selection} matches no model")
    return list(out.values())


def _reason(unit, status: dict[str, str], by_model: dict) -> str:
    if status.get(unit.key) == "failed":
        return "failed before"
    prev = by_model.get((unit.family, unit.model.name, unit.dataset.name))
    if not prev:
        return "new checkpoint" if getattr(unit.model, "checkpoints", None) else "new model"
    new = json.loads(unit.key_json)
    reasons = set()
    for row in prev:
        old = json.loads(row["key_json"])
        if old.get("model") != new.get("model"):
            reasons.add("changed model spec")
        if old.get("metric_version") != new.get("metric_version"):
            reasons.add("metric version")
        if {k: old.get(k) for k in ("config", "dataset", "seed")} != {
            k: new.get(k) for k in ("config", "dataset", "seed")
        }:
            reasons.add("config")
        if old.get("weights") != new.get("weights"):
            # auto resolves to hub or random per sweep: random before, hub weights (cached or downloadable) now
            now_hub = unit.weights.auto_choice and unit.weights.source == "hub"
            reasons.add("weights now available" if now_hub and row.get("weights") == "random" else "weights policy")
    return ", ".join(sorted(reasons)) or "changed"


def plan_reevaluation(cfg, *, dry_run: bool = False, fresh: FreshCatalog | None = None):
    """The eval plan restricted to new/changed units, with a reason per unit.

    Models resolve against ``fresh`` (the regenerated catalog) when given, else the packaged one.
    Datasets are read and decoded once: on the driver for ``dry_run``, on Ray Data otherwise (the
    plan is then executed as it is).
    """
    from pipelines.running.plan import damage_reason, plan, validate
    from pipelines.store import history

    specs = None
    if fresh is not None:
        validate(cfg)  # flag errors before resolving models
        specs = resolve_fresh(cfg.models, fresh)
    p = plan(cfg, check_writable=not dry_run, dry_run=dry_run, specs=specs)
    runs = p.store.runs().to_pylist() if p.status else []
    by_model: dict = {}
    for r in runs:
        if r["status"] == "done":
            by_model.setdefault((r["family"], r["model"], r["dataset"]), []).append(r)
    reasons = {}
    done_rows = {r["unit"]: r for r in runs if r["status"] == "done"}
    shas: dict = {}
    cache = history.DigestCache()
    for u in p.units:
        if u.key in p.damaged:
            reasons[u.key] = damage_reason(p.damaged[u.key])
        elif p.status.get(u.key) != "done":
            # 'auto' is resolved in the key (hub or random): weights that became available give a new key
            reasons[u.key] = _reason(u, p.status, by_model)
        elif _weights_changed(u, done_rows.get(u.key), shas, cache):
            reasons[u.key] = "weights changed"
    cache.save()
    if cfg.force:
        reasons = {u.key: reasons.get(u.key, "forced") for u in p.units}
    p.todo = [u for u in p.units if u.key in reasons]
    p.gone = gone_checkpoints([u.model for u in p.units], runs)
    return p, reasons


def current_weights_sha256(weights: str | None, spec, cache=None) -> str | None:
    """sha256 of the weights a unit would load now (:func:`pipelines.store.history.current_weights_sha256`)."""
    from pipelines.store import history

    return history.current_weights_sha256(weights, spec, cache)


def _weights_changed(unit, row: dict | None, shas: dict, cache=None) -> bool:
    """Whether a done unit's recorded ``weights_sha256`` differs from the weights it would load now."""
    if row is None or not row.get("weights_sha256") or row.get("weights") not in ("file", "hub"):
        return False
    key = (row["weights"], unit.model.name, unit.model.checkpoint)
    if key not in shas:  # one digest per model and source, however many units share it
        shas[key] = current_weights_sha256(row["weights"], unit.model, cache)
    return shas[key] is not None and shas[key] != row["weights_sha256"]


@dataclass(frozen=True)
class Gone:
    """A checkpoint that a watched folder or glob listed before and lists no more: its results stay.

    Attributes:
        model: The model name its units were evaluated under.
        checkpoint: The file, spelled as the catalog entry spells it.
        pattern: The folder or glob of the entry that watched it.
        units: Its done units (all kept).
        finished_at: When its last unit finished.
    """

    model: str
    checkpoint: str
    pattern: str
    units: int
    finished_at: Any


def gone_checkpoints(specs: list, runs: list[dict]) -> list[Gone]:
    """The checkpoints with done units in ``runs`` that a ``checkpoints:`` folder or glob of ``specs`` would
    list, but no longer does (the file was deleted, moved or renamed)."""
    from catalog import watches

    patterns = list(dict.fromkeys(s.checkpoints for s in specs if getattr(s, "checkpoints", None)))
    if not patterns:
        return []
    present = {s.checkpoint for s in specs if s.source == "file" and s.checkpoint}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        if r["status"] != "done" or r.get("weights") != "file":
            continue
        ckpt = (json.loads(r["key_json"]).get("model") or {}).get("checkpoint")
        if not ckpt or ckpt in present:
            continue
        pattern = next((p for p in patterns if watches(p, ckpt)), None)
        if pattern is None:
            continue
        g = found.setdefault((r["model"], ckpt), {"pattern": pattern, "units": 0, "finished_at": r["finished_at"]})
        g["units"] += 1
        g["finished_at"] = max(g["finished_at"], r["finished_at"])
    return [Gone(m, c, g["pattern"], g["units"], g["finished_at"]) for (m, c), g in sorted(found.items())]


def print_gone(gone: list[Gone], out=None) -> None:
    """The gone checkpoints, after the plan: their results are kept (not an error)."""
    if not gone:
        return
    out = out or sys.stdout
    print(f"\n{len(gone)} checkpoint(s) gone from their folder or glob (their results are kept):", file=out)
    rows = [
        {
            "model": g.model,
            "checkpoint": g.checkpoint,
            "units": g.units,
            "last evaluated": f"{g.finished_at:%Y-%m-%d %H:%M}" if g.finished_at else "-",
            "status": "gone",
        }
        for g in gone
    ]
    print(
        format_table(
            rows,
            [
                ("model", "model"),
                ("checkpoint", "checkpoint"),
                ("units", "units"),
                ("last evaluated", "last evaluated"),
                ("status", "status"),
            ],
        ),
        file=out,
    )


CRON_ENV = (
    "LEE_CACHE_DIR",
    "HF_HOME",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TORCH_HOME",
    "PYTHONPATH",
    "RAY_ADDRESS",
    "RAY_AUTH_TOKEN_PATH",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
"""Variables ``--print-cron`` carries into the line when they are set (never secrets: ``RAY_AUTH_TOKEN`` and
cloud keys stay out of a crontab; ``~/.ray/auth_token`` and credential files are found through ``HOME``)."""
_CRON_FLAGS = {"--print-cron": 0, "--at": 1, "--log": 1}


def cron_line(
    flags: list[str],
    schedule: str = "0 2 * * *",
    log: str = "reeval.log",
    *,
    cwd: str | None = None,
    environ: dict[str, str] | None = None,
) -> str:
    """The crontab line that runs ``lee reevaluate FLAGS`` under cron's bare environment.

    cron runs ``/bin/sh -c`` with ``PATH=/usr/bin:/bin``, ``HOME`` and no locale, so the line names this
    Python by its absolute path (``python -m pipelines``: no ``lee`` on cron's ``PATH``), runs from
    ``cwd`` (relative ``--config``/``--output`` paths keep their meaning), sets a UTF-8 locale and a
    ``PATH`` with this Python's ``bin`` (its virtualenv's tools) first, carries the :data:`CRON_ENV`
    variables that are set, and appends stdout and stderr to ``log``. ``%`` is escaped (cron reads a
    bare one as a newline).
    """
    environ = os.environ if environ is None else environ
    cwd = cwd or os.getcwd()
    exe = os.path.abspath(sys.executable)
    path = ":".join(dict.fromkeys([os.path.dirname(exe), "/usr/local/bin", "/usr/bin", "/bin"]))
    env = ["LANG=C.UTF-8", "LC_ALL=C.UTF-8", f"PATH={path}"]
    env += [f"{k}={environ[k]}" for k in CRON_ENV if environ.get(k)]
    command = (
        f"cd {shlex.quote(cwd)} && env {' '.join(shlex.quote(e) for e in env)} {shlex.quote(exe)} -m pipelines "
        f"reevaluate {shlex.join(flags)} >> {shlex.quote(os.path.join(cwd, log))} 2>&1"
    )
    return f"{schedule} {command.replace('%', chr(92) + '%')}"


def _flags_without_cron(argv: list[str]) -> list[str]:
    """The ``lee reevaluate`` flags as typed, without ``--print-cron``, ``--at`` and ``--log``."""
    rest = argv[argv.index("reevaluate") + 1 :] if "reevaluate" in argv else list(argv)
    out, skip = [], 0
    for a in rest:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in _CRON_FLAGS:
            skip = _CRON_FLAGS[name] if "=" not in a else 0
            continue
        out.append(a)
    return out


def run(args: argparse.Namespace) -> int:
    from pipelines.running.execute import run_plan
    from pipelines.running.plan import validate
    from pipelines.running.summary import print_summary

    cfg = config_from_args(args)
    validate(cfg)  # bad flags fail before the catalog is regenerated
    if args.print_cron:
        if len(args.at.split()) != 5:
            raise UsageError(f"--at {args.at!r}: expected a cron schedule of five fields, e.g. '0 2 * * *'")
        print(cron_line(_flags_without_cron(getattr(args, "argv", None) or sys.argv[1:]), args.at, args.log))
        print(
            "lee: note: add this line with `crontab -e`; it carries no secrets (the Ray token is read from "
            "~/.ray/auth_token, cloud credentials from their files)",
            file=sys.stderr,
        )
        return 0
    fresh = regenerate_catalog()
    new = f": {', '.join(fresh.new[:5])}{' ...' if len(fresh.new) > 5 else ''}" if fresh.new else ""
    print(
        f"catalog regenerated from timm {fresh.timm_version}: {len(fresh.specs)} models "
        f"({len(fresh.new)} new vs the packaged catalog{new}) -> {fresh.path}",
        file=sys.stderr,
    )
    p, reasons = plan_reevaluation(cfg, dry_run=args.dry_run, fresh=fresh)
    warn_fallbacks(p)
    rows = [
        {"unit": u.key, "family": u.family, "model": u.model.name, "dataset": u.dataset.name, "reason": reasons[u.key]}
        for u in p.todo
    ]
    print(
        format_table(
            rows,
            [("unit", "unit"), ("family", "family"), ("model", "model"), ("dataset", "dataset"), ("reason", "reason")],
        )
        if rows
        else "nothing new or changed"
    )
    print_gone(p.gone)
    print(f"{len(p.todo)} of {len(p.units)} units to evaluate (output {p.store.uri})", file=sys.stderr)
    if args.dry_run or not p.todo:
        return 0
    result = run_plan(p, show_progress=args.progress)
    print_summary(result)
    print_gone(p.gone)
    return 1 if result.failed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reevaluate",
        help="evaluate only new or changed units (new models, new weights, new metric versions)",
        description=(__doc__ or "").split("\n\n", 1)[-1],
        epilog="cron (nightly at 02:00): print the line, then add it with `crontab -e`:\n"
        "  lee reevaluate --config run.yaml --print-cron --at '0 2 * * *'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sweep_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="list the units that would run, and why")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    cron = p.add_argument_group("scheduling")
    cron.add_argument(
        "--print-cron",
        action="store_true",
        help="print the crontab line that runs these flags under cron's bare environment (absolute "
        "Python, this directory, locale, PATH); evaluates nothing",
    )
    cron.add_argument(
        "--at",
        default="0 2 * * *",
        metavar="SCHEDULE",
        help="cron schedule of --print-cron (default '0 2 * * *': nightly at 02:00)",
    )
    cron.add_argument(
        "--log",
        default="reeval.log",
        metavar="FILE",
        help="log file of --print-cron, relative to this directory (default reeval.log)",
    )
    p.set_defaults(func=run)
