"""Headers, consistency across tilts and the pairing of files with angles.

Every silent failure of the issue "No silent wrong results" is reproduced here on small
simulated Velox files (edxtomo.simulate.velox) and its message asserted: scrambled angles,
a file without a stage tilt, natural order, a beam-energy mismatch, a PNG renamed .emd.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from velox_files import ACQUISITION_ORDER, N_CHANNELS, SHAPE, small_velox

from edxtomo.config import Sample
from edxtomo.errors import EdxtomoInputError
from edxtomo.extract import (
    ANGLE_TOLERANCE_DEG,
    check_acquisitions,
    extract_tilt_series,
    natural_key,
    order_tilts,
    raw_files,
)
from edxtomo.io import Acquisition, pixel_size_nm_of, read_header, read_spectrum_image


def _acquisition(name: str, angle: float | None, **changes) -> Acquisition:
    base = Acquisition(path=Path(name), angle_deg=angle, pixel_size_nm=0.5, image_shape=SHAPE,
                       n_frame=1, energy_offset_keV=0.0, energy_scale_keV=0.02,
                       n_channel=N_CHANNELS, beam_energy_keV=300.0, resolution_mnka_eV=130.0,
                       elements=("Zn",), detectors=("SuperXG21",))
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def thirteen(tmp_path_factory):
    """t1.emd ... t13.emd acquired from -60 to +60 deg, each recording its stage tilt, and
    the same without a stage tilt; both listed in alphabetical (glob) order."""
    folder = tmp_path_factory.mktemp("thirteen")
    (folder / "no_tilt").mkdir()
    for k, angle in enumerate(ACQUISITION_ORDER):
        small_velox(folder / f"t{k + 1}.emd", angle, index=k + 1, seed=k)
        small_velox(folder / "no_tilt" / f"t{k + 1}.emd", None, index=k + 1, seed=k)
    return sorted(folder.glob("t*.emd")), sorted((folder / "no_tilt").glob("t*.emd"))


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------


def test_header_of_a_simulated_velox_file(tmp_path):
    header = read_header(small_velox(tmp_path / "a.emd", -47.5, beam_kev=200.0, n_detectors=2))
    assert header.angle_deg == -47.5
    assert header.image_shape == SHAPE and header.n_frame == 1
    assert (header.n_channel, header.energy_scale_keV, header.energy_offset_keV) == (
        N_CHANNELS, pytest.approx(0.02), 0.0)
    assert header.pixel_size_nm == 0.5 and header.beam_energy_keV == 200.0
    assert header.elements == ("Zn",) and header.detectors == ("SuperXG21", "SuperXG22")
    assert read_header(small_velox(tmp_path / "b.emd", None)).angle_deg is None


def _agrees_with_reader(path: Path, header: Acquisition) -> None:
    """read_header against HyperSpy's lazy read of the spectrum image (what extraction
    reduces): same shape, energy axis, pixel size, beam energy, elements and tilt."""
    (signal, *_) = read_spectrum_image(path)
    axes = signal.axes_manager
    energy = axes.signal_axes[0]
    assert tuple(signal.data.shape) == (*header.image_shape, header.n_channel)
    assert (energy.offset, energy.scale) == (pytest.approx(header.energy_offset_keV),
                                             pytest.approx(header.energy_scale_keV))
    assert pixel_size_nm_of(list(axes.navigation_axes[:2]), path) == pytest.approx(
        header.pixel_size_nm, rel=1e-12)
    microscope = "TEM" if signal.metadata.has_item("Acquisition_instrument.TEM") else "SEM"
    instrument = signal.metadata.Acquisition_instrument[microscope]
    assert instrument.beam_energy == header.beam_energy_keV
    assert tuple(signal.metadata.get_item("Sample.elements", [])) == header.elements
    if header.angle_deg is not None:
        assert instrument.Stage.tilt_alpha == header.angle_deg
    else:  # exspy reports 0 deg for a tilt the file does not record
        assert instrument.Stage.tilt_alpha == 0.0


def test_header_agrees_with_the_reader_on_simulated_files(tmp_path):
    for name, tilt in (("a.emd", 12.345), ("b.emd", None)):
        path = small_velox(tmp_path / name, tilt, n_detectors=2)
        _agrees_with_reader(path, read_header(path))


@pytest.mark.parametrize("name", ["velox_si_16x16_2frames.emd",
                                  "velox_si_empty_element_selection.emd",
                                  "bruker_sem_16x16.bcf"])
def test_header_agrees_with_the_reader_on_real_files(name):
    path = shared_path("real", name)
    header = read_header(path)
    _agrees_with_reader(path, header)
    if name.endswith(".bcf"):  # Bruker: no Stage.Tilt in the file, one detector type
        assert header.angle_deg is None and header.detectors == ("XFlash 6|10",)
    else:
        assert header.detectors == ("SuperXG21", "SuperXG22", "SuperXG23", "SuperXG24")
    if name == "velox_si_16x16_2frames.emd":
        assert header.n_frame == 2 and header.angle_deg == 0.005


def test_a_png_renamed_emd(tmp_path):
    path = tmp_path / "tilt_3.emd"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    message = r"tilt_3\.emd: not a Velox EMD file \(no HDF5 signature; it looks like a PNG image\)"
    with pytest.raises(EdxtomoInputError, match=message):
        read_header(path)
    with pytest.raises(EdxtomoInputError, match=message):
        extract_tilt_series([path], elements=["Zn"], angles_deg=[0.0])
    bcf = tmp_path / "map.bcf"
    bcf.write_bytes(b"hello, world")
    with pytest.raises(EdxtomoInputError, match=r"map\.bcf: not a Bruker BCF file \(no AAMVHFSS"):
        read_header(bcf)


# ---------------------------------------------------------------------------------------------
# Consistency across tilts
# ---------------------------------------------------------------------------------------------


def test_beam_energy_mismatch(tmp_path):
    paths = [small_velox(tmp_path / "a.emd", -10.0),
             small_velox(tmp_path / "b.emd", 0.0, beam_kev=10.0),
             small_velox(tmp_path / "c.emd", 10.0)]
    message = r"b\.emd: beam energy 10 kV differs from 300 kV of .*a\.emd"
    with pytest.raises(EdxtomoInputError, match=message):
        check_acquisitions([read_header(p) for p in paths])
    with pytest.raises(EdxtomoInputError, match=message):
        extract_tilt_series(paths, elements=["Zn"])


def test_detectors_and_resolution_mismatch(tmp_path):
    paths = [small_velox(tmp_path / "a.emd", 0.0, n_detectors=2),
             small_velox(tmp_path / "b.emd", 10.0, n_detectors=1)]
    with pytest.raises(EdxtomoInputError,
                       match=r"b\.emd: EDS detectors SuperXG21 differ from SuperXG21, SuperXG22"):
        check_acquisitions([read_header(p) for p in paths])
    first = _acquisition("a.emd", 0.0)
    with pytest.raises(EdxtomoInputError, match=r"b\.emd: detector resolution 140 eV"):
        check_acquisitions([first, _acquisition("b.emd", 5.0, resolution_mnka_eV=140.0)])
    check_acquisitions([first, _acquisition("b.emd", 5.0, detectors=())])  # not recorded


def test_other_mismatches_name_the_file():
    first = _acquisition("a.emd", 0.0)
    cases = [({"image_shape": (4, 6)}, r"image shape \(4, 6\) differs from \(4, 5\)"),
             ({"pixel_size_nm": 0.6}, "pixel size 0.6 nm differs from 0.5 nm"),
             ({"n_channel": 400}, r"energy axis \(400 channels"),
             ({"n_frame": 3}, "3 frames but a.emd has 1")]
    for changes, message in cases:
        with pytest.raises(EdxtomoInputError, match=rf"b\.emd: {message}"):
            check_acquisitions([first, _acquisition("b.emd", 5.0, **changes)],
                               keep_frames=True)
    check_acquisitions([first, _acquisition("b.emd", 5.0, pixel_size_nm=0.6, n_frame=3)],
                       pixel_size_given=True)


# ---------------------------------------------------------------------------------------------
# Angles
# ---------------------------------------------------------------------------------------------


def test_natural_key():
    names = ["t10.emd", "t2.emd", "t1b.emd", "t01.emd", "a/t3.emd", "t1.emd"]
    assert sorted(names, key=natural_key) == ["a/t3.emd", "t01.emd", "t1.emd", "t1b.emd",
                                              "t2.emd", "t10.emd"]


def test_raw_files_of_a_folder_come_in_natural_order(thirteen):
    paths, _ = thirteen
    sample = Sample(name="s", raw="data/t*.emd", simulated="demo", maps=None, angles=None,
                    elements=(), angles_deg=(), pixel_size_nm=None)
    files = raw_files(sample, [paths[0].parent])
    assert [p.name for p in files] == [f"t{k}.emd" for k in range(1, 14)]


def test_scrambled_tilts_follow_the_files_own_tilts(thirteen):
    paths, _ = thirteen
    assert [p.name for p in paths[:3]] == ["t1.emd", "t10.emd", "t11.emd"]  # glob order
    headers = [read_header(p) for p in paths]
    ordered, angles, source = order_tilts(paths, headers, list(ACQUISITION_ORDER))
    assert [p.name for p in ordered] == [f"t{k}.emd" for k in range(1, 14)]
    np.testing.assert_array_equal(angles, ACQUISITION_ORDER)
    assert "paired by the files' own tilts" in source
    series, _ = extract_tilt_series(paths, elements=["Zn"], angles_deg=list(ACQUISITION_ORDER))
    np.testing.assert_array_equal(series.angles_deg, ACQUISITION_ORDER)
    np.testing.assert_array_equal(series.haadf[:, 0, 0], np.arange(1, 14))  # t1 ... t13


def test_scrambled_tilts_contradicting_the_sheet_stop(thirteen):
    paths, _ = thirteen
    headers = [read_header(p) for p in paths]
    wrong = np.arange(-48.0, 49.0, 8.0)  # 13 angles at another step
    with pytest.raises(EdxtomoInputError) as error:
        order_tilts(paths, headers, list(wrong))
    message = str(error.value)
    assert "angles_deg contradicts the stage tilts recorded in 12 of 13 files" in message
    assert "t1.emd records -60 deg, the sheet gives -48 deg" in message
    assert "t13.emd records 60 deg, the sheet gives 48 deg" in message
    assert "t7.emd records" not in message  # 0 deg agrees
    # A stage readout within the tolerance is no contradiction; the sheet's values win.
    close = ACQUISITION_ORDER + 0.9 * ANGLE_TOLERANCE_DEG
    np.testing.assert_array_equal(order_tilts(paths, headers, list(close))[1], close)


def test_files_without_tilt_take_the_sheet_in_natural_order(thirteen):
    _, paths = thirteen
    headers = [read_header(p) for p in paths]
    assert all(h.angle_deg is None for h in headers)
    with pytest.raises(EdxtomoInputError,
                       match=r"no stage tilt in .*t1\.emd, .*t2\.emd, .* and 7 more; give "
                             "angles_deg"):
        order_tilts(paths, headers)
    series, _ = extract_tilt_series(paths, elements=["Zn"], angles_deg=list(ACQUISITION_ORDER))
    np.testing.assert_array_equal(series.angles_deg, ACQUISITION_ORDER)
    np.testing.assert_array_equal(series.haadf[:, 0, 0], np.arange(1, 14))
    assert "natural order" in series.provenance["angles_source"]


def test_a_file_without_tilt_is_never_0_deg(tmp_path):
    paths = [small_velox(tmp_path / "zero.emd", 0.0), small_velox(tmp_path / "unknown.emd", None)]
    headers = [read_header(p) for p in paths]
    with pytest.raises(EdxtomoInputError,
                       match=r"no stage tilt in .*unknown\.emd \(the other files record one\)"):
        order_tilts(paths, headers)
    ordered, angles, _ = order_tilts(paths, headers, [10.0, 0.0])  # natural order: u, z
    assert [p.name for p in ordered] == ["zero.emd", "unknown.emd"]
    np.testing.assert_array_equal(angles, [0.0, 10.0])


def test_duplicate_tilts_name_the_files():
    headers = [_acquisition("a.emd", 10.0), _acquisition("b.emd", 20.0),
               _acquisition("c.emd", 10.0)]
    with pytest.raises(EdxtomoInputError,
                       match=r"duplicate tilt angle 10 deg \(Stage.tilt_alpha\) in a\.emd, c\.emd"):
        order_tilts([h.path for h in headers], headers)


def test_one_tilt_in_every_file_is_no_tilt(caplog):
    headers = [_acquisition(name, 0.0) for name in ("b10.emd", "b9.emd", "b11.emd")]
    paths = [h.path for h in headers]
    with pytest.raises(EdxtomoInputError,
                       match=r"all 3 files record the same stage tilt 0 deg .*HyperSpy.*: "
                             r"b9\.emd, b10\.emd, b11\.emd; give angles_deg"):
        order_tilts(paths, headers)
    ordered, angles, _ = order_tilts(paths, headers, [-10.0, 0.0, 10.0])
    assert [p.name for p in ordered] == ["b9.emd", "b10.emd", "b11.emd"]
    np.testing.assert_array_equal(angles, [-10.0, 0.0, 10.0])
    assert "angles_deg is paired with the files in natural order" in caplog.text
