r"""The paper's five analyses as named functions over the views (:func:`pipelines.analysis.views.connect`).

Every analysis has the signature::

    fn(con, *, weights="pretrained", dataset=None, generator=None, n_boot=2000, seed=0, level=0.95,
       **options) -> pandas.DataFrame

and returns one tidy table, one row per statistic, with the columns of :data:`COLUMNS` first:

==============  ===================================================================================
``analysis``    the analysis name (key of :data:`ANALYSES`)
``weights``     the weights the rows are over: ``pretrained`` (``hub`` + ``file``: timm hub weights
                and locally trained zoo / checkpoint models), ``random`` (random init) or ``any``
``dataset``     catalog dataset (or the roles compared, for ``gap``)
``generator``   liecore generator
``scope``       what the statistic pools over: ``overall``, ``family``, ``within-family``, ``model``
``family``      architecture family of a family-scoped row
``model``       model of a model-scoped row
``term``        what is estimated (a regression term, a ratio, a layer, a metric ...)
``statistic``   ``pearson_r``, ``spearman_rho``, ``coef``, ``F``, ``slope``, ``ratio``, ...
``estimate``    the point estimate
``ci_low``      lower end of the interval at ``level``
``ci_high``     upper end
``level``       interval level
``n``           sample size of the statistic, in ``n_of`` (models, images)
``n_of``        what ``n`` counts
``p_value``     two-sided p-value where there is one (classical test; NaN otherwise)
``method``      how the estimate and its interval were computed
``note``        caveats: a random-init fallback, dropped models, too few points ...
==============  ===================================================================================

followed by analysis-specific columns (``output``, ``interpolation`` and more, documented per function).

**Weights are never pooled silently.** ``weights="pretrained"`` (the default) uses rows whose weights are
``hub`` or ``file`` (:data:`pipelines.spec.config.WEIGHTS_FILTERS`, the one vocabulary of the analyses, the
report and ``--weights-filter``); when a results root has no pretrained rows for the analysis at all (an
offline sweep with ``--weights auto`` and no cached hub weights), the analysis falls back to the random-init
rows and says so in ``weights`` (``random``) and ``note``. ``weights="any"`` pools every kind on request; a
model evaluated with two kinds of weights is then two points (column ``model_weights`` where models are
listed).

Statistics (``pipelines.analysis.stats``): percentile bootstrap intervals with ``n_boot`` resamples and
a seeded generator (``seed``), resampling models for across-model statistics and images for per-model
ratios; Student-t intervals for OLS coefficients and means; a nested-model F test for "does family
matter once accuracy is accounted for". LEE enters on the log scale (``ln`` of the mean LEE over a
model's images), as in the paper's figures.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lee_names import did_you_mean
from pipelines.analysis import stats
from pipelines.analysis.sqltext import Condition, ident, is_in
from pipelines.spec.config import WEIGHTS_FILTERS

__all__ = [
    "ANALYSES",
    "COLUMNS",
    "accuracy",
    "agreement",
    "anti_alias_pairs",
    "border_share",
    "gap",
    "layer_location",
    "layerwise",
    "run_analysis",
    "scale",
    "texture",
]

COLUMNS: tuple[str, ...] = (
    "analysis",
    "weights",
    "dataset",
    "generator",
    "scope",
    "family",
    "model",
    "term",
    "statistic",
    "estimate",
    "ci_low",
    "ci_high",
    "level",
    "n",
    "n_of",
    "p_value",
    "method",
    "note",
)
"""The leading columns of every analysis table (analysis-specific columns follow)."""

MODELS_PER_QUERY = 32
"""Models per query of the per-image layerwise rows (``layerwise``): bounds memory on large stores."""

ACCURACY_COLUMNS = ("top1", "top5", "top1_v2", "top1_sketch", "top1_r", "top1_real")

_RANDOM_FALLBACK = (
    "no pretrained (hub/file) results for this analysis: random-init results shown instead; catalog "
    "numbers (top-1, ...) belong to the pretrained weights"
)

Filter = str | Sequence[str] | None


# ---- helpers -------------------------------------------------------------------------------------------
def _as_list(value: Filter) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class _Weights:
    """The weights kinds an analysis uses, after the random-init fallback."""

    def __init__(self, con: Any, weights: str, families: Sequence[str], dataset: Filter):
        if weights not in WEIGHTS_FILTERS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS_FILTERS)}, got {weights!r}")
        self.label, self.kinds, self.note = weights, WEIGHTS_FILTERS[weights], ""
        if weights != "pretrained":
            return
        where = is_in("family", families) & is_in("dataset", _as_list(dataset))
        found = con.sql(f"SELECT DISTINCT weights FROM done_units WHERE {where.sql}", params=list(where.params))
        have = {r[0] for r in found.fetchall() if r[0] is not None}
        if have and not have & set(WEIGHTS_FILTERS["pretrained"]) and "random" in have:
            self.label, self.kinds, self.note = "random", WEIGHTS_FILTERS["random"], _RANDOM_FALLBACK

    def where(self, column: str | tuple[str, str] = "weights") -> Condition:
        return is_in(column, self.kinds)


def _column(alias: str, name: str) -> str | tuple[str, str]:
    """Column ``name`` of table ``alias`` (no alias: the bare name), as :func:`~pipelines.analysis.sqltext.is_in`
    takes it."""
    return (alias, name) if alias else name


def _where(w: _Weights, dataset: Filter, generator: Filter, alias: str = "") -> Condition:
    """The weights / dataset / generator filter, on columns of ``alias`` (a table alias) if given; the names
    are bound parameters."""
    return (
        w.where(_column(alias, "weights"))
        & is_in(_column(alias, "dataset"), _as_list(dataset))
        & is_in(_column(alias, "generator"), _as_list(generator))
    )


def _df(con: Any, sql: str, where: Condition | None = None) -> pd.DataFrame:
    """The rows of ``sql``, whose ``?`` placeholders are ``where``'s parameters."""
    return con.sql(sql, params=list(where.params) if where is not None else None).df()


# Every query whose rows reach a statistic ends in a total ORDER BY: without one DuckDB returns rows in the
# order its threads happen to produce them, which changes float sums (means, regressions, correlations) and
# which rows a seeded bootstrap draws (it draws positions). The keys below are unique per row of each view
# (the trailing value columns only break ties between rows that would be equal anyway).
_SUMMARY_KEYS = ("dataset", "generator", "output", "interpolation", "model", "weights", "role")
"""``lee_summary``: its GROUP BY columns."""
_LEE_KEYS = (
    "model",
    "weights",
    "dataset",
    "generator",
    "output",
    "interpolation",
    "unit",
    "sample_index",
    "sample_id",
    "value",
)
"""``lee``: a unit's row per image and generator."""
_LAYERWISE_KEYS = (
    "model",
    "weights",
    "dataset",
    "generator",
    "output",
    "interpolation",
    "method",
    "num_probes",
    "unit",
    "sample_index",
    "sample_id",
    "kind",
    "call_index",
    "layer",
    "value",
    "share",
)
"""``layerwise``: a unit's row per image, generator and layer call."""
_PAIR_KEYS = (
    "dataset",
    "generator",
    "output",
    "interpolation",
    "metric",
    "model",
    "weights",
    "role",
    "value_unit",
    "higher_is_better",
    "mean_lee",
    "mean_value",
)
"""``metric_pairs``: a ``lee_summary`` row's key and the metric (one ``alt_summary`` row per dataset)."""


def _order(keys: Sequence[str], alias: str = "") -> str:
    """``ORDER BY`` list of ``keys`` (on the columns of table ``alias`` if given), NULLs last."""
    return ", ".join(f"{ident(alias, k) if alias else ident(k)} NULLS LAST" for k in keys)


def _join_notes(*notes: str | None) -> str:
    return "; ".join(n for n in notes if n)


