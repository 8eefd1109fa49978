"""Statistics behind the leaderboard: intervals with seed and image noise, Welch's two-sample test, and
the ranking's stability under resampling (the test against rank 1, its power and the seed planner are
in seedtest.py).

Every function is vectorised over leading axes, so tests/test_verdicts.py runs the very code the
leaderboard calls on thousands of simulated suites (false-mark rate, coverage, power).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def _as_array(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: need at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1) over seeds; the std of a single value is 0."""
    arr = _as_array(values)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num/den with 0/0 := 1 (the empty-mask policy of the metrics)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


# --------------------------------------------------------------------------- seed-aware verdicts
# One training run is one observation: its score on the whole test set. Seed-to-seed noise is then
# the error term of every comparison, and image difficulty (the same test images for every model)
# cancels in a difference. Everything below is vectorised over leading axes so the simulation tests
# run the very functions the leaderboard calls, thousands of suites at once.

#: How the interval of a model's mean is made (printed under every leaderboard).
MEAN_CI = ("t interval of the seed mean with two variance parts, seed-to-seed (variance of per-seed scores / seeds) "
           "and test images (variance of per-image values, averaged over seeds, / images; a pooled metric by the "
           "delta method), Satterthwaite degrees of freedom")


def seed_scores(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Per-seed score sum(num)/sum(den) over the last (image) axis: [..., seeds, images] -> [..., seeds]."""
    return _ratio(np.asarray(num, float).sum(-1), np.asarray(den, float).sum(-1))


def welch_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided Welch t-test p-values over the last axis (NaN entries are missing seeds).

    Fewer than two seeds on a side: NaN (not tested). No spread on either side: 1.0 (no noise to test
    against, so no claim is made).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = np.sum(np.isfinite(a), -1), np.sum(np.isfinite(b), -1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        va, vb = np.nanvar(a, -1, ddof=1) / na, np.nanvar(b, -1, ddof=1) / nb
        se2 = va + vb
        t = (np.nanmean(a, -1) - np.nanmean(b, -1)) / np.sqrt(se2)
        df = se2 ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
        p = 2 * stats.t.sf(np.abs(t), df)
    p = np.where(se2 > 1e-24, p, 1.0)  # rounding-level spread is no spread
    return np.where((na >= 2) & (nb >= 2), p, np.nan)


def mean_ci(num: np.ndarray, den: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate and interval of a model's mean score with seed and image noise: [..., seeds, images].

    Estimate: mean of the per-seed scores. Variance: var(per-seed scores)/seeds (training noise, 0 with
    one seed) + var(per-image terms averaged over seeds)/images (which test images were drawn), with
    Satterthwaite degrees of freedom. Returns (estimate, low, high).
    """
    num, den = np.asarray(num, float), np.asarray(den, float)
    n_seeds, n_img = num.shape[-2], num.shape[-1]
    per_seed = seed_scores(num, den)
    est = per_seed.mean(-1)
    v_seed = per_seed.var(-1, ddof=1) / n_seeds if n_seeds > 1 else np.zeros_like(est)
    nbar, dbar = num.mean(-2), den.mean(-2)
    r = _ratio(nbar.sum(-1), dbar.sum(-1))
    scale = np.where(dbar.mean(-1) > 0, dbar.mean(-1), 1.0)
    z = (nbar - r[..., None] * dbar) / scale[..., None]
    v_img = z.var(-1, ddof=1) / n_img if n_img > 1 else np.zeros_like(est)
    total = v_seed + v_img
    with np.errstate(invalid="ignore", divide="ignore"):
        df = total ** 2 / ((v_seed ** 2 / max(n_seeds - 1, 1) if n_seeds > 1 else 0) + v_img ** 2 / max(n_img - 1, 1))
    df = np.where(np.isfinite(df) & (df > 0), df, 1e9)
    half = stats.t.ppf((1 + confidence) / 2, df) * np.sqrt(total)
    return est, est - half, est + half


def rank_bootstrap(terms: Sequence[tuple[np.ndarray, np.ndarray]], n_resamples: int = 1000,
                   seed: int = 0) -> np.ndarray:
    """Each model's rank (1 = best, ties averaged) in ``n_resamples`` resampled leaderboards: [resamples, models].

    ``terms``: per model (num, den) as seeds × images over the same images. Each resample draws the
    test images once for all models and each model's seeds with replacement (challengeR's bootstrap,
    with seeds as a second level).
    """
    rng = np.random.default_rng(seed)
    n_img = terms[0][0].shape[1]
    weights = rng.multinomial(n_img, np.full(n_img, 1 / n_img), size=n_resamples).T.astype(float)  # images × B
    scores = np.empty((n_resamples, len(terms)))
    for k, (num, den) in enumerate(terms):
        per_seed = _ratio(np.asarray(num, float) @ weights, np.asarray(den, float) @ weights)  # seeds × B
        pick = rng.integers(0, per_seed.shape[0], size=(n_resamples, per_seed.shape[0]))
        scores[:, k] = per_seed[pick, np.arange(n_resamples)[:, None]].mean(1)
    return stats.rankdata(-scores, axis=1, method="average")


def median_kendall_tau(published: Sequence[float], resampled: np.ndarray) -> float:
    """Median Kendall tau between the published ranks and each resampled ranking (1 = never changes)."""
    taus = [stats.kendalltau(published, row).statistic for row in resampled]
    taus = [t for t in taus if np.isfinite(t)]
    return float(np.median(taus)) if taus else float("nan")
