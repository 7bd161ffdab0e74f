"""Raw acquisitions on real files (Velox, Bruker), every bad input, and the maps route.

Real files live in ``../shared/data`` (see its README); the tests that need them skip when
the folder is absent.
"""

from __future__ import annotations

import logging
import shutil

import h5py
import numpy as np
import pytest
import synthetic_eds as syn
from conftest import shared_path

from edxtomo.errors import EdxtomoInputError
from edxtomo.extract import extract_tilt_series
from edxtomo.io import (
    load_maps_series,
    read_header,
    read_rawtlt,
    read_stack,
    write_stack,
)
from edxtomo.options import ExtractOptions

VELOX = ("real", "velox_si_16x16_2frames.emd")
VELOX_EMPTY = ("real", "velox_si_empty_element_selection.emd")
VELOX_REDUCED = ("real", "velox_si_16x16_reduced.emd")
BRUKER = ("real", "bruker_sem_16x16.bcf")


def _naive_window_counts(path, series, **load_options):
    """Window sums by HyperSpy's own ``get_lines_intensity`` on the dense spectrum image."""
    import hyperspy.api as hs

    signal = hs.load(path, select_type="spectrum_image", **load_options)
    counts = {}
    for element in series.elements:
        prov = series.provenance["channels"][element]
        (image,) = signal.get_lines_intensity([prov["line"]],
                                              integration_windows=[prov["integration_window_keV"]])
        counts[element] = image.data
    return counts, signal


# ---------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def velox_series():
    path = shared_path(*VELOX)
    return path, *extract_tilt_series([path])


def test_velox_calibration_and_elements(velox_series):
    import hyperspy.api as hs

    path, series, summed = velox_series
    assert series.elements == ["C", "O", "Ca", "Cu"]  # the file's element selection
    np.testing.assert_allclose(series.angles_deg, [0.005])  # Stage.AlphaTilt, in degrees
    assert series.pixel_size_nm == pytest.approx(3.5992492559614684)
    assert series.image_shape == (16, 16)
    images = hs.load(path, select_type="images", load_SI_image_stack=True)
    (haadf,) = [s for s in images if s.metadata.General.title == "HAADF"]
    np.testing.assert_allclose(series.haadf[0], haadf.data.mean(axis=0))
    assert series.provenance["beam_energy_keV"] == 300.0
    assert summed.counts.sum() == 42097


def test_velox_counts_equal_hyperspy_window_sums(velox_series):
    path, series, summed = velox_series
    naive, signal = _naive_window_counts(path, series)
    for element, counts in naive.items():
        np.testing.assert_array_equal(series.channels[element][0], counts)
    np.testing.assert_array_equal(summed.counts, signal.data.sum(axis=(0, 1)))


def test_velox_frames_add_up(velox_series):
    path, series, _ = velox_series
    framed, _ = extract_tilt_series([path], ExtractOptions(keep_frames=True))
    naive, _ = _naive_window_counts(path, series, sum_frames=False)
    for element in series.elements:
        assert framed.channels[element].shape == (1, 2, 16, 16)
        np.testing.assert_array_equal(framed.channels[element][0], naive[element])
        np.testing.assert_array_equal(framed.summed(element), series.channels[element])


def test_velox_lazy_read_equals_the_read_at_once(velox_series, monkeypatch):
    # a file above EAGER_READ_MAX_BYTES is read lazily (dask over sparse): the same counts
    import edxtomo.extract.series as series_module

    path, series, summed = velox_series
    assert read_header(path).dense_bytes(keep_frames=True) <= series_module.EAGER_READ_MAX_BYTES
    framed, _ = extract_tilt_series([path], ExtractOptions(keep_frames=True))
    monkeypatch.setattr(series_module, "EAGER_READ_MAX_BYTES", 0)
    lazy, lazy_summed = extract_tilt_series([path])
    lazy_framed, _ = extract_tilt_series([path], ExtractOptions(keep_frames=True))
    for element in series.elements:
        np.testing.assert_array_equal(lazy.channels[element], series.channels[element])
        np.testing.assert_array_equal(lazy_framed.channels[element], framed.channels[element])
    np.testing.assert_array_equal(lazy_summed.counts, summed.counts)


def test_velox_empty_element_selection():
    path = shared_path(*VELOX_EMPTY)
    with pytest.raises(EdxtomoInputError, match="selects no elements .* give `elements`"):
        extract_tilt_series([path])
    series, _ = extract_tilt_series([path], elements=["Cu", "Ca"])
    assert series.elements == ["Cu", "Ca"]
    assert series.channels["Cu"].shape == (1, 16, 20)
    assert series.haadf.shape == (1, 16, 20)
    np.testing.assert_allclose(series.angles_deg, [0.01])


