"""Intervals over particles and batch comparisons, on particle tables drawn from known laws.

Binomial tolerances: a rate estimated from N independent draws, whose true value is p, has
standard deviation sqrt(p (1 - p) / N). With N = 2000 and p = 0.05 (or 0.95) that is 0.0049.
The tests accept 4 standard deviations (0.0195): a correct implementation fails with a
probability of about 6e-5, while an interval built with the normal quantile instead of t
(coverage 0.91 at n = 8) or a one-sided p-value (rate 0.10) falls outside. Welch's
approximation itself stays within about 0.01 of the nominal level for normal data at these
sizes (slightly conservative with equal variances: 0.04-0.05 at n = 8), inside the
tolerance. The seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from edxtomo.compare import COMPARISON_COLUMNS, compare_samples
from edxtomo.statistics import (
    INTERVAL_NO_SPREAD,
    INTERVAL_OK,
    INTERVAL_TOO_FEW,
    mean_interval,
    welch_difference,
)
from edxtomo.thickness import (
    FLAG_ELEMENT_ABSENT,
    FLAG_NO_PARTICLES,
    FLAG_OK,
    FLAG_TOUCHES_BORDER,
    SUMMARY_METRICS,
    summarize_samples,
)

N_DRAWS = 2000
TOLERANCE = 4 * np.sqrt(0.05 * 0.95 / N_DRAWS)
N_PARTICLES = 8
CV_BETWEEN = 0.08  # between-particle CV of the mean thickness: a realistic 5-10 %


def simulated_particles(
    sample: str, thickness_nm: float, rng: np.random.Generator, n: int = N_PARTICLES,
    element: str = "S", method: str = "sirt",
) -> pd.DataFrame:
    """n particles flagged ok with normal particle statistics of known means."""
    return pd.DataFrame({
        "sample": sample, "method": method, "element": element,
        "particle": np.arange(1, n + 1), "flag": FLAG_OK,
        "thickness_mean_nm": rng.normal(thickness_nm, CV_BETWEEN * thickness_nm, n),
        "thickness_cv": rng.normal(0.3, 0.05, n),
        "no_shell_fraction": rng.uniform(0.0, 0.2, n),
    })


def test_twenty_percent_thicker_shell_is_detected():
    rng = np.random.default_rng(1)
    rows = pd.concat([simulated_particles("batch_a", 2.0, rng),
                      simulated_particles("batch_b", 2.4, rng)], ignore_index=True)
    table = compare_samples(rows)
    assert list(table.columns) == list(COMPARISON_COLUMNS)
    assert len(table) == 3 and set(table["statistic"]) == {
        "thickness_mean_nm", "thickness_cv", "no_shell_fraction"}
    row = table.set_index("statistic").loc["thickness_mean_nm"]
    assert (row["sample_a"], row["sample_b"]) == ("batch_a", "batch_b")
    assert row["n_a"] == row["n_b"] == N_PARTICLES and row["flag"] == INTERVAL_OK
    assert row["p_value"] < 0.05
    assert 0.0 < row["ci95_low"] < 0.4 < row["ci95_high"]
    assert row["difference_b_minus_a"] == pytest.approx(row["mean_b"] - row["mean_a"])


def test_welch_matches_scipy_interval_and_test():
    rng = np.random.default_rng(2)
    a, b = rng.normal(2.0, 0.1, 6), rng.normal(2.3, 0.3, 9)
    result = welch_difference(a, b)
    reference = stats.ttest_ind(b, a, equal_var=False)
    ci = reference.confidence_interval(0.95)
    assert result["p_value"] == pytest.approx(reference.pvalue)
    assert result["df"] == pytest.approx(reference.df)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_power_for_twenty_percent_difference():
    # Expected power: t = 0.4 / sqrt((0.16^2 + 0.192^2) / 8) = 4.5 on ~14 df: power > 0.98.
    rng = np.random.default_rng(3)
    detected = [
        welch_difference(rng.normal(2.0, 0.16, 8), rng.normal(2.4, 0.192, 8))["p_value"] < 0.05
        for _ in range(500)
    ]
    assert np.mean(detected) > 0.95


def test_same_distribution_reports_no_difference():
    rng = np.random.default_rng(4)
    rows = pd.concat([simulated_particles("batch_a", 2.0, rng),
                      simulated_particles("batch_b", 2.0, rng)], ignore_index=True)
    row = compare_samples(rows).set_index("statistic").loc["thickness_mean_nm"]
    assert row["p_value"] > 0.05
    assert row["ci95_low"] < 0.0 < row["ci95_high"]


def test_false_positive_rate_is_five_percent():
    rng = np.random.default_rng(5)
    results = [welch_difference(rng.normal(2.0, 0.16, N_PARTICLES),
                                rng.normal(2.0, 0.16, N_PARTICLES)) for _ in range(N_DRAWS)]
    p = np.array([r["p_value"] for r in results])
    rate = np.mean(p < 0.05)
    assert abs(rate - 0.05) < TOLERANCE, rate
    # The interval excludes 0 exactly when the test rejects at 5 %.
    excludes = np.array([r["ci_low"] > 0 or r["ci_high"] < 0 for r in results])
    np.testing.assert_array_equal(excludes, p < 0.05)


def test_t_interval_of_the_mean_covers_95_percent():
    rng = np.random.default_rng(6)
    true_mean = 2.0
    covered = []
    for _ in range(N_DRAWS):
        _, low, high = mean_interval(rng.normal(true_mean, CV_BETWEEN * true_mean, N_PARTICLES))
        covered.append(low < true_mean < high)
    assert abs(np.mean(covered) - 0.95) < TOLERANCE, np.mean(covered)


def test_welch_interval_covers_the_difference_with_unequal_spreads():
    rng = np.random.default_rng(7)
    covered = []
    for _ in range(N_DRAWS):
        r = welch_difference(rng.normal(2.0, 0.1, 6), rng.normal(2.4, 0.3, 10))
        covered.append(r["ci_low"] < 0.4 < r["ci_high"])
    assert abs(np.mean(covered) - 0.95) < TOLERANCE, np.mean(covered)


def test_summary_intervals_match_the_t_interval():
    rng = np.random.default_rng(8)
    rows = simulated_particles("batch_a", 2.0, rng)
    for metric in SUMMARY_METRICS:
        rows[metric] = rng.normal(1.0, 0.1, len(rows))
    summary = summarize_samples(rows).iloc[0]
    values = rows["thickness_mean_nm"].to_numpy()
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(),
                                 scale=stats.sem(values))
    assert summary["interval_flag"] == INTERVAL_OK
    assert summary["mean_ci95_low_thickness_mean_nm"] == pytest.approx(low)
    assert summary["mean_ci95_high_thickness_mean_nm"] == pytest.approx(high)
    for metric in SUMMARY_METRICS:
        assert (summary[f"mean_ci95_low_{metric}"] < summary[f"mean_{metric}"]
                < summary[f"mean_ci95_high_{metric}"])


def test_flagged_rows_are_left_out_of_comparisons():
    rng = np.random.default_rng(9)
    clean = pd.concat([simulated_particles("batch_a", 2.0, rng),
                       simulated_particles("batch_b", 2.4, rng)], ignore_index=True)
    flagged = pd.DataFrame({
        "sample": ["batch_a", "batch_b", "batch_b"], "method": "sirt", "element": "S",
        "particle": pd.array([9, 9, pd.NA], dtype="Int64"),
        "flag": [FLAG_TOUCHES_BORDER, FLAG_ELEMENT_ABSENT, FLAG_NO_PARTICLES],
        "thickness_mean_nm": [50.0, np.nan, np.nan], "thickness_cv": [9.0, np.nan, np.nan],
        "no_shell_fraction": [1.0, np.nan, np.nan],
    })
    rows = pd.concat([clean, flagged], ignore_index=True)
    pd.testing.assert_frame_equal(compare_samples(rows), compare_samples(clean))
    assert set(compare_samples(rows)[["n_a", "n_b"]].to_numpy().ravel()) == {N_PARTICLES}


def test_fewer_than_two_particles():
    assert np.isnan(mean_interval([2.0])[1]) and mean_interval([2.0])[0] == 2.0
    assert all(np.isnan(mean_interval([np.nan, np.nan])))
    rng = np.random.default_rng(10)
    rows = pd.concat([simulated_particles("batch_a", 2.0, rng),
                      simulated_particles("batch_b", 2.4, rng, n=1)], ignore_index=True)
    table = compare_samples(rows)
    assert (table["flag"] == INTERVAL_TOO_FEW).all() and (table["n_b"] == 1).all()
    assert table[["ci95_low", "ci95_high", "welch_df", "p_value"]].isna().all().all()
    assert table["difference_b_minus_a"].notna().all()
    for metric in SUMMARY_METRICS:
        rows[metric] = rows.get(metric, 1.0)
    summary = summarize_samples(rows).set_index("sample")
    assert summary.loc["batch_b", "interval_flag"] == INTERVAL_TOO_FEW
    assert np.isnan(summary.loc["batch_b", "mean_ci95_low_thickness_mean_nm"])
    assert summary.loc["batch_a", "interval_flag"] == INTERVAL_OK


def test_constant_samples_and_a_single_sample():
    result = welch_difference([0.0, 0.0, 0.0], [0.0, 0.0])
    assert result["flag"] == INTERVAL_NO_SPREAD and np.isnan(result["p_value"])
    rng = np.random.default_rng(11)
    table = compare_samples(simulated_particles("only", 2.0, rng))
    assert table.empty and list(table.columns) == list(COMPARISON_COLUMNS)
    with pytest.raises(ValueError, match="thickness_cv"):
        compare_samples(simulated_particles("only", 2.0, rng).drop(columns="thickness_cv"))


def test_pairs_are_per_method_and_ordered_by_appearance():
    rng = np.random.default_rng(12)
    rows = pd.concat([
        simulated_particles(sample, 2.0, rng, method=method)
        for method in ("sirt", "deep") for sample in ("c", "a", "b")
    ], ignore_index=True)
    table = compare_samples(rows, metrics=("thickness_mean_nm",))
    assert len(table) == 2 * 3
    sirt = table[table["method"] == "sirt"]
    assert list(zip(sirt["sample_a"], sirt["sample_b"], strict=True)) == [
        ("c", "a"), ("c", "b"), ("a", "b")]


def test_distribution_figure_with_intervals(tmp_path):
    from edxtomo.report import plot_thickness_distributions

    rng = np.random.default_rng(13)
    rows = pd.concat([simulated_particles("batch_a", 2.0, rng),
                      simulated_particles("batch_b", 2.4, rng, n=1),
                      simulated_particles("batch_a", 2.0, rng, element="Se")], ignore_index=True)
    plot_thickness_distributions(rows, tmp_path / "distributions.png")
    assert (tmp_path / "distributions.png").stat().st_size > 10_000
    flagged = rows.assign(flag=FLAG_TOUCHES_BORDER)
    plot_thickness_distributions(flagged, tmp_path / "none.png")
    assert (tmp_path / "none.png").stat().st_size > 0
