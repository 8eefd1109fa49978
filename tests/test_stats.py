"""Statistics for pooled metrics and for differences that must survive training noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from lesionbench.reporting.stats import _RNG_KW, bootstrap_ci, ratio_bootstrap_ci, seed_aware_p, wilcoxon_p


def test_ratio_ci_of_a_mean_metric_is_the_plain_bootstrap() -> None:
    values = np.random.default_rng(0).uniform(0.5, 1.0, 30)
    assert ratio_bootstrap_ci(values, np.ones(30)) == bootstrap_ci(values)


def test_ratio_ci_of_a_pooled_metric_resamples_images_in_pairs() -> None:
    rng = np.random.default_rng(1)
    den = rng.uniform(0.1, 1.0, 40)
    num = den * rng.uniform(0.2, 0.9, 40)
    ref = sps.bootstrap((num, den), lambda a, b, axis=-1: a.sum(axis) / b.sum(axis), paired=True,
                        n_resamples=2000, method="BCa", vectorized=True,
                        **{_RNG_KW: np.random.default_rng(0)}).confidence_interval
    low, high = ratio_bootstrap_ci(num, den)
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert low < num.sum() / den.sum() < high
    assert ratio_bootstrap_ci([0.0, 0.0], [0.0, 0.0]) == (1.0, 1.0)  # nothing anywhere: the 0/0 := 1 policy


def _runs(means: list[float], rng: np.random.Generator, n: int = 60, noise: float = 0.02) -> tuple[np.ndarray, ...]:
    """seeds × images of per-image scores around each seed's mean (den = 1: a mean metric)."""
    base = rng.uniform(-0.1, 0.1, n)  # image difficulty, shared by every model and seed
    num = np.stack([np.clip(m + base + rng.normal(0, noise, n), 0, 1) for m in means])
    return num, np.ones_like(num)


def test_seed_aware_p_counts_seed_to_seed_noise() -> None:
    rng = np.random.default_rng(2)
    # seed 0 of model b happened to train badly; across seeds a and b are alike
    a = _runs([0.80, 0.70, 0.76], rng)
    b = _runs([0.70, 0.79, 0.75], rng)
    assert wilcoxon_p(a[0][0], b[0][0]) < 1e-6  # one seed, per image: "significant", on noise
    assert seed_aware_p(a, b) > 0.2  # across seeds: no evidence
    clear = _runs([0.60, 0.61, 0.59], rng)
    assert seed_aware_p(a, clear) < 0.01  # a real gap survives
    assert seed_aware_p(a, a) == 1.0
    assert seed_aware_p(a, clear) == seed_aware_p(a, clear)  # fixed seed: reproducible
    with pytest.raises(ValueError, match="different images"):
        seed_aware_p(a, (a[0][:, :10], a[1][:, :10]))
