"""Segmentation of specimens into particles, and particle geometry, on analytic phantoms;
detection against the noise on noise fields and on reconstructions of the simulator's
specimen."""

from __future__ import annotations

import functools
import logging
import re

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from scipy import ndimage as ndi
from test_thickness import spherical, voxelize

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import write_volume
from edxtomo.particles import (
    PARTICLE_COLUMNS,
    SIGNIFICANCE_SIGMA,
    background_noise,
    load_specimen,
    object_significance,
    particle_regions,
    segment_particles,
    sphericity,
    threshold_value,
)

VOXEL_NM = 0.5
TILTS_DEG = np.linspace(-60, 60, 13)
# Reconstructions of the simulator's demo specimen, scaled down to 48^3 voxels of 0.9 nm (the
# demo's particles still fit). Expected counts per element and tilt are those of the real
# data (Han et al. 2021, specimen sQD1: 500 to 2,500 per element and tilt), over a background
# of 0.03 counts per pixel and tilt.
SIM_SHAPE, SIM_VOXEL_NM = (48, 48, 48), 0.9
COUNTS_PER_TILT = {"In": 800.0, "P": 500.0, "Zn": 1500.0, "Se": 900.0, "S": 600.0}
BACKGROUND_PER_PIXEL = 0.03
NOISE_COUNTS_PER_TILT = 300.0


def balls(centers, radii, shape):
    """Partial-volume union of spheres (voxel units)."""
    def inside(z, y, x):
        hit = np.zeros(np.broadcast(z, y, x).shape, dtype=bool)
        for c, r in zip(centers, radii, strict=True):
            hit |= spherical(z, y, x, np.asarray(c, float))[0] < r
        return hit
    return voxelize(inside, shape)


def equivalent_diameter_tolerance_vox(radius_vox: float) -> float:
    """How far the segmented diameter may be from the true one, in voxels.

    The Gaussian pre-smoothing (sigma 1 voxel) moves the half-level of a ball of radius R
    inward by about sigma^2 / R, and the binary mask quantises the surface to half a voxel
    on each side.
    """
    return 2 * (1.0 / radius_vox + 0.5)


def test_touching_spheres_are_split():
    centers = [(16, 16.3, 12), (16, 15.7, 27)]  # 15 voxels apart: radii 8 overlap by 1
    seg = segment_particles({"Se": balls(centers, [8, 8], (32, 32, 40))}, VOXEL_NM)
    assert len(seg.table) == 2 and seg.labels.dtype == np.int32
    found = seg.table.sort_values("centroid_x_nm")
    for (_, row), center in zip(found.iterrows(), centers, strict=True):
        # each piece is a sphere cut by a plane near the contact: centroid within 1 voxel
        centroid = row[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]].to_numpy(float)
        assert np.linalg.norm(centroid / VOXEL_NM - center) < 1.0
    unsplit = segment_particles({"Se": balls(centers, [8, 8], (32, 32, 40))}, VOXEL_NM,
                                split=False)
    assert len(unsplit.table) == 1


def test_touching_spheres_of_different_sizes_are_split():
    centers, radii = [(16, 16, 11), (16, 16, 24)], [9, 4.5]  # contact at x = 20
    seg = segment_particles({"Se": balls(centers, radii, (32, 32, 36))}, VOXEL_NM)
    assert len(seg.table) == 2


def test_field_of_separated_particles():
    rng = np.random.default_rng(7)
    radii = [3.5, 4.0, 5.0, 6.0, 7.0, 5.5]
    centers = [(12, 12, 12), (12, 12, 40), (12, 40, 12), (12, 40, 40), (30, 26, 26),
               (32, 10, 26)]
    jitter = rng.uniform(-0.5, 0.5, size=(len(centers), 3))
    centers = [np.add(c, j) for c, j in zip(centers, jitter, strict=True)]
    volume = balls(centers, radii, (44, 52, 52))
    seg = segment_particles({"In": volume, "Se": 0.3 * volume}, VOXEL_NM)
    table = seg.table
    assert list(table.columns) == list(PARTICLE_COLUMNS)
    assert len(table) == len(radii)
    assert np.isposinf(table["significance_sigma"]).all()  # a noise-free background
    assert sorted(table["particle"]) == list(range(1, len(radii) + 1))
    assert not table["touches_border"].any()
    for center, radius in zip(centers, radii, strict=True):
        label = seg.labels[tuple(np.round(center).astype(int))]
        row = table.set_index("particle").loc[label]
        assert row["equivalent_diameter_nm"] / VOXEL_NM == pytest.approx(
            2 * radius, abs=equivalent_diameter_tolerance_vox(radius))
        centroid = row[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]].to_numpy(float)
        assert np.linalg.norm(centroid / VOXEL_NM - center) < 0.25
        assert row["volume_nm3"] == pytest.approx(
            np.pi / 6 * row["equivalent_diameter_nm"] ** 3, rel=1e-9)


