"""The blurred-shell fit (``reference="profile_fit"``) against analytic core-shell particles.

A core-shell particle with a thick shell (4 voxels) of one element under a thin shell (2
voxels) of another, voxelised with partial volumes, blurred by a Gaussian of 1 voxel and
given seeded Gaussian noise: the thin shell's blurred peak is 68% of its level, so a
half-maximum reading is far too thick, while the fit must find the true radii.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from test_thickness import voxelize

from edxtomo.thickness import particle_shell_maps, shell_statistics, shell_thickness
from edxtomo.thickness.profile_fit import blurred_ball

SHAPE = (40, 40, 40)
CENTER = np.array([19.3, 19.6, 19.8])  # off the voxel grid on purpose
CORE, THICK, THIN = 6.0, 4.0, 2.0  # core radius and shell thicknesses, voxels
BLUR_VOX = 1.0
NOISE = 0.05  # noise sd as a fraction of the shells' level
STEP_DEG = 6.0


def voxelized_shell(inner: float, outer: float, supersample: int = 3) -> np.ndarray:
    """Fraction of each voxel's cube between the radii ``inner`` and ``outer`` about CENTER."""
    def inside(z, y, x):
        r = np.sqrt((z - CENTER[0]) ** 2 + (y - CENTER[1]) ** 2 + (x - CENTER[2]) ** 2)
        return (r >= inner) & (r < outer)

    return voxelize(inside, SHAPE, supersample)


@pytest.fixture(scope="module")
def blurred_particle():
    rng = np.random.default_rng(13)
    volumes = {
        name: (ndi.gaussian_filter(voxelized_shell(inner, outer), BLUR_VOX)
               + rng.normal(0.0, NOISE, SHAPE)).astype(np.float32)
        for name, inner, outer in (("Se", CORE, CORE + THICK),
                                   ("S", CORE + THICK, CORE + THICK + THIN))
    }
    regions = np.ones(SHAPE, dtype=np.int32)
    return volumes, regions


def test_blurred_ball_matches_a_blurred_voxel_ball():
    """The model's blurred ball against a voxelised ball blurred numerically."""
    ball = ndi.gaussian_filter(voxelized_shell(0.0, 8.0, supersample=4), 1.5)
    radii = np.arange(0.0, 14.0, 0.5)
    direction = np.array([0.36, 0.48, 0.8])
    profile = ndi.map_coordinates(ball, CENTER[:, None] + direction[:, None] * radii, order=1)
    # The voxelisation adds a 1-voxel box (variance 1/12) to the blur. Trilinear sampling
    # errs by at most h^2/8 per axis times the second derivative, which for a step blurred
    # by sigma peaks at 1 / (sigma^2 sqrt(2 pi e)); 3 axes, h = 1 voxel.
    sigma = np.sqrt(1.5**2 + 1 / 12)
    model = blurred_ball(radii, np.array([8.0]), sigma)[0]
    interpolation = 3 / 8 / (sigma**2 * np.sqrt(2 * np.pi * np.e))
    np.testing.assert_allclose(profile, model, atol=interpolation)


def test_fit_reads_thin_and_thick_blurred_shells(blurred_particle):
    volumes, regions = blurred_particle
    maps, _ = particle_shell_maps(volumes, regions, regions, 1, 1.0, step_deg=STEP_DEG,
                                  reference="profile_fit")
    for name, truth in (("Se", THICK), ("S", THIN)):
        thickness = maps[name].thickness_nm
        stats = shell_statistics(maps[name])
        assert stats["no_shell_fraction"] == 0.0
        # Tolerance from the fit's own statistics: the rays' thicknesses scatter with the
        # noise, but rays closer than the blur see the same voxels, so the independent
        # readings are about the shell's mid-surface area over a blur footprint,
        # 4 pi r^2 / (pi (2 sigma)^2). Three standard errors of the mean over them, plus
        # 0.05 voxel, the map error of the half-maximum reading on noise-free analytic
        # shells (bench/README.md), for the voxelisation and sampling.
        mid_radius = CORE + THICK + (THIN / 2 if name == "S" else -THICK / 2)
        independent = 4 * np.pi * mid_radius**2 / (np.pi * (2 * BLUR_VOX) ** 2)
        tolerance = 3 * thickness.std() / np.sqrt(independent) + 0.05
        assert abs(stats["thickness_mean_nm"] - truth) < tolerance, (name, stats, tolerance)
        # one blur for the particle, fitted on the thick shell: near the Gaussian's 1 voxel
        # plus the voxelisation's 1/12 voxel^2 of variance
        assert maps[name].blur_nm == pytest.approx(np.sqrt(1 + 1 / 12), abs=0.1)
    # the half-maximum reading of the thin shell is far off: the blurred peak is 0.68 of
    # the level, so the mean profile's half maximum lies outside the true edges
    half_maximum = shell_thickness(volumes["S"], CENTER, 1.0, step_deg=STEP_DEG)
    assert shell_statistics(half_maximum)["thickness_mean_nm"] > 1.3 * THIN


def test_fit_without_shell_and_bad_input():
    empty = shell_thickness(np.zeros(SHAPE, np.float32), CENTER, 0.5, step_deg=30.0,
                            reference="profile_fit")
    assert np.all(empty.thickness_nm == 0)
    assert np.all(np.isnan(empty.inner_radius_nm))
    assert shell_statistics(empty)["no_shell_fraction"] == pytest.approx(1.0)
    # a shell missing on one side (z > 0 half-space cut away): those rays have no shell,
    # the others the fitted thickness
    cap = ndi.gaussian_filter(voxelized_shell(CORE, CORE + THICK), BLUR_VOX)
    cap[int(np.ceil(CENTER[0])) + 2:] = 0.0
    half = shell_thickness(cap.astype(np.float32), CENTER, 1.0, step_deg=STEP_DEG,
                           reference="profile_fit", blur_vox=np.sqrt(1 + 1 / 12))
    theta = half.theta_deg[:, None] + 0 * half.phi_deg[None, :]
    assert np.all(half.thickness_nm[theta > 30] == 0)
    assert np.all(np.abs(half.thickness_nm[theta < -10] - THICK) < 0.2)
    with pytest.raises(ValueError, match="relative threshold"):
        shell_thickness(cap, CENTER, 1.0, step_deg=30.0, reference="profile_fit",
                        absolute=True)
    with pytest.raises(ValueError, match="reference must be one of"):
        shell_thickness(cap, CENTER, 1.0, step_deg=30.0, reference="median")
