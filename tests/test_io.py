"""Stacks, volumes and the TiltSeries data model (edxtomo.io, first part)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import tifffile

from edxtomo import io
from edxtomo.errors import EdxtomoInputError


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def series():
    rng = np.random.default_rng(3)
    counts = rng.poisson(2.0, (5, 3, 8, 9)).astype(np.uint16)
    return io.TiltSeries(
        {"HAADF": rng.random((5, 8, 9)).astype(np.float32), "Se": counts},
        np.array([-60.0, -30.0, 0.0, 30.0, 60.0]),
        0.35,
        {"source": "test", "channels": {"Se": {"line": "Se_Ka", "counts": True}}},
        {"Se": np.full((5, 8, 9), 0.25, np.float32)},
    )


def test_tilt_series_round_trip_keeps_counts_calibration_and_provenance(tmp_path, series):
    io.save_tilt_series(series, tmp_path)
    back = io.load_tilt_series(tmp_path)
    assert list(back.channels) == ["HAADF", "Se"]
    np.testing.assert_array_equal(back.channels["Se"], series.channels["Se"])
    assert back.channels["Se"].dtype == np.uint16  # counts stay counts
    np.testing.assert_array_equal(back.angles_deg, series.angles_deg)
    assert back.pixel_size_nm == pytest.approx(0.35)
    assert back.provenance["channels"]["Se"]["line"] == "Se_Ka"
    np.testing.assert_allclose(back.net_counts("Se"), series.summed("Se") - 0.25)


def test_stack_has_calibrated_axes_and_opens_in_etspy(tmp_path, series):
    import hyperspy.api as hs

    path = tmp_path / "Se.hspy"
    io.write_stack(path, series.channels["Se"][:, 0], [-50.0, -20.0, 0.0, 10.0, 45.0], 0.35, "Se")
    signal = hs.load(path)
    tilt = signal.axes_manager.navigation_axes[0]
    assert tilt.units == "degrees"
    assert (tilt.offset, tilt.scale) == (-50.0, 23.75)  # uniform axis: first angle, mean step
    np.testing.assert_allclose(signal.metadata.Tomography.tilts, [-50.0, -20.0, 0.0, 10.0, 45.0])
    assert [ax.units for ax in signal.axes_manager.signal_axes] == ["nm", "nm"]
    assert signal.axes_manager.signal_axes[0].scale == pytest.approx(0.35)
    etspy = pytest.importorskip("etspy.api")
    stack = etspy.load(path)
    np.testing.assert_allclose(stack.tilts.data.ravel(), [-50.0, -20.0, 0.0, 10.0, 45.0])


def test_writes_are_byte_reproducible(tmp_path, series):
    first = [io.write_volume(tmp_path / "a" / "v.tif", series.channels["HAADF"], 0.35, "HAADF")]
    io.save_tilt_series(series, tmp_path / "a")
    second = [io.write_volume(tmp_path / "b" / "v.tif", series.channels["HAADF"], 0.35, "HAADF")]
    io.save_tilt_series(series, tmp_path / "b")
    for name in ("v.tif", "v.hspy", "Se.hspy", "HAADF.hspy", "background/Se.hspy"):
        assert digest(tmp_path / "a" / name) == digest(tmp_path / "b" / name), name
    assert first[0][0].name == second[0][0].name == "v.tif"


def test_volume_tiff_carries_voxel_size_for_fiji(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6)
    tif, hspy = io.write_volume(tmp_path / "Zn.tif", volume, 0.7, "Zn", {"method": "sirt"})
    with tifffile.TiffFile(tif) as handle:
        assert handle.imagej_metadata["spacing"] == pytest.approx(0.7)
        assert handle.imagej_metadata["unit"] == "nm"
        x_resolution = handle.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(1 / 0.7, rel=1e-6)
    for path in (tif, hspy):
        back, voxel_size_nm = io.read_volume(path)
        np.testing.assert_array_equal(back, volume.astype(np.float32))
        assert voxel_size_nm == pytest.approx(0.7)


def test_labels_and_volume_folder(tmp_path):
    labels = np.zeros((4, 5, 6), int)
    labels[1:3, 1:3, 1:3] = 2
    io.write_labels(tmp_path / "labels.tif", labels, 0.5)
    back, voxel_size_nm = io.read_volume(tmp_path / "labels.tif")
    np.testing.assert_array_equal(back, labels)
    assert voxel_size_nm == 0.5
    with pytest.raises(ValueError, match="labels must lie in"):
        io.write_labels(tmp_path / "bad.tif", labels - 1, 0.5)

    folder = tmp_path / "recon"
    io.write_volume(folder / "Se.tif", np.ones((4, 5, 6)), 0.5, "Se")
    io.write_volume(folder / "HAADF.tif", np.ones((4, 5, 6)), 0.5, "HAADF")
    volumes, voxel_size_nm = io.read_volume_folder(folder)
    assert list(volumes) == ["HAADF", "Se"] and voxel_size_nm == 0.5
    io.write_volume(folder / "Zn.tif", np.ones((4, 5, 7)), 0.5, "Zn")
    with pytest.raises(EdxtomoInputError, match=r"Zn.tif: shape \(4, 5, 7\)"):
        io.read_volume_folder(folder)
    with pytest.raises(EdxtomoInputError, match="no volumes"):
        io.read_volume_folder(tmp_path / "empty")


def test_failed_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.hspy"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_bad_files_name_the_file_and_problem(tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 definitely not a tiff")
    with pytest.raises(EdxtomoInputError, match="broken.tif: not a readable TIFF"):
        io.read_volume(broken)
    rawtlt = tmp_path / "series.rawtlt"
    rawtlt.write_text("-60\n0\nsixty\n")
    with pytest.raises(EdxtomoInputError, match=r"series.rawtlt, line 3: 'sixty'"):
        io.read_rawtlt(rawtlt)
    rawtlt.write_text("\n\n")
    with pytest.raises(EdxtomoInputError, match="no tilt angles"):
        io.read_rawtlt(rawtlt)
    with pytest.raises(EdxtomoInputError, match="file not found"):
        io.read_stack(tmp_path / "missing.hspy")


def test_tilt_series_rejects_inconsistent_shapes():
    with pytest.raises(EdxtomoInputError, match="expected \\(n_tilt=3"):
        io.TiltSeries({"Se": np.zeros((4, 8, 8))}, [0.0, 1.0, 2.0], 1.0)
    with pytest.raises(EdxtomoInputError, match="pixel size must be positive"):
        io.TiltSeries({"Se": np.zeros((3, 8, 8))}, [0.0, 1.0, 2.0], 0.0)
    with pytest.raises(EdxtomoInputError, match="background 'Zn'"):
        io.TiltSeries({"Se": np.zeros((3, 8, 8))}, [0.0, 1.0, 2.0], 1.0,
                      background={"Zn": np.zeros((3, 8, 8))})
