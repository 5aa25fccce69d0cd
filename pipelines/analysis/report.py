"""``lee report``: the paper's figures and the named analyses of a results root, as one static HTML page.

:func:`build_report` connects the analysis views (:func:`pipelines.analysis.views.connect`), runs the
report's queries, draws every figure of :mod:`pipelines.analysis.figures` (PNG and SVG), runs every named
analysis of :mod:`pipelines.analysis.analyses` and writes ``index.html``: figures, their captions, the
tables (also as CSV under ``tables/``) and where the numbers come from (results root, sweeps, package
versions, generation time). Everything the page loads is a relative path inside the output directory.

Weights: ``pretrained`` (the default) keeps rows whose weights are ``hub`` or ``file``, ``random`` keeps
random-init rows, and only ``any`` puts both in one figure (random-init points are then drawn hollow).

Output configuration: one report shows one ``output`` (``probs``, the paper's choice and the default, or
``logits``) and one ``interpolation`` (``cubic``, the default, or ``spectral``); the views keep these
configurations apart, so a root with both would otherwise draw each model once per configuration. Every
figure and table is restricted to them (alternative metrics have no interpolation setting: they are
selected by output only), the named analyses' rows of other configurations are left out (the page counts
them), and the titles and the page state the configuration. A figure with no rows for it while the root
has others says which ``--output-kind`` / ``--derivative-interp`` would show them.

A figure without data is still written, as a placeholder naming what is missing and the ``lee eval``
flags that produce it; a figure or analysis that fails is written as an error placeholder / error box
with the exception, and the rest of the report goes on.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pipelines.analysis import explain_maps
from pipelines.analysis import figures as F
from pipelines.analysis.analyses import ANALYSES, anti_alias_pairs
from pipelines.analysis.page import FigureResult, Report, TableResult, render_html
from pipelines.analysis.sqltext import TRUE, Condition, equals, ident, is_in
from pipelines.analysis.views import ResultsRoot, connect, full_check_root
from pipelines.errors import UsageError
from pipelines.spec import config
from pipelines.spec.config import WEIGHTS_FILTERS

__all__ = [
    "FIGURES",
    "INTERPOLATIONS",
    "OUTPUTS",
    "FigureData",
    "FigureResult",
    "FigureSpec",
    "Report",
    "Selection",
    "TableResult",
    "build_report",
]

_WEIGHTS_LABEL = {
    "pretrained": "pretrained weights",
    "random": "RANDOM-INIT weights (untrained)",
    "any": "pretrained + random-init weights mixed (--weights-filter any)",
}

OUTPUTS: dict[str, str] = {
    "probs": "class probabilities (softmax; the paper's choice)",
    "logits": "logits (before the softmax)",
}
"""``--output`` choices (the ``output`` column: what liecore differentiated) and their page labels."""

INTERPOLATIONS = config.INTERPOLATIONS  # liecore.INTERPOLATIONS (tests/test_imports.py keeps them equal)
"""``--derivative-interp`` choices (the ``interpolation`` column: liecore's image interpolant)."""


@dataclass(frozen=True)
class Selection:
    """Which rows the report uses.

    Attributes:
        weights: ``pretrained`` (``hub``/``file``), ``random`` or ``any``
        (:data:`pipelines.spec.config.WEIGHTS_FILTERS`).
        datasets: Dataset names to keep (empty: all).
        generators: Generator names to keep (empty: all).
        output: ``probs`` or ``logits`` (see :data:`OUTPUTS`): the only output shown.
        interpolation: ``cubic`` or ``spectral`` (see :data:`INTERPOLATIONS`): the only interpolation shown.
    """

    weights: str = "pretrained"
    datasets: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()
    output: str = "probs"
    interpolation: str = "cubic"

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS_FILTERS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS_FILTERS)}, got {self.weights!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")

    def where(
        self, *, datasets: bool = True, generators: bool = True, config: bool = True, any_interpolation: bool = False
    ) -> Condition:
        """SQL predicate over a view with ``weights``, ``dataset`` (``generator``, ``output``, ``interpolation``)
        columns; the selected names are bound parameters.

        ``config``: keep only the selected output and interpolation. ``any_interpolation``: a NULL
        interpolation passes too (alt rows and ``done_units`` of alt units: the metrics have no setting).
        """
        where = is_in("weights", WEIGHTS_FILTERS[self.weights])
        if datasets and self.datasets:
            where &= is_in("dataset", self.datasets)
        if generators and self.generators:
            where &= is_in("generator", self.generators)
        if config:
            where &= equals("output", self.output)
            interpolation = equals("interpolation", self.interpolation)
            if any_interpolation:
                interpolation = Condition(
                    f"({ident('interpolation')} IS NULL OR {interpolation.sql})", interpolation.params
                )
            where &= interpolation
        return where

    @property
    def label(self) -> str:
        return _WEIGHTS_LABEL[self.weights]

    @property
    def output_label(self) -> str:
        """What the shown output is, in words (:data:`OUTPUTS`)."""
        return OUTPUTS[self.output]

    def config_label(self, *, alt: bool = False) -> str:
        """``output probs · cubic interpolation`` (``alt``: the alternative metrics' own interpolation)."""
        if alt:
            return f"output {self.output} · each metric's own interpolation"
        return f"output {self.output} · {self.interpolation} interpolation"


# ---------------------------------------------------------------------------------------------- queries


def _df(con, sql: str, where: Condition = TRUE) -> pd.DataFrame:
    """The rows of ``sql``, whose ``?`` placeholders are ``where``'s parameters."""
    return con.sql(sql, params=list(where.params)).df()


def _first(con, sql: str, where: Condition = TRUE) -> Any:
    """First column of the first row of ``sql`` (None without rows); ``?`` are ``where``'s parameters."""
    rows = con.sql(sql, params=list(where.params)).fetchall()
    return rows[0][0] if rows else None


def _pick_dataset(con, view: str, where: Condition) -> str | None:
    """The dataset a one-dataset figure draws: a ``test``-role one first, then the most models, then name."""
    return _first(
        con,
        f"""SELECT dataset FROM {ident(view)} WHERE {where.sql}
        GROUP BY dataset ORDER BY bool_or(role = 'test') DESC, count(DISTINCT model) DESC, dataset LIMIT 1""",
        where,
    )


def _lee_rows(con, where: Condition) -> pd.DataFrame:
    return _df(
        con,
        f"""
        SELECT s.model, s.dataset, s.role, s.generator, s.weights, s.n, s.mean_lee, s.se_lee,
               coalesce(s.family, 'unknown') AS family, s.params_m, s.top1, s.pretrain_data, s.pretrain_images,
               s.recipe, coalesce(s.anti_aliased, false) AS anti_aliased, coalesce(s.arch, s.model) AS arch
        FROM lee_summary s WHERE {where.sql} ORDER BY s.model, s.generator, s.dataset, s.weights, s.role""",
        where,
    )


def _one_method(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One layerwise decomposition per model, generator and weights: ``exact`` where there is one, else the
    stochastic one with the most probes (the views keep methods apart; a figure draws a model once).

    Returns the rows and a label of the methods drawn (``exact decomposition``, ...).
    """
    if frame.empty:
        return frame, ""
    probes = pd.to_numeric(frame["num_probes"], errors="coerce").fillna(-1)
    rank = frame.assign(_exact=frame["method"] == "exact", _probes=probes)
    best = rank.sort_values(["_exact", "_probes"], ascending=False).drop_duplicates(["model", "generator", "weights"])[
        ["model", "generator", "weights", "method", "_probes"]
    ]
    keep = rank.merge(best, on=["model", "generator", "weights", "method", "_probes"], how="inner")
    kept = keep.drop(columns=["_exact", "_probes"])
    methods = sorted(
        {
            "exact" if m == "exact" else f"{m} ({int(n)} probes)" if n >= 0 else str(m)
            for m, n in zip(best["method"], best["_probes"], strict=True)
        }
    )
    label = f"{' / '.join(methods)} decomposition"
    dropped = len(frame) - len(kept)
    return kept, label + (" (exact preferred)" if dropped else "")


def _anti_alias_rows(lee: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows of anti-aliased models and their plain counterparts, with a ``pair`` column.

    Pairs come from :func:`pipelines.analysis.analyses.anti_alias_pairs` (the plain model's arch is the
    anti-aliased one's without ``blur``: ``resnetblur50`` / ``resnet50``), so the figure shows the pairs the
    ``scale`` analysis tests. Returns the rows and the anti-aliased models that have no counterpart here.
    """
    models = lee[["model", "arch"]].drop_duplicates("model")
    pairs = anti_alias_pairs(models)
    parts = [
        pd.concat([lee[lee["model"] == blur], lee[lee["model"] == plain]]).assign(pair=blur) for blur, plain in pairs
    ]
    paired = {blur for blur, _ in pairs}
    unmatched = sorted(
        m for m, a in zip(models["model"], models["arch"], strict=True) if "blur" in str(a).lower() and m not in paired
    )
    frame = (
        pd.concat(parts, ignore_index=True).drop_duplicates(["pair", "model", "generator"])
        if parts
        else lee.iloc[0:0].assign(pair=pd.Series(dtype=str))
    )
    return frame, unmatched


# ---------------------------------------------------------------------------------------------- report


@dataclass
class FigureData:
    """The rows the figures draw (filled by the report's queries) and the labels their captions name.

    A ``*_missing`` field is None when there are rows, else ``(why, commands that would give rows)``.
    """

    lee_every_dataset: pd.DataFrame | None = None
    lee: pd.DataFrame | None = None
    primary_dataset: str | None = None
    lee_missing: tuple[str, list[str]] | None = None
    lee_context: F.FigureContext | None = None
    alt: pd.DataFrame | None = None
    alt_dataset: str | None = None
    alt_missing: tuple[str, list[str]] | None = None
    layerwise_cumulative: pd.DataFrame | None = None
    layerwise_cumulative_method: str = ""
    layer_type_shares: pd.DataFrame | None = None
    layer_type_shares_method: str = ""
    layerwise_dataset: str | None = None
    layerwise_missing: tuple[str, list[str]] | None = None
    anti_alias_pairs: pd.DataFrame | None = None
    anti_alias_missing: tuple[str, list[str]] | None = None
    gap_rows: pd.DataFrame | None = None
    gap_missing: tuple[str, list[str]] | None = None
    gap_ratios: pd.DataFrame | None = None
    explain: pd.DataFrame | None = None
    explain_dataset: str | None = None
    explain_missing: tuple[str, list[str]] | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the page, declared.

    Attributes:
        stem: File stem (``fig1_lee_vs_top1``); the page lists figures by stem.
        title: Title (also of its placeholder).
        caption: Caption template, filled from ``FigureData.labels`` (``{primary_dataset}``, ``{top1}`` ...).
        missing: The ``FigureData`` field that says why its rows are missing (None: they are there).
        draw: ``draw(builder, data)``: the figure (from ``data``'s rows; :class:`figures.NoData` if nothing to draw).
        how: Commands that would give it rows, when ``draw`` finds none (``{root}``: the results root).
        alt: Its configuration is the alternative metrics' (an output, no interpolation).
    """

    stem: str
    title: str
    caption: str
    missing: str
    draw: Callable[[Any, FigureData], Any]
    how: tuple[str, ...] = ("lee eval -r {root}",)
    alt: bool = False


_LAYERWISE_HOW = ("lee eval --metrics lee,layerwise -r {root}",)
_ONE_DECOMPOSITION = (
    "One decomposition per model: exact where there is one, else the stochastic one with the most probes."
)

FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "fig1_lee_vs_top1",
        "Fig. 1: LEE vs top-1 accuracy per generator",
        "Mean LEE over images (log scale) against {top1}, one panel per generator, on {primary_dataset}; colour = "
        "architecture family, marker area = parameter count, error bars = standard error of the mean over "
        "images (the paper's figure 1, right). Hollow markers: random-init weights.",
        "lee_missing",
        lambda b, d: F.lee_vs_top1(d.lee, d.lee_context),
    ),
    FigureSpec(
        "fig5a_generators_vs_top1",
        "Fig. 5a: every generator's LEE vs top-1 accuracy",
        "The LEE of each generator (colour) against {top1} on {primary_dataset}, mean ± standard error; which "
        "transformations the models are least equivariant to, and whether all follow accuracy.",
        "lee_missing",
        lambda b, d: F.generators_vs_top1(d.lee, d.lee_context),
    ),
    FigureSpec(
        "fig5b_alt_metrics_vs_top1",
        "Fig. 5b: alternative equivariance metrics vs top-1 accuracy",
        "Each alternative metric of liecore.metrics (shift consistency, EQ-T, EQ-R, sampled equivariance "
        "error, ...) against {top1} on {alt_dataset}, mean ± standard error over images, colour = family.",
        "alt_missing",
        lambda b, d: F.alt_vs_top1(d.alt, b.context(d.alt_dataset or "(none)", d.alt, alt=True)),
        how=("lee eval --metrics alt -r {root}",),
        alt=True,
    ),
    FigureSpec(
        "fig4a_layerwise_cumulative",
        "Fig. 4a: cumulative layerwise contribution vs depth",
        "Per model (line; colour = family) and generator (panel), the running sum of the layers' additive "
        "shares of the end-to-end LEE, by relative depth (layer call order scaled to [0, 1]) on {layerwise_dataset} "
        "(the paper's figure 4). The distance of a line's end from 1 is the unattributed share. " + _ONE_DECOMPOSITION,
        "layerwise_missing",
        lambda b, d: F.layerwise_cumulative(
            d.layerwise_cumulative,
            b.layerwise_context(d.layerwise_dataset, d.layerwise_cumulative, d.layerwise_cumulative_method),
        ),
        how=_LAYERWISE_HOW,
    ),
    FigureSpec(
        "fig4b_layer_type_shares",
        "Fig. 4b: share of the LEE by layer type",
        "Signed share of the end-to-end LEE by layer type (patch embedding, convolution, normalization, "
        "normalization+activation, activation, downsampling/pooling, attention, MLP, unattributed, ...) per model, on "
        "{layerwise_dataset}: "
        "positive shares stack right of 0, negative ones left; the net sum is 1. " + _ONE_DECOMPOSITION,
        "layerwise_missing",
        lambda b, d: F.layer_type_shares(
            d.layer_type_shares,
            b.layerwise_context(d.layerwise_dataset, d.layer_type_shares, d.layer_type_shares_method),
        ),
        how=_LAYERWISE_HOW,
    ),
    FigureSpec(
        "fig6a_antialiasing",
        "Fig. 6a: case study, anti-aliasing (BlurPool vs plain)",
        "LEE per generator of each anti-aliased (BlurPool) model (filled) next to its plain counterpart "
        "(same architecture without blur pooling, hollow) on {primary_dataset}, mean ± standard error.",
        "anti_alias_missing",
        lambda b, d: F.antialiasing(d.anti_alias_pairs, d.lee_context),
        how=("lee eval -m resnetblur50.bt_in1k -m resnet50.a1_in1k -r {root}   # an anti-aliased/plain pair",),
    ),
    FigureSpec(
        "fig6b_scale_within_family",
        "Fig. 6b: case study, scale within family",
        "LEE against parameter count (log-log), a line per architecture family, per generator, on {primary_dataset}.",
        "lee_missing",
        lambda b, d: F.scale_within_family(d.lee, d.lee_context),
    ),
    FigureSpec(
        "fig6c_pretraining_data",
        "Fig. 6c: case study, pretraining data",
        "LEE by pretraining data set (ordered by its size: in1k, in12k, in21k, ...) on {primary_dataset}; "
        "checkpoints of one architecture are joined by a line; colour = family.",
        "lee_missing",
        lambda b, d: F.pretraining_data(d.lee, d.lee_context),
    ),
    FigureSpec(
        "fig7_gap",
        "Fig. 7: equivariance gap, train vs test vs OOD",
        "LEE of each model on its train, test and OOD datasets (roles: {roles}), mean ± standard error, "
        "per generator; the last panel (when the gap analysis ran) shows its LEE ratios with intervals.",
        "gap_missing",
        lambda b, d: F.gap(
            d.gap_rows, b.context(", ".join(sorted(d.gap_rows["dataset"].unique())), d.gap_rows), d.gap_ratios
        ),
        how=("lee eval -d sample -r {root}   # sample-train, sample-test and sample-ood (roles train/test/ood)",),
    ),
    FigureSpec(
        "fig8_where_lee_lives",
        "Fig. 8: where the LEE lives",
        "Where in the image the equivariance error arises (liecore.explain, the explain family) on {explain_dataset}: "
        "per model "
        "and generator the mean signed share of the LEE per cell of the input (16 x 16 cells, LEE-weighted over "
        "images; red adds to the LEE, blue cancels some of it; one colour scale), and the share within k px of the "
        "border against k next to the area those pixels cover (dashed): a curve above the dashed line means the "
        "error concentrates at the border. The layers and cells that carry most of it: table layer_location.",
        "explain_missing",
        lambda b, d: explain_maps.where_lee_lives(d.explain, b.context(d.explain_dataset or "(none)", d.explain)),
        how=("lee eval --metrics explain -g translate_x,rotate -r {root}",),
    ),
)
"""The report's figures, drawn in this order (the page lists them by stem)."""


class _Builder:
    """Builds one report: the tables, the figures' data (a named method per figure family), the figures and
    the provenance, in that order (:func:`_build_report`)."""

    def __init__(self, con, results: str, out_dir: Path, selection: Selection, *, n_boot: int, seed: int, level: float):
        self.con = con
        self.results = results
        self.out_dir = out_dir
        self.selection = selection
        self.n_boot, self.seed, self.level = n_boot, seed, level
        self.report = Report(out_dir=out_dir, index=out_dir / "index.html")
        families = [r[0] for r in con.sql("SELECT DISTINCT coalesce(family, 'unknown') FROM models").fetchall()]
        self.family_colors = F.family_colors(families + ["unknown"])
        self.weights_available = self._weights_available()

    # -- helpers
    def _weights_available(self) -> dict[str, int]:
        """Models with completed units per weights selection (``pretrained``, ``random``)."""
        random = is_in("weights", WEIGHTS_FILTERS["random"])
        rows = self.con.sql(
            f"SELECT CASE WHEN {random.sql} THEN 'random' ELSE 'pretrained' END AS w, count(DISTINCT model) "
            "FROM done_units WHERE weights IS NOT NULL GROUP BY ALL",
            params=list(random.params),
        ).fetchall()
        return {w: int(n) for w, n in rows}

    def context(self, dataset: str, frame: pd.DataFrame | None = None, *, alt: bool = False) -> F.FigureContext:
        """The labels and colours a figure of ``frame``'s rows on ``dataset`` is drawn with."""
        selection = self.selection
        random_kinds = WEIGHTS_FILTERS["random"]
        random = selection.weights == "random" or (
            selection.weights == "any"
            and frame is not None
            and "weights" in frame
            and frame["weights"].isin(random_kinds).any()
        )
        return F.FigureContext(
            dataset=dataset,
            weights=selection.label,
            random_init=bool(random),
            family_colors=self.family_colors,
            config=selection.config_label(alt=alt),
        )

    def layerwise_context(self, dataset: str | None, frame: pd.DataFrame, method: str) -> F.FigureContext:
        """:meth:`context` of a layerwise figure: the configuration label names the decomposition drawn."""
        context = self.context(dataset or "(none)", frame)
        return dataclasses.replace(context, config=f"{context.config} · {method}" if method else context.config)

    def report_cmd(self, **change: str) -> str:
        """``lee report`` of this root with this selection's non-default weights / output / interpolation,
        changed by ``change``."""
        selection = self.selection
        options = {
            "weights": selection.weights,
            "output": selection.output,
            "interpolation": selection.interpolation,
            **change,
        }
        default = {"weights": "pretrained", "output": "probs", "interpolation": "cubic"}
        flag = {"weights": "--weights-filter", "output": "--output-kind", "interpolation": "--derivative-interp"}
        flags = "".join(f" {flag[k]} {v}" for k, v in options.items() if v != default[k])
        return f"lee report --results {self.results}{flags}"

    def no_rows_hint(self, family: str) -> tuple[str, list[str]]:
        """Why a family has no rows under this selection, and the commands that would give it some."""
        selection = self.selection
        other = {"pretrained": "random", "random": "pretrained"}.get(selection.weights)
        root = self.results
        flags = {
            "lee": "--metrics lee",
            "layerwise": "--metrics lee,layerwise --layerwise-generators translate_x,rotate",
            "alt": "--metrics alt",
            "explain": "--metrics explain -g translate_x,rotate",
        }[family]
        of_family = equals("family", family)
        units = _first(self.con, f"SELECT count(*) FROM done_units WHERE {of_family.sql}", of_family)
        if units == 0:
            return (f"no completed '{family}' units in {root}.", [f"lee eval {flags} -r {root}"])
        selected = of_family & selection.where(generators=False, config=False)
        selected_units = _first(self.con, f"SELECT count(*) FROM done_units WHERE {selected.sql}", selected)
        how = [f"lee eval {flags} -r {root}"]
        if selected_units == 0 and other and self.weights_available.get(other):
            how.insert(0, f"{self.report_cmd(weights=other)}   # {self.weights_available[other]} {other} models")
            return (
                f"{units} completed '{family}' units exist, but none with {selection.label}"
                f"{' in the selected datasets' if selection.datasets else ''}.",
                how,
            )
        if selected_units:
            hint = self._config_hint(family, selected, flags)
            if hint is not None:
                return hint
        return (
            f"{units} completed '{family}' units exist, but none matches the selection "
            f"(weights={selection.weights}, datasets={list(selection.datasets) or 'all'}, "
            f"generators={list(selection.generators) or 'all'}, "
            f"{selection.config_label(alt=family == 'alt')}).",
            how,
        )

    def _config_hint(self, family: str, selected: Condition, flags: str) -> tuple[str, list[str]] | None:
        """The hint when units of ``family`` match the weights and datasets (``selected``) but not the output /
        interpolation (None when some do match them): which ``--output-kind`` / ``--derivative-interp`` shows
        them."""
        selection, root = self.selection, self.results
        rows = self.con.sql(
            f"SELECT output, interpolation, count(*), count(DISTINCT model) FROM done_units "
            f"WHERE {selected.sql} GROUP BY ALL ORDER BY ALL",
            params=list(selected.params),
        ).fetchall()
        by_output: dict[str, list[int]] = {}
        for output, _, units, models in rows:
            counts = by_output.setdefault(str(output), [0, 0])
            counts[0], counts[1] = counts[0] + int(units), max(counts[1], int(models))
        if selection.output not in by_output:
            how = [
                f"{self.report_cmd(output=o)}   # {models} models with output {o}"
                for o, (_, models) in sorted(by_output.items())
            ]
            how.append(f"lee eval {flags} --output-kind {selection.output} -r {root}")
            have = ", ".join(f"{o} ({units} units)" for o, (units, _) in sorted(by_output.items()))
            return (
                f"completed '{family}' units match the weights and datasets, but none has output "
                f"{selection.output}: they have output {have}. Use --output-kind "
                f"{' or '.join(sorted(by_output))} to show them.",
                how,
            )
        interpolations = {str(i): (int(u), int(m)) for o, i, u, m in rows if o == selection.output}
        if family == "alt" or "None" in interpolations or selection.interpolation in interpolations:
            return None  # alt units have no interpolation; a NULL one (an old config) may be any
        how = [
            f"{self.report_cmd(interpolation=i)}   # {m} models with {i} interpolation"
            for i, (_, m) in sorted(interpolations.items())
        ]
        how.append(
            f"lee eval {flags} --output-kind {selection.output} --derivative-interp {selection.interpolation} -r {root}"
        )
        have = ", ".join(f"{i} ({u} units)" for i, (u, _) in sorted(interpolations.items()))
        return (
            f"completed '{family}' units with output {selection.output} exist, but none with "
            f"{selection.interpolation} interpolation: they have {have}. Use --derivative-interp "
            f"{' or '.join(sorted(interpolations))} to show them.",
            how,
        )

    def _dataset_for(self, view: str, where: Condition, primary: str | None) -> str | None:
        """``primary`` when ``view`` has rows for it, else the view's own pick (:func:`_pick_dataset`)."""
        if primary:
            of_primary = where & equals("dataset", primary)
            if _first(self.con, f"SELECT count(*) FROM {ident(view)} WHERE {of_primary.sql}", of_primary):
                return primary
        return _pick_dataset(self.con, view, where)

    def figure(self, spec: FigureSpec, data: FigureData) -> None:
        """Draw one figure (or a placeholder when its data is missing or :class:`figures.NoData`), save PNG + SVG,
        record it.

        The caption ends with the output configuration (``spec.alt``: alternative metrics, no interpolation)."""
        title = spec.title
        caption = f"{spec.caption.format_map(data.labels)} Configuration: {self.selection.config_label(alt=spec.alt)}."
        missing = getattr(data, spec.missing)
        status, message = "ok", ""
        try:
            if missing is not None:
                raise F.NoData(missing[0])
            fig = spec.draw(self, data)
        except F.NoData as exc:
            how = list(missing[1]) if missing is not None else [h.format(root=self.results) for h in spec.how]
            status, message = "placeholder", str(exc)
            fig = F.placeholder(title, str(exc), how)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the rest of the report
            status, message = "error", f"{type(exc).__name__}: {exc}"
            print(f"lee report: warning: figure {spec.stem} failed:\n{traceback.format_exc()}", file=sys.stderr)
            fig = F.placeholder(
                title, message, ["(a bug in lee report: please report it with this message)"], error=True
            )
        png, svg = F.save(fig, self.out_dir, spec.stem)
        self.report.figures.append(FigureResult(spec.stem, title, caption, png.name, svg.name, status, message))

    # -- figures: one method per figure family fills its fields of FigureData
    def figure_data(self) -> FigureData:
        """The rows every figure draws (the report's queries), and the labels its caption names."""
        data = FigureData()
        self._lee_data(data)
        self._alt_data(data)
        self._layerwise_data(data)
        self._anti_alias_data(data)
        self._gap_data(data)
        self._explain_data(data)
        data.labels = self._labels(data)
        return data

    def _lee_data(self, data: FigureData) -> None:
        """Figures 1, 5a, 6b, 6c: the LEE rows of every dataset, and the primary dataset's."""
        where = self.selection.where()
        data.lee_every_dataset = _lee_rows(self.con, where)
        data.primary_dataset = _pick_dataset(self.con, "lee_summary", where)
        every = data.lee_every_dataset
        data.lee = every[every["dataset"] == data.primary_dataset] if data.primary_dataset else every
        data.lee_missing = None if not data.lee.empty else self.no_rows_hint("lee")
        data.lee_context = self.context(data.primary_dataset or "(none)", data.lee)
        self.report.meta["primary_dataset"] = data.primary_dataset

    def _alt_data(self, data: FigureData) -> None:
        """Figure 5b: the alternative metrics on one dataset (the primary one where they have it)."""
        where = self.selection.where(generators=False, any_interpolation=True)  # alt units have no interpolation
        data.alt_dataset = self._dataset_for("alt_summary", where, data.primary_dataset)
        where &= equals("dataset", data.alt_dataset or "")
        data.alt = _df(
            self.con,
            f"""SELECT model, dataset, role, metric, weights, value_unit, higher_is_better, n,
                                            mean_value, se_value, coalesce(family, 'unknown') AS family, params_m,
                                            top1
                                     FROM alt_summary WHERE {where.sql}
                                     ORDER BY metric, model, weights, role""",
            where,
        )
        data.alt_missing = None if not data.alt.empty else self.no_rows_hint("alt")

    def _layerwise_data(self, data: FigureData) -> None:
        """Figures 4a and 4b: cumulative contributions and layer-type shares, one decomposition per model."""
        where = self.selection.where()
        data.layerwise_dataset = self._dataset_for("layerwise_cumulative", where, data.primary_dataset)
        data.layerwise_missing = None if data.layerwise_dataset else self.no_rows_hint("layerwise")
        of_dataset = where & equals(("c", "dataset"), data.layerwise_dataset or "")
        cumulative = _df(
            self.con,
            f"""
            SELECT c.model, c.dataset, c.generator, c.weights, c.method, c.num_probes, c.layer, c.call_index,
                   c.layer_type, c.depth, c.cumulative_fraction, c.n, c.share_additive,
                   coalesce(m.family, 'unknown') AS family
            FROM layerwise_cumulative c LEFT JOIN models m USING (model)
            WHERE {of_dataset.sql}
            ORDER BY c.model, c.generator, c.depth, c.weights, c.method, c.num_probes, c.call_index, c.layer""",
            of_dataset,
        )
        data.layerwise_cumulative, data.layerwise_cumulative_method = _one_method(cumulative)
        of_dataset = where & equals("dataset", data.layerwise_dataset or "")
        shares = _df(
            self.con,
            f"""
            SELECT model, dataset, generator, weights, method, num_probes, layer_type, share_fraction, n,
                   coalesce(family, 'unknown') AS family
            FROM layer_type_shares WHERE {of_dataset.sql}
            ORDER BY model, generator, layer_type, weights, method, num_probes""",
            of_dataset,
        )
        data.layer_type_shares, data.layer_type_shares_method = _one_method(shares)

    def _anti_alias_data(self, data: FigureData) -> None:
        """Figure 6a: anti-aliased models next to their plain counterparts (from the primary dataset's rows)."""
        lee = data.lee
        data.anti_alias_pairs, unmatched = (
            _anti_alias_rows(lee) if not lee.empty else (lee.assign(pair=pd.Series(dtype=str)), [])
        )
        data.anti_alias_missing = data.lee_missing
        if data.anti_alias_missing is None and data.anti_alias_pairs.empty:
            why = (
                "no anti-aliased (BlurPool, arch containing 'blur') model in these results"
                if not unmatched
                else f"anti-aliased model(s) without a plain counterpart (same arch without 'blur') here: "
                f"{', '.join(unmatched)}"
            )
            data.anti_alias_missing = (why, [f"lee eval -m resnetblur50.bt_in1k -m resnet50.a1_in1k -r {self.results}"])

    def _gap_data(self, data: FigureData) -> None:
        """Figure 7: every dataset role's LEE rows, and the ``gap`` analysis' ratios (its table, when it ran)."""
        data.gap_rows = data.lee_every_dataset
        data.gap_missing = data.lee_missing
        if data.gap_missing is None and data.gap_rows["role"].nunique() < 2:
            have = ", ".join(sorted(data.gap_rows["role"].dropna().unique())) or "none"
            data.gap_missing = (
                f"results for only one dataset role ({have}); the gap needs train/test/ood datasets.",
                [f"lee eval -d sample -r {self.results}   # sample-train, sample-test, sample-ood"],
            )
        gap_table = next((t.frame for t in self.report.tables if t.name == "gap" and t.frame is not None), None)
        if gap_table is not None and "statistic" in gap_table:
            data.gap_ratios = gap_table[gap_table["statistic"].isin(["ratio", "geomean_ratio"])]

    def _explain_data(self, data: FigureData) -> None:
        """Figure 8: the explain family's image rows on one dataset (the primary one where they have it)."""
        where = self.selection.where()
        data.explain_dataset = self._dataset_for("explain", where, data.primary_dataset)
        where &= equals("dataset", data.explain_dataset or "")
        data.explain = _df(
            self.con,
            f"""
            SELECT model, weights, generator, sample_index, unit, lee, cells, grid_h, grid_w, border_profile,
                   input_h, input_w
            FROM explain WHERE {where.sql} AND kind = 'image'
            ORDER BY model, weights, generator, unit, sample_index""",
            where,
        )
        data.explain_missing = None if not data.explain.empty else self.no_rows_hint("explain")

    @staticmethod
    def _labels(data: FigureData) -> dict[str, str]:
        """What the captions' ``{name}`` fields say (:attr:`FigureSpec.caption`)."""
        return {
            "explain_dataset": data.explain_dataset or "(no data)",
            "primary_dataset": data.primary_dataset or "(no data)",
            "alt_dataset": data.alt_dataset or "(no data)",
            "layerwise_dataset": data.layerwise_dataset or "(no data)",
            "top1": (
                "the catalog top-1 of the pretrained checkpoint (not of these weights)"
                if data.lee_context.random_init
                else "top-1 accuracy (catalog)"
            ),
            "roles": ", ".join(sorted(data.gap_rows["role"].dropna().unique())),
        }

    def figures(self) -> None:
        """Draw every figure of :data:`FIGURES`, in order."""
        data = self.figure_data()
        for spec in FIGURES:
            self.figure(spec, data)

    # -- tables
    def tables(self) -> None:
        """The summary tables, then one table per named analysis."""
        self._lee_summary_table()
        self._alt_summary_table()
        for name, fn in ANALYSES.items():
            self._table(
                name, f"Analysis: {name}", _first_paragraph(fn.__doc__ or ""), lambda fn=fn: self._run_analysis(fn)
            )

    def _lee_summary_table(self) -> None:
        selection = self.selection
        where = selection.where()
        summary = _df(
            self.con,
            f"""
            SELECT model, coalesce(family, 'unknown') AS family, weights, dataset, role, generator, output,
                   interpolation, n, mean_lee, se_lee, params_m, top1
            FROM lee_summary WHERE {where.sql}
            ORDER BY dataset, generator, mean_lee, model, weights, role, output, interpolation""",
            where,
        )
        self._table(
            "lee_summary",
            "LEE per model, dataset and generator",
            "Mean LEE over images, its standard error and n (images); catalog parameters and top-1 "
            f"({selection.config_label()}).",
            lambda: summary,
        )

    def _alt_summary_table(self) -> None:
        selection = self.selection
        where = selection.where(generators=False, any_interpolation=True)  # alt units have no interpolation
        alt = _df(
            self.con,
            f"""
            SELECT model, coalesce(family, 'unknown') AS family, weights, dataset, role, metric, value_unit,
                   higher_is_better, n, mean_value, se_value, pooled_value, top1
            FROM alt_summary WHERE {where.sql}
            ORDER BY dataset, metric, model, weights, role, output""",
            where,
        )
        if not alt.empty:
            self._table(
                "alt_summary",
                "Alternative metrics per model, dataset and metric",
                "Mean over images, its standard error and n; for EQ-T, EQ-T_frac and EQ-R also pooled_value, "
                "StyleGAN3's statistic (the PSNR of the squared error pooled over every image and draw, the "
                "figure its paper publishes; NULL for units written before schema 5) "
                f"({selection.config_label(alt=True)}).",
                lambda: alt,
            )

    def _run_analysis(self, fn: Callable[..., pd.DataFrame]) -> pd.DataFrame:
        selection = self.selection
        return fn(
            self.con,
            weights=selection.weights,
            dataset=list(selection.datasets) or None,
            generator=list(selection.generators) or None,
            n_boot=self.n_boot,
            seed=self.seed,
            level=self.level,
        )

    def _table(self, name: str, title: str, description: str, compute: Callable[[], pd.DataFrame]) -> None:
        try:
            frame = compute()
        except Exception as exc:  # noqa: BLE001 - one broken analysis must not lose the rest of the report
            print(f"lee report: warning: table {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            self.report.tables.append(TableResult(name, title, description, None, error=f"{type(exc).__name__}: {exc}"))
            return
        note = ""
        selection = self.selection
        if selection.weights != "any" and "weights" in frame and not frame.empty:
            # analyses label rows 'pretrained' / 'random', view rows carry the weights used ('hub', 'file', ...)
            kept = {selection.weights, *WEIGHTS_FILTERS[selection.weights]}
            keep = frame["weights"].isna() | frame["weights"].isin(kept)
            if not keep.all():
                other = ", ".join(sorted(set(frame.loc[~keep, "weights"].astype(str))))
                note = (
                    f"{int((~keep).sum())} rows over {other} weights left out (the analysis fell back to them "
                    f"for want of {selection.weights} results); they are in a --weights-filter {other} report."
                )
                frame = frame[keep]
        for col, want in (("output", selection.output), ("interpolation", selection.interpolation)):
            # the analyses group by output / interpolation (they take no filter): keep the selected one; a
            # row without one (alt-only statistics, no configuration) stays
            if col in frame and not frame.empty:
                keep = frame[col].isna() | (frame[col].astype(str) == want)
                if not keep.all():
                    other = sorted(set(frame.loc[~keep, col].astype(str)))
                    note = " ".join(
                        filter(
                            None,
                            [
                                note,
                                (
                                    f"{int((~keep).sum())} rows of {col} {', '.join(other)} left out (this page shows "
                                    f"{col} "
                                    f"{want}); they are in a --{col} {other[0]} report."
                                ),
                            ],
                        )
                    )
                    frame = frame[keep]
        csv = Path("tables") / f"{name}.csv"
        (self.out_dir / "tables").mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.out_dir / csv, index=False)
        self.report.tables.append(TableResult(name, title, description, frame, csv=csv.as_posix(), note=note))

    # -- provenance
    def provenance(self) -> None:
        where = self.selection.where(generators=False, any_interpolation=True)
        sweeps = _df(
            self.con,
            f"""
            SELECT r.sweep_id, count(*) AS units, count(DISTINCT r.model) AS models,
                   string_agg(DISTINCT r.family, ', ' ORDER BY r.family) AS families,
                   string_agg(DISTINCT r.weights, ', ' ORDER BY r.weights) AS weights,
                   min(r.started_at) AS started, max(r.finished_at) AS finished,
                   string_agg(DISTINCT coalesce(r.git_rev, '-'), ', ' ORDER BY coalesce(r.git_rev, '-')) AS git_rev,
                   string_agg(DISTINCT r.hardware, ', ' ORDER BY r.hardware) AS hardware
            FROM runs r WHERE r.status = 'done' AND r.unit IN (SELECT unit FROM done_units WHERE {where.sql})
            GROUP BY r.sweep_id ORDER BY started, r.sweep_id""",
            where,
        )
        versions: dict[str, set[str]] = {}
        rows = self.con.sql(
            f"""SELECT DISTINCT package_versions FROM runs WHERE status = 'done'
                                AND unit IN (SELECT unit FROM done_units WHERE {where.sql})""",
            params=list(where.params),
        ).fetchall()
        for (text,) in rows:
            try:
                for k, v in json.loads(text or "{}").items():
                    versions.setdefault(str(k), set()).add(str(v))
            except (TypeError, ValueError):
                versions.setdefault("(unparsable package_versions)", set()).add(str(text)[:80])
        failed = _first(self.con, "SELECT count(*) FROM runs WHERE status <> 'done'")
        self.report.meta.update(random_models=self._random_models())
        self.report.meta.update(configs=self._configs())
        self.report.meta.update(
            results=self.results,
            sweeps=sweeps,
            result_versions={k: sorted(v) for k, v in sorted(versions.items())},
            report_versions=_report_versions(),
            failed_units=int(failed),
            weights_available=self.weights_available,
            generated=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            selection=self.selection,
        )

    def _random_models(self) -> dict[str, list[str]]:
        """The models of this root with only random-init results: ``fallback`` (``--weights auto`` on a hub model
        fell back, the hub offline or unreachable) and ``asked`` (random init requested, or a random-init spec)."""
        random = is_in("weights", WEIGHTS_FILTERS["random"])
        pretrained = is_in("weights", WEIGHTS_FILTERS["pretrained"])
        rows = self.con.sql(
            f"""
            SELECT model, bool_or(weights_policy = 'auto' AND key_json LIKE '%"source":"hub"%') AS fell_back
            FROM runs WHERE status = 'done' AND {random.sql}
              AND model NOT IN (SELECT model FROM runs WHERE status = 'done' AND {pretrained.sql})
            GROUP BY model ORDER BY model""",
            params=[*random.params, *pretrained.params],
        ).fetchall()
        return {"fallback": [m for m, fb in rows if fb], "asked": [m for m, fb in rows if not fb]}

    def _configs(self) -> list[dict[str, Any]]:
        """The output configurations of the completed units under this weights / datasets selection: one dict
        per (output, interpolation) with ``label``, ``models``, ``shown`` (this page's) and ``command``."""
        selection = self.selection
        where = selection.where(generators=False, config=False)
        rows = self.con.sql(
            f"""SELECT output, interpolation, bool_and(family = 'alt'), count(DISTINCT model)
                                FROM done_units WHERE {where.sql}
                                GROUP BY output, interpolation ORDER BY output, interpolation""",
            params=list(where.params),
        ).fetchall()
        out = []
        for output, interp, alt_only, models in rows:
            shown = output == selection.output and interp in (None, selection.interpolation)
            if interp is None:
                what = "alternative metrics" if alt_only else "interpolation not recorded"
                label, cmd = f"output {output} ({what})", self.report_cmd(output=str(output))
            else:
                label = f"output {output} · {interp} interpolation"
                cmd = self.report_cmd(output=str(output), interpolation=str(interp))
            out.append(
                {
                    "output": output,
                    "interpolation": interp,
                    "label": label,
                    "models": int(models),
                    "shown": shown,
                    "command": cmd,
                }
            )
        return out


def _first_paragraph(doc: str) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(str(doc).strip().split("\n\n")[0].split())


def _report_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("lee-eval", "duckdb", "pandas", "numpy", "matplotlib", "pyarrow", "scipy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def build_report(
    results: str,
    out: str | Path,
    *,
    weights: str = "pretrained",
    datasets: Sequence[str] = (),
    generators: Sequence[str] = (),
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    catalogs: Sequence[str] = (),
    command: str = "",
    output: str = "probs",
    interpolation: str = "cubic",
) -> Report:
    """Write the report of ``results`` into ``out`` (created): figures (PNG + SVG), ``tables/*.csv``, ``index.html``.

    Args:
        results: Results root URI (``lee eval -r``).
        out: Output directory (local).
        weights: ``pretrained``, ``random`` or ``any`` (see :data:`pipelines.spec.config.WEIGHTS_FILTERS`).
        datasets: Keep only these datasets (empty: all).
        generators: Keep only these generators (empty: all).
        n_boot, seed, level: Bootstrap settings passed to every named analysis.
        catalogs: User catalog files with the metadata of models the built-in catalogs do not know.
        command: The command line, stated on the page.
        output: ``probs`` (default) or ``logits``: the only output shown (see :data:`OUTPUTS`).
        interpolation: ``cubic`` (default) or ``spectral``: the only interpolation shown.

    Raises:
        pipelines.cli.UsageError: No results under ``results``, or a dataset/generator not in them.
    """
    selection = Selection(
        weights=weights,
        datasets=tuple(datasets),
        generators=tuple(generators),
        output=output,
        interpolation=interpolation,
    )
    try:
        report = _build_report(ResultsRoot(results), results, out, selection, n_boot, seed, level, catalogs, command)
    except duckdb.Error as exc:  # a data file damaged in a way its listing does not show (same size and mtime)
        return _build_report(
            full_check_root(results, exc), results, out, selection, n_boot, seed, level, catalogs, command
        )
    errors = [t.error for t in report.tables if t.error] + [f.message for f in report.figures if f.status == "error"]
    read_errors = [e for e in errors if e and e.split(":", 1)[0] in READ_ERRORS]
    if read_errors:  # the same, met inside a figure or an analysis: rebuild without the damaged units, if any
        try:
            root = full_check_root(results, RuntimeError(read_errors[0]))
        except UsageError:
            return report  # nothing damaged: the errors are the figures' own (shown on the page)
        return _build_report(root, results, out, selection, n_boot, seed, level, catalogs, command)
    return report


READ_ERRORS = ("Error", "IOException", "InvalidInputException", "InternalException", "SerializationException")
"""DuckDB's exception classes a data file that does not decode raises (a figure or table that failed with one
makes :func:`build_report` compare every data file with its recorded sha256)."""


def _build_report(
    root: ResultsRoot,
    results: str,
    out: str | Path,
    selection: Selection,
    n_boot: int,
    seed: int,
    level: float,
    catalogs: Sequence[str],
    command: str,
) -> Report:
    """:func:`build_report` over ``root``."""
    con = connect(root, catalogs=list(catalogs)) if catalogs else connect(root)
    try:
        for col, values in (("dataset", selection.datasets), ("generator", selection.generators)):
            if not values:
                continue
            views = ["lee", "layerwise_visible"] + (["alt"] if col == "dataset" else [])
            have = {r[0] for v in views for r in con.sql(f"SELECT DISTINCT {ident(col)} FROM {ident(v)}").fetchall()}
            unknown = sorted(set(values) - have)
            if unknown:
                raise UsageError(
                    f"{col} {', '.join(map(repr, unknown))} not in the results under {results!r}; "
                    f"they have: {', '.join(sorted(map(str, have))) or 'none'}"
                )
        out_dir = Path(out)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the output directory {str(out_dir)!r}: {exc}") from None
        builder = _Builder(con, results, out_dir, selection, n_boot=n_boot, seed=seed, level=level)
        builder.tables()
        builder.figures()
        builder.report.figures.sort(key=lambda f: f.stem)
        builder.provenance()
        builder.report.meta["command"] = command
        builder.report.meta["damaged_files"] = list(root.damaged)
        builder.report.index.write_text(render_html(builder.report), encoding="utf-8")
        return builder.report
    finally:
        con.close()