def stat_row(
    base: Mapping[str, Any],
    *,
    statistic: str,
    n_of: str,
    method: str,
    iv: stats.Interval | None = None,
    estimate: float = math.nan,
    ci_low: float = math.nan,
    ci_high: float = math.nan,
    n: int | None = None,
    p_value: float = math.nan,
    **columns: Any,
) -> dict[str, Any]:
    """One row of an analysis table (the tidy row of :data:`COLUMNS`, then analysis-specific columns).

    Args:
        base: The group's columns (``dataset``, ``generator``, ``output``, ``interpolation`` ...), first.
        statistic: What ``estimate`` is (``pearson_r``, ``coef``, ``slope``, ``ratio`` ...).
        n_of: What ``n`` counts.
        method: How the estimate and its interval were computed.
        iv: The estimate with its interval, ``n`` and p-value (instead of ``estimate`` ... ``p_value``).
        estimate, ci_low, ci_high, n, p_value: The numbers, when not given as ``iv`` (NaN / None: none).
        **columns: ``scope``, ``family``, ``model``, ``term``, ``note`` and the analysis-specific columns, in the
            order they appear in the table (a column left out is missing, not empty); they override ``base``.
    """
    if iv is not None:
        estimate, ci_low, ci_high, n, p_value = iv.estimate, iv.low, iv.high, iv.n, iv.p_value
    return {
        **base,
        **columns,
        "statistic": statistic,
        "estimate": estimate,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n": n,
        "p_value": p_value,
        "n_of": n_of,
        "method": method,
    }


