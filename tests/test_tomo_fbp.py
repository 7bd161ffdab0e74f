"""FBP: density scaling on a uniform disc, filters, angular weights, ASTRA agreement."""

from __future__ import annotations

import numpy as np
import pytest

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo import fbp, project
from edxtomo.tomo.fbp import FILTERS, angular_weights, ramp_filter

N = 48
RADIUS = 15.0


def disc_volume(ny=3, density=2.5, supersample=8):
    """Cylinder along y with a partial-volume disc cross-section of radius ``RADIUS``."""
    g = (np.arange(N * supersample) + 0.5) / supersample - 0.5 - (N - 1) / 2
    inside = (g[:, None] ** 2 + g[None, :] ** 2) < RADIUS**2
    disc = inside.reshape(N, supersample, N, supersample).mean(axis=(1, 3))
    return density * np.repeat(disc[:, None, :], ny, axis=1).astype(np.float32)


def core_mask(radius=RADIUS - 5):
    c = np.arange(N) - (N - 1) / 2
    return (c[:, None] ** 2 + c[None, :] ** 2) < radius**2


@pytest.mark.parametrize("filter_name", FILTERS)
def test_fbp_of_a_uniform_disc_gives_its_density(filter_name):
    angles = np.arange(0, 180, 1.0)
    volume = fbp(project(disc_volume(), angles), angles, filter=filter_name)
    core = volume[:, 1][core_mask()]
    # 180 views of a 48-px slice sample the disc spectrum almost completely; windows only
    # soften the edge, 5 px away from this core. Discretisation leaves < 0.5 % deviations,
    # while a scaling error (pi/2, a missing factor 2, per-angle sums) is tens of percent.
    assert core.mean() == pytest.approx(2.5, rel=0.005)
    assert core.std() < 0.01 * 2.5


def test_uniform_limited_tilt_keeps_equal_weights():
    weights = angular_weights(np.linspace(-70, 70, 29))
    np.testing.assert_allclose(weights, np.pi / 29)
    uneven = angular_weights(np.array([10.0, -30.0, 0.0, 5.0]))
    # Sorted -30, 0, 5, 10; midpoint edges -45, -15, 2.5, 7.5, 12.5 (end gaps mirrored).
    expected = np.array([5.0, 30.0, 17.5, 5.0])
    np.testing.assert_allclose(uneven, np.pi * expected / expected.sum())


def test_ramp_filter_is_abs_frequency():
    nu = np.fft.rfftfreq(256)
    response = ramp_filter(256, "ramp")
    # The spatial-kernel ramp differs from |nu| only near nu = 0, where it is the exact
    # band-limited value 1/(4 * 256) rather than 0 at DC (Kak & Slaney 3.61).
    np.testing.assert_allclose(response[8:], nu[8:], rtol=0.02)
    assert response[0] > 0
    assert ramp_filter(256, "hann")[-1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("filter_name", FILTERS)
def test_astra_fbp_agrees(filter_name):
    pytest.importorskip("astra")
    angles = np.arange(0, 180, 4.0)
    proj = project(disc_volume(), angles)
    ours = fbp(proj, angles, filter=filter_name)
    theirs = fbp(proj, angles, filter=filter_name, backend="astra")
    # Same filter definitions, strip backprojector and pi/n weights: float32 rounding only.
    # The closest two different windows (hamming, hann) differ by 1.2 % of the density here,
    # so 0.1 % also checks that ASTRA received the right filter.
    assert np.abs(ours - theirs).max() < 0.001 * 2.5


def test_channel_axis_and_bad_input():
    angles = np.linspace(-60, 60, 13)
    proj = project(np.stack([disc_volume(), 2 * disc_volume()]), angles)
    volume = fbp(proj, angles)
    assert volume.shape == (2, N, 3, N)
    np.testing.assert_allclose(volume[1], 2 * volume[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(EdxtomoInputError, match="unknown FBP filter"):
        fbp(proj, angles, filter="butterworth")
    with pytest.raises(EdxtomoInputError, match="12 tilt angles given for 13"):
        fbp(proj, angles[1:])
    bad = proj.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(EdxtomoInputError, match="non-finite"):
        fbp(bad, angles)