def test_bruker_calibration_in_nm(caplog):
    path = shared_path(*BRUKER)
    # The file records no stage tilt (exspy's EDS classes would fill in 0 deg).
    with pytest.raises(EdxtomoInputError,
                       match=r"no stage tilt in .*bruker_sem_16x16\.bcf; give angles_deg"):
        extract_tilt_series([path], elements=["Si", "Ti"])
    with caplog.at_level(logging.WARNING, logger="edxtomo.extract"):
        series, _ = extract_tilt_series([path], elements=["Si", "Ti"], angles_deg=[0.0])
    assert "no HAADF image" in caplog.text and series.haadf is None
    assert series.pixel_size_nm == pytest.approx(966.4975728790429)  # 0.9665 um
    np.testing.assert_allclose(series.angles_deg, [0.0])
    assert series.provenance["beam_energy_keV"] == 20.0
    naive, _ = _naive_window_counts(path, series)
    for element, counts in naive.items():
        np.testing.assert_array_equal(series.channels[element][0], counts)
    assert series.channels["Si"].sum() > 1000  # the Si Ka peak of this specimen


def test_bruker_line_below_the_zero_peak():
    with pytest.raises(EdxtomoInputError, match="bcf: element B has no X-ray line .* 0.200-19.99"):
        extract_tilt_series([shared_path(*BRUKER)], elements=["B"], angles_deg=[0.0])


def test_line_outside_energy_range():
    with pytest.raises(EdxtomoInputError, match="Au_Ka integration window .* lies outside"):
        extract_tilt_series([shared_path(*VELOX)], ExtractOptions(lines={"Au": "Au_Ka"}),
                            elements=["Au"])


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------


def test_reduced_velox_file_has_no_spectrum_image():
    path = shared_path(*VELOX_REDUCED)
    with pytest.raises(EdxtomoInputError, match="velox_si_16x16_reduced.emd: no EDS spectrum"):
        extract_tilt_series([path], elements=["Cu"])


def test_haadf_only_velox_file(tmp_path):
    path = tmp_path / "haadf_only.emd"
    shutil.copy(shared_path(*VELOX), path)
    path.chmod(0o644)
    with h5py.File(path, "r+") as f:
        del f["Data/SpectrumStream"]
        del f["Data/SpectrumImage"]
    with pytest.raises(EdxtomoInputError, match="haadf_only.emd: no EDS spectrum image"):
        extract_tilt_series([path], elements=["Cu"])


@pytest.mark.parametrize("name", [VELOX, BRUKER])
def test_truncated_file(tmp_path, name):
    source = shared_path(*name)
    path = tmp_path / f"truncated{source.suffix}"
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # h5py refuses a truncated HDF5 file; the Bruker reader returns zeros for the lost part.
    with pytest.raises(EdxtomoInputError,
                       match=r"truncated\.(emd: cannot be read|bcf: .* holds no counts)"):
        extract_tilt_series([path], elements=["Si"], angles_deg=[0.0])


def test_unknown_format_and_missing_file(tmp_path):
    path = tmp_path / "tilt.xyz"
    path.write_text("not a spectrum image")
    with pytest.raises(EdxtomoInputError, match=r"tilt.xyz: unknown format '\.xyz'"):
        extract_tilt_series([path], elements=["Cu"])
    with pytest.raises(EdxtomoInputError, match="absent.emd: file not found"):
        extract_tilt_series([tmp_path / "absent.emd"], elements=["Cu"])


def test_shapes_differ_across_tilts():
    paths = [shared_path(*VELOX), shared_path(*VELOX_EMPTY)]
    with pytest.raises(EdxtomoInputError,
                       match=r"empty_element_selection.emd: image shape \(16, 20\) differs"):
        extract_tilt_series(paths, elements=["Cu"])


def test_duplicate_and_miscounted_angles(tmp_path):
    source = shared_path(*VELOX)
    paths = [tmp_path / "a.emd", tmp_path / "b.emd"]
    for path in paths:
        shutil.copy(source, path)
    # Both copies record the same stage tilt: it is no view's angle.
    with pytest.raises(EdxtomoInputError,
                       match=r"all 2 files record the same stage tilt 0.005 deg .*: .*a\.emd, "
                             r".*b\.emd; give angles_deg"):
        extract_tilt_series(paths, elements=["Cu"])
    with pytest.raises(EdxtomoInputError, match="angles_deg: duplicate tilt angles"):
        extract_tilt_series(paths, elements=["Cu"], angles_deg=[10.0, 10.0])
    with pytest.raises(EdxtomoInputError, match="2 raw files but 3 tilt angles"):
        extract_tilt_series(paths, elements=["Cu"], angles_deg=[0.0, 10.0, 20.0])
    with pytest.raises(EdxtomoInputError, match=r"a\.emd given more than once"):
        extract_tilt_series([paths[0], paths[0]], elements=["Cu"], angles_deg=[0.0, 10.0])
    # The sheet's angles then go to the files in natural order of their names.
    series, _ = extract_tilt_series(paths, elements=["Cu"], angles_deg=[20.0, -20.0])
    np.testing.assert_array_equal(series.angles_deg, [-20.0, 20.0])
    assert series.provenance["source_files"] == [str(paths[1]), str(paths[0])]


