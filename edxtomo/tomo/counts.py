"""Photon-count statistics that every held-out check shares: disjoint splits of the counts
(Poisson thinning) and the Poisson deviance of held-out counts under a model."""

from __future__ import annotations

import numpy as np

from edxtomo.errors import EdxtomoInputError


def count_groups(counts: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Split integer counts into ``n_groups`` disjoint groups of equal expected size.

    Parameters
    ----------
    counts : ndarray of int, any shape
        Non-negative photon counts.
    n_groups : int
        Number of groups ``K >= 2``.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape (n_groups, *counts.shape), dtype of ``counts``
        The groups; they sum to ``counts``. Each is Binomial(count, 1/K) given the counts,
        and for Poisson counts the groups are independent Poisson images.
    """
    if n_groups < 2:
        raise ValueError(f"n_groups must be at least 2, got {n_groups}")
    rest = np.asarray(counts).astype(np.int64)
    if rest.size and rest.min() < 0:
        raise EdxtomoInputError("counts to split must be non-negative")
    groups = np.empty((n_groups, *rest.shape), dtype=np.asarray(counts).dtype)
    for k in range(n_groups - 1):
        groups[k] = rng.binomial(rest, 1.0 / (n_groups - k))
        rest = rest - groups[k]
    groups[-1] = rest
    return groups


def poisson_deviance(counts: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> float:
    """Mean Poisson deviance per pixel of ``mask``: ``2 (y log(y / mu) - (y - mu))``.

    Parameters
    ----------
    counts : ndarray
        Held-out counts ``y`` (clipped at 0).
    expected : ndarray, same shape
        The model's expected counts ``mu`` (clipped at 1e-9).
    mask : ndarray of bool, same shape
        The pixels scored.
    """
    y = np.clip(counts[mask].astype(np.float64), 0, None)
    mu = np.clip(expected[mask].astype(np.float64), 1e-9, None)
    log_ratio = np.log(np.where(y > 0, y, 1.0) / mu)
    return float(np.mean(2 * (np.where(y > 0, y * log_ratio, 0.0) - (y - mu))))
