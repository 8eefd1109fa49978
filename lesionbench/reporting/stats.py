"""Statistics behind the leaderboard: bootstrap CIs, paired tests, Holm correction.

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