def _synthetic(tmp_path, name, angle=0.0, shape=(6, 6), **options):
    counts = np.random.default_rng(0).poisson(
        syn.expected_cube({}, {"Zn": syn.element_spectrum("Zn", {"K": 1.0})},
                          np.full(shape, 400.0)))
    if "n_frame" in options:
        counts = np.stack([counts] * options.pop("n_frame"))
    if "n_channel" in options:
        counts = counts[..., : options.pop("n_channel")]
    return syn.write_tilt(tmp_path / name, counts, angle, **options)


def test_missing_angle_metadata(tmp_path):
    # A generic EDS signal keeps the file's metadata as it is: no tilt.
    paths = [_synthetic(tmp_path, "a.hspy", angle=None, signal_type="EDS"),
             _synthetic(tmp_path, "b.hspy", angle=10.0, signal_type="EDS")]
    with pytest.raises(EdxtomoInputError,
                       match=r"no stage tilt in .*a\.hspy \(the other files record one\); give "
                             "angles_deg"):
        extract_tilt_series(paths, elements=["Zn"])
    # Sheet angles go to the files in natural order, checked where a tilt is recorded.
    series, _ = extract_tilt_series(paths[::-1], elements=["Zn"], angles_deg=[5.0, 10.2])
    np.testing.assert_array_equal(series.angles_deg, [5.0, 10.2])
    assert series.provenance["source_files"] == [str(p) for p in paths]
    with pytest.raises(EdxtomoInputError,
                       match=r"b\.hspy records 10 deg, the sheet gives 0 deg"):
        extract_tilt_series(paths, elements=["Zn"], angles_deg=[5.0, 0.0])
    # exspy's EDS_TEM class writes 0 deg for a missing tilt into the files it saves: the
    # series then repeats 0 deg.
    paths = [_synthetic(tmp_path, name, angle=None) for name in ("c.hspy", "d.hspy")]
    with pytest.raises(EdxtomoInputError,
                       match="all 2 files record the same stage tilt 0 deg .*HyperSpy's EDS "
                             "classes write 0 deg .* give angles_deg"):
        extract_tilt_series(paths, elements=["Zn"])


def test_pixel_sizes_differ(tmp_path):
    paths = [_synthetic(tmp_path, "a.hspy", 0.0, pixel_size_nm=0.5),
             _synthetic(tmp_path, "b.hspy", 10.0, pixel_size_nm=0.6)]
    with pytest.raises(EdxtomoInputError, match="b.hspy: pixel size 0.6 nm differs from 0.5 nm"):
        extract_tilt_series(paths, elements=["Zn"])
    series, _ = extract_tilt_series(paths, elements=["Zn"], pixel_size_nm=0.55)
    assert series.pixel_size_nm == 0.55


def test_pixel_size_without_unit(tmp_path):
    paths = [_synthetic(tmp_path, "a.hspy", pixel_units="")]
    with pytest.raises(EdxtomoInputError, match="a.hspy: the axes carry no length unit"):
        extract_tilt_series(paths, elements=["Zn"])
    assert extract_tilt_series(paths, elements=["Zn"], pixel_size_nm=2.0)[0].pixel_size_nm == 2.0


def test_energy_axes_differ(tmp_path):
    paths = [_synthetic(tmp_path, "a.hspy", 0.0),
             _synthetic(tmp_path, "b.hspy", 10.0, n_channel=600)]
    with pytest.raises(EdxtomoInputError, match="b.hspy: energy axis .* differs"):
        extract_tilt_series(paths, elements=["Zn"])


def test_frame_counts_differ(tmp_path):
    paths = [_synthetic(tmp_path, "a.hspy", 0.0, n_frame=2),
             _synthetic(tmp_path, "b.hspy", 10.0, n_frame=3)]
    with pytest.raises(EdxtomoInputError, match="b.hspy: 3 frames but .*a.hspy has 2"):
        extract_tilt_series(paths, ExtractOptions(keep_frames=True), elements=["Zn"])
    series, _ = extract_tilt_series(paths, elements=["Zn"])  # frames summed: fine
    assert series.channels["Zn"].shape == (2, 6, 6)