def test_rod_is_not_split_and_small_specks_are_dropped():
    def rod(z, y, x):
        along = np.clip(x - 24, -12, 12)  # spherocylinder: radius 4, straight part 24 long
        return np.sqrt((z - 12) ** 2 + (y - 12.4) ** 2 + (x - 24 - along) ** 2) < 4
    volume = voxelize(rod, (24, 24, 48))
    volume += balls([(4, 4, 4)], [1.6], volume.shape)  # about 17 voxels
    seg = segment_particles({"Au": volume}, VOXEL_NM, min_volume_nm3=30 * VOXEL_NM**3)
    assert len(seg.table) == 1
    # the rod is clearly not a sphere: its sphericity (analytic 0.80 for this aspect ratio)
    r, h = 4.0, 24.0
    area, vol = 4 * np.pi * r**2 + 2 * np.pi * r * h, 4 / 3 * np.pi * r**3 + np.pi * r**2 * h
    expected = np.pi ** (1 / 3) * (6 * vol) ** (2 / 3) / area
    assert seg.table["sphericity"].iloc[0] == pytest.approx(expected, abs=0.03)
    kept = segment_particles({"Au": volume}, VOXEL_NM, min_volume_nm3=0.0)
    assert len(kept.table) == 2
    # the rod's distance transform is a ridge with many maxima: only merging the pieces
    # that meet at the rod's full width keeps it whole
    no_merge = segment_particles({"Au": volume}, VOXEL_NM, merge_neck_ratio=1.01)
    assert len(no_merge.table) > 1


def test_sphericity_of_sphere_and_spheroid():
    shape = (40, 40, 40)
    sphere = balls([(19.3, 20.1, 19.7)], [9], shape) >= 0.5
    # The voxel staircase of a raw binary mesh costs about 8% in area; the smoothed surface
    # must come within 2% of the analytic value.
    assert sphericity(sphere) == pytest.approx(1.0, abs=0.02)
    a, c = 6.0, 12.0  # prolate spheroid, polar semi-axis c along x
    spheroid = voxelize(lambda z, y, x: ((z - 19.5) / a) ** 2 + ((y - 19.8) / a) ** 2
                        + ((x - 19.6) / c) ** 2 <= 1, shape) >= 0.5
    e = np.sqrt(1 - a**2 / c**2)
    area = 2 * np.pi * a**2 * (1 + c / (a * e) * np.arcsin(e))
    expected = np.pi ** (1 / 3) * (6 * 4 / 3 * np.pi * a * a * c) ** (2 / 3) / area
    assert sphericity(spheroid) == pytest.approx(expected, abs=0.02)


def test_border_flag_and_regions():
    volume = balls([(12, 12, 12), (12, 12, 30)], [5, 5], (24, 24, 33))  # second cut at x = 32
    seg = segment_particles({"S": volume}, VOXEL_NM)
    table = seg.table.sort_values("centroid_x_nm")
    assert list(table["touches_border"]) == [False, True]
    regions = particle_regions(seg.labels, margin_vox=2)
    for label in table["particle"]:
        own = seg.labels == label
        assert np.all(regions[own] == label)
        assert (regions == label).sum() > own.sum()
    assert not np.any((regions > 0) & (seg.labels > 0) & (regions != seg.labels))


def test_crowded_field_with_touching_pairs_and_border_cuts():
    # 14 particles in one noisy field: 3 touching pairs, 4 cut by a face (one by two), 4
    # alone inside. Every particle must be found once, with the border flag exactly on the
    # cut ones; the pairs meet at a narrow neck (the watershed's case).
    radius = 5.0
    pairs = [((12, 14, 14), (12, 14, 24)), ((14, 40, 12), (14, 48.5, 17)),
             ((16, 30, 44), (16, 39.5, 47))]
    inside = [(12, 14, 40), (20, 28, 28), (10, 52, 34), (22, 12, 54)]
    cut = [(14, 2.5, 34), (16, 30, 61.5), (12, 61, 52), (18, 61.5, 2)]  # shape (32, 64, 64)
    centers = [c for pair in pairs for c in pair] + inside + cut
    rng = np.random.default_rng(3)
    clean = balls(centers, [radius] * len(centers), (32, 64, 64))
    # Blur of 1 voxel (a reconstruction's resolution) and 5% noise: each particle stands
    # far above the 5-sigma test, so the count is decided by the splitting alone.
    volume = ndi.gaussian_filter(clean, 1.0) + rng.normal(0, 0.05, clean.shape)
    seg = segment_particles({"In": volume.astype(np.float32)}, VOXEL_NM)
    labels = [int(seg.labels[tuple(np.round(c).astype(int))]) for c in centers]
    assert len(seg.table) == len(centers)
    assert 0 not in labels and len(set(labels)) == len(centers)
    border = seg.table.set_index("particle")["touches_border"]
    assert [bool(border[label]) for label in labels] == [False] * 10 + [True] * 4


