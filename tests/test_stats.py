"""The leaderboard's statistics against scipy and hand-computed values (simulations: test_verdicts.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lesionbench.reporting.stats import (
    holm_last_axis,
    mean_ci,
    mean_std,
    pairwise_holm,
    seed_scores,
    welch_p,
    worse_than_best,
)


@pytest.mark.timeout(30)
def test_welch_matches_scipy_and_handles_missing_and_constant_seeds() -> None:
    a, b = np.array([0.80, 0.70, 0.76]), np.array([0.60, 0.62, 0.59, 0.61])
    assert float(welch_p(a, b)) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, abs=1e-12)
    padded = np.array([0.60, 0.62, 0.59, 0.61, np.nan])  # a missing seed is NaN, not a zero
    assert float(welch_p(a, padded)) == pytest.approx(float(welch_p(a, b)), abs=1e-12)
    assert np.isnan(welch_p(a, np.array([0.5, np.nan])))  # one seed: not tested
    assert float(welch_p(np.full(3, 0.7), np.full(3, 0.6))) == 1.0  # no spread: no claim


@pytest.mark.timeout(30)
def test_holm_by_hand_and_nan_is_not_in_the_family() -> None:
    # sorted 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.03, 0.06, 0.06 (input order restored)
    assert holm_last_axis(np.array([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])
    out = holm_last_axis(np.array([0.01, np.nan, 0.04]))
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm_last_axis(np.array([[0.5, 0.9]])).tolist() == [[1.0, 1.0]]


@pytest.mark.timeout(30)
def test_all_pairs_and_the_mark_against_rank_one() -> None:
    scores = np.array([[0.80, 0.81, 0.79], [0.60, 0.61, 0.59], [0.79, 0.80, 0.81]])
    adj = pairwise_holm(scores)
    assert np.isnan(np.diag(adj)).all() and np.allclose(adj, adj.T, equal_nan=True)
    raw = [sps.ttest_ind(scores[i], scores[j], equal_var=False).pvalue for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert [adj[0, 1], adj[0, 2], adj[1, 2]] == pytest.approx(holm_last_axis(np.array(raw)).tolist())
    assert worse_than_best(scores, 0.05).tolist() == [False, True, False]


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
