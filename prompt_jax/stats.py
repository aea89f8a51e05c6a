"""Intervals for every reading drawn from scores: pure functions over per-row outcomes.

- `accuracy`: a proportion with its 95% Wilson score interval (scipy's `binomtest(...)
  .proportion_ci(method="wilson")`).
- `paired_difference`: two prompts scored on the same rows: the difference of accuracies with a
  paired bootstrap interval (scipy's `bootstrap(..., paired=True, method="percentile")` drawn
  from the same generator) and McNemar's exact test (a two-sided binomial test on the rows where
  exactly one of the two is right).
- `unpaired_difference`: the same difference from counts alone (rows not known to match):
  Newcombe's hybrid score interval.
- `correlation`: Spearman or Pearson over targets with a bootstrap interval over targets.
- `retrieval_hits`: how often an indicator's top pick is a best source, ties split 1/k, beside
  the rate a random pick gets.
- `speedups`: an init arm's speedup over a baseline per seed, with its spread.
- `reading`: "X of Y beyond noise, Z within" from any of these.

A comparison is *beyond noise* when its 95% interval excludes zero (for a difference) or the
chance rate (for a hit rate); everything else is *within noise* and read as no difference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import special
from scipy import stats as sps

CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A value with its interval, from `n` observations."""

    value: float
    low: float
    high: float
    n: int

    def excludes(self, reference: float) -> bool:
        """The interval lies wholly above or below `reference` (beyond noise)."""
        return self.low > reference or self.high < reference

    def text(self, percent: bool = True, digits: int = 1) -> str:
        """'78.6% [75.7, 81.2]' (percent) or '+0.12 [-0.03, +0.27]'."""
        if percent:
            return (f"{100 * self.value:.{digits}f}% [{100 * self.low:.{digits}f}, "
                    f"{100 * self.high:.{digits}f}]")
        return f"{self.value:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def compact(self) -> str:
        """'78.6 (76-81)': a fraction in percent with its interval rounded, for table cells."""
        return f"{100 * self.value:.1f} ({100 * self.low:.0f}-{100 * self.high:.0f})"


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on the same rows."""

    difference: Estimate  # bootstrap interval of mean(a) - mean(b)
    a_only: int  # rows A gets right and B wrong
    b_only: int
    p_value: float  # McNemar's exact test

    @property
    def beyond_noise(self) -> bool:
        return self.difference.excludes(0.0)


def _outcomes(correct: Sequence[bool] | np.ndarray) -> np.ndarray:
    array = np.asarray(correct)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of per-row outcomes, got shape "
                         f"{array.shape}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError("per-row outcomes must be booleans or 0/1")
    return array.astype(bool)


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (no continuity correction)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    z = special.ndtri(0.5 + confidence / 2)
    p = k / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def accuracy(correct: Sequence[bool] | np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """The share of rows right, with its Wilson interval.

    Args:
      correct: per-row outcomes [N] (bool or 0/1).
      confidence: the interval's level.
    """
    outcomes = _outcomes(correct)
    k, n = int(outcomes.sum()), outcomes.size
    return Estimate(k / n, *wilson_interval(k, n, confidence), n)


def bootstrap_interval(statistic: Callable[..., np.ndarray], samples: Sequence[np.ndarray], *,
                       confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over paired samples (rows resampled
    together), drawn as scipy's `bootstrap(..., paired=True, method="percentile")` draws them.

    Args:
      statistic: `(*resampled, axis=-1) -> values`, vectorized over the leading axis.
      samples: arrays [N] of the same length, resampled with the same row indices.
    """
    n = len(samples[0])
    if any(len(s) != n for s in samples):
        raise ValueError(f"paired samples differ in length: {[len(s) for s in samples]}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, (resamples, n))  # [R, N]
    values = statistic(*(np.asarray(s)[index] for s in samples), axis=-1)  # [R]
    alpha = (1 - confidence) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def _mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def paired_difference(a_correct, b_correct, *, confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = SEED) -> PairedDifference:
    """Accuracy of prompt A minus prompt B, both scored on the same rows.

    Args:
      a_correct, b_correct: per-row outcomes [N] of A and B, row i the same example.

    Returns:
      The difference with its paired bootstrap interval, the discordant counts and McNemar's
      exact two-sided p-value.
    """
    a, b = _outcomes(a_correct), _outcomes(b_correct)
    if a.shape != b.shape:
        raise ValueError(f"A and B were scored on different rows: {a.shape} vs {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    p = (1.0 if a_only + b_only == 0
         else float(sps.binomtest(a_only, a_only + b_only, 0.5).pvalue))
    af, bf = a.astype(np.float64), b.astype(np.float64)
    low, high = bootstrap_interval(_mean_difference, (af, bf), confidence=confidence,
                                   resamples=resamples, seed=seed)
    return PairedDifference(Estimate(float(af.mean() - bf.mean()), low, high, a.size),
                            a_only, b_only, p)


def unpaired_difference(k_a: int, n_a: int, k_b: int, n_b: int,
                        confidence: float = CONFIDENCE) -> Estimate:
    """Accuracy k_a/n_a minus k_b/n_b of two prompts scored on different (or unknown) rows:
    Newcombe's (1998) hybrid score interval, built from the two Wilson intervals (his
    method 10). For stored scores without per-row outcomes, where a paired test cannot run;
    wider than the paired interval on the same rows."""
    p_a, p_b = k_a / n_a, k_b / n_b
    low_a, high_a = wilson_interval(k_a, n_a, confidence)
    low_b, high_b = wilson_interval(k_b, n_b, confidence)
    d = p_a - p_b
    return Estimate(d, d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
                    d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2), min(n_a, n_b))


