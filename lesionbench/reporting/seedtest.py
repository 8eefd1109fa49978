"""The leaderboard's test against rank 1, its power, the seed planner, and the rank-1 reference.

One training run is one observation (its score on the whole test set), so seed-to-seed noise is the
error term of every comparison. The test uses the whole table:

* **Pooled seed variance.** Every row's seeds estimate the same seed-to-seed variance, so the table
  pools them: K(S-1) degrees of freedom instead of the 2-4 of one pair at 3 seeds.
* **Guard.** Where a pair's own (Welch) standard error is at least the pooled one, the pair's own is
  used, with its Welch-Satterthwaite degrees of freedom less 1/(n-1) (n: the smaller row's seeds; the
  Satterthwaite df overstates a two-row variance at 3 seeds: without it Welch's test alone marked
  5.6% under a 4x SD ratio in simulation). A row noisier than the rest is never judged on the others'
  variance. Rows with a failed seed (see ``failed_seeds``) stay out of the pool and are judged on
  their own variance, so one collapse cannot hide every other difference.
* **Simultaneous critical value.** Rank 1 is picked on the same data, so each gap to it is compared
  with the studentized range quantile q(1-alpha; K, df)/sqrt(2) (Tukey-Kramer; Games-Howell where the
  guard applies): the largest gap of K equal models is the range of K means, so this keeps the chance
  of any false mark at most alpha. The same quantile gives each gap a simultaneous interval.

Everything is vectorised over leading axes, so tests/test_verdicts.py runs this very code on
thousands of simulated suites (false marks under the null, power, planner, rank-1 reference).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: The test behind every "significantly worse" mark (printed under every leaderboard).
SEED_TEST = ("each row's gap to rank 1 over per-seed scores (each training run scored on the whole test set), "
             "standard error from the seed variance pooled over the table's rows, or the pair's own (Welch) where "
             "that is larger, compared with the studentized range critical value for the table's K rows "
             "(Tukey-Kramer / Games-Howell)")
#: Why that test (printed under every leaderboard).
SEED_TEST_WHY = ("a run is the unit that varies between seeds, so seed-to-seed noise is the error term; pooling it "
                 "over the table gives K(S-1) degrees of freedom instead of 2-4 per pair, the guard keeps a noisier "
                 "row from being judged on the others' variance, and the studentized range covers the choice of "
                 "rank 1 on the same data; simulated in tests/test_verdicts.py: at most 5% of null suites get any "
                 "false mark (2-10 models, 3 and 5 seeds, equal and unequal seed SDs)")

#: Degrees of freedom at which the studentized range quantile is computed; between them log q is
#: interpolated linearly in log df (never below scipy's value, within 1%: tests/test_stats.py).
_DF_GRID = np.array([1, 1.1, 1.2, 1.35, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24,
                     30, 40, 60, 120, 250, 500, 1000, 1e4, 1e6])
POWER_SIMS = 4000  # simulated suites behind a power figure: binomial SE under 0.7 points at 80%


@functools.lru_cache(maxsize=64)
def _q_grid(k: int, alpha: float) -> np.ndarray:
    return stats.studentized_range.ppf(1 - alpha, k, _DF_GRID)


def range_critical(k: int, df: np.ndarray | float, alpha: float) -> np.ndarray:
    """q(1-alpha; k, df)/sqrt(2): the simultaneous critical value for a gap between two of k means."""
    if k < 2:
        raise ValueError("range_critical: need at least two rows")
    log_df = np.log(np.clip(np.asarray(df, float), 1.0, 1e6))
    grid = _q_grid(int(k), round(float(alpha), 12))
    return np.exp(np.interp(log_df, np.log(_DF_GRID), np.log(grid))) / np.sqrt(2.0)


@dataclass
class VsBest:
    """The test of every row against rank 1, arrays over [..., rows] (rank 1's own entries: gap 0, not marked)."""

    best: np.ndarray  # [...] index of rank 1 (highest seed mean)
    gap: np.ndarray  # mean(rank 1) - mean(row)
    se: np.ndarray  # standard error of the gap used
    df: np.ndarray  # its degrees of freedom
    critical: np.ndarray  # simultaneous critical value (in SEs)
    pooled: np.ndarray  # True where the pooled SE was used, False where the pair's own (Welch)
    marked: np.ndarray  # significantly worse than rank 1
    low: np.ndarray  # simultaneous interval of the true gap (rank 1 minus row)
    high: np.ndarray
    pooled_sd: np.ndarray  # [...] the pooled seed-to-seed SD


def versus_best(scores: np.ndarray, alpha: float, pool: np.ndarray | None = None) -> VsBest:
    """The leaderboard's test: [..., rows, seeds] per-seed scores (NaN = no such seed) -> VsBest.

    Every row needs at least two seeds. ``pool``: [..., rows] bool, rows whose variance enters the
    pooled estimate (default all; rows with a failed seed are left out by the leaderboard).
    """
    s = np.asarray(scores, float)
    k = s.shape[-2]
    n = np.sum(np.isfinite(s), -1).astype(float)
    if np.any(n < 2):
        raise ValueError("versus_best: every row needs at least two seeds")
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = np.nanmean(s, -1), np.nanvar(s, -1, ddof=1)
        w = np.ones_like(n, dtype=bool) if pool is None else np.broadcast_to(np.asarray(pool, bool), n.shape)
        w = np.where(np.any(w, -1, keepdims=True), w, True)  # nothing left to pool: pool every row
        df_pool = np.sum(np.where(w, n - 1, 0), -1, keepdims=True)
        var_pool = np.sum(np.where(w, (n - 1) * var, 0), -1, keepdims=True) / df_pool
        best = np.argmax(mean, -1)
        b = best[..., None]
        mb, vb, nb = (np.take_along_axis(x, b, -1) for x in (mean, var, n))
        se_pool2 = var_pool * (1 / nb + 1 / n)
        own_b, own = vb / nb, var / n
        se_own2 = own_b + own
        n_min = np.minimum(nb, n)
        df_own = se_own2 ** 2 / (own_b ** 2 / (nb - 1) + own ** 2 / (n - 1)) - 1 / (n_min - 1)
        df_own = np.where(np.isfinite(df_own), np.maximum(df_own, n_min - 1), n_min - 1)
        # a row outside the pool is always judged on its own variance; ties go to the pair's own df
        use_own = (se_own2 >= se_pool2 * (1 - 1e-9)) | ~w | ~np.take_along_axis(w, b, -1)
        se = np.sqrt(np.where(use_own, se_own2, se_pool2))
        df = np.where(use_own, df_own, np.broadcast_to(df_pool, se.shape))
    crit = range_critical(k, df, alpha)
    gap = mb - mean
    is_best = np.arange(k) == b
    spread = se > 1e-12  # rounding-level spread is no spread: no claim
    marked = (gap > crit * se) & spread & ~is_best
    half = np.where(is_best, 0.0, crit * se)
    return VsBest(best=best, gap=np.where(is_best, 0.0, gap), se=se, df=df, critical=crit, pooled=~use_own,
                  marked=marked, low=gap - half, high=gap + half, pooled_sd=np.sqrt(var_pool[..., 0]))


def worse_than_best(scores: np.ndarray, alpha: float) -> np.ndarray:
    """The leaderboard's "*": rows significantly below rank 1: [..., rows, seeds] -> [..., rows] bool."""
    return versus_best(scores, alpha).marked


def simultaneous_p(gap: float, se: float, df: float, k: int) -> float:
    """The smallest family-wise alpha at which this gap would be marked (1.0 without spread)."""
    if not se > 1e-12:
        return 1.0
    return float(stats.studentized_range.sf(max(gap, 0.0) / se * np.sqrt(2.0), k, max(df, 1.0)))


# --------------------------------------------------------------------------- power and planning

def _null_draws(k: int, seeds: int, sims: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((sims, k, seeds))


def power_at(k: int, seeds: int, gap_sd: float, alpha: float, sims: int = POWER_SIMS, seed: int = 0) -> float:
    """Simulated chance that this test marks one row ``gap_sd`` seed-SDs below k-1 equal rows (all
    rows the same seed SD, ``seeds`` seeds each): the power of the procedure itself."""
    if k < 2 or seeds < 2:
        return 0.0
    z = _null_draws(k, seeds, sims, seed)
    z[:, -1, :] -= gap_sd
    return float(np.mean(versus_best(z, alpha).marked[:, -1]))


@functools.lru_cache(maxsize=256)
def detectable_gap(k: int, seeds: int, alpha: float, power: float = 0.8, sims: int = POWER_SIMS,
                   seed: int = 0) -> float:
    """The smallest gap, in seed-SD units, this test finds ``power`` of the time (one row worse, k-1
    equal; bisection with common random numbers). inf when the seeds are too few for any mark."""
    if k < 2 or seeds < 2:
        return float("inf")
    z = _null_draws(k, seeds, sims, seed)

    def found(gap: float) -> float:
        shifted = z.copy()
        shifted[:, -1, :] -= gap
        return float(np.mean(versus_best(shifted, alpha).marked[:, -1]))

    low, high = 0.0, 2.0
    while found(high) < power:
        low, high = high, high * 2
        if high > 1e3:
            return float("inf")
    for _ in range(24):
        mid = (low + high) / 2
        low, high = (mid, high) if found(mid) < power else (low, mid)
    return high


def seeds_needed(k: int, gap_sd: float, alpha: float, power: float = 0.8, max_seeds: int = 50) -> int | None:
    """Fewest seeds per row with which this test finds a gap of ``gap_sd`` seed-SDs ``power`` of the
    time (None: more than ``max_seeds``). The detectable gap shrinks as seeds grow, so the seeds are
    found by doubling, then bisection."""
    def enough(seeds: int) -> bool:
        return detectable_gap(k, seeds, alpha, power) <= gap_sd

    low, high = 1, 2  # enough(low) is False by convention (one seed has no variance)
    while not enough(high):
        if high >= max_seeds:
            return None
        low, high = high, min(high * 2, max_seeds)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if not enough(mid) else (low, mid)
    return high


# --------------------------------------------------------------------------- P(rank 1) of equal models

@functools.lru_cache(maxsize=64)
def rank1_of_equal_models(k: int, seeds: int, suites: int = 400, resamples: int = 200,
                          seed: int = 0) -> tuple[float, float]:
    """(median, 90th percentile) of the observed leader's bootstrap P(rank 1) when all k models are
    equal: what P(rank 1) shows with no best model at all (seeds resampled as the leaderboard does)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((suites, k, seeds))
    leader = np.argmax(z.mean(-1), -1)
    pick = rng.integers(0, seeds, size=(suites, resamples, k, seeds))
    boot = np.take_along_axis(z[:, None].repeat(resamples, 1), pick, -1).mean(-1)  # suites × B × k
    p1 = np.mean(np.argmax(boot, -1) == leader[:, None], -1)
    return float(np.median(p1)), float(np.quantile(p1, 0.9))


# --------------------------------------------------------------------------- failed seeds

#: The rule that names a seed as a failed training (printed under every table that has one).
FAILED_RULE = ("a seed is a failed training when its predicted mask is empty on at least 90% of the test images "
               "that have foreground, or full on at least 90% of them, or its score is more than 5 pooled seed-SDs "
               "(of the table's other runs) and more than 0.05 below the median of its own model's other seeds")
COLLAPSE_SHARE, OUTLIER_SDS, OUTLIER_FLOOR = 0.9, 5.0, 0.05


def collapsed(pred_empty: np.ndarray, pred_full: np.ndarray, has_fg: np.ndarray, has_bg: np.ndarray) -> str | None:
    """'empty' / 'full' when a run's predictions are empty (or full) on >= 90% of the images where
    that is wrong (images with foreground / with background); per-image bool arrays."""
    fg, bg = np.asarray(has_fg, bool), np.asarray(has_bg, bool)
    if fg.any() and np.mean(np.asarray(pred_empty, bool)[fg]) >= COLLAPSE_SHARE:
        return "empty"
    if bg.any() and np.mean(np.asarray(pred_full, bool)[bg]) >= COLLAPSE_SHARE:
        return "full"
    return None


def outlier_seeds(rows: list[list[float]]) -> list[list[bool]]:
    """Per row, per seed: far below its own row's other seeds (``FAILED_RULE``'s second part)."""
    out = []
    for i, row in enumerate(rows):
        flags = []
        for j, x in enumerate(row):
            others = [v for jj, v in enumerate(row) if jj != j]
            rest = [r for ii, r in enumerate(rows) if ii != i and len(r) >= 2] + ([others] if len(others) >= 2 else [])
            df = sum(len(r) - 1 for r in rest)
            sd = float(np.sqrt(sum((len(r) - 1) * np.var(r, ddof=1) for r in rest) / df)) if df else 0.0
            below = float(np.median(others)) - x if others else 0.0
            flags.append(bool(others) and below > max(OUTLIER_SDS * sd, OUTLIER_FLOOR))
        out.append(flags)
    return out
