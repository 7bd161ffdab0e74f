"""Intervals and tests over particles: the numbers that compare one batch with another.

Every function here treats the particles of a sample as a random sample of the batch's
particles. The intervals and p-values therefore cover the variation *between particles*
only: the measurement error of each particle's own statistic (Poisson noise, alignment,
reconstruction and threshold choices) is not modelled separately; it enters only as far as
it adds scatter between particles, and a bias shared by all particles is not seen at all.

The interval of a mean is Student's t interval with ``n - 1`` degrees of freedom. The
difference of two means is Welch's: unequal variances, Welch-Satterthwaite degrees of
freedom and its two-sided p-value (as :func:`scipy.stats.ttest_ind` with
``equal_var=False``). Both suit a few particles per sample, provided the particle statistics
are roughly normal.

Student's distribution comes from :mod:`scipy.special`: importing :mod:`scipy.stats` takes
about a second, which every figure and table job would pay at start-up.
"""

from __future__ import annotations

import numpy as np
from scipy import special

CONFIDENCE = 0.95
"""Level of every interval in the tables."""

INTERVAL_OK = "ok"
INTERVAL_TOO_FEW = "fewer_than_2_particles"
INTERVAL_NO_SPREAD = "no_spread"


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def mean_interval(
    values: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Mean of a sample and its Student t interval.

    Parameters
    ----------
    values : array_like, shape (n,)
        One value per particle; NaN entries are dropped.
    confidence : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    mean, low, high : float
        The mean, and the interval ``mean -/+ t_{(1+confidence)/2, n-1} * sd / sqrt(n)``.
        The mean is NaN for no finite value; the interval is NaN for fewer than two, and
        collapses to the mean when all values are equal.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = _finite(values)
    if x.size == 0:
        return np.nan, np.nan, np.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, np.nan, np.nan
    half = special.stdtrit(x.size - 1, 0.5 + confidence / 2) * x.std(ddof=1) / np.sqrt(x.size)
    return mean, float(mean - half), float(mean + half)


def welch_difference(
    a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE
) -> dict[str, float | int | str]:
    """Difference of two means, ``mean(b) - mean(a)``, with Welch's interval and p-value.

    Parameters
    ----------
    a, b : array_like, shape (n_a,), (n_b,)
        One value per particle of the samples A and B; NaN entries are dropped.
    confidence : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    dict
        ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``difference`` (B - A), ``ci_low``,
        ``ci_high``, ``df`` (Welch-Satterthwaite degrees of freedom), ``p_value``
        (two-sided) and ``flag``: ``ok``; ``fewer_than_2_particles`` (either sample has
        fewer than two values: interval, df and p-value NaN); ``no_spread`` (both samples
        are constant: no test possible, interval, df and p-value NaN).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x, y = _finite(a), _finite(b)
    mean_a = float(x.mean()) if x.size else np.nan
    mean_b = float(y.mean()) if y.size else np.nan
    result: dict[str, float | int | str] = {
        "n_a": int(x.size), "n_b": int(y.size), "mean_a": mean_a, "mean_b": mean_b,
        "difference": mean_b - mean_a, "ci_low": np.nan, "ci_high": np.nan,
        "df": np.nan, "p_value": np.nan, "flag": INTERVAL_OK,
    }
    if x.size < 2 or y.size < 2:
        result["flag"] = INTERVAL_TOO_FEW
        return result
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se2 = va + vb
    if se2 == 0.0:
        result["flag"] = INTERVAL_NO_SPREAD
        return result
    df = se2**2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = special.stdtrit(df, 0.5 + confidence / 2) * np.sqrt(se2)
    t = result["difference"] / np.sqrt(se2)
    result.update(
        ci_low=float(result["difference"] - half), ci_high=float(result["difference"] + half),
        df=float(df), p_value=float(2.0 * special.stdtr(df, -abs(t))),
    )
    return result
