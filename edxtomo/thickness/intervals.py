"""Jackknife intervals of the per-particle shell statistics.

The replicates are delete-a-group count splits of the raw data (:mod:`edxtomo.uncertainty`);
each is reconstructed and measured with the full data's particles, and the spread of a
statistic over the ``K`` replicates gives its standard error:
``se = sqrt((K-1)/K * sum_k (s_k - mean)^2)`` (delete-a-group jackknife). The interval is
``s_full -/+ t_{(1+confidence)/2, K-1} * se``: Student's t with ``K - 1`` degrees of freedom
because ``se`` is estimated from ``K`` values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special

INTERVAL_METRICS = ("thickness_mean_nm", "thickness_cv", "no_shell_fraction")
"""Statistics that carry an interval in the thickness table."""

INTERVAL_COLUMNS = tuple(f"{m}_ci_{end}" for m in INTERVAL_METRICS for end in ("low", "high"))
"""``{metric}_ci_low`` and ``{metric}_ci_high`` for every metric of :data:`INTERVAL_METRICS`."""


def jackknife_se(replicates: np.ndarray, axis: int = 0) -> np.ndarray:
    """Delete-a-group jackknife standard error over ``axis``.

    Parameters
    ----------
    replicates : ndarray, with ``K >= 2`` entries along ``axis``
        The quantity on each of the ``K`` replicates.
    axis : int

    Returns
    -------
    ndarray
        ``sqrt((K-1)/K * sum_k (s_k - mean)^2)``, NaN where any replicate is NaN.
    """
    values = np.asarray(replicates, dtype=float)
    n = values.shape[axis]
    if n < 2:
        raise ValueError(f"the jackknife needs at least 2 replicates, got {n}")
    deviation = values - values.mean(axis=axis, keepdims=True)
    return np.sqrt((n - 1) / n * (deviation**2).sum(axis=axis))


def jackknife_interval(
    estimate: np.ndarray, replicates: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Interval ``estimate -/+ t_{(1+confidence)/2, K-1} * se`` from ``K`` replicates.

    Parameters
    ----------
    estimate : ndarray, shape (...)
        The quantity on the full data.
    replicates : ndarray, shape (K, ...)
        The same quantity on each replicate.
    confidence : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    low, high : ndarray, shape (...)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    replicates = np.asarray(replicates, dtype=float)
    half = special.stdtrit(replicates.shape[0] - 1, 0.5 + confidence / 2) * jackknife_se(replicates)
    estimate = np.asarray(estimate, dtype=float)
    return estimate - half, estimate + half


def add_intervals(
    rows: pd.DataFrame, replicate_rows: Sequence[pd.DataFrame], confidence: float = 0.95
) -> pd.DataFrame:
    """Fill the interval columns of a thickness table from its replicates' tables.

    Parameters
    ----------
    rows : DataFrame
        :func:`~edxtomo.thickness.particle_thickness_table` rows of the full data.
    replicate_rows : sequence of DataFrame
        The same table measured on each of ``K >= 2`` replicates, with the same particles
        (same ``particle`` and ``element`` keys).
    confidence : float

    Returns
    -------
    DataFrame
        ``rows`` with :data:`INTERVAL_COLUMNS` set; NaN where a replicate lacks the value.
    """
    keys = ["particle", "element"]
    out = rows.copy()
    index = pd.MultiIndex.from_frame(rows[keys])
    for metric in INTERVAL_METRICS:
        values = np.stack([
            table.set_index(keys)[metric].reindex(index).to_numpy(dtype=float)
            for table in replicate_rows
        ])
        low, high = jackknife_interval(rows[metric].to_numpy(dtype=float), values, confidence)
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = low, high
    return out
