"""Segmentation of specimens into particles, and particle geometry, on analytic phantoms."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_thickness import spherical, voxelize

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import write_volume
from edxtomo.particles import (
    PARTICLE_COLUMNS,
    load_specimen,
    particle_regions,
    segment_particles,
    sphericity,
    threshold_value,
)

VOXEL_NM = 0.5


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
