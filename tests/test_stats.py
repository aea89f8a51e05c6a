"""The interval functions equal scipy's on fixed inputs (to 1e-9), and the readings count right."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from prompt_jax import stats

TOL = 1e-9


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (686, 872), (872, 872), (37, 69), (5, 5)])
def test_wilson_equals_scipy(k, n):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = stats.wilson_interval(k, n)
    assert abs(low - ci.low) < TOL and abs(high - ci.high) < TOL
    estimate = stats.accuracy(np.arange(n) < k)
    assert estimate.value == k / n and estimate.n == n
    assert (estimate.low, estimate.high) == (low, high)


def test_wilson_at_another_level_equals_scipy():
    ci = sps.binomtest(30, 50).proportion_ci(confidence_level=0.9, method="wilson")
    assert np.allclose(stats.wilson_interval(30, 50, 0.9), (ci.low, ci.high), atol=TOL, rtol=0)


def _pair(n=300, seed=1):
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.8
    b = np.where(rng.random(n) < 0.85, a, ~a)  # agrees with A on most rows
    return a, b


def test_paired_difference_equals_scipy_bootstrap_and_mcnemar():
    a, b = _pair()
    result = stats.paired_difference(a, b, resamples=2000, seed=3)
    ref = sps.bootstrap((a.astype(float), b.astype(float)),
                        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
                        paired=True, vectorized=True, method="percentile", n_resamples=2000,
                        confidence_level=0.95, rng=np.random.default_rng(3))
    assert abs(result.difference.low - ref.confidence_interval.low) < TOL
    assert abs(result.difference.high - ref.confidence_interval.high) < TOL
    assert result.difference.value == a.mean() - b.mean()
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    assert (result.a_only, result.b_only) == (a_only, b_only)
    assert abs(result.p_value - sps.binomtest(a_only, a_only + b_only, 0.5).pvalue) < TOL


def test_a_large_paired_difference_is_beyond_noise_and_a_tiny_one_is_not():
    a = np.ones(400, bool)
    b = np.arange(400) % 2 == 0  # 100% vs 50%
    assert stats.paired_difference(a, b).beyond_noise
    c = a.copy()
    c[:2] = False  # 100% vs 99.5%
    result = stats.paired_difference(a, c)
    assert not result.beyond_noise and result.p_value == 0.5


def test_identical_prompts_differ_by_nothing():
    a, _ = _pair()
    result = stats.paired_difference(a, a)
    assert result.difference.value == 0 and result.p_value == 1.0
    assert (result.difference.low, result.difference.high) == (0.0, 0.0)


def test_rows_must_pair():
    with pytest.raises(ValueError, match="different rows"):
        stats.paired_difference([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        stats.accuracy([0.5, 1])


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_correlation_equals_scipy(method):
    rng = np.random.default_rng(5)
    x = rng.normal(size=16)
    y = 0.6 * x + rng.normal(size=16)
    result = stats.correlation(x, y, method=method, resamples=3000, seed=2)
    direct = sps.spearmanr(x, y).statistic if method == "spearman" else sps.pearsonr(x, y)[0]
    assert abs(result.value - direct) < TOL

    def statistic(u, v, axis):
        if method == "pearson":
            return sps.pearsonr(u, v, axis=axis).statistic
        return sps.spearmanr(u, v, axis=axis).statistic if u.ndim == 1 else np.array(
            [sps.spearmanr(ui, vi).statistic for ui, vi in zip(u, v, strict=True)])

    ref = sps.bootstrap((x, y), statistic, paired=True, vectorized=True, method="percentile",
                        n_resamples=3000, rng=np.random.default_rng(2))
    assert abs(result.low - ref.confidence_interval.low) < TOL
    assert abs(result.high - ref.confidence_interval.high) < TOL


def test_retrieval_splits_ties_and_states_chance():
    # target 1: the indicator's top is the best source -> 1
    # target 2: 4 sources tie for the indicator's top, one of them best -> 1/4
    # target 3: the top is not a best source -> 0; two sources tie for best -> chance 2/4
    indicators = [[0.9, 0.1, 0.2, 0.3], [1, 1, 1, 1], [0.9, 0.5, 0.1, 0.1]]
    transfers = [[80, 60, 50, 55], [70, 60, 60, 60], [50, 90, 90, 10]]
    result = stats.retrieval_hits(indicators, transfers, resamples=500)
    assert result.hits == 1.25 and result.targets == 3
    assert result.chance == pytest.approx(0.25 + 0.25 + 0.5)
    assert result.rate.value == pytest.approx(1.25 / 3)
    assert stats.retrieval_credit([2, 2], [1, 0]) == (0.5, 0.5)


def test_speedups_pair_seeds_and_count_the_runs_that_never_got_there():
    result = stats.speedups([80, 120, 100], [40, 120, None])
    assert result == {"median": 1.5, "min": 1.0, "max": 2.0, "seeds": 3, "never": 1}
    assert stats.speedups([80], [None])["median"] is None


def test_reading_counts_beyond_and_within():
    assert stats.reading([True, False, True]) == "2 of 3 comparisons beyond noise, 1 within"
    assert stats.reading([], "targets") == "0 of 0 targets beyond noise, 0 within"


def test_estimate_text():
    assert stats.Estimate(0.786, 0.757, 0.812, 872).text() == "78.6% [75.7, 81.2]"
    assert stats.Estimate(0.12, -0.03, 0.27, 10).text(percent=False, digits=2) == (
        "+0.12 [-0.03, +0.27]")


def test_unpaired_difference_is_newcombes_hybrid_score_interval():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II example (a): 56/70 - 48/80,
    # method 10 gives 0.0524 to 0.3339.
    d = stats.unpaired_difference(56, 70, 48, 80)
    assert d.value == pytest.approx(0.2)
    assert (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)
    # built from scipy's Wilson intervals exactly
    a = sps.binomtest(56, 70).proportion_ci(method="wilson")
    b = sps.binomtest(48, 80).proportion_ci(method="wilson")
    assert d.low == pytest.approx(0.2 - np.hypot(0.8 - a.low, b.high - 0.6), abs=1e-9)
    assert d.high == pytest.approx(0.2 + np.hypot(a.high - 0.8, 0.6 - b.low), abs=1e-9)
    assert not stats.unpaired_difference(100, 200, 110, 200).excludes(0.0)
