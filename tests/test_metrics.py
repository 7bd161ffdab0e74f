"""Tests of edxtomo.metrics against analytic expectations."""

from __future__ import annotations

import numpy as np
import pytest

from edxtomo.metrics import correlation, particle_region, psnr, scale_fit, ssim3d


def _ball(n: int = 32, radius: float = 8.0, centre=(15.5, 15.5, 15.5)) -> np.ndarray:
    z, y, x = np.indices((n, n, n), dtype=float)
    r2 = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2
    return (r2 <= radius**2).astype(float)


def _checker(shape) -> np.ndarray:
    """A +-1 checkerboard."""
    return np.where(np.indices(shape).sum(axis=0) % 2 == 0, 1.0, -1.0)


def test_particle_region_is_support_box_plus_margin():
    truth = np.zeros((20, 30, 40))
    truth[5:9, 10:21, 12:15] = 1.0
    assert particle_region(truth, margin_vox=0) == (slice(5, 9), slice(10, 21), slice(12, 15))
    # the margin is clipped at the volume edge
    truth[0, 0, 39] = 1.0
    assert particle_region(truth, margin_vox=2) == (slice(0, 11), slice(0, 23), slice(10, 40))
    # with a channel axis the union of the channels' supports is used
    other = np.zeros_like(truth)
    other[15, 25, 0] = 1.0
    box = particle_region(np.stack([truth, other]), margin_vox=0)
    assert box == (slice(0, 16), slice(0, 26), slice(0, 40))


def test_particle_region_rejects_empty_truth():
    with pytest.raises(ValueError, match="empty"):
        particle_region(np.zeros((8, 8, 8)))


def test_scale_fit_removes_scale_exactly():
    truth = _ball()
    assert scale_fit(7.5 * truth, truth) == pytest.approx(1 / 7.5)
    assert psnr(7.5 * truth, truth) == float("inf")
    assert ssim3d(0.01 * truth, truth) == pytest.approx(1.0)
    assert correlation(3 * truth + 2, truth) == pytest.approx(1.0)


def test_psnr_matches_closed_form_with_orthogonal_error():
    truth = _ball()
    region = particle_region(truth)
    t = truth[region]
    e = 0.3 * _checker(t.shape)
    e -= t * np.sum(e * t) / np.sum(t * t)  # make the error exactly orthogonal to the truth
    volume = truth.copy()
    volume[region] += e
    # a = |t|^2 / (|t|^2 + |e|^2); residual = (a - 1) t + a e, its two parts orthogonal
    tt, ee = np.sum(t * t), np.sum(e * e)
    a = tt / (tt + ee)
    mse = ((a - 1) ** 2 * tt + a**2 * ee) / t.size
    assert scale_fit(volume, truth) == pytest.approx(a)
    assert psnr(volume, truth) == pytest.approx(10 * np.log10(1.0 / mse))
    # Pearson correlation of t with t + e: cov and variances from centred sums
    tc, vc = t - t.mean(), (t + e) - (t + e).mean()
    expected = np.sum(tc * vc) / np.sqrt(np.sum(tc * tc) * np.sum(vc * vc))
    assert correlation(volume, truth) == pytest.approx(expected)


def test_psnr_ignores_voxels_outside_the_region():
    truth = _ball()
    volume = truth.copy()
    volume[0, 0, 0] = 100.0  # far outside the particle's box
    assert psnr(volume, truth) == float("inf")
    whole = (slice(None),) * 3
    assert np.isfinite(psnr(volume, truth, region=whole))


def test_ssim_decreases_with_noise_and_stays_in_range():
    rng = np.random.default_rng(0)
    truth = _ball()
    noise = rng.normal(size=truth.shape)
    values = [ssim3d(truth + s * noise, truth) for s in (0.05, 0.2, 0.8)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0


def test_metrics_reject_mismatched_or_too_small_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4, 4)), np.ones((4, 4, 5)))
    tiny = np.zeros((8, 8, 8))
    tiny[3:5, 3:5, 3:5] = 1
    with pytest.raises(ValueError, match="SSIM window"):
        ssim3d(tiny, tiny)