# ---------------------------------------------------------------------------------------------
# The maps route
# ---------------------------------------------------------------------------------------------


def test_paper_maps_route():
    import tifffile

    folder = shared_path("paper_sqd1")
    pattern = str(folder / "{element}.tif")
    with pytest.raises(EdxtomoInputError, match="carry no pixel size; give pixel_size_nm"):
        load_maps_series(pattern, folder / "sqd1.rawtlt")
    series = load_maps_series(pattern, folder / "sqd1.rawtlt", pixel_size_nm=1.0)
    assert series.elements == ["S", "Se", "Zn"] and series.haadf is None
    assert series.n_tilt == 13
    np.testing.assert_array_equal(series.angles_deg, np.arange(-60.0, 61.0, 10.0))
    for element in series.elements:
        stack = tifffile.imread(folder / f"{element}.tif")
        assert series.channels[element].dtype == stack.dtype
        np.testing.assert_array_equal(series.channels[element].sum(axis=(1, 2)),
                                      stack.sum(axis=(1, 2)))
        assert series.provenance["channels"][element]["counts"] is True


def test_paper_maps_sorted_by_angle(tmp_path):
    import tifffile

    folder = shared_path("paper_sqd1")
    angles = read_rawtlt(folder / "sqd1.rawtlt")
    reversed_angles = tmp_path / "reversed.rawtlt"
    reversed_angles.write_text("\n".join(f"{a:g}" for a in -angles) + "\n")
    series = load_maps_series(str(folder / "{element}.tif"), reversed_angles, ["Se"], 1.0)
    np.testing.assert_array_equal(series.angles_deg, np.sort(-angles))
    np.testing.assert_array_equal(series.channels["Se"], tifffile.imread(folder / "Se.tif")[::-1])


def test_maps_route_bad_input(tmp_path):
    folder = shared_path("paper_sqd1")
    pattern = str(folder / "{element}.tif")
    short = tmp_path / "short.rawtlt"
    short.write_text("\n".join(str(a) for a in range(12)))
    with pytest.raises(EdxtomoInputError, match=r"S.tif: 13 images but 12 tilt angles"):
        load_maps_series(pattern, short, pixel_size_nm=1.0)
    duplicate = tmp_path / "duplicate.rawtlt"
    duplicate.write_text("\n".join(["0"] * 13))
    with pytest.raises(EdxtomoInputError, match="duplicate.rawtlt: duplicate tilt angles"):
        load_maps_series(pattern, duplicate, pixel_size_nm=1.0)
    with pytest.raises(EdxtomoInputError, match="In.tif: file not found"):
        load_maps_series(pattern, folder / "sqd1.rawtlt", ["In"], 1.0)
    with pytest.raises(EdxtomoInputError, match="no {element} placeholder"):
        load_maps_series(str(folder / "Se.tif"), folder / "sqd1.rawtlt", pixel_size_nm=1.0)
    with pytest.raises(EdxtomoInputError, match="give an angles file or angles_deg"):
        load_maps_series(pattern, pixel_size_nm=1.0)


def test_calibrated_maps_with_haadf(tmp_path):
    rng = np.random.default_rng(0)
    angles = np.array([30.0, -30.0, 0.0])
    for name in ("HAADF", "Zn", "S"):
        data = rng.random((3, 8, 8)).astype(np.float32) if name == "HAADF" else rng.poisson(
            2.0, (3, 8, 8)).astype(np.uint16)
        write_stack(tmp_path / f"{name}.hspy", data, np.sort(angles), 0.7, name)
    # The images are in the order of angles_deg (file order), not of the files' metadata.
    series = load_maps_series(str(tmp_path / "{element}.hspy"), angles_deg=list(angles))
    np.testing.assert_array_equal(series.channels["Zn"][0], read_stack(tmp_path / "Zn.hspy")[0][1])
    assert series.elements == ["S", "Zn"] and series.haadf is not None
    assert series.pixel_size_nm == pytest.approx(0.7)
    np.testing.assert_array_equal(series.angles_deg, [-30.0, 0.0, 30.0])
    assert series.provenance["channels"]["HAADF"]["counts"] is False
    write_stack(tmp_path / "Se.hspy", np.zeros((3, 8, 8)), np.sort(angles), 0.9, "Se")
    with pytest.raises(EdxtomoInputError, match=r"pixel size 0.9 nm differs from 0.7 nm"):
        load_maps_series(str(tmp_path / "{element}.hspy"), angles_deg=list(angles))
