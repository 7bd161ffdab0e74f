"""The aligned-profile level (``reference="aligned_profile"``) on anisotropic analytic shells.

A 2-voxel shell whose inner radius changes with direction (a displaced centre and an
elongation, the lowest orders of the simulator's shells) is voxelised with partial volumes
and blurred by a Gaussian of 1 voxel. Its ground truth for the level is the same shell made
spherical: along a ray, the blurred peak of a shell depends on its thickness and the blur,
not on its radius, so the anisotropy must not change the level. The mean profile's does:
its peaks at different radii smear into a lower one.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from test_thickness import voxelize

from edxtomo.thickness import shell_statistics, shell_thickness
from edxtomo.thickness.alignment import shift_profiles

SHAPE = (40, 40, 40)
CENTER = np.array([19.3, 19.6, 19.8])  # off the voxel grid on purpose
INNER_VOX, THICKNESS_VOX, BLUR_VOX = 9.0, 2.0, 1.0
AMPLITUDE_VOX = 3.0
STEP_DEG = 3.0


def inner_radius(n_z, n_y, n_x, amplitude):
    """Inner radius (voxels): a dipole along x and a quadrupole, ``|change| <= amplitude``."""
    return INNER_VOX + amplitude * (0.5 * n_x + 0.5 * (n_z**2 - n_y**2))


def anisotropic_shell(amplitude: float) -> np.ndarray:
    """Fraction of each voxel's cube inside the shell (3^3 sub-samples), blurred by BLUR_VOX."""
    def inside(z, y, x):
        d = np.stack([z, y, x]) - CENTER[:, None, None, None]
        r = np.maximum(np.sqrt((d**2).sum(axis=0)), 1e-12)
        r_in = inner_radius(*(d / r), amplitude)
        return (r >= r_in) & (r < r_in + THICKNESS_VOX)

    return ndi.gaussian_filter(voxelize(inside, SHAPE, supersample=3), BLUR_VOX)


@pytest.fixture(scope="module")
def shells():
    return {amplitude: anisotropic_shell(amplitude) for amplitude in (0.0, AMPLITUDE_VOX)}


def read(volume, reference):
    maps = shell_thickness(volume, CENTER, 1.0, STEP_DEG, reference=reference)
    return maps.reference_level, shell_statistics(maps)["thickness_mean_nm"]


def test_aligned_level_removes_the_anisotropy_smear(shells):
    """The aligned level and reading of the anisotropic shell are the spherical shell's.

    Tolerances: the radius changes by up to 3 voxels over 90 degrees, so the shell is tilted
    against the rays by up to atan(3 / 9) = 18 degrees, and its thickness normal to itself is
    2 cos(18 deg) = 1.90 voxels there: a blurred peak up to 4% lower (erf(1.90 / (2 sqrt(2)))
    against erf(2 / (2 sqrt(2)))), less on average; hence 5% on the level and, since a
    level 4% low moves each half-maximum edge of a 1-voxel blur by about 0.05 voxel, 0.2
    voxel on the thickness (the spherical shell itself reads 3.0 voxels: the blur's limit,
    which no level removes). The mean profile's level is over 10% low (smeared peak).
    """
    sphere_level, sphere_thickness = read(shells[0.0], "mean_profile")
    level, thickness = read(shells[AMPLITUDE_VOX], "aligned_profile")
    assert level == pytest.approx(sphere_level, rel=0.05)
    assert thickness == pytest.approx(sphere_thickness, abs=0.2)
    smeared_level, smeared_thickness = read(shells[AMPLITUDE_VOX], "mean_profile")
    assert smeared_level < 0.9 * sphere_level
    assert smeared_thickness > sphere_thickness + 0.3
    # On the spherical shell the two levels agree: nothing to align.
    assert read(shells[0.0], "aligned_profile")[0] == pytest.approx(sphere_level, rel=0.01)


def test_aligned_level_resists_noise(shells):
    """White noise of 0.3 of the level does not raise the aligned level.

    The alignment is a fit of 8 smooth shift coefficients to caps of profiles, so it cannot
    align the noise of single rays onto the template (free shifts per ray would, raising
    the level as the per-ray maxima do). The aligned mean averages some 5,000 rays over the
    ~1,000 independent voxels of a sphere of radius 9 voxels: noise of 0.3 leaves about 0.01
    (1.5% of the level) on each radius, and its peak is the largest of a few such values; hence
    the level within 5% of the noise-free spherical shell's. The per-ray maxima stand about
    a noise sd above the level (asserted: over 20% higher).
    """
    sphere_level, _ = read(shells[0.0], "mean_profile")
    noise = np.random.default_rng(7).normal(0.0, 0.3 * sphere_level, SHAPE)
    noisy = (shells[AMPLITUDE_VOX] + noise).astype(np.float32)
    assert read(noisy, "aligned_profile")[0] == pytest.approx(sphere_level, rel=0.05)
    assert read(noisy, "ray_maxima")[0] > 1.2 * sphere_level


def test_aligned_level_of_an_empty_volume_is_zero(caplog):
    maps = shell_thickness(np.zeros((12, 12, 12), np.float32), [6.0, 6.0, 6.0], 1.0, 30.0,
                           reference="aligned_profile")
    assert maps.reference_level == 0 and np.all(maps.thickness_nm == 0)
    assert "no shell" in caplog.text


def test_shift_profiles_interpolates_and_pads_with_zero():
    profiles = np.array([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]])
    shifted = shift_profiles(profiles, np.array([0.5, -1.0]))
    np.testing.assert_allclose(shifted, [[0.5, 1.5, 2.5, 1.5], [0.0, 4.0, 5.0, 6.0]])