def test_empty_volume_gives_empty_table(caplog):
    with caplog.at_level(logging.WARNING, logger="edxtomo.particles"):
        seg = segment_particles({"In": np.zeros((16, 16, 16))}, VOXEL_NM)
    assert "no particles" in caplog.text
    assert seg.table.empty and list(seg.table.columns) == list(PARTICLE_COLUMNS)
    assert seg.labels.shape == (16, 16, 16) and not seg.labels.any()
    # noise far below an absolute threshold: a threshold that nothing passes
    noise = np.random.default_rng(1).uniform(0, 0.1, (16, 16, 16))
    with caplog.at_level(logging.WARNING, logger="edxtomo.particles"):
        seg = segment_particles({"In": noise}, VOXEL_NM, threshold=0.5, normalize=False)
    assert seg.table.empty and "no particle above the threshold" in caplog.text


def test_threshold_options_and_haadf():
    volume = balls([(12, 12, 12)], [6], (24, 24, 24))
    for method in ("otsu", "li", "triangle"):
        level = threshold_value(volume, method)
        assert 0 < level < 1, method
    assert threshold_value(volume, 0.3) == 0.3
    with pytest.raises(EdxtomoInputError, match="unknown threshold method 'mean'"):
        threshold_value(volume, "mean")
    # with a HAADF volume the element volumes are not used
    seg = segment_particles({"In": np.zeros_like(volume)}, VOXEL_NM, haadf=volume)
    assert len(seg.table) == 1
    # a numeric threshold is a fraction of the normalised signal's maximum
    small = segment_particles({"In": volume}, VOXEL_NM, threshold=0.9, split=False)
    large = segment_particles({"In": volume}, VOXEL_NM, threshold=0.1, split=False)
    assert small.table["volume_nm3"].iloc[0] < large.table["volume_nm3"].iloc[0]


def test_load_specimen_reads_and_checks_files(tmp_path):
    volume = balls([(8, 8, 8)], [4], (16, 16, 16))
    write_volume(tmp_path / "In.tif", volume, VOXEL_NM, "In")
    write_volume(tmp_path / "Se.tif", 0.5 * volume, VOXEL_NM, "Se")
    volumes, voxel_size_nm = load_specimen({"In": tmp_path / "In.tif", "Se": tmp_path / "Se.tif"})
    assert voxel_size_nm == pytest.approx(VOXEL_NM)
    np.testing.assert_allclose(volumes["Se"], 0.5 * volume, rtol=1e-6)

    write_volume(tmp_path / "S.tif", volume[:, :, :12], VOXEL_NM, "S")
    with pytest.raises(EdxtomoInputError, match=r"S\.tif: shape \(16, 16, 12\)"):
        load_specimen({"In": tmp_path / "In.tif", "S": tmp_path / "S.tif"})

    corrupt = tmp_path / "Zn.tif"
    corrupt.write_bytes((tmp_path / "In.tif").read_bytes()[:300])  # a truncated TIFF
    with pytest.raises(EdxtomoInputError, match=r"Zn\.tif: not a readable TIFF volume"):
        load_specimen({"In": tmp_path / "In.tif", "Zn": corrupt})
    garbage = tmp_path / "P.tif"
    garbage.write_bytes(b"this is not a tiff file at all")
    with pytest.raises(EdxtomoInputError, match=r"P\.tif"):
        load_specimen({"P": garbage})


# --------------------------------------------------------------------------------------
# Detection against the noise
# --------------------------------------------------------------------------------------