def _frame(name: str, rows: list[dict[str, Any]], w: _Weights, level: float, empty_note: str) -> pd.DataFrame:
    """The tidy table: COLUMNS first, then extra columns in order of appearance."""
    extras: list[str] = []
    for r in rows:
        r.setdefault("analysis", name)
        r.setdefault("weights", w.label)
        r.setdefault("level", level)
        r["note"] = _join_notes(w.note, r.get("note"))
        extras += [k for k in r if k not in COLUMNS and k not in extras]
    df = pd.DataFrame(rows, columns=[*COLUMNS, *extras])
    if not rows:
        df.attrs["note"] = _join_notes(w.note, empty_note)
    for c in ("estimate", "ci_low", "ci_high", "level", "p_value"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    df["n"] = pd.to_numeric(df["n"], errors="coerce").astype("Int64")
    return df


def _model_key(df: pd.DataFrame, w: _Weights) -> pd.Series:
    """A model's identity as a statistical unit (model, plus its weights when several kinds are pooled)."""
    return df["model"] if w.kinds is not None and len(w.kinds) == 1 else df["model"] + " [" + df["weights"] + "]"


def _groups(df: pd.DataFrame, keys: list[str]):
    if df.empty:
        return []
    return df.groupby(keys, dropna=False, sort=True)


# ---- 1. accuracy ---------------------------------------------------------------------------------------
def accuracy(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    x: str = "top1",
) -> pd.DataFrame:
    r"""Equivariance vs accuracy: does a more accurate model have a lower LEE?

    Per dataset, generator (and output / interpolation), over models (each model one point, ``y`` = ln of
    its mean LEE over images, ``x`` = its catalog accuracy):

    - ``pearson_r`` and ``spearman_rho`` of (ln LEE, ``x``), ``scope = overall`` and per family
      (``scope = family``, families with at least 3 models), each with a percentile bootstrap interval
      over models and the classical p-value;
    - the regression ``ln LEE ~ x + family`` (OLS, family as indicators against the largest family,
      ``statistic = coef``, ``scope = regression``) with Student-t intervals: the ``x`` slope and the
      family offsets once accuracy is accounted for;
    - the nested-model F test of all family terms (``term = family``, ``statistic = F``): whether
      families differ once accuracy is accounted for.

    Models without ``x`` in the catalog, or with a zero mean LEE, are dropped (counted in ``note``).

    Args:
        x: The accuracy column of ``models``: ``top1`` (ImageNet, or the zoo task's test set), ``top5``,
            ``top1_v2``, ``top1_sketch``, ``top1_r``, ``top1_real``.
    """
    if x not in ACCURACY_COLUMNS:
        raise ValueError(f"x must be one of {', '.join(ACCURACY_COLUMNS)}, got {x!r}")
    w = _Weights(con, weights, ["lee"], dataset)
    where = _where(w, dataset, generator)
    data = _df(
        con,
        f"""
        SELECT model, weights, dataset, generator, output, interpolation, log_mean_lee AS y, {ident(x)} AS x, family
        FROM lee_summary
        WHERE {where.sql}
        ORDER BY {_order(_SUMMARY_KEYS)}
    """,
        where,
    )
    rows: list[dict[str, Any]] = []
    boot = f"percentile bootstrap over models ({n_boot} resamples, seed {seed})"
    for (ds, gen, out, interp), g in _groups(data, ["dataset", "generator", "output", "interpolation"]):
        base = {"dataset": ds, "generator": gen, "output": out, "interpolation": interp, "x": x}
        ok = np.isfinite(g["y"].astype(float)) & g["x"].notna()
        dropped = int((~ok).sum())
        note = f"{dropped} model(s) without {x} or with zero LEE dropped" if dropped else ""
        g = g[ok].assign(family=g["family"].fillna("unknown"))
        yv, xv = g["y"].to_numpy(float), g["x"].to_numpy(float)
        scopes = [("overall", None, yv, xv)]
        for fam, gf in g.groupby("family", sort=True):
            if len(gf) >= 3:
                scopes.append(("family", fam, gf["y"].to_numpy(float), gf["x"].to_numpy(float)))
        for scope, fam, ys, xs in scopes:
            for method in ("pearson", "spearman"):
                iv = stats.bootstrap_corr(ys, xs, method, n_boot=n_boot, seed=seed, level=level)
                rows.append(
                    stat_row(
                        base,
                        scope=scope,
                        family=fam,
                        term=f"ln LEE vs {x}",
                        statistic="pearson_r" if method == "pearson" else "spearman_rho",
                        iv=iv,
                        n_of="models",
                        method=f"{method} correlation; {boot}",
                        note=note if scope == "overall" else "",
                    )
                )
        rows += _family_regression(g, yv, xv, x, base, level, note)
    return _frame("accuracy", rows, w, level, "no lee results match")


def _family_regression(
    g: pd.DataFrame, y: np.ndarray, x: np.ndarray, xname: str, base: dict[str, Any], level: float, note: str
) -> list[dict[str, Any]]:
    counts = g["family"].value_counts()
    families = sorted(counts.index, key=lambda f: (-counts[f], f))
    if len(families) < 2:
        return []
    ref, others = families[0], families[1:]
    dummies = np.stack([(g["family"] == f).to_numpy(float) for f in others], axis=1)
    ones = np.ones((len(g), 1))
    full = stats.ols(y, np.hstack([ones, x[:, None], dummies]), ["intercept", xname, *others], level=level)
    if full.df_resid <= 0:
        return []
    reduced = stats.ols(y, np.hstack([ones, x[:, None]]), ["intercept", xname], level=level)
    method = f"OLS ln LEE ~ {xname} + family (reference family {ref}); t interval, df {full.df_resid}"
    rows = []
    for i, term in enumerate(full.terms):
        fam = term if i >= 2 else None
        rows.append(
            stat_row(
                base,
                scope="regression",
                family=fam,
                term=f"family[{term}] - family[{ref}]" if fam else term,
                statistic="coef",
                estimate=full.coef[i],
                ci_low=full.low[i],
                ci_high=full.high[i],
                n=full.n,
                p_value=full.p_value[i],
                n_of="models",
                method=method,
                note=note,
            )
        )
    F, p, d1, d2 = stats.f_test(full, reduced)
    rows.append(
        stat_row(
            base,
            scope="regression",
            term="family",
            statistic="F",
            estimate=F,
            n=full.n,
            p_value=p,
            n_of="models",
            method=f"nested F test: ln LEE ~ {xname} + family vs ln LEE ~ {xname}, F({d1}, {d2})",
            note=note,
        )
    )
    return rows


# ---- 2. scale, recipe, anti-aliasing -------------------------------------------------------------------
_BLUR_SPELLINGS = ("_blur_", "_blur", "blur_", "blur")


def anti_alias_pairs(models: pd.DataFrame) -> list[tuple[str, str]]:
    """(anti-aliased model, plain model) pairs: the plain model's arch is the other's without ``blur``.

    ``resnetblur50.* / resnet50.*``, ``densenetblur121d.* / densenet121d.*``,
    ``mobilenetv4_conv_blur_medium.* / mobilenetv4_conv_medium.*``; every tag of the plain arch is paired.

    Args:
        models: Rows with ``model`` and ``arch`` (arch missing: the model name before the first dot).
    """
    arch = {
        m: (a if isinstance(a, str) and a else m.split(".")[0])
        for m, a in zip(models["model"], models["arch"], strict=True)
    }
    by_arch: dict[str, list[str]] = {}
    for m, a in arch.items():
        by_arch.setdefault(a, []).append(m)
    pairs = []
    for m, a in sorted(arch.items()):
        if "blur" not in a:
            continue
        for spelling in _BLUR_SPELLINGS:
            if spelling in a:
                plain = a.replace(spelling, "_" if spelling == "_blur_" else "", 1)
                if plain in by_arch:
                    pairs += [(m, p) for p in sorted(by_arch[plain])]
                    break
    return pairs


def scale(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    r"""Scale, training recipe and anti-aliasing.

    Per dataset, generator, output and interpolation, over models (``y`` = ln mean LEE). Every comparison
    is between models that differ only in the thing compared; the rest is held fixed by grouping on the
    ``models`` columns (missing values are a value of their own):

    ==================  ==========================================================================
    what a model is     ``arch``, ``params_m`` (4 significant digits), ``model_kwargs`` (zoo widths)
    what it learned on  ``pretrain_data``, ``pretrain_images``, ``train_images`` (zoo training-set size)
    how                 ``recipe`` (missing: ``none``), and ``weights`` (hub / file / random)
    ==================  ==========================================================================

    - ``statistic = slope``, ``term = log10 params_m``: OLS slope of ln LEE on log10 of the parameter
      count (change of ln LEE per tenfold) within groups of models with equal recipe, training data and
      weights: ``ln LEE ~ log10 params_m + one offset per group``, groups with at least two sizes. Per
      family (``scope = family``) and pooled over families (``scope = within-family``: an offset per
      family and group), Student-t interval; ``n`` = models in the groups used;
    - ``term = log10 pretrain_images``: the same for the size of the (first-stage) training set, within
      groups of equal model (arch, parameters, model_kwargs), recipe and weights;
    - ``statistic = recipe_effect``, ``term = recipe=<r>``, ``scope = within-model``: among models that
      differ only in their recipe (equal model, training data and weights; groups with at least two
      recipes), the mean ln LEE of recipe ``r``'s models minus the group's mean over recipes (the mean
      of the recipes' means: each recipe weighs the same however many seeds it has), averaged over the
      groups with ``r``; negative = lower LEE than the same model under the other recipes. Student-t
      interval over groups (``n_of = groups``) when ``r`` is in two or more, else within its one group
      from the pooled spread of models of equal group and recipe (seeds; ``n_of = models``);
    - ``statistic = ratio``, ``term = anti-aliased / plain``: mean LEE of an anti-aliased (BlurPool)
      model over its plain counterpart (``model`` / column ``reference``; :func:`anti_alias_pairs`, or
      ``pairs``), percentile bootstrap over images, paired when both saw the same images.

    Args:
        pairs: Explicit (anti-aliased, plain) model pairs instead of :func:`anti_alias_pairs`.
    """
    w = _Weights(con, weights, ["lee"], dataset)
    where = _where(w, dataset, generator, "s")
    data = _df(
        con,
        f"""
        SELECT s.model, s.weights, s.dataset, s.generator, s.output, s.interpolation, s.log_mean_lee AS y,
               s.family, s.params_m, s.pretrain_data, s.pretrain_images, m.train_images, m.model_kwargs, s.recipe,
               coalesce(m.arch, split_part(s.model, '.', 1)) AS arch
        FROM lee_summary s LEFT JOIN models m USING (model)
        WHERE {where.sql}
        ORDER BY {_order(_SUMMARY_KEYS, "s")}
    """,
        where,
    )
    rows: list[dict[str, Any]] = []
    for (ds, gen, out, interp), g in _groups(data, ["dataset", "generator", "output", "interpolation"]):
        base = {"dataset": ds, "generator": gen, "output": out, "interpolation": interp}
        g = g[np.isfinite(g["y"].astype(float))].assign(
            family=lambda d: d["family"].fillna("unknown"),
            recipe=lambda d: d["recipe"].fillna("none"),
            params_key=lambda d: [f"{v:.4g}" if pd.notna(v) else None for v in d["params_m"]],
        )
        for col in ("params_m", "pretrain_images"):
            rows += _trend(g, col, base, level)
        rows += _recipes(g, base, level)
    model_arch = _df(con, "SELECT model, arch FROM models ORDER BY model")
    chosen = list(pairs) if pairs is not None else anti_alias_pairs(model_arch)
    rows += _anti_alias(con, chosen, _where(w, dataset, generator, "l"), n_boot, seed, level)
    empty = (
        "no lee results match"
        if data.empty
        else "too few models: a trend needs 3 models of a family, 2 sizes among models of equal recipe and data "
        "(or model, for the data size); a recipe effect 2 recipes of one model trained on the same data; the "
        "anti-aliasing ratio a BlurPool model and its plain counterpart"
    )
    return _frame("scale", rows, w, level, empty)


_MODEL_KEYS = ("arch", "params_key", "model_kwargs")
"""``scale``: what a model is (``params_key`` = ``params_m`` to 4 significant digits)."""
_DATA_KEYS = ("pretrain_data", "pretrain_images", "train_images")
"""``scale``: what a model was trained on."""
_TREND_HELD: dict[str, tuple[tuple[str, ...], str]] = {
    "params_m": (
        ("weights", "recipe", *_DATA_KEYS),
        "recipe and training data (pretrain_data, pretrain_images, train_images)",
    ),
    "pretrain_images": (("weights", "recipe", *_MODEL_KEYS), "model (arch, params_m, model_kwargs) and recipe"),
}
"""``scale`` trends: the columns held fixed within a group, and how the method text names them."""


def _group_labels(d: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """One string per row naming its values of ``cols`` (missing values are a value of their own)."""
    if d.empty:
        return pd.Series([], index=d.index, dtype=object)
    parts = d[list(cols)].astype(object).where(d[list(cols)].notna(), "NA").astype(str)
    labels = parts.iloc[:, 0]
    for col in parts.columns[1:]:  # column by column: one vectorised concatenation each, not a join per row
        labels = labels + " | " + parts[col]
    return labels.rename(None)


def _within_slope(
    d: pd.DataFrame, col: str, groups: pd.Series, term: str, level: float
) -> tuple[stats.OLSResult, int] | None:
    """OLS ``ln LEE ~ log10 col + one offset per group`` over the groups with at least two values of ``col``."""
    keep = d.groupby(groups)[col].transform("nunique") >= 2
    d, groups = d[keep], groups[keep]
    if len(d) < 3:
        return None
    names = sorted(groups.unique())
    X = np.column_stack([np.log10(d[col].to_numpy(float))] + [(groups == k).to_numpy(float) for k in names])
    r = stats.ols(d["y"].to_numpy(float), X, [term, *names], level=level)
    return (r, len(names)) if r.df_resid > 0 else None


def _trend(g: pd.DataFrame, col: str, base: dict[str, Any], level: float) -> list[dict[str, Any]]:
    d = g[g[col].astype(float) > 0]
    held, held_text = _TREND_HELD[col]
    term = f"log10 {col}"
    groups = _group_labels(d, held)
    rows = []
    for fam, gf in d.groupby("family", sort=True):
        fit = _within_slope(gf, col, groups.loc[gf.index], term, level)
        if fit is None:
            continue
        r, k = fit
        rows.append(
            stat_row(
                base,
                scope="family",
                family=fam,
                term=term,
                statistic="slope",
                estimate=r.coef[0],
                ci_low=r.low[0],
                ci_high=r.high[0],
                n=r.n,
                p_value=r.p_value[0],
                n_of="models",
                method=f"OLS ln LEE ~ {term} + an offset per group of models of equal {held_text} and "
                f"weights (the slope within groups; {k} group(s) with 2+ sizes); t interval, "
                f"df {r.df_resid}",
            )
        )
    fit = _within_slope(d, col, d["family"] + " || " + groups, term, level) if not d.empty else None
    if fit is not None:
        r, k = fit
        rows.append(
            stat_row(
                base,
                scope="within-family",
                term=term,
                statistic="slope",
                estimate=r.coef[0],
                ci_low=r.low[0],
                ci_high=r.high[0],
                n=r.n,
                p_value=r.p_value[0],
                n_of="models",
                method=f"OLS ln LEE ~ {term} + an offset per family and group of models of equal "
                f"{held_text} and weights ({k} groups with 2+ sizes); t interval, "
                f"df {r.df_resid}",
            )
        )
    return rows


def _recipes(g: pd.DataFrame, base: dict[str, Any], level: float) -> list[dict[str, Any]]:
    d = g.assign(group=_group_labels(g, ("weights", *_MODEL_KEYS, *_DATA_KEYS)))
    d = d[d.groupby("group")["recipe"].transform("nunique") >= 2]
    if d.empty:
        return []
    cells = d.groupby(["group", "recipe"])["y"].agg(["mean", "count", "var"])  # one cell: seeds of a recipe
    df_within = int((cells["count"] - 1).sum())
    s2 = float(((cells["count"] - 1) * cells["var"].fillna(0.0)).sum() / df_within) if df_within > 0 else math.nan
    # per group its recipes, their mean ln LEE and their model counts, as plain arrays (no pandas per cell)
    groups = [
        (list(c.index.get_level_values("recipe")), c["mean"].to_numpy(float), c["count"].to_numpy(float))
        for _, c in cells.groupby(level="group")
    ]
    same = (
        "models that differ only in recipe (equal arch, params_m, model_kwargs, pretrain_data, pretrain_images, "
        "train_images and weights)"
    )
    rows = []
    for recipe in sorted(d["recipe"].unique()):
        devs, var_factor, n_models = [], [], 0
        for names, means, counts in groups:
            if recipe not in names:
                continue
            i, k = names.index(recipe), len(names)
            devs.append(means[i] - means.mean())  # against the mean over the group's recipes
            inv = 1.0 / counts
            var_factor.append((1 - 1 / k) ** 2 * inv[i] + np.delete(inv, i).sum() / k**2)
            n_models += int(counts[i])
        what = (
            f"deviation of ln LEE of recipe {recipe}'s models from the mean over recipes of the recipe means "
            f"(each recipe weighs the same, however many seeds), within groups of {same}"
        )
        if len(devs) >= 2:
            iv, n_of = stats.mean_t_interval(np.array(devs), level=level), "groups"
            method = f"mean over {len(devs)} groups of the {what}; t interval over groups"
        else:
            se = math.sqrt(s2 * var_factor[0]) if df_within > 0 else math.nan
            iv, n_of = stats.t_interval(devs[0], se, df_within, n_models, level=level), "models"
            method = (
                f"{what} (1 group); t interval from the spread of models of equal group and recipe "
                f"(seeds; pooled variance, df {df_within})"
            )
        rows.append(
            stat_row(
                base,
                scope="within-model",
                term=f"recipe={recipe}",
                statistic="recipe_effect",
                iv=iv,
                n_of=n_of,
                method=method,
            )
        )
    return rows


def _anti_alias(
    con: Any, pairs: list[tuple[str, str]], filt: Condition, n_boot: int, seed: int, level: float
) -> list[dict[str, Any]]:
    if not pairs:
        return []
    names = sorted({m for p in pairs for m in p})
    where = is_in(("l", "model"), names) & filt
    data = _df(
        con,
        f"""
        SELECT l.model, l.weights, l.dataset, l.generator, l.output, l.interpolation, l.sample_id, l.value,
               m.family
        FROM lee l LEFT JOIN models m USING (model)
        WHERE {where.sql}
        ORDER BY {_order(_LEE_KEYS, "l")}
    """,
        where,
    )
    rows = []
    keys = ["weights", "dataset", "generator", "output", "interpolation"]
    for key, g in _groups(data, keys):
        base = dict(zip(keys, key, strict=True))
        wk = base.pop("weights")
        for blur, plain in pairs:
            a = g[g["model"] == blur].set_index("sample_id")["value"]
            b = g[g["model"] == plain].set_index("sample_id")["value"]
            if a.empty or b.empty:
                continue
            paired = set(a.index) == set(b.index)
            if paired:
                b = b.loc[a.index]
            iv = stats.ratio_of_means(
                a.to_numpy(float), b.to_numpy(float), paired=paired, n_boot=n_boot, seed=seed, level=level
            )
            fam = g.loc[g["model"] == blur, "family"].iloc[0]
            rows.append(
                stat_row(
                    base,
                    scope="pair",
                    family=fam,
                    model=blur,
                    term="anti-aliased / plain",
                    statistic="ratio",
                    iv=iv,
                    n_of="images",
                    method=f"ratio of mean LEE; percentile bootstrap over images ({n_boot} resamples, "
                    f"{'paired' if paired else 'unpaired'})",
                    reference=plain,
                    model_weights=wk,
                )
            )
    return rows


# ---- 3. the equivariance gap ---------------------------------------------------------------------------
def gap(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    reference: str = "test",
) -> pd.DataFrame:
    r"""The equivariance gap: LEE on training vs test vs out-of-distribution images.

    Per generator, the images of each dataset role (``train``, ``test``, ``ood``; all datasets of a role
    pooled, column ``datasets``):

    - ``statistic = mean_lee``, ``term = <role>``, ``scope = model``: a model's mean LEE on the role's
      images;
    - ``statistic = ratio``, ``term = <role>/<reference>``, ``scope = model``: ratio of the model's mean
      LEE on the role's images to its mean on the reference role's images (ratio of means);
    - ``scope = family``: the geometric mean over the family's models of their ratios (models' LEEs span
      orders of magnitude; the geometric mean weighs them equally), ``n`` = models.

    Intervals: percentile bootstrap over images. Each resample draws every dataset's images with
    replacement once and applies the draw to all models (the same image is the same draw for every
    model), so family intervals account for models sharing images.

    Args:
        reference: The role in the denominators.
    """
    w = _Weights(con, weights, ["lee"], dataset)
    where = _where(w, dataset, generator)
    data = _df(
        con,
        f"""
        SELECT model, weights, dataset, role, generator, output, interpolation, sample_id, value, m.family
        FROM lee LEFT JOIN models m USING (model)
        WHERE {where.sql}
        ORDER BY {_order(_LEE_KEYS, "lee")}
    """,
        where,
    )
    rows: list[dict[str, Any]] = []
    if data.empty:
        return _frame("gap", rows, w, level, "no lee results match")
    data["unit"] = _model_key(data, w)
    data["family"] = data["family"].fillna("unknown")
    data["image"] = data["dataset"] + "/" + data["sample_id"]
    rng_seed = seed
    for (gen, out, interp), g in _groups(data, ["generator", "output", "interpolation"]):
        base = {"generator": gen, "output": out, "interpolation": interp}
        rows += _gap_group(g, base, reference, n_boot, rng_seed, level)
    note = "" if reference in set(data["role"]) else f"no {reference!r} images: no ratios"
    return _frame("gap", rows, w, level, note)


def _gap_group(
    g: pd.DataFrame, base: dict[str, Any], reference: str, n_boot: int, seed: int, level: float
) -> list[dict[str, Any]]:
    units = np.array(sorted(g["unit"].unique()), dtype=object)
    info = g.drop_duplicates("unit").set_index("unit").loc[units]
    fams, names, wts = (info[c].to_numpy(object) for c in ("family", "model", "weights"))
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    boot_note = f"percentile bootstrap over images ({n_boot} resamples)"
    means: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]] = {}  # role -> (est, boot, n, datasets)
    for role, gr in g.groupby("role", sort=True):
        mat = gr.pivot_table(index="unit", columns="image", values="value", aggfunc="mean").reindex(units)
        v = mat.to_numpy(float)
        mask = np.isfinite(v)
        v0 = np.where(mask, v, 0.0)
        n_img = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            est = v0.sum(axis=1) / n_img
        # one resample of every dataset's images per bootstrap draw, shared by all models
        counts = np.zeros((n_boot, v.shape[1]))
        cols = np.array([c.split("/", 1)[0] for c in mat.columns])
        for ds in np.unique(cols):
            idx = np.flatnonzero(cols == ds)
            counts[:, idx] = stats.bootstrap_counts(len(idx), n_boot, rng)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (counts @ v0.T) / (counts @ mask.T)
        means[role] = (est, boot, n_img, ", ".join(sorted(gr["dataset"].unique())))
    rows = []
    for role, (est, boot, n_img, dsets) in means.items():
        lo, hi = _quantiles(boot, q)
        for i in np.flatnonzero(n_img > 0):
            rows.append(
                stat_row(
                    base,
                    dataset=dsets,
                    scope="model",
                    family=fams[i],
                    model=names[i],
                    term=role,
                    statistic="mean_lee",
                    estimate=est[i],
                    ci_low=lo[i] if n_img[i] > 1 else math.nan,
                    ci_high=hi[i] if n_img[i] > 1 else math.nan,
                    n=int(n_img[i]),
                    n_of="images",
                    method=f"mean over images; {boot_note}",
                    role=role,
                    model_weights=wts[i],
                )
            )
    if reference not in means:
        return rows
    ref_est, ref_boot, ref_n, ref_ds = means[reference]
    for role, (est, boot, n_img, dsets) in means.items():
        if role == reference:
            continue
        term = f"{role}/{reference}"
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio, rboot = est / ref_est, boot / ref_boot
        ok = (n_img > 0) & (ref_n > 0) & np.isfinite(ratio) & (ratio > 0)
        method = f"ratio of mean LEE ({role} images / {reference} images)"
        lo, hi = _quantiles(rboot, q)
        for i in np.flatnonzero(ok):
            rows.append(
                stat_row(
                    base,
                    dataset=f"{dsets} / {ref_ds}",
                    scope="model",
                    family=fams[i],
                    model=names[i],
                    term=term,
                    statistic="ratio",
                    estimate=ratio[i],
                    ci_low=lo[i],
                    ci_high=hi[i],
                    n=int(min(n_img[i], ref_n[i])),
                    n_of="images",
                    method=f"{method}; {boot_note}",
                    role=role,
                    model_weights=wts[i],
                )
            )
        for fam in sorted(set(fams[ok])):
            sel = ok & (fams == fam)
            with np.errstate(invalid="ignore", divide="ignore"):
                gb = np.exp(np.nanmean(np.log(rboot[:, sel]), axis=1))
            flo, fhi = np.nanquantile(gb, q)
            rows.append(
                stat_row(
                    base,
                    dataset=f"{dsets} / {ref_ds}",
                    scope="family",
                    family=fam,
                    term=term,
                    statistic="geomean_ratio",
                    estimate=float(np.exp(np.log(ratio[sel]).mean())),
                    ci_low=flo,
                    ci_high=fhi,
                    n=int(sel.sum()),
                    n_of="models",
                    method=f"geometric mean over models of the {method}; percentile bootstrap over "
                    f"images shared by all models ({n_boot} resamples)",
                    role=role,
                )
            )
    return rows


def _quantiles(boot: np.ndarray, q: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise percentile interval of bootstrap draws ``(B, k)``; NaN draws ignored."""
    if not np.isnan(boot).any():
        lo, hi = np.quantile(boot, q, axis=0)  # vectorized; nanquantile goes column by column
        return lo, hi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
        lo, hi = np.nanquantile(boot, q, axis=0)
    return lo, hi


# ---- 4. layerwise --------------------------------------------------------------------------------------
def layerwise(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    model: Filter = None,
    method: str | None = None,
) -> pd.DataFrame:
    r"""Where equivariance is lost: cumulative contribution by layer order and share by layer type.

    Per model, weights, dataset, generator and configuration (columns ``output``, ``interpolation``,
    ``layerwise_method``, ``num_probes``: results of two configurations of one model are never pooled),
    from the layerwise table's additive shares (``share``; per image the layer shares plus the
    unattributed share sum to the end-to-end LEE):

    - ``statistic = cumulative_fraction``, ``term = <layer>``: the sum of the shares of this layer call
      and all earlier ones over the end-to-end LEE (ratio of means over images); columns ``call_index``,
      ``depth`` (call position scaled to [0, 1]), ``layer_type``, ``layer_class`` (figure 4);
    - ``statistic = share_fraction``, ``term = <layer type>``, ``scope = model``: the share of the
      end-to-end LEE by layer type (patch embedding, convolution, normalization, activation,
      downsampling/pooling, attention, MLP, composite block, other, unattributed); they sum to 1;
    - ``scope = family``: the mean over the family's models of their type fractions, Student-t interval
      over models.

    Model-level intervals: percentile bootstrap over images (the same resampled images for every layer).
    Rows written before ``share`` existed use ``value`` instead (not additive; said in ``note``).

    Args:
        model: Only these models (names).
        method: Only this decomposition method (``exact`` / ``stochastic``).
    """
    w = _Weights(con, weights, ["layerwise"], dataset)
    methods = None if method is None else [method]
    filt = _where(w, dataset, generator) & is_in("method", methods)
    names = _as_list(model)
    if names is None:
        items = (
            w.where()
            & is_in("dataset", _as_list(dataset))
            & is_in("item", _as_list(generator))
            & is_in("method", methods)
        )
        names = [
            r[0]
            for r in con.sql(
                f"""
            SELECT DISTINCT model FROM current_items
            WHERE family = 'layerwise' AND {items.sql}
            ORDER BY model""",
                params=list(items.params),
            ).fetchall()
        ]
    families = dict(con.execute("SELECT model, family FROM models ORDER BY model").fetchall())
    rows: list[dict[str, Any]] = []
    for start in range(0, len(names), MODELS_PER_QUERY):  # bounded memory; each query reads its models' files
        chunk = names[start : start + MODELS_PER_QUERY]
        where = is_in("model", chunk) & filt
        data = _df(
            con,
            f"""
            SELECT model, weights, dataset, generator, output, interpolation, method, num_probes, sample_id, kind,
                   layer, call_index, layer_class, layer_type, share, value, share_additive
            FROM layerwise
            WHERE {where.sql} AND kind IN ('layer', 'end_to_end', 'unattributed')
            ORDER BY {_order(_LAYERWISE_KEYS)}
        """,
            where,
        )
        keys = ["model", "weights", "dataset", "generator", "output", "interpolation", "method", "num_probes"]
        for key, g in _groups(data, keys):
            name, wk, ds, gen, out, interp, meth, probes = key
            base = {
                "dataset": ds,
                "generator": gen,
                "scope": "model",
                "family": families.get(name) or "unknown",
                "model": name,
                "output": out,
                "interpolation": interp,
                "layerwise_method": meth,
                "num_probes": None if pd.isna(probes) else int(probes),
                "model_weights": wk,
            }
            rows += _layerwise_model(g, base, n_boot, seed, level)
    rows += _layer_type_families(rows, level)
    return _frame("layerwise", rows, w, level, "no layerwise results match")


def _layerwise_model(
    g: pd.DataFrame, base: dict[str, Any], n_boot: int, seed: int, level: float
) -> list[dict[str, Any]]:
    img_codes, images = pd.factorize(g["sample_id"], sort=True)
    n_all = len(images)
    kind = g["kind"].to_numpy(object)
    share_col = g["share"].to_numpy(float)

    def per_image(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.zeros(n_all)
        np.add.at(out, img_codes[mask], values[mask])
        return out

    is_e2e = kind == "end_to_end"
    # summed like the shares (one row per image in a configuration's group; never the last of several)
    has_e2e = np.bincount(img_codes[is_e2e], minlength=n_all) > 0
    e2e = np.where(has_e2e, per_image(is_e2e, g["value"].to_numpy(float)), np.nan)
    unattr = per_image(kind == "unattributed", share_col)
    is_layer = kind == "layer"
    layers = g[is_layer]
    order = (
        layers[["call_index", "layer", "layer_class", "layer_type"]]
        .drop_duplicates(["call_index", "layer"])
        .sort_values(["call_index", "layer"])
        .reset_index(drop=True)
    )
    pos = pd.MultiIndex.from_frame(order[["call_index", "layer"]]).get_indexer(
        pd.MultiIndex.from_frame(layers[["call_index", "layer"]])
    )
    share = np.zeros((n_all, len(order)))
    np.add.at(share, (img_codes[is_layer], pos), share_col[is_layer])
    ok = np.isfinite(e2e)
    share, unattr, e2e = share[ok], unattr[ok], e2e[ok]
    n = int(ok.sum())
    if n == 0:
        return []
    additive = bool(g["share_additive"].all())
    note = "" if additive else "some rows predate additive shares: value used as share (fractions need not sum to 1)"
    counts = stats.bootstrap_counts(n, n_boot, np.random.default_rng(seed)).astype(float) if n > 1 else None
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    boot_method = f"percentile bootstrap over images ({n_boot} resamples)"

    def fractions(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        est = mat.sum(axis=0) / e2e.sum()
        if counts is None:
            return est, np.full_like(est, np.nan), np.full_like(est, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            b = (counts @ mat) / (counts @ e2e)[:, None]
        lo, hi = _quantiles(b, q)
        return est, lo, hi

    rows = []
    cum_est, cum_lo, cum_hi = fractions(np.cumsum(share, axis=1))
    n_layers = len(order)
    cum_method = f"sum of layer shares up to this call / end-to-end LEE (ratio of means); {boot_method}"
    for j, (call, layer, cls, ltype) in enumerate(order.itertuples(index=False)):
        rows.append(
            stat_row(
                base,
                term=layer,
                statistic="cumulative_fraction",
                estimate=cum_est[j],
                ci_low=cum_lo[j],
                ci_high=cum_hi[j],
                n=n,
                n_of="images",
                method=cum_method,
                note=note,
                call_index=int(call),
                depth=j / max(n_layers - 1, 1),
                layer_type=ltype,
                layer_class=cls,
            )
        )
    types = sorted(order["layer_type"].unique())
    by_type = np.column_stack([share[:, (order["layer_type"] == t).to_numpy()].sum(axis=1) for t in types] + [unattr])
    t_est, t_lo, t_hi = fractions(by_type)
    for j, t in enumerate([*types, "unattributed"]):
        rows.append(
            stat_row(
                base,
                term=t,
                statistic="share_fraction",
                estimate=t_est[j],
                ci_low=t_lo[j],
                ci_high=t_hi[j],
                n=n,
                n_of="images",
                method=f"sum of the type's shares / end-to-end LEE (ratio of means); {boot_method}",
                note=note,
                layer_type=t,
            )
        )
    return rows


def _layer_type_families(rows: list[dict[str, Any]], level: float) -> list[dict[str, Any]]:
    d = pd.DataFrame([r for r in rows if r["statistic"] == "share_fraction"])
    if d.empty:
        return []
    out = []
    keys = ["dataset", "generator", "output", "interpolation", "layerwise_method", "num_probes", "family", "term"]
    for key, g in d.groupby(keys, sort=True, dropna=False):  # num_probes is None for 'exact'
        base = {k: (None if pd.isna(v) else v) for k, v in zip(keys, key, strict=True)}
        iv = stats.mean_t_interval(g["estimate"].to_numpy(float), level=level)
        out.append(
            stat_row(
                base,
                scope="family",
                statistic="share_fraction",
                iv=iv,
                n_of="models",
                method="mean over the family's models of their type fraction; t interval over models",
                layer_type=base["term"],
            )
        )
    return out


# ---- 5. metric agreement -------------------------------------------------------------------------------
def agreement(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    metric: Filter = None,
) -> pd.DataFrame:
    r"""Do the alternative equivariance metrics rank models like the LEE does?

    Per dataset, generator, output, interpolation and alternative metric: the Spearman rank correlation
    across models between the model's mean LEE and its mean value of the metric (computed on the same
    output: ``metric_pairs`` never pairs a probs LEE with a logits metric) on the same images (``term = <metric>``,
    ``statistic = spearman_rho``), percentile bootstrap interval over models. Column
    ``higher_is_better`` gives the metric's direction: a metric that agrees with the LEE correlates
    positively when lower is better (errors) and negatively when higher is better (consistencies).
    Column ``agreement`` is rho signed so that positive always means agreement.

    Args:
        metric: Only these alternative metrics.
    """
    w = _Weights(con, weights, ["lee", "alt"], dataset)
    where = _where(w, dataset, generator) & is_in("metric", _as_list(metric))
    data = _df(
        con,
        f"""
        SELECT model, weights, dataset, generator, output, interpolation, metric, mean_lee, mean_value,
               higher_is_better
        FROM metric_pairs
        WHERE {where.sql}
        ORDER BY {_order(_PAIR_KEYS)}
    """,
        where,
    )
    rows: list[dict[str, Any]] = []
    keys = ["dataset", "generator", "output", "interpolation", "metric"]
    for key, g in _groups(data, keys):
        base = dict(zip(keys, key, strict=True))
        iv = stats.bootstrap_corr(
            g["mean_lee"].to_numpy(float),
            g["mean_value"].to_numpy(float),
            "spearman",
            n_boot=n_boot,
            seed=seed,
            level=level,
        )
        hib = g["higher_is_better"].dropna()
        higher = bool(hib.iloc[0]) if len(hib) else None
        sign = -1.0 if higher else 1.0
        rows.append(
            stat_row(
                base,
                scope="overall",
                term=base["metric"],
                statistic="spearman_rho",
                iv=iv,
                n_of="models",
                method=f"Spearman rank correlation of mean LEE and mean metric across models; "
                f"percentile bootstrap over models ({n_boot} resamples, seed {seed})",
                higher_is_better=higher,
                agreement=sign * iv.estimate,
            )
        )
    return _frame("agreement", rows, w, level, "no models with both lee and alt results")


# ---- 6. where the LEE lives (the explain family) -------------------------------------------------------
_EXPLAIN_KEYS = ("model", "weights", "dataset", "generator", "output", "interpolation")
BORDER_PX: tuple[int, ...] = (1, 2, 4, 8, 16)
"""Border bands (px) of :func:`border_share` by default."""


def _explain_rows(
    con: Any,
    w: _Weights,
    dataset: Filter,
    generator: Filter,
    model: Filter,
    kinds: Sequence[str],
    columns: Sequence[str],
) -> pd.DataFrame:
    where = _where(w, dataset, generator) & is_in("model", _as_list(model)) & is_in("kind", kinds)
    return _df(
        con,
        f"""
        SELECT model, weights, dataset, generator, output, interpolation, unit, sample_index, sample_id, lee,
               {", ".join(ident(c) for c in columns)}
        FROM explain
        WHERE {where.sql}
        ORDER BY model, weights, dataset, generator, output, interpolation, unit, sample_index, sample_id,
                 call_index, layer
    """,
        where,
    )


def _lee_weighted(
    mat: np.ndarray, lee: np.ndarray, n_boot: int, seed: int, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share of the pooled LEE, ``sum_i lee_i mat_i / sum_i lee_i`` per column of ``mat`` ``(n, k)`` (fractions of
    each image's LEE), with percentile bootstrap intervals over images."""
    est = (lee @ mat) / lee.sum()
    n = len(lee)
    if n < 2:
        return est, np.full_like(est, np.nan), np.full_like(est, np.nan)
    counts = stats.bootstrap_counts(n, n_boot, np.random.default_rng(seed)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (counts @ (lee[:, None] * mat)) / (counts @ lee)[:, None]
    lo, hi = _quantiles(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return est, lo, hi


def _ring_area(h: int, w: int, k: int) -> float:
    """Fraction of an ``h x w`` image within ``k`` px of its border."""
    inner = max(h - 2 * k, 0) * max(w - 2 * k, 0)
    return 1.0 - inner / (h * w)


def border_share(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    model: Filter = None,
    border_px: Sequence[int] = BORDER_PX,
) -> pd.DataFrame:
    r"""Does the equivariance error concentrate at the image border?

    From the ``explain`` table's image rows (the border profile of each image's map, 1-px rings), per model,
    weights, dataset, generator and configuration, for each band of ``k`` px (``border_px``):

    - ``statistic = border_share``, ``term = "<k>px"``: the share of the LEE whose image map lies within ``k`` px
      of the border, LEE-weighted over images (``sum_i LEE_i s_i(k) / sum_i LEE_i``: the share of the pooled LEE),
      with a percentile bootstrap interval over images; columns ``border_px``, ``area_fraction`` (the fraction
      of the image those pixels cover) and ``enrichment`` (share over area: 1 = no concentration);
    - ``statistic = located_share``, ``term = "image"``: the share of the LEE that has a location at all (the
      image map's total; the rest is in special tokens, unmoved outputs and the remainder).

    Args:
        model: Only these models.
        border_px: The bands, in px.
    """
    w = _Weights(con, weights, ["explain"], dataset)
    data = _explain_rows(
        con, w, dataset, generator, model, ["image"], ("border_profile", "input_h", "input_w", "total")
    )
    ks = sorted({int(k) for k in border_px})
    if any(k < 1 for k in ks):
        raise ValueError(f"border_px must be >= 1, got {list(border_px)}")
    rows: list[dict[str, Any]] = []
    families = dict(con.execute("SELECT model, family FROM models ORDER BY model").fetchall())
    for key, g in _groups(data, list(_EXPLAIN_KEYS)):
        name, wk, ds, gen, out, interp = key
        h, wd = int(g["input_h"].iloc[0]), int(g["input_w"].iloc[0])
        profiles = [np.asarray(p, dtype=float) for p in g["border_profile"]]
        cum = np.stack([[p[:k].sum() for k in ks] for p in profiles])  # (n, K)
        lee = g["lee"].to_numpy(float)
        mat = np.column_stack([cum, g["total"].to_numpy(float)])
        est, lo, hi = _lee_weighted(mat, lee, n_boot, seed, level)
        n = len(lee)
        base = {
            "dataset": ds,
            "generator": gen,
            "scope": "model",
            "family": families.get(name) or "unknown",
            "model": name,
            "output": out,
            "interpolation": interp,
            "model_weights": wk,
        }
        method = f"LEE-weighted share over images; percentile bootstrap over images ({n_boot} resamples, seed {seed})"
        for j, k in enumerate(ks):
            area = _ring_area(h, wd, k)
            rows.append(
                stat_row(
                    base,
                    term=f"{k}px",
                    statistic="border_share",
                    estimate=est[j],
                    ci_low=lo[j],
                    ci_high=hi[j],
                    n=n,
                    n_of="images",
                    method=method,
                    border_px=k,
                    area_fraction=area,
                    enrichment=est[j] / area,
                    input_size=f"{h}x{wd}",
                )
            )
        rows.append(
            stat_row(
                base,
                term="image",
                statistic="located_share",
                estimate=est[-1],
                ci_low=lo[-1],
                ci_high=hi[-1],
                n=n,
                n_of="images",
                method=method,
                input_size=f"{h}x{wd}",
            )
        )
    return _frame("border_share", rows, w, level, "no explain results match")


def layer_location(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    model: Filter = None,
    top: int = 10,
) -> pd.DataFrame:
    r"""Which layers, and which cells of their feature maps, carry the equivariance error?

    From the ``explain`` table's layer rows (each layer's signed share map pooled on at most 16 x 16 cells),
    per model, weights, dataset, generator and configuration:

    - ``statistic = layer_share``, ``term = <layer>``: the layer's share of the LEE (LEE-weighted over images),
      for the ``top`` layers by absolute share; columns ``call_index``, ``layer_class``, ``layer_kind``,
      ``abs_share`` (the same for the absolute map: how much the layer moves, cancellations included);
    - ``statistic = cell_share``, ``term = "<layer>[r,c]"``: the ``top`` (layer, cell) pairs by absolute share;
      columns ``cell_row``, ``cell_col``, ``grid_h``, ``grid_w`` and ``y``, ``x`` (the cell centre as a fraction
      of the image height and width).

    Percentile bootstrap intervals over images (the same resampled images for every layer and cell).

    Args:
        model: Only these models.
        top: Layers and (layer, cell) pairs reported per group.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    w = _Weights(con, weights, ["explain"], dataset)
    data = _explain_rows(
        con,
        w,
        dataset,
        generator,
        model,
        ["layer"],
        ("layer", "call_index", "layer_class", "layer_kind", "grid_h", "grid_w", "total", "abs_total", "cells"),
    )
    rows: list[dict[str, Any]] = []
    families = dict(con.execute("SELECT model, family FROM models ORDER BY model").fetchall())
    for key, g in _groups(data, list(_EXPLAIN_KEYS)):
        name, wk, ds, gen, out, interp = key
        img_codes, images = pd.factorize(g["unit"].astype(str) + "/" + g["sample_index"].astype(str), sort=True)
        n = len(images)
        lee = np.zeros(n)
        lee[img_codes] = g["lee"].to_numpy(float)
        layers = (
            g[["call_index", "layer", "layer_class", "layer_kind", "grid_h", "grid_w"]]
            .drop_duplicates(["call_index", "layer"])
            .sort_values(["call_index", "layer"])
            .reset_index(drop=True)
        )
        pos = pd.MultiIndex.from_frame(layers[["call_index", "layer"]]).get_indexer(
            pd.MultiIndex.from_frame(g[["call_index", "layer"]])
        )
        tot = np.zeros((n, len(layers)))
        ab = np.zeros((n, len(layers)))
        np.add.at(tot, (img_codes, pos), g["total"].to_numpy(float))
        np.add.at(ab, (img_codes, pos), g["abs_total"].to_numpy(float))
        est, lo, hi = _lee_weighted(np.column_stack([tot, ab]), lee, n_boot, seed, level)
        k = len(layers)
        base = {
            "dataset": ds,
            "generator": gen,
            "scope": "model",
            "family": families.get(name) or "unknown",
            "model": name,
            "output": out,
            "interpolation": interp,
            "model_weights": wk,
        }
        method = f"LEE-weighted share over images; percentile bootstrap over images ({n_boot} resamples, seed {seed})"
        for j in np.argsort(-np.abs(est[:k]), kind="stable")[:top]:
            lay = layers.iloc[j]
            rows.append(
                stat_row(
                    base,
                    term=lay["layer"],
                    statistic="layer_share",
                    estimate=est[j],
                    ci_low=lo[j],
                    ci_high=hi[j],
                    n=n,
                    n_of="images",
                    method=method,
                    call_index=int(lay["call_index"]),
                    layer_class=lay["layer_class"],
                    layer_kind=lay["layer_kind"],
                    abs_share=est[k + j],
                )
            )
        # (layer, cell) pairs: one column per cell of every layer
        offsets = np.concatenate([[0], np.cumsum((layers["grid_h"] * layers["grid_w"]).to_numpy(int))])
        cells = np.zeros((n, int(offsets[-1])))
        for code, p, c in zip(img_codes, pos, g["cells"], strict=True):
            cells[code, offsets[p] : offsets[p + 1]] = np.asarray(c, dtype=float)
        cest, clo, chi = _lee_weighted(cells, lee, n_boot, seed + 1, level)
        for j in np.argsort(-np.abs(cest), kind="stable")[:top]:
            p = int(np.searchsorted(offsets, j, side="right") - 1)
            lay = layers.iloc[p]
            gh, gw = int(lay["grid_h"]), int(lay["grid_w"])
            r, c = divmod(int(j - offsets[p]), gw)
            rows.append(
                stat_row(
                    base,
                    term=f"{lay['layer']}[{r},{c}]",
                    statistic="cell_share",
                    estimate=cest[j],
                    ci_low=clo[j],
                    ci_high=chi[j],
                    n=n,
                    n_of="images",
                    method=method,
                    call_index=int(lay["call_index"]),
                    layer_class=lay["layer_class"],
                    layer_kind=lay["layer_kind"],
                    cell_row=r,
                    cell_col=c,
                    grid_h=gh,
                    grid_w=gw,
                    y=(r + 0.5) / gh,
                    x=(c + 0.5) / gw,
                )
            )
    return _frame("layer_location", rows, w, level, "no explain results match")


def _area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` mass-preserving resampling of an ``n_in``-cell axis onto ``n_out`` cells (entry ``[Y, y]``:
    the fraction of input cell ``y`` inside output cell ``Y``; columns add up to 1), as ``liecore.area_matrix``."""
    edges = np.arange(n_in + 1) * (n_out / n_in)
    lo = np.maximum(edges[None, :-1], np.arange(n_out)[:, None])
    hi = np.minimum(edges[None, 1:], np.arange(1, n_out + 1)[:, None])
    return np.clip(hi - lo, 0, None) / (n_out / n_in)


def _spearman_rows(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``a`` ``(m, c)`` with ``t`` ``(c,)`` (average ranks); NaN for a constant row."""
    from scipy.stats import rankdata

    ra = rankdata(a, axis=1)
    rt = rankdata(t)
    ra = ra - ra.mean(1, keepdims=True)
    rt = rt - rt.mean()
    den = np.sqrt((ra**2).sum(1) * (rt**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, ra @ rt / np.where(den > 0, den, 1.0), np.nan)


def _mean_over_images(
    mat: np.ndarray, n_boot: int, seed: int, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over images (rows) of each column of ``mat`` ``(n, k)``, NaN entries left out, with percentile bootstrap
    intervals over images (the same resampled images for every column); also the images counted per column."""
    ok = ~np.isnan(mat)
    vals = np.where(ok, mat, 0.0)
    cnt = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = vals.sum(0) / np.where(cnt > 0, cnt, np.nan)
    n = mat.shape[0]
    if n < 2:
        return est, np.full_like(est, np.nan), np.full_like(est, np.nan), cnt
    counts = stats.bootstrap_counts(n, n_boot, np.random.default_rng(seed)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (counts @ vals) / (counts @ ok.astype(float))
    lo, hi = _quantiles(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    return est, lo, hi, cnt


def texture(
    con: Any,
    *,
    weights: str = "pretrained",
    dataset: Filter = None,
    generator: Filter = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    model: Filter = None,
    top: int = 10,
    textured_fraction: float = 0.25,
) -> pd.DataFrame:
    r"""Does the equivariance error sit where the image has texture?

    From the ``explain`` table: per image, the input's texture on the cells of its image map (``texture``: each
    cell's share of the image's gradient energy) and each layer's absolute share per cell (``|cells|``, resampled
    by area overlap onto the image's cells when the layer's grid is coarser; a layer's grid is taken to span the
    image). Per model, weights, dataset, generator and configuration, for these maps (``term``):

    - ``<image>``: the image map (all layers, resampled and added);
    - ``class:<layer_class>``: the layers of one class together (the sum of their ``|cells|``; in TensorFlow-ported
      timm models ``class:Conv2dSame`` is exactly the stride-2 convolutions);
    - ``<layer>``: the ``top`` layers by LEE-weighted absolute share (``abs_total``).

    Statistics, each the mean over images with a percentile bootstrap interval over images (images whose map is 0
    everywhere are left out of that map's rows, ``n`` counts the rest):

    - ``statistic = texture_rho``: Spearman's rank correlation, across the cells of one image, of the map's
      absolute share with the texture (0: the error is placed without regard to texture; 1: the more textured the
      cell, the more error);
    - ``statistic = textured_share``: the fraction of the map's absolute mass in the image's most textured cells
      (the ``textured_fraction`` of the cells with the most gradient energy); columns ``cell_fraction`` (that
      fraction of the cells, what a map that ignores texture would get on average) and ``enrichment`` (the
      share over ``cell_fraction``).

    Columns ``layer_class``, ``n_layers`` (layers in the map) and ``abs_share`` (the map's LEE-weighted absolute
    share: how much of the error it moves). Units whose rows carry no texture (stores of schema version < 7:
    rerun them with ``lee eval --force``) are left out, and the note says how many.

    Args:
        model: Only these models.
        top: Single layers reported per group.
        textured_fraction: Fraction of the cells counted as the most textured (0 < f < 1).
    """
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    if not 0 < textured_fraction < 1:
        raise ValueError(f"textured_fraction must be between 0 and 1, got {textured_fraction}")
    w = _Weights(con, weights, ["explain"], dataset)
    img = _explain_rows(
        con,
        w,
        dataset,
        generator,
        model,
        ["image"],
        ("grid_h", "grid_w", "texture", "cells", "abs_total", "input_h", "input_w"),
    )
    lay = _explain_rows(
        con,
        w,
        dataset,
        generator,
        model,
        ["layer"],
        ("layer", "call_index", "layer_class", "grid_h", "grid_w", "abs_total", "cells"),
    )
    rows: list[dict[str, Any]] = []
    families = dict(con.execute("SELECT model, family FROM models ORDER BY model").fetchall())
    lay_groups = {k: g for k, g in _groups(lay, list(_EXPLAIN_KEYS))}
    method = (
        f"mean over images of the per-image statistic across cells; percentile bootstrap over images "
        f"({n_boot} resamples, seed {seed})"
    )
    for key, gi in _groups(img, list(_EXPLAIN_KEYS)):
        name, wk, ds, gen, out, interp = key
        base = {
            "dataset": ds,
            "generator": gen,
            "scope": "model",
            "family": families.get(name) or "unknown",
            "model": name,
            "output": out,
            "interpolation": interp,
            "model_weights": wk,
        }
        missing = gi["texture"].isna()
        gi = gi[~missing]
        note = (
            f"{int(missing.sum())} images without texture (stored before schema version 7: rerun their units "
            "with lee eval --force) left out"
            if missing.any()
            else ""
        )
        if gi.empty:
            rows.append(
                stat_row(base, term="<image>", statistic="texture_rho", n=0, n_of="images", method=method, note=note)
            )
            continue
        gl = lay_groups.get(key)
        ids = (gi["unit"].astype(str) + "/" + gi["sample_index"].astype(str)).to_numpy()
        index = {v: i for i, v in enumerate(ids)}
        n = len(ids)
        gh, gw = int(gi["grid_h"].iloc[0]), int(gi["grid_w"].iloc[0])
        tex = np.stack([np.asarray(t, dtype=float) for t in gi["texture"]])  # (n, gh*gw)
        lee = gi["lee"].to_numpy(float)
        maps: dict[str, np.ndarray] = {"<image>": np.abs(np.stack([np.asarray(c, dtype=float) for c in gi["cells"]]))}
        info: dict[str, dict[str, Any]] = {"<image>": {"layer_class": "", "n_layers": None}}
        abs_tot: dict[str, np.ndarray] = {}
        if gl is not None:
            gl = gl[(gl["unit"].astype(str) + "/" + gl["sample_index"].astype(str)).isin(index)]
            codes = (gl["unit"].astype(str) + "/" + gl["sample_index"].astype(str)).map(index).to_numpy()
            per_layer: dict[str, np.ndarray] = {}
            cls_of: dict[str, str] = {}
            order: dict[str, int] = {}
            resamplers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
            for code, r in zip(codes, gl.itertuples(index=False), strict=True):
                lh, lw = int(r.grid_h), int(r.grid_w)
                a = np.abs(np.asarray(r.cells, dtype=float)).reshape(lh, lw)
                if (lh, lw) != (gh, gw):
                    if (lh, lw) not in resamplers:
                        resamplers[(lh, lw)] = (_area_matrix(gh, lh), _area_matrix(gw, lw))
                    ay, ax = resamplers[(lh, lw)]
                    a = ay @ a @ ax.T
                m = per_layer.setdefault(r.layer, np.zeros((n, gh * gw)))
                m[code] = a.reshape(-1)
                abs_tot.setdefault(r.layer, np.zeros(n))[code] = float(r.abs_total)
                cls_of[r.layer] = r.layer_class
                order.setdefault(r.layer, int(r.call_index))
            for cls in sorted(set(cls_of.values())):
                members = [m for m in per_layer if cls_of[m] == cls]
                maps[f"class:{cls}"] = sum(per_layer[m] for m in members)
                info[f"class:{cls}"] = {"layer_class": cls, "n_layers": len(members)}
                abs_tot[f"class:{cls}"] = sum(abs_tot[m] for m in members)
            weight = {m: float(lee @ abs_tot[m]) for m in per_layer}
            for m in sorted(per_layer, key=lambda m: (-weight[m], order[m]))[:top]:
                maps[m] = per_layer[m]
                info[m] = {"layer_class": cls_of[m], "n_layers": 1}
        abs_tot["<image>"] = gi["abs_total"].to_numpy(float)
        terms = list(maps)
        k_cells = max(1, int(round(textured_fraction * gh * gw)))
        top_cells = np.argsort(-tex, axis=1, kind="stable")[:, :k_cells]  # (n, k)
        rho = np.full((n, len(terms)), np.nan)
        shr = np.full((n, len(terms)), np.nan)
        for i in range(n):
            a = np.stack([maps[t][i] for t in terms])  # (terms, cells)
            mass = a.sum(1)
            live = mass > 0
            rho[i, live] = _spearman_rows(a[live], tex[i])
            with np.errstate(invalid="ignore", divide="ignore"):
                shr[i, live] = a[live][:, top_cells[i]].sum(1) / mass[live]
        r_est, r_lo, r_hi, r_n = _mean_over_images(rho, n_boot, seed, level)
        s_est, s_lo, s_hi, s_n = _mean_over_images(shr, n_boot, seed, level)
        cell_fraction = k_cells / (gh * gw)
        size = f"{int(gi['input_h'].iloc[0])}x{int(gi['input_w'].iloc[0])}"
        for j, t in enumerate(terms):
            abs_share = float(lee @ abs_tot[t] / lee.sum()) if lee.sum() > 0 else math.nan
            extra = {**info[t], "abs_share": abs_share, "input_size": size}
            rows.append(
                stat_row(
                    base,
                    term=t,
                    statistic="texture_rho",
                    estimate=r_est[j],
                    ci_low=r_lo[j],
                    ci_high=r_hi[j],
                    n=int(r_n[j]),
                    n_of="images",
                    method=method,
                    note=note,
                    **extra,
                    cell_fraction=math.nan,
                    enrichment=math.nan,
                )
            )
            rows.append(
                stat_row(
                    base,
                    term=t,
                    statistic="textured_share",
                    estimate=s_est[j],
                    ci_low=s_lo[j],
                    ci_high=s_hi[j],
                    n=int(s_n[j]),
                    n_of="images",
                    method=method,
                    note=note,
                    **extra,
                    cell_fraction=cell_fraction,
                    enrichment=s_est[j] / cell_fraction,
                )
            )
    return _frame("texture", rows, w, level, "no explain results match")


# ---- registry ------------------------------------------------------------------------------------------
ANALYSES: dict[str, Callable[..., pd.DataFrame]] = {
    "accuracy": accuracy,
    "scale": scale,
    "gap": gap,
    "layerwise": layerwise,
    "agreement": agreement,
    "border_share": border_share,
    "layer_location": layer_location,
    "texture": texture,
}
"""Name -> analysis function (``lee query --analysis NAME``)."""


def run_analysis(con: Any, name: str, **kwargs: Any) -> pd.DataFrame:
    """Run the analysis ``name`` (a key of :data:`ANALYSES`); ValueError with close matches otherwise."""
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}{did_you_mean(name, ANALYSES, n=1)} (known: {', '.join(ANALYSES)})")
    return ANALYSES[name](con, **kwargs)