def _rank_correlation(x, y, axis=-1):
    return _pearson(sps.rankdata(x, axis=axis), sps.rankdata(y, axis=axis), axis=axis)


def _pearson(x, y, axis=-1):
    x = x - np.mean(x, axis=axis, keepdims=True)
    y = y - np.mean(y, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(x * y, axis=axis) / np.sqrt(np.sum(x * x, axis=axis)
                                                  * np.sum(y * y, axis=axis))


def correlation(x, y, *, method: str = "spearman", confidence: float = CONFIDENCE,
                resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """Spearman (default) or Pearson correlation of paired values (e.g. an indicator and the
    transfer score over targets) with a bootstrap interval over the pairs. Resamples where one
    side is constant have no correlation and are dropped from the interval."""
    statistic = {"spearman": _rank_correlation, "pearson": _pearson}.get(method)
    if statistic is None:
        raise ValueError(f"unknown correlation {method!r}; known: spearman, pearson")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError(f"need two 1-D arrays of the same length >= 3, got {x.shape}, {y.shape}")
    value = float(statistic(x, y))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, x.size, (resamples, x.size))
    values = statistic(x[index], y[index], axis=-1)
    values = values[np.isfinite(values)]
    alpha = (1 - confidence) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return Estimate(value, float(low), float(high), x.size)


@dataclasses.dataclass(frozen=True)
class Retrieval:
    """How often an indicator's top-ranked source is a best source, over targets."""

    hits: float  # sum of per-target credits (ties split 1/k)
    chance: float  # expected hits of a random pick
    targets: int
    rate: Estimate  # hits / targets with a bootstrap interval over targets

    @property
    def beyond_chance(self) -> bool:
        return self.rate.low > self.chance / self.targets


def retrieval_credit(indicator: Sequence[float], transfer: Sequence[float],
                     atol: float = 1e-12) -> tuple[float, float]:
    """One target's (credit, chance): of the k sources tied for the indicator's top, the share
    that are among the sources tied for the best transfer score; chance is the share of best
    sources among all candidates (what a random pick gets)."""
    ind, score = np.asarray(indicator, np.float64), np.asarray(transfer, np.float64)
    if ind.shape != score.shape or ind.ndim != 1 or ind.size == 0:
        raise ValueError(f"indicator and transfer must be 1-D of one length: {ind.shape}, "
                         f"{score.shape}")
    top = np.abs(ind - ind.max()) <= atol
    best = np.abs(score - score.max()) <= atol
    return float((top & best).sum() / top.sum()), float(best.sum() / best.size)


def retrieval_hits(indicators: Sequence[Sequence[float]], transfers: Sequence[Sequence[float]],
                   *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = SEED) -> Retrieval:
    """Top-1 retrieval over targets: per target the indicator's values for its candidate
    sources and their transfer scores (the target's own prompt excluded by the caller)."""
    pairs = [retrieval_credit(i, t) for i, t in zip(indicators, transfers, strict=True)]
    credit = np.array([c for c, _ in pairs])
    chance = float(sum(p for _, p in pairs))
    low, high = bootstrap_interval(lambda c, axis=-1: np.mean(c, axis=axis), (credit,),
                                   confidence=confidence, resamples=resamples, seed=seed)
    return Retrieval(float(credit.sum()), chance, credit.size,
                     Estimate(float(credit.mean()), low, high, credit.size))


def speedups(baseline_steps: Sequence[float | None], arm_steps: Sequence[float | None]
             ) -> dict[str, float | int | None]:
    """An init arm's speedup (baseline steps / arm steps to a target score) per seed, paired by
    seed, with the median and the spread; a seed where either never got there is counted in
    `never` and left out of the ratios."""
    if len(baseline_steps) != len(arm_steps):
        raise ValueError("baseline and arm need one value per seed each")
    ratios = [b / a for b, a in zip(baseline_steps, arm_steps, strict=True)
              if a is not None and b is not None and a > 0]
    never = len(arm_steps) - len(ratios)
    if not ratios:
        return {"median": None, "min": None, "max": None, "seeds": len(arm_steps),
                "never": never}
    return {"median": float(np.median(ratios)), "min": float(min(ratios)),
            "max": float(max(ratios)), "seeds": len(arm_steps), "never": never}


def reading(beyond: Sequence[bool], what: str = "comparisons") -> str:
    """'X of Y {what} beyond noise, Z within' from per-comparison verdicts."""
    beyond = list(beyond)
    x = sum(bool(b) for b in beyond)
    return f"{x} of {len(beyond)} {what} beyond noise, {len(beyond) - x} within"
