"""Batch comparison: is one sample's shell thicker, or more uniform, than another's?

For every pair of samples reconstructed by the same method, every element and every
statistic of :data:`COMPARISON_METRICS`, the difference of the means over particles
(the later sample in the table minus the earlier one), its Welch interval and Welch's
p-value (:func:`edxtomo.statistics.welch_difference`). Only particle rows whose ``flag`` is
accepted enter (``ok`` by default: particles cut by the volume edge, absent elements and
empty volumes are left out).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from edxtomo.statistics import CONFIDENCE, welch_difference
from edxtomo.thickness import FLAG_OK

COMPARISON_METRICS = ("thickness_mean_nm", "thickness_cv", "no_shell_fraction")
"""Particle statistics compared between samples by default."""

COMPARISON_COLUMNS = (
    "method",
    "element",
    "statistic",
    "sample_a",
    "sample_b",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "difference_b_minus_a",
    "ci95_low",
    "ci95_high",
    "welch_df",
    "p_value",
    "flag",
)
"""Columns of ``results/tables/comparisons.tsv``, in order."""


def compare_samples(
    rows: pd.DataFrame,
    metrics: Sequence[str] = COMPARISON_METRICS,
    include_flags: Sequence[str] = (FLAG_OK,),
) -> pd.DataFrame:
    """Pairwise Welch comparisons of samples, per method, element and statistic.

    Parameters
    ----------
    rows : DataFrame
        ``results/tables/particles.tsv``: columns ``sample``, ``method``, ``element``,
        ``flag`` and every column of ``metrics``, one row per particle and element.
    metrics : sequence of str
        Particle statistics to compare (units as in their column names).
    include_flags : sequence of str
        Rows whose ``flag`` is one of these enter the statistics.

    Returns
    -------
    DataFrame
        Columns :data:`COMPARISON_COLUMNS`. One row per method, element, statistic and
        pair of samples (A, B), A before B in order of first appearance in ``rows``;
        ``difference_b_minus_a`` = mean over B's particles - mean over A's, in the
        statistic's unit; ``ci95_low``, ``ci95_high`` its 95% interval
        (:data:`~edxtomo.statistics.CONFIDENCE`). A table with a single sample gives no rows.
    """
    missing = {"sample", "method", "element", "flag", *metrics} - set(rows.columns)
    if missing:
        raise ValueError(f"particle table lacks the columns {sorted(missing)}")
    used = rows[rows["flag"].isin(list(include_flags))]
    records = []
    for method in pd.unique(rows["method"]):
        of_method = rows[rows["method"] == method]
        samples = list(pd.unique(of_method["sample"]))
        elements = sorted(of_method["element"].dropna().unique())
        for element, metric in itertools.product(elements, metrics):
            for sample_a, sample_b in itertools.combinations(samples, 2):
                values = [
                    used.loc[(used["method"] == method) & (used["sample"] == s)
                             & (used["element"] == element), metric].to_numpy(dtype=float)
                    for s in (sample_a, sample_b)
                ]
                result = welch_difference(*values, confidence=CONFIDENCE)
                records.append({
                    "method": method, "element": element, "statistic": metric,
                    "sample_a": sample_a, "sample_b": sample_b,
                    "n_a": result["n_a"], "n_b": result["n_b"],
                    "mean_a": result["mean_a"], "mean_b": result["mean_b"],
                    "difference_b_minus_a": result["difference"],
                    "ci95_low": result["ci_low"], "ci95_high": result["ci_high"],
                    "welch_df": result["df"], "p_value": result["p_value"],
                    "flag": result["flag"],
                })
    table = pd.DataFrame(records, columns=list(COMPARISON_COLUMNS))
    return table.astype({"n_a": np.int64, "n_b": np.int64})
