"""Statistics behind the leaderboard: bootstrap CIs, seed-aware paired tests, Holm correction.

Thin wrappers over scipy so every number in a leaderboard comes from one audited place
and the edge cases (one image, identical models) have one documented answer.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: The bootstrap interval method; BCa corrects the percentile interval for bias and skew,
#: which matters for per-image Dice (bounded at 1, skewed left).
CI_METHOD = "BCa"

_RNG_KW = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _as_array(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: need at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0, method: str = CI_METHOD) -> tuple[float, float]:
    """CI of the mean over test images (scipy.stats.bootstrap, BCa by default, fixed seed).

    One value, or all values equal, has no spread to resample: the interval is (v, v).
    If BCa is undefined for the data (NaN bounds) the percentile interval is returned.
    """
    arr = _as_array(values)
    if arr.size == 1 or np.all(arr == arr[0]):
        m = float(arr.mean())
        return m, m

    def run(m: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap((arr,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                  method=m, vectorized=True, **{_RNG_KW: np.random.default_rng(seed)})
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    low, high = run(method)
    if not (np.isfinite(low) and np.isfinite(high)) and method.lower() != "percentile":
        low, high = run("percentile")
    return low, high


def wilcoxon_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (scipy defaults: zero_method='wilcox').

    Identical samples (every difference zero) give p = 1.0: no evidence of a difference.
    """
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"wilcoxon_p: paired samples differ in length ({x.size} vs {y.size})")
    if np.all(x == y):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        p = float(stats.wilcoxon(x, y, alternative="two-sided").pvalue)
    return 1.0 if np.isnan(p) else p


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control), in the input order.

    adj_(i) = max_{j<=i} min(1, (m - j) * p_(j)) over the sorted p-values (0-based j).
    """
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1) over seeds; the std of a single value is 0."""
    arr = _as_array(values)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def ratio_bootstrap_ci(num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray,
                       n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """CI of sum(num)/sum(den) over test images (a pooled metric), images resampled in pairs.

    With every den 1 this is the mean of ``num``: exactly ``bootstrap_ci(num)``. A pooled metric
    gets scipy's paired BCa bootstrap of the ratio (percentile when BCa is undefined).
    """
    x, y = _as_array(num, "num"), _as_array(den, "den")
    if x.shape != y.shape:
        raise ValueError(f"ratio_bootstrap_ci: num and den differ in length ({x.size} vs {y.size})")
    if np.all(y == 1.0):
        return bootstrap_ci(x, n_resamples, confidence, seed)
    if x.size == 1 or (np.all(x == x[0]) and np.all(y == y[0])):
        v = _ratio(x.sum(), y.sum())
        return float(v), float(v)

    def stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return _ratio(a.sum(axis), b.sum(axis))

    def run(m: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap((x, y), stat, paired=True, n_resamples=n_resamples, confidence_level=confidence,
                                  method=m, vectorized=True, **{_RNG_KW: np.random.default_rng(seed)})
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    low, high = run(CI_METHOD)
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = run("percentile")
    return low, high


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num/den with 0/0 := 1 (the empty-mask policy of the metrics)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


#: How ``seed_aware_p`` accounts for training noise (printed under every leaderboard).
SEED_TEST = ("hierarchical bootstrap (seeds resampled within each model, then test images resampled, "
             "the same images for both models), two-sided percentile p-value of the difference in the "
             "seed-mean metric")


def seed_aware_p(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                 n_resamples: int = 2000, seed: int = 0) -> float:
    """p-value that two models' seed-mean metric sum(num)/sum(den) differs, counting seed-to-seed noise.

    ``a`` and ``b``: (num, den), each seeds × images, the same images (columns) in the same order.
    Each resample draws each model's seeds with replacement, then one set of images for both;
    p = 2 · min(P(diff ≤ 0), P(diff ≥ 0)), at least 1/(n_resamples + 1), at most 1.
    """
    rng = np.random.default_rng(seed)
    n_img = a[0].shape[1]
    if b[0].shape[1] != n_img:
        raise ValueError(f"seed_aware_p: the models were scored on different images ({n_img} vs {b[0].shape[1]})")
    images = rng.integers(0, n_img, size=(n_resamples, n_img))

    def stat(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        seeds = rng.integers(0, num.shape[0], size=(n_resamples, num.shape[0]))
        pick = (seeds[:, :, None], images[:, None, :])  # resamples × seeds × images
        return _ratio(num[pick].sum(-1), den[pick].sum(-1)).mean(-1)

    diff = stat(*map(np.asarray, a)) - stat(*map(np.asarray, b))
    if np.all(diff == 0):
        return 1.0
    p = 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))
    return float(min(1.0, max(p, 1 / (n_resamples + 1))))
