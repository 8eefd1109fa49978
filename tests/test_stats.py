"""The leaderboard's statistics against scipy and hand-computed values (simulations: test_verdicts.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lesionbench.reporting.seedtest import (
    collapsed,
    outlier_seeds,
    range_critical,
    simultaneous_p,
    versus_best,
    worse_than_best,
)
from lesionbench.reporting.stats import mean_ci, mean_std, seed_scores, welch_p


@pytest.mark.timeout(30)
def test_welch_matches_scipy_and_handles_missing_and_constant_seeds() -> None:
    a, b = np.array([0.80, 0.70, 0.76]), np.array([0.60, 0.62, 0.59, 0.61])
    assert float(welch_p(a, b)) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, abs=1e-12)
    padded = np.array([0.60, 0.62, 0.59, 0.61, np.nan])  # a missing seed is NaN, not a zero
    assert float(welch_p(a, padded)) == pytest.approx(float(welch_p(a, b)), abs=1e-12)
    assert np.isnan(welch_p(a, np.array([0.5, np.nan])))  # one seed: not tested
    assert float(welch_p(np.full(3, 0.7), np.full(3, 0.6))) == 1.0  # no spread: no claim


@pytest.mark.timeout(60)
def test_range_critical_value_matches_scipy_between_grid_points() -> None:
    for k in (2, 3, 10):
        for df in (1.05, 1.3, 1.6, 2.2, 3.7, 8.5, 13.0, 45.0, 500.0):
            exact = sps.studentized_range.ppf(0.95, k, df) / np.sqrt(2)
            got = float(range_critical(k, df, 0.05))
            assert exact * (1 - 1e-9) <= got <= exact * 1.01, (k, df, got, exact)  # conservative, within 1%
    # two rows: the range quantile over sqrt(2) is Student's t (two-sided)
    assert float(range_critical(2, 7.0, 0.05)) == pytest.approx(sps.t.ppf(0.975, 7), rel=1e-6)


@pytest.mark.timeout(60)
def test_versus_best_by_hand_pooled_and_guarded() -> None:
    scores = np.array([[0.80, 0.81, 0.79], [0.60, 0.61, 0.59], [0.79, 0.80, 0.81]])
    vs = versus_best(scores, 0.05)
    assert int(vs.best) == 0 and vs.marked.tolist() == [False, True, False] == worse_than_best(scores, 0.05).tolist()
    var = scores.var(1, ddof=1)  # all three 1e-4: the pair's own SE equals the pooled one, so the guard's tie
    assert np.allclose(var, 1e-4)  # rule takes the pair's own (Welch) SE and df, less 1/(n-1)
    se = np.sqrt(2e-4 / 3)
    assert vs.se[1] == pytest.approx(se) and vs.df[1] == pytest.approx(4 - 0.5)
    assert vs.gap[1] == pytest.approx(0.2) and vs.high[1] - vs.gap[1] == pytest.approx(vs.critical[1] * se)
    # a noisy row: its pair uses its own variance; the quiet rows are compared on the pooled one (df K(S-1))
    noisy = np.array([[0.80, 0.82, 0.78, 0.81], [0.70, 0.71, 0.69, 0.70], [0.90, 0.50, 0.70, 0.60],
                      [0.79, 0.80, 0.81, 0.80]])
    vs = versus_best(noisy, 0.05)
    n, v = 4, noisy.var(1, ddof=1)
    assert not vs.pooled[2] and vs.se[2] == pytest.approx(np.sqrt(v[0] / n + v[2] / n))
    pooled = v.mean()
    assert np.sqrt(pooled * 2 / n) > np.sqrt((v[0] + v[1]) / n) and vs.pooled[1]
    assert vs.df[1] == pytest.approx(4 * 3) and vs.se[1] == pytest.approx(np.sqrt(pooled * 2 / n))
    p = simultaneous_p(float(vs.gap[1]), float(vs.se[1]), float(vs.df[1]), 4)
    assert p == pytest.approx(sps.studentized_range.sf(vs.gap[1] / vs.se[1] * np.sqrt(2), 4, 12))
    assert (p < 0.05) == bool(vs.marked[1])
    # a row left out of the pool (a failed seed) is judged on its own variance
    out = versus_best(noisy, 0.05, pool=np.array([True, True, False, True]))
    assert not out.pooled[2] and out.pooled_sd == pytest.approx(np.sqrt(np.mean(v[[0, 1, 3]])))
    assert worse_than_best(np.array([[0.7, 0.7], [0.6, 0.6]]), 0.05).tolist() == [False, False]  # no spread


@pytest.mark.timeout(30)
def test_failed_seed_rules() -> None:
    fg = np.array([True] * 10)
    assert collapsed(np.array([True] * 9 + [False]), np.zeros(10, bool), fg, fg) == "empty"
    assert collapsed(np.array([True] * 8 + [False] * 2), np.zeros(10, bool), fg, fg) is None
    assert collapsed(np.zeros(10, bool), np.ones(10, bool), fg, fg) == "full"
    rows = [[0.40, 0.41, 0.00], [0.42, 0.43, 0.41], [0.39, 0.40, 0.41]]
    assert outlier_seeds(rows) == [[False, False, True], [False] * 3, [False] * 3]
    assert outlier_seeds([[0.40, 0.30, 0.35], [0.42, 0.43, 0.41]]) == [[False] * 3, [False] * 3]  # 0.05 floor


@pytest.mark.timeout(30)
def test_mean_ci_by_hand_and_pooled_seed_scores() -> None:
    num = np.array([[0.8, 0.6, 0.7, 0.9], [0.7, 0.5, 0.6, 0.8]])  # 2 seeds × 4 images, den = 1
    est, low, high = mean_ci(num, np.ones_like(num))
    v_seed = np.var([0.75, 0.65], ddof=1) / 2
    v_img = np.var(num.mean(0), ddof=1) / 4
    df = (v_seed + v_img) ** 2 / (v_seed ** 2 / 1 + v_img ** 2 / 3)
    half = sps.t.ppf(0.975, df) * np.sqrt(v_seed + v_img)
    assert (est, low, high) == pytest.approx((0.7, 0.7 - half, 0.7 + half))
    den = np.array([[10.0, 30.0], [20.0, 20.0]])
    assert seed_scores(den * 0.5, den).tolist() == [0.5, 0.5]
    assert seed_scores(np.zeros((1, 2)), np.zeros((1, 2))).tolist() == [1.0]  # 0/0 := 1
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_std([0.8]) == (0.8, 0.0)
