"""Dips of a noisy profile under the level inside a shell are bridged; real gaps are kept.

Counting noise inside a shell (Poisson: its sd grows as the square root of the signal, and
it vanishes outside the particle) makes single rays dip under the half-maximum level inside
a thick shell, which read the shell too thin when only the runs above the level counted
(Zn 13.6% thin on SIRT, ``bench/intervals_coverage.py``). A dip at radii where the
element's mean profile is above the level is noise; a gap between two layers of one
element lies where the mean profile is under it, and stays a gap. The phantoms and their
voxelisation are those of ``tests/test_thickness.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from test_thickness import CENTER, VOXEL_NM, spherical, voxelize

from edxtomo.thickness import shell_statistics, shell_thickness

BLUR_VOX = 1.5
STEP_DEG = 3.0


def blurred_layers(*bounds_vox: tuple[float, float], blur_vox: float = BLUR_VOX) -> np.ndarray:
    """Level-1 layers between the given (inner, outer) radii, blurred by a Gaussian."""
    def inside(z, y, x):
        r = spherical(z, y, x)[0]
        return np.any([(r >= inner) & (r < outer) for inner, outer in bounds_vox], axis=0)

    return ndi.gaussian_filter(voxelize(inside), blur_vox)


def counting_noise(volume: np.ndarray, relative_sd: float, seed: int) -> np.ndarray:
    """``volume`` plus seeded noise of sd ``relative_sd * sqrt(volume)`` (Poisson-like)."""
    noise = np.random.default_rng(seed).normal(0.0, 1.0, volume.shape)
    return (volume + relative_sd * np.sqrt(volume) * noise).astype(np.float32)


@pytest.mark.parametrize("reference", ["mean_profile", "aligned_profile"])
def test_noise_dips_inside_a_thick_shell_are_bridged(reference):
    """An 8-voxel shell under counting noise of 0.6 of its level keeps its thickness.

    Noise-free, the half-maximum edges of a sphere blurred by sigma move inward by about
    sigma^2 / R on each surface: +sigma^2 (1/6 - 1/14) = +0.21 voxel on the thickness.
    With noise each ray's edges jitter by about sd / slope = 0.6 / 0.27 = 2 voxels at the
    edge, which averages out over the rays; within 0.25 voxel of the truth is the map
    accuracy of ``tests/test_thickness.py``. Counting only the runs above the level reads
    this shell 0.5 voxel thin (7.51 voxels measured): the assertion fails without the
    bridging. With ``aligned_profile`` a dip is bridged where the aligned mean profile,
    shifted back onto the ray, is above the level: the same radii on a spherical shell.
    """
    r_in, t = 6.0, 8.0
    noisy = counting_noise(blurred_layers((r_in, r_in + t)), 0.6, seed=0)
    stats = shell_statistics(shell_thickness(noisy, CENTER, VOXEL_NM, step_deg=STEP_DEG,
                                             reference=reference))
    curvature_vox = BLUR_VOX**2 * (1 / r_in - 1 / (r_in + t))
    assert stats["thickness_mean_nm"] == pytest.approx((t + curvature_vox) * VOXEL_NM,
                                                        abs=0.25 * VOXEL_NM)


@pytest.mark.parametrize("reference", ["mean_profile", "aligned_profile"])
@pytest.mark.parametrize("relative_sd", [0.0, 0.3])
def test_gap_between_two_layers_of_one_element_is_kept(relative_sd, reference):
    """A core of radius 5 and a shell from 9 to 13 voxels: 9 voxels of element, not 13.

    Noise-free, the curvature moves the edges (sigma^2 / R, sigma = 1 voxel): the core
    reads 5 - 1/5, the shell 4 + 1/9 - 1/13 voxels, 8.83 in all, within 0.25 voxel. With
    noise, dips in the small core (whose few central voxels every ray shares) may read it
    thinner, but a bridged gap would add its 4 voxels: the thickness stays under 9.5.
    """
    volume = counting_noise(blurred_layers((0.0, 5.0), (9.0, 13.0), blur_vox=1.0),
                            relative_sd, seed=1)
    maps = shell_thickness(volume, CENTER, VOXEL_NM, step_deg=STEP_DEG, reference=reference)
    thickness_vox = shell_statistics(maps)["thickness_mean_nm"] / VOXEL_NM
    if relative_sd == 0.0:
        assert thickness_vox == pytest.approx(5 - 1 / 5 + 4 + 1 / 9 - 1 / 13, abs=0.25)
    assert thickness_vox < 9.5
    assert np.all(maps.inner_radius_nm == 0)