@pytest.fixture
def one_torch_thread():
    """Small volumes: one thread (a second, busy core of a shared machine slows every sparse
    product of the projector down)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def poisson_reconstruction(expected: np.ndarray, method: str, seed: int) -> dict[str, np.ndarray]:
    """Poisson counts of ``expected`` (channels, tilts, ny, nx) plus the background,
    reconstructed like the workflow: SIRT of the net counts, or TV-KL of the gross counts
    with the background in its model. One volume per channel (named by index)."""
    from edxtomo.tomo import sirt
    from edxtomo.tomo.tv import tv_kl

    background = np.full_like(expected, BACKGROUND_PER_PIXEL)
    counts = np.random.default_rng(seed).poisson(expected + background).astype(np.float32)
    if method == "sirt":
        volumes = sirt(counts - background, TILTS_DEG, iterations=50, device="cpu",
                       progress=False)
    else:
        volumes = tv_kl(counts, TILTS_DEG, iterations=100, background=background,
                        device="cpu", progress=False)
    return {str(i): volume for i, volume in enumerate(volumes)}


@pytest.fixture(scope="module")
def simulated_specimen():
    """The demo preset's particles, placed in SIM_SHAPE, and their expected counts
    ``(element, tilt, ny, nx)`` at COUNTS_PER_TILT."""
    from edxtomo.simulate import build_specimen, load_preset
    from edxtomo.simulate import voxelize as simulate_voxelize
    from edxtomo.tomo import project

    preset = load_preset(REPO_ROOT / "resources" / "specimens" / "qd_demo.yaml")
    particles = build_specimen(preset["specimen"], SIM_SHAPE, SIM_VOXEL_NM, 60.0,
                               np.random.default_rng(0))
    densities = simulate_voxelize(particles, SIM_SHAPE, SIM_VOXEL_NM, supersample=2)
    expected = []
    for element, total in COUNTS_PER_TILT.items():
        projection = project(densities[element], TILTS_DEG, device="cpu")
        expected.append(projection * total / projection.sum(axis=(1, 2)).mean())
    return particles, np.stack(expected).astype(np.float32)


def white_noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SIM_SHAPE).astype(np.float32)


@functools.cache
def noise_field(kind: str) -> dict[str, np.ndarray]:
    """Signal-free volumes: zero-mean Gaussian noise, the same smoothed (sigma 1 voxel), or
    SIRT and TV reconstructions of pure Poisson counts (NOISE_COUNTS_PER_TILT per element
    and tilt, five elements)."""
    if kind == "gaussian":
        return {"Se": white_noise()}
    if kind == "correlated":
        return {"Se": ndi.gaussian_filter(white_noise(), 1.0)}
    expected = np.full((5, len(TILTS_DEG), *SIM_SHAPE[1:]),
                       NOISE_COUNTS_PER_TILT / np.prod(SIM_SHAPE[1:]), np.float32)
    return poisson_reconstruction(expected, kind, seed=1)


@pytest.mark.parametrize("kind", ["gaussian", "correlated", "sirt", "tv"])
def test_pure_noise_gives_no_particles(kind, caplog, one_torch_thread):
    # Before the detection test, these fields gave 225, 234, 241 and 362 particles.
    with caplog.at_level(logging.WARNING, logger="edxtomo.particles"):
        seg = segment_particles(noise_field(kind), SIM_VOXEL_NM)
    assert seg.table.empty and not seg.labels.any()
    assert list(seg.table.columns) == list(PARTICLE_COLUMNS)
    tested = re.search(r"none of the (\d+) objects stands 5 sigma above the noise", caplog.text)
    assert tested and int(tested.group(1)) > 100
    assert "the signal is consistent with noise" in caplog.text


def test_bright_noise_specks_are_not_particles(caplog, one_torch_thread):
    # A high threshold on TV of pure noise picks specks of a few voxels out, 10 to 12 noise
    # sigmas bright (heavy tails): each is a small fraction of one correlation volume.
    with caplog.at_level(logging.WARNING, logger="edxtomo.particles"):
        seg = segment_particles(noise_field("tv"), SIM_VOXEL_NM, threshold=0.2,
                                min_volume_nm3=0.0)
    assert seg.table.empty and "the signal is consistent with noise" in caplog.text


@pytest.mark.parametrize("method", ["sirt", "tv"])
def test_reconstructed_specimen_keeps_every_particle(method, simulated_specimen,
                                                     one_torch_thread):
    particles, expected = simulated_specimen
    volumes = poisson_reconstruction(expected, method, seed=2)
    seg = segment_particles(volumes, SIM_VOXEL_NM)
    assert len(seg.table) == len(particles)  # the touching pair split, no noise object
    labels = {int(seg.labels[tuple(np.round(p["center_vox"]).astype(int))]) for p in particles}
    assert labels == set(seg.table["particle"])
    # The true particles stand far above SIGNIFICANCE_SIGMA (measured: about 30 sigma for
    # SIRT and 180 for TV): the test never decides them.
    assert (seg.table["significance_sigma"] > 4 * SIGNIFICANCE_SIGMA).all()


def spheres_in_noise(contrasts, noise_sd: float, seed: int = 3):
    """Five balls of radius 5 to 6.5 voxels, of the given contrasts, in white Gaussian noise."""
    shape = (40, 48, 48)
    centers = [(12, 12, 12), (12, 12, 36), (28, 36, 12), (28, 36, 36), (20, 24, 24)]
    radii = [5, 6, 5.5, 6.5, 6]
    volume = sum(a * balls([c], [r], shape) for c, r, a in zip(centers, radii, contrasts,
                                                                  strict=True))
    rng = np.random.default_rng(seed)
    return volume + rng.normal(0, noise_sd, shape).astype(np.float32), centers


def test_particles_in_noise_at_realistic_snr_are_all_kept():
    # Voxel SNR 3 before smoothing; the smoothed particles stand about 16 sigma high.
    volume, centers = spheres_in_noise([1.0] * 5, noise_sd=0.3)
    seg = segment_particles({"Se": volume}, VOXEL_NM)
    assert len(seg.table) == 5
    assert {int(seg.labels[c]) for c in centers} == set(range(1, 6))
    assert (seg.table["significance_sigma"] > 2 * SIGNIFICANCE_SIGMA).all()


def test_faint_particle_is_dropped_and_strong_ones_stay(caplog):
    volume, centers = spheres_in_noise([1.0, 1.0, 1.0, 1.0, 0.12], noise_sd=0.2)
    # A low threshold segments the faint ball too: the test, not the threshold, drops it.
    with caplog.at_level(logging.INFO, logger="edxtomo.particles"):
        seg = segment_particles({"Se": volume}, VOXEL_NM, threshold=0.05)
    assert "dropping 1 of 5 objects as noise" in caplog.text
    assert len(seg.table) == 4 and seg.labels[centers[-1]] == 0
    assert {int(seg.labels[c]) for c in centers[:-1]} == {1, 2, 3, 4}
    assert (seg.table["significance_sigma"] >= SIGNIFICANCE_SIGMA).all()


def test_many_noise_objects_beside_particles_are_flagged(caplog):
    volume, centers = spheres_in_noise([1.0] * 5, noise_sd=0.2)
    with caplog.at_level(logging.WARNING, logger="edxtomo.particles"):
        seg = segment_particles({"Se": volume}, VOXEL_NM, threshold=0.05, min_volume_nm3=0.0)
    assert len(seg.table) == 5
    assert "cuts into the noise" in caplog.text and "analyze.threshold" in caplog.text


def test_background_noise_and_object_significance():
    smooth = ndi.gaussian_filter(white_noise(), 1.0)
    everywhere = np.ones(smooth.shape, dtype=bool)
    noise = background_noise(smooth, everywhere)
    assert noise.level == pytest.approx(0.0, abs=0.01 * smooth.std())
    assert noise.sigma == pytest.approx(smooth.std(), rel=0.03)
    # a Gaussian autocorrelation of sigma sqrt(2) voxels: (2 sqrt(pi))^3 = 44.5 voxels
    assert noise.correlation_volume_vox == pytest.approx((2 * np.sqrt(np.pi)) ** 3, rel=0.1)
    assert background_noise(white_noise(), everywhere).correlation_volume_vox < 1.5
    flat = background_noise(np.zeros((8, 8, 8)), np.ones((8, 8, 8), dtype=bool))
    assert flat.sigma == 0 and flat.correlation_volume_vox == 1

    # a box of voxels shifted by 3 sigma, and an unshifted one of noise
    labels = np.zeros(smooth.shape, dtype=np.int32)
    labels[10:20, 10:20, 10:20], labels[30:40, 30:40, 30:40] = 1, 3
    signal = smooth + 3 * noise.sigma * (labels == 1)
    significance, counts, measured = object_significance(signal, labels)
    assert counts[1] == counts[3] == 1000 and counts[2] == 0
    assert np.isnan(significance[0]) and np.isnan(significance[2])
    standard_error = np.sqrt(measured.correlation_volume_vox / 1000)  # in sigmas
    assert significance[1] == pytest.approx(3.0, abs=4 * standard_error)
    assert significance[3] == pytest.approx(0.0, abs=4 * standard_error)
