r"""Small statistics for the named analyses: seeded bootstrap intervals, correlations, OLS with t intervals.

Every function takes plain numpy arrays and returns numbers; the named analyses
(:mod:`pipelines.analysis.analyses`) put them into tidy tables with the statistic, the interval level,
n and the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

__all__ = [
    "Interval",
    "OLSResult",
    "bootstrap_corr",
    "bootstrap_counts",
    "f_test",
    "mean_t_interval",
    "ols",
    "ratio_of_means",
    "resample_ranks",
    "weighted_corr",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval at ``level``; ``n`` = units the statistic is over."""

    estimate: float
    low: float
    high: float
    n: int
    p_value: float = float("nan")


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``n`` units is drawn in each of ``n_boot`` resamples with replacement, ``(n_boot, n)``."""
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n)


def weighted_corr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of ``a``, ``b`` with weights ``w`` (the rows of resampled counts): one r per row of ``w``.

    ``a``, ``b``: shape ``(n,)`` or ``(B, n)``; ``w``: ``(B, n)``. A sample that repeats unit ``i``
    ``w[i]`` times has exactly this correlation. NaN where a resample is constant.
    """
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    sw = w.sum(axis=1)
    ma, mb = (w * a).sum(axis=1) / sw, (w * b).sum(axis=1) / sw
    cov = (w * a * b).sum(axis=1) / sw - ma * mb
    va = (w * a * a).sum(axis=1) / sw - ma**2
    vb = (w * b * b).sum(axis=1) / sw - mb**2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(va * vb)
    constant = (va <= 1e-12 * np.mean(a * a)) | (vb <= 1e-12 * np.mean(b * b))
    r[constant | ~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


def resample_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of the units in each resample: shape ``(B, n)``.

    In a resample where unit ``i`` appears ``w[b, i]`` times, every copy of ``x[i]`` (and of equal
    values) shares one rank, the average of the positions the tied block occupies; units not drawn get
    the rank they would have (they carry weight 0). The Spearman correlation of a resample is then
    :func:`weighted_corr` of the two rank arrays with weights ``w``.
    """
    ux, inv = np.unique(x, return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    per_value = np.add.reduceat(w[:, order], starts, axis=1) if len(ux) < len(x) else w[:, order]
    ends = np.cumsum(per_value, axis=1)
    avg = ends - (per_value - 1) / 2.0
    return avg[:, inv]


def bootstrap_corr(
    x: np.ndarray, y: np.ndarray, method: str = "pearson", *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Pearson or Spearman correlation with a percentile bootstrap interval over the (x, y) pairs.

    Each resample draws the pairs with replacement (multinomial counts) and computes the statistic of
    that sample exactly (Spearman: average ranks within the resample, duplicates tied). The p-value is
    the classical one (``scipy.stats.pearsonr`` / ``spearmanr``). Fewer than 3 pairs give NaN; fewer
    than 4 give no interval.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be pearson or spearman, got {method!r}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), n)
    res = _st.pearsonr(x, y) if method == "pearson" else _st.spearmanr(x, y)
    est, p = float(res.statistic), float(res.pvalue)
    if n < 4:
        return Interval(est, float("nan"), float("nan"), n, p)
    w = bootstrap_counts(n, n_boot, np.random.default_rng(seed)).astype(float)
    if method == "spearman":
        r = weighted_corr(resample_ranks(x, w), resample_ranks(y, w), w)
    else:
        r = weighted_corr(x, y, w)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(r, [alpha, 1 - alpha])
    return Interval(est, float(lo), float(hi), n, p)


def t_interval(estimate: float, se: float, df: int, n: int, level: float = 0.95) -> Interval:
    """``estimate`` with the Student-t interval of a standard error ``se`` on ``df`` degrees of freedom."""
    if df <= 0 or not np.isfinite(se):
        return Interval(float(estimate), float("nan"), float("nan"), n)
    q = float(_st.t.ppf(0.5 + level / 2, df))
    p = float(2 * _st.t.sf(abs(estimate / se), df)) if se > 0 else float("nan")
    return Interval(float(estimate), float(estimate - q * se), float(estimate + q * se), n, p)


def mean_t_interval(x: np.ndarray, level: float = 0.95) -> Interval:
    """Mean with a Student-t interval."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(x.mean())
    if n < 2:
        return Interval(m, float("nan"), float("nan"), n)
    se = float(x.std(ddof=1) / np.sqrt(n))
    q = float(_st.t.ppf(0.5 + level / 2, n - 1))
    p = float(2 * _st.t.sf(abs(m / se), n - 1)) if se > 0 else float("nan")
    return Interval(m, m - q * se, m + q * se, n, p)


def ratio_of_means(
    num: np.ndarray,
    den: np.ndarray,
    *,
    paired: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``mean(num) / mean(den)`` with a percentile bootstrap interval.

    Unpaired: the two samples are resampled independently (different images). Paired: ``num[i]`` and
    ``den[i]`` belong to the same image and are resampled together. ``n`` is the smaller sample size.
    """
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    num, den = (num, den) if paired else (num[np.isfinite(num)], den[np.isfinite(den)])
    if paired:
        ok = np.isfinite(num) & np.isfinite(den)
        num, den = num[ok], den[ok]
    n = int(min(len(num), len(den)))
    if n == 0 or den.mean() == 0:
        return Interval(float("nan"), float("nan"), float("nan"), n)
    est = float(num.mean() / den.mean())
    if n < 2:
        return Interval(est, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    if paired:
        idx = rng.integers(0, n, size=(n_boot, n))
        b = num[idx].mean(axis=1) / den[idx].mean(axis=1)
    else:
        bn = num[rng.integers(0, len(num), size=(n_boot, len(num)))].mean(axis=1)
        bd = den[rng.integers(0, len(den), size=(n_boot, len(den)))].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            b = bn / bd
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(b, [alpha, 1 - alpha])
    return Interval(est, float(lo), float(hi), n)


@dataclass(frozen=True)
class OLSResult:
    terms: list[str]
    coef: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p_value: np.ndarray
    n: int
    df_resid: int
    rss: float


def ols(y: np.ndarray, X: np.ndarray, terms: list[str], level: float = 0.95) -> OLSResult:
    """Ordinary least squares ``y ~ X`` (X includes the intercept column) with t intervals."""
    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    n, k = X.shape
    coef, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    df = n - rank
    rss = float(resid @ resid)
    if df <= 0 or rank < k:
        nan = np.full(k, np.nan)
        return OLSResult(terms, coef, nan, nan, nan, nan, n, df, rss)
    sigma2 = rss / df
    cov = sigma2 * np.linalg.inv(X.T @ X)
    se = np.sqrt(np.diag(cov))
    q = float(_st.t.ppf(0.5 + level / 2, df))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * _st.t.sf(np.abs(coef / se), df)
    return OLSResult(terms, coef, se, coef - q * se, coef + q * se, p, n, df, rss)


def f_test(full: OLSResult, reduced: OLSResult) -> tuple[float, float, int, int]:
    """Nested-model F test: (F, p, df_num, df_den) for the terms in ``full`` and not in ``reduced``."""
    d1 = reduced.df_resid - full.df_resid
    d2 = full.df_resid
    if d1 <= 0 or d2 <= 0 or full.rss <= 0:
        return float("nan"), float("nan"), d1, d2
    F = ((reduced.rss - full.rss) / d1) / (full.rss / d2)
    return float(F), float(_st.f.sf(F, d1, d2)), d1, d2
