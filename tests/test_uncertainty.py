"""Intervals from the data itself: count splits and the jackknife.

The split and the jackknife are checked against sampling theory; the coverage of the
intervals on simulated specimens is measured by ``bench/intervals_coverage.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import HAADF, TiltSeries
from edxtomo.thickness import add_intervals, jackknife_interval, jackknife_se
from edxtomo.tomo.counts import count_groups
from edxtomo.uncertainty import jackknife_series, replicate_volumes, sd_volumes


def test_count_groups_are_independent_poisson_thinnings():
    # Poisson thinning: K groups of Poisson(lam) counts are independent Poisson(lam / K).
    lam, k, n = 12.0, 4, 200_000
    rng = np.random.default_rng(0)
    counts = rng.poisson(lam, n).astype(np.int32)
    groups = count_groups(counts, k, rng)
    assert groups.shape == (k, n) and groups.dtype == np.int32
    np.testing.assert_array_equal(groups.sum(axis=0), counts)
    # The mean of n Poisson(3) draws has sd sqrt(3 / n) = 0.004; its variance estimate has sd
    # about sqrt(2 / n) * 3 = 0.0095 (plus a kurtosis term of 1 / sqrt(3 n)); 5 sd bounds.
    np.testing.assert_allclose(groups.mean(axis=1), lam / k, atol=5 * np.sqrt(lam / k / n))
    np.testing.assert_allclose(groups.var(axis=1), lam / k, atol=5 * 0.011)
    # Independent groups: correlation ~ N(0, 1 / n), sd 0.0022.
    correlation = np.corrcoef(groups)[np.triu_indices(k, 1)]
    assert np.abs(correlation).max() < 5 / np.sqrt(n)


def test_count_groups_reject_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2"):
        count_groups(np.ones(3, int), 1, rng)
    with pytest.raises(EdxtomoInputError, match="non-negative"):
        count_groups(np.array([1, -1]), 2, rng)


def _series(counts: np.ndarray) -> TiltSeries:
    return TiltSeries({"Zn": counts, HAADF: np.ones(counts.shape, np.float32)},
                      np.linspace(-60, 60, counts.shape[0]), 0.5, {},
                      {"Zn": np.full(counts.shape, 2.0, np.float32)})


def test_jackknife_series_leaves_one_group_out_each_time():
    counts = np.random.default_rng(1).poisson(20.0, (3, 8, 8)).astype(np.int32)
    replicates = list(jackknife_series(_series(counts), 4, seed=0))
    assert len(replicates) == 4
    kept = np.stack([r.channels["Zn"] for r in replicates])
    # Each count is left out by exactly one replicate: the kept counts sum to (K - 1) y.
    np.testing.assert_array_equal(kept.sum(axis=0), 3 * counts)
    assert all(np.all(r.channels["Zn"] <= counts) for r in replicates)
    np.testing.assert_allclose(replicates[0].background["Zn"], 2.0 * 3 / 4)
    np.testing.assert_array_equal(replicates[2].channels[HAADF], 1.0)
    again = list(jackknife_series(_series(counts), 4, seed=0))
    np.testing.assert_array_equal(again[1].channels["Zn"], replicates[1].channels["Zn"])


def test_jackknife_series_refuses_float_maps():
    floats = np.full((3, 4, 4), 0.5, np.float32)
    with pytest.raises(EdxtomoInputError, match="'Zn' holds float maps"):
        next(jackknife_series(_series(floats), 3, seed=0))


def test_jackknife_of_a_mean_is_its_standard_error():
    # For a statistic linear in the counts the delete-a-group jackknife is exact: the
    # left-out means s_k = (T - g_k) / (K - 1) give se^2 = var(g) / K, the classical
    # standard error of the mean of the K group values.
    groups = np.random.default_rng(2).normal(5.0, 2.0, (6, 3))
    left_out = (groups.sum(axis=0) - groups) / (groups.shape[0] - 1)
    np.testing.assert_allclose(jackknife_se(left_out),
                               groups.std(axis=0, ddof=1) / np.sqrt(groups.shape[0]))
    low, high = jackknife_interval(groups.mean(axis=0), left_out)
    half = 2.5706 * groups.std(axis=0, ddof=1) / np.sqrt(6)  # t_{0.975, 5}
    np.testing.assert_allclose(high - low, 2 * half, rtol=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        jackknife_se(left_out[:1])


def test_add_intervals_matches_rows_by_particle_and_element():
    rows = pd.DataFrame({"particle": [1, 1, 2], "element": ["Se", "S", "Se"],
                         "thickness_mean_nm": [2.0, 1.0, 3.0], "thickness_cv": [0.1, 0.2, 0.3],
                         "no_shell_fraction": [0.0, 0.1, 0.0]})
    shifted = [rows.assign(thickness_mean_nm=rows["thickness_mean_nm"] + d) for d in (-0.1, 0.1)]
    shifted[1] = shifted[1].iloc[::-1]  # order must not matter
    out = add_intervals(rows, shifted)
    half = 12.706 * 0.1  # t_{0.975, 1} * jackknife se of (-0.1, +0.1)
    np.testing.assert_allclose(out["thickness_mean_nm_ci_low"], rows["thickness_mean_nm"] - half,
                               rtol=1e-4)
    np.testing.assert_allclose(out["thickness_cv_ci_high"], rows["thickness_cv"])


def test_replicate_volumes_and_sd_volumes():
    # A linear "reconstruction" (the mean count of each tilt) has the jackknife sd of a mean
    # of K groups of Poisson counts: sqrt(lambda / n_pixel) on the full data.
    lam, k = 50.0, 5
    counts = np.random.default_rng(3).poisson(lam, (4, 64, 64)).astype(np.int32)
    transforms = pd.DataFrame({"angle_deg": np.linspace(-60, 60, 4), "shift_x_px": 0.0,
                               "shift_y_px": 0.0, "axis_rotation_deg": 0.0,
                               "axis_offset_px": 0.0, "correlation": 1.0, "registered": True})

    def mean_count(raw, aligned):
        return {"Zn": aligned.channels["Zn"].mean(axis=(1, 2)) * k / (k - 1)}

    replicates = replicate_volumes(_series(counts), transforms, mean_count, k, seed=4)
    sd = sd_volumes(replicates)["Zn"]
    expected = np.sqrt(lam / counts[0].size)
    # The jackknife sd from K = 5 groups has a relative spread of about 1 / sqrt(2 (K - 1)),
    # 35%: each of the 4 tilts must be within a factor 2.5 (2.6 sd).
    assert np.all((sd > expected / 2.5) & (sd < expected * 2.5)), (sd, expected)


def test_write_replicates_and_read_them_back(tmp_path):
    from edxtomo.io import read_volume_folder, replicate_folders
    from edxtomo.uncertainty import write_replicates

    rng = np.random.default_rng(5)
    replicates = [{"Zn": rng.random((4, 5, 6), dtype=np.float32)} for _ in range(3)]
    write_replicates(replicates, tmp_path / "tv", voxel_size_nm=0.7)
    folders = replicate_folders(tmp_path / "tv")
    assert [f.name for f in folders] == ["replicate_0", "replicate_1", "replicate_2"]
    volumes, voxel_nm = read_volume_folder(folders[1])
    np.testing.assert_array_equal(volumes["Zn"], replicates[1]["Zn"])
    assert voxel_nm == pytest.approx(0.7)
    sd = read_volume_folder(tmp_path / "tv")[0]["Zn_sd"]
    np.testing.assert_allclose(sd, jackknife_se(np.stack([r["Zn"] for r in replicates])),
                               rtol=1e-6)
    with pytest.raises(EdxtomoInputError, match="at least 2 replicate"):
        replicate_folders(folders[0])



def test_tv_replicates_take_the_full_runs_chosen_weights(tmp_path):
    # `weight: auto` with the full run's weights.tsv must give the same replicates as those
    # weights written into the options: the choice is read back, not searched again.
    from edxtomo.options import ReconstructOptions
    from edxtomo.tomo.methods import with_weights_of
    from edxtomo.tomo.weights import WeightCurves, read_chosen_weights, write_weights
    from edxtomo.uncertainty import method_replicates

    counts = np.random.default_rng(6).poisson(20.0, (4, 8, 8)).astype(np.int32)
    transforms = pd.DataFrame({"angle_deg": np.linspace(-60, 60, 4), "shift_x_px": 0.0,
                               "shift_y_px": 0.0, "axis_rotation_deg": 0.0,
                               "axis_offset_px": 0.0, "correlation": 1.0, "registered": True})
    curves = WeightCurves(["Zn"], np.array([0.1, 1.0]), np.array([[2.0, 1.0]]),
                          np.array([0.7]), "count halves")
    write_weights([curves], tmp_path / "weights.tsv")
    chosen = read_chosen_weights(tmp_path / "weights.tsv")
    assert chosen == pytest.approx({"Zn": 0.7})
    # the deep job's self-check reads them from the tv job's folder the same way
    auto = ReconstructOptions(tv={"weight": "auto"})
    assert with_weights_of(auto, tmp_path).tv.weight == pytest.approx({"Zn": 0.7})
    assert with_weights_of(auto, None) is auto
    assert with_weights_of(ReconstructOptions(tv={"weight": 0.3}), tmp_path).tv.weight == 0.3

    def replicates(weight, chosen_weights=None):
        options = ReconstructOptions(nz=8, tv={"weight": weight, "iterations": 5})
        return method_replicates(_series(counts), transforms, "tv", options, 2,
                                 chosen_weights=chosen_weights, seed=1, device="cpu")

    for read_back, written in zip(replicates("auto", chosen), replicates({"Zn": 0.7}),
                                  strict=True):
        np.testing.assert_array_equal(read_back["Zn"], written["Zn"])
    with pytest.raises(EdxtomoInputError, match="not a weights table"):
        pd.DataFrame({"channel": ["Zn"]}).to_csv(tmp_path / "bad.tsv", sep="\t")
        read_chosen_weights(tmp_path / "bad.tsv")
