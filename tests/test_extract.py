"""Extraction of element maps from EDS spectrum images: lines, windows, background, unmixing.

Synthetic spectrum images (``synthetic_eds``) have a known expectation, so every count
assertion below compares with the exact expected counts, within Poisson error.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import sparse
import synthetic_eds as syn
from scipy.special import ndtr

from edxtomo.errors import EdxtomoInputError
from edxtomo.extract import (
    auto_background_windows,
    channel_range,
    choose_line,
    extract_tilt_series,
    fit_eds_model,
    integration_window_keV,
    line_energy_keV,
    merge_ranges,
    plan_lines,
    reduce_spectrum_image,
    smooth_continuum,
    unmixing_matrix,
    window_background,
    xray_fwhm_keV,
)
from edxtomo.io import Acquisition, load_tilt_series, save_tilt_series
from edxtomo.options import ExtractOptions

QD_ELEMENTS = ["In", "P", "Se", "S", "Zn"]
FULL_RANGE = (0.2, 40.0)


def _acquisition(n_channel=4096, offset=-0.25, scale=0.01, beam=300.0) -> Acquisition:
    return Acquisition(path=syn.Path("synthetic.emd"), angle_deg=0.0, pixel_size_nm=1.0,
                       image_shape=(8, 8), n_frame=None, energy_offset_keV=offset,
                       energy_scale_keV=scale, n_channel=n_channel, beam_energy_keV=beam,
                       resolution_mnka_eV=130.0, elements=())


def _eds_signal(data, offset=0.0, scale=0.01):
    import hyperspy.api as hs

    signal = hs.signals.Signal1D(np.asarray(data, dtype=float))
    signal.set_signal_type("EDS_TEM")
    axis = signal.axes_manager.signal_axes[0]
    axis.offset, axis.scale, axis.units = offset, scale, "keV"
    signal.set_microscope_parameters(beam_energy=300.0, energy_resolution_MnKa=130.0)
    return signal


# ---------------------------------------------------------------------------------------------
# Lines and windows
# ---------------------------------------------------------------------------------------------


def test_fwhm_follows_exspy_law():
    from exspy._misc.eds.utils import get_FWHM_at_Energy

    assert xray_fwhm_keV(line_energy_keV("Mn_Ka"), 130.0) == pytest.approx(0.130, abs=1e-9)
    for energy in (0.5, 2.0, 8.6, 11.2, 24.0):
        assert xray_fwhm_keV(energy, 128.0) == pytest.approx(get_FWHM_at_Energy(128.0, energy))


def test_element_database_is_exspys_without_importing_exspy():
    # a fresh interpreter: this one may have imported exspy already
    code = ("import sys; from edxtomo.io.xray import element_database; "
            "table = element_database().as_dictionary(); assert 'exspy' not in sys.modules; "
            "from exspy.material import elements; assert table == elements.as_dictionary()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_lines_of_quantum_dots():
    lines = [choose_line(e, QD_ELEMENTS, FULL_RANGE, 300.0, 130.0) for e in QD_ELEMENTS]
    assert lines == ["In_La", "P_Ka", "Se_Ka", "S_Ka", "Zn_Ka"]


def test_default_line_avoids_overlap_and_follows_beam_and_range():
    # Au Ma (2.12 keV) lies on P Ka (2.01 keV): Au takes its L line.
    assert choose_line("Au", ["Au", "P"], FULL_RANGE, 300.0, 130.0) == "Au_La"
    assert choose_line("Au", ["Au"], FULL_RANGE, 300.0, 130.0) == "Au_La"
    # At 20 kV the overvoltage of Se Ka (11.2 keV) is below 2: Se La instead.
    assert choose_line("Se", ["Se"], (0.2, 20.0), 20.0, 130.0) == "Se_La"
    # A spectrum ending at 10.2 keV has no Se Ka.
    assert choose_line("Se", ["Se", "Zn"], (0.2, 10.2), 300.0, 130.0) == "Se_La"
    with pytest.raises(EdxtomoInputError, match="Se has no X-ray line .* 2.000-5.000 keV"):
        choose_line("Se", ["Se"], (2.0, 5.0), 300.0, 130.0)


def test_integration_window_matches_exspy():
    signal = _eds_signal(np.zeros(4096), offset=-0.25)
    for line in ("Zn_Ka", "In_La", "P_Ka"):
        (expected,) = signal.estimate_integration_windows(windows_width=1.2, xray_lines=[line])
        assert integration_window_keV(line, 130.0, 1.2) == pytest.approx(tuple(expected))


def test_auto_background_windows_are_exspy_windows_when_free():
    # Free of other lines, the windows span 2 to 5 FWHM on both sides: exspy's windows with
    # line_width 2 and windows_width 3.
    signal = _eds_signal(np.zeros(4096), offset=-0.25)
    (expected,) = signal.estimate_background_windows(line_width=[2, 2], windows_width=3,
                                                     xray_lines=["O_Ka"])
    windows = auto_background_windows("O_Ka", ["O"], FULL_RANGE, 130.0)
    assert np.ravel(windows) == pytest.approx(expected)


@pytest.mark.parametrize("element", QD_ELEMENTS)
def test_auto_background_windows_avoid_every_line(element):
    line = choose_line(element, QD_ELEMENTS, FULL_RANGE, 300.0, 130.0)
    windows = auto_background_windows(line, QD_ELEMENTS, FULL_RANGE, 130.0)
    assert windows
    fwhm = float(xray_fwhm_keV(line_energy_keV(line), 130.0))
    for low, high in windows:
        assert high - low >= 0.5 * fwhm
        distance = min(abs(low - line_energy_keV(line)), abs(high - line_energy_keV(line)))
        assert distance >= 2 * fwhm - 1e-12
        for other in QD_ELEMENTS:
            for name, (energy, weight) in syn.element_lines(other).items():
                if weight >= 0.05:
                    clearance = 1.5 * float(xray_fwhm_keV(energy, 130.0)) - 1e-9
                    assert energy <= low - clearance or energy >= high + clearance, name


def test_plan_lines_overrides_and_errors(caplog):
    acquisition = _acquisition()
    plan = plan_lines(["Zn", "In"], acquisition, lines={"In": "In_Ka", "Au": "Au_Ma"},
                      background={"Zn": [[8.0, 8.2], [9.0, 9.2]]})
    assert plan["In"].line == "In_Ka"
    assert plan["Zn"].background_keV == ((8.0, 8.2), (9.0, 9.2))
    assert len(plan["In"].background_keV) == 2  # automatic for elements not named
    assert plan_lines(["Zn"], acquisition, background="none")["Zn"].background_keV == ()
    with caplog.at_level(logging.WARNING, logger="edxtomo.extract"):
        plan_lines(["P", "Au"], acquisition)
    assert "P_Ka window overlaps Au_Ma" in caplog.text
    with pytest.raises(EdxtomoInputError, match="Au_Ka integration window .* outside the usable"):
        plan_lines(["Au"], acquisition, lines={"Au": "Au_Ka"})
    with pytest.raises(EdxtomoInputError, match="'Zn_Kz' is not an X-ray line of Zn"):
        plan_lines(["Zn"], acquisition, lines={"Zn": "Zn_Kz"})
    with pytest.raises(EdxtomoInputError, match="'Xx' is not an element"):
        plan_lines(["Xx"], acquisition)
    with pytest.raises(EdxtomoInputError, match="Zn_Ka background window 9.000-45.000 keV lies"):
        plan_lines(["Zn"], acquisition, background={"Zn": [[9.0, 45.0]]})
    with pytest.raises(EdxtomoInputError, match="background must be 'auto', 'none'"):
        plan_lines(["Zn"], acquisition, background="fit")


def test_channel_range_slices_like_hyperspy():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, 500)
    signal = _eds_signal(data, offset=-0.25, scale=0.01)
    for low in rng.uniform(-0.2, 4.0, 20):
        window = (low, low + rng.uniform(0.05, 0.8))
        start, stop = channel_range(window, -0.25, 0.01, 500)
        assert data[start:stop].sum() == signal.isig[window[0]:window[1]].data.sum()


def test_merge_ranges():
    assert merge_ranges([(5, 9), (0, 3), (8, 12), (3, 4), (7, 7)]) == [(0, 4), (5, 12)]


# ---------------------------------------------------------------------------------------------
# Reductions and background
# ---------------------------------------------------------------------------------------------


def _check_reduction(data, dense, ranges):
    sums, spectrum = reduce_spectrum_image(data, ranges)
    for got, (start, stop) in zip(sums, ranges, strict=True):
        np.testing.assert_array_equal(got, dense[..., start:stop].sum(-1))
    np.testing.assert_array_equal(spectrum, dense.reshape(-1, dense.shape[-1]).sum(0))


RANGES = [(3, 9), (0, 50), (20, 21), (30, 30)]


@pytest.mark.parametrize("frames", [False, True])
def test_reduce_spectrum_image_dense_dask_and_sparse_agree(frames):
    dense = np.random.default_rng(1).poisson(0.3, (3, 5, 6, 50)[not frames:]).astype(np.uint16)
    chunks = (2,) * (dense.ndim - 1)
    coo = sparse.COO.from_numpy(dense.astype(np.int64))
    _check_reduction(dense, dense, RANGES)
    _check_reduction(da.from_array(dense, chunks=(*chunks, 7)), dense, RANGES)
    # rosettasciio's lazy Velox layout: a sparse array read through dask, then a dtype cast
    # (``meta`` spares sparse's numba compilation, which dask's meta probe would trigger).
    meta = np.empty((0,) * dense.ndim, dtype=np.int64)
    lazy = da.from_array(coo, chunks=(*chunks, 50), meta=meta).astype(np.uint16)
    _check_reduction(lazy, dense, RANGES)


@pytest.mark.slow
def test_reduce_spectrum_image_of_summed_sparse_detectors():
    """Detectors summed lazily (rosettasciio's sum_EDS_detectors) are not a plain read of
    one sparse array: dask reduces them, densifying one block at a time."""
    dense = np.random.default_rng(1).poisson(0.3, (5, 6, 50))
    half = sparse.COO.from_numpy(dense // 2)
    rest = sparse.COO.from_numpy(dense - dense // 2)
    summed = da.from_array(half, chunks=(2, 2, 50)) + da.from_array(rest, chunks=(2, 2, 50))
    _check_reduction(summed, dense, RANGES)


def test_window_background_interpolates_a_linear_continuum():
    channels = np.arange(300)
    energy = 0.1 + 0.01 * channels
    spectrum = 50.0 - 0.1 * channels
    under = window_background(spectrum, (140, 160), [(100, 120), (180, 200)], energy, 300.0)
    assert under == pytest.approx(spectrum[140:160].sum())
    assert window_background(spectrum, (140, 160), [], energy, 300.0) == 0.0


def test_window_background_extrapolates_kramers_from_one_side():
    energy = 0.1 + 0.01 * np.arange(300)
    spectrum = 1e4 * (300.0 - energy) / energy
    for windows in ([(100, 120)], [(60, 80), (100, 120)], [(180, 200)]):
        under = window_background(spectrum, (140, 160), windows, energy, 300.0)
        assert under == pytest.approx(spectrum[140:160].sum())


def test_smooth_continuum_keeps_the_sum():
    rng = np.random.default_rng(2)
    continuum = rng.poisson(0.2, (20, 30))
    smooth = smooth_continuum(continuum, 2.0)
    assert smooth.sum() == pytest.approx(continuum.sum())
    assert smooth.std() < continuum.std()


def test_unmixing_matrix_rejects_identical_lines():
    signature = np.zeros(100)
    signature[40:50] = 0.1
    with pytest.raises(EdxtomoInputError, match="cannot be unmixed"):
        unmixing_matrix({"P": signature, "Au": signature}, {"P": (40, 50), "Au": (40, 50)})


# ---------------------------------------------------------------------------------------------
# Whole series from synthetic files
# ---------------------------------------------------------------------------------------------


FAMILIES = {"Zn": {"K": 1.0, "L": 0.4}, "Se": {"K": 1.0, "L": 0.4}, "S": {"K": 1.0}}
TOTALS = {"Zn": 4000.0, "Se": 2500.0, "S": 3000.0}
CONTINUUM_TOTAL = 150_000.0


def _series_truth(tmp_path, rng, families, totals, angles=(-30.0, 0.0, 30.0), shape=(24, 24),
                  n_frame=None):
    """Write one synthetic file per tilt; return the paths and the expected maps."""
    spectra = {e: syn.element_spectrum(e, f) for e, f in families.items()}
    thickness = syn.blob(shape, (12, 12), 5.0)
    paths, truth = [], []
    for k, angle in enumerate(angles):
        shift = 4 * np.sin(np.radians(angle))
        maps = {e: totals[e] * syn.blob(shape, (8 + 4 * j, 12 + shift), 2.5 + j)
                for j, e in enumerate(families)}
        continuum = CONTINUUM_TOTAL * (0.7 * thickness + 0.3 / thickness.size)
        cube = syn.expected_cube(maps, spectra, continuum)
        if n_frame:
            counts = rng.poisson(np.broadcast_to(cube / n_frame, (n_frame, *cube.shape)))
        else:
            counts = rng.poisson(cube)
        paths.append(syn.write_tilt(tmp_path / f"tilt_{k}.hspy", counts, angle))
        truth.append({"maps": maps, "continuum": continuum, "counts": counts})
    return paths, truth, spectra


def _in_window(truth, spectra, start, stop, elements):
    """Expected line counts (of ``elements``) and continuum counts in channels [start, stop)."""
    lines = sum(truth["maps"][e] * spectra[e][start:stop].sum() for e in elements)
    continuum = truth["continuum"] * syn.continuum_spectrum()[start:stop].sum()
    return lines, continuum


@pytest.fixture(scope="module")
def windows_series(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("windows")
    paths, truth, spectra = _series_truth(tmp_path, np.random.default_rng(3), FAMILIES, TOTALS)
    series, summed = extract_tilt_series(paths[::-1], elements=list(FAMILIES))
    return series, summed, truth, spectra


def test_windows_gross_counts_are_the_window_sums(windows_series):
    series, _, truth, _ = windows_series
    np.testing.assert_array_equal(series.angles_deg, [-30.0, 0.0, 30.0])
    assert series.pixel_size_nm == pytest.approx(0.5)
    assert series.haadf is None  # .hspy spectrum images carry no HAADF
    for element in FAMILIES:
        start, stop = series.provenance["channels"][element]["integration_channels"]
        assert series.channels[element].dtype == np.uint16
        for t, tilt in enumerate(truth):
            np.testing.assert_array_equal(series.channels[element][t],
                                          tilt["counts"][..., start:stop].sum(-1))


def test_windows_net_counts_match_truth_within_poisson(windows_series):
    series, _, truth, spectra = windows_series
    for element in FAMILIES:
        prov = series.provenance["channels"][element]
        start, stop = prov["integration_channels"]
        n_background = sum(channel_range(w, 0.0, syn.ENERGY_SCALE_KEV, syn.N_CHANNEL)[1]
                           - channel_range(w, 0.0, syn.ENERGY_SCALE_KEV, syn.N_CHANNEL)[0]
                           for w in prov["background_windows_keV"])
        for t, tilt in enumerate(truth):
            signal, continuum = _in_window(tilt, spectra, start, stop, FAMILIES)
            net = series.net_counts(element)[t].sum()
            background = series.background[element][t].sum()
            # Poisson variance of the gross counts, plus that of the background estimate:
            # counts in background windows scaled by n_integration / n_background.
            sigma = np.sqrt(series.channels[element][t].sum()
                            + background * (1 + (stop - start) / n_background))
            assert abs(net - signal.sum()) < 4 * sigma, (element, t)
            assert abs(background - continuum.sum()) < 4 * sigma, (element, t)


def test_background_model_beats_per_pixel_windows(windows_series):
    """The smoothed-continuum background has a lower per-pixel error than subtracting each
    pixel's own background-window counts, the noise that the model exists to avoid."""
    series, _, truth, spectra = windows_series
    for element in FAMILIES:
        prov = series.provenance["channels"][element]
        start, stop = prov["integration_channels"]
        ranges = [channel_range(w, 0.0, syn.ENERGY_SCALE_KEV, syn.N_CHANNEL)
                  for w in prov["background_windows_keV"]]
        n_background = sum(b - a for a, b in ranges)
        for t, tilt in enumerate(truth):
            _, continuum = _in_window(tilt, spectra, start, stop, FAMILIES)
            per_pixel = sum(tilt["counts"][..., a:b].sum(-1) for a, b in ranges)
            naive = per_pixel * (stop - start) / n_background
            model_error = np.mean((series.background[element][t] - continuum) ** 2)
            assert model_error < np.mean((naive - continuum) ** 2), (element, t)


def test_summed_spectrum_and_provenance(windows_series):
    series, summed, truth, _ = windows_series
    total = sum(t["counts"].reshape(-1, syn.N_CHANNEL).sum(0) for t in truth)
    np.testing.assert_array_equal(summed.counts, total)
    np.testing.assert_allclose(summed.energy_keV, syn.energy_keV())
    assert [summed.lines[e].line for e in FAMILIES] == ["Zn_Ka", "Se_Ka", "S_Ka"]
    windows = summed.windows_dataframe()
    assert set(windows["kind"]) == {"integration", "background"}
    assert len(summed.to_dataframe()) == syn.N_CHANNEL
    prov = series.provenance
    assert prov["method"] == "windows" and prov["angles_source"].startswith("metadata")
    assert prov["beam_energy_keV"] == 300.0
    assert prov["channels"]["Zn"]["counts"] is True
    assert prov["channels"]["Zn"]["line"] == "Zn_Ka"


def test_save_and_load_round_trip(windows_series, tmp_path):
    series, _, _, _ = windows_series
    save_tilt_series(series, tmp_path / "extracted")
    loaded = load_tilt_series(tmp_path / "extracted")
    assert set(loaded.elements) == set(series.elements)
    for element in series.elements:
        np.testing.assert_array_equal(loaded.channels[element], series.channels[element])
        np.testing.assert_allclose(loaded.background[element], series.background[element])
        prov = loaded.provenance["channels"][element]
        assert prov["line"] == series.provenance["channels"][element]["line"]
        np.testing.assert_allclose(prov["integration_window_keV"],
                                   series.provenance["channels"][element]["integration_window_keV"])


def test_keep_frames_adds_up_to_the_summed_maps(tmp_path):
    families = {"Zn": {"K": 1.0}}
    paths, truth, _ = _series_truth(tmp_path, np.random.default_rng(4), families, {"Zn": 3000.0},
                                    angles=(-10.0, 10.0), shape=(12, 12), n_frame=3)
    framed, _ = extract_tilt_series(paths, ExtractOptions(keep_frames=True), elements=["Zn"])
    summed, _ = extract_tilt_series(paths, elements=["Zn"])
    assert framed.channels["Zn"].shape == (2, 3, 12, 12)
    np.testing.assert_array_equal(framed.summed("Zn"), summed.channels["Zn"])
    np.testing.assert_allclose(framed.background["Zn"], summed.background["Zn"])


@pytest.mark.slow
def test_model_unmixes_overlapping_lines(tmp_path):
    """P Ka (2.013 keV) lies under Au Ma (2.123 keV): the windows method counts the Au M
    tail as P, the EDS model removes it, within the Poisson error propagated through the
    unmixing."""
    families = {"P": {"K": 1.0}, "Au": {"M": 1.0, "L": 0.6}}
    totals = {"P": 3000.0, "Au": 30000.0}
    paths, truth, spectra = _series_truth(tmp_path, np.random.default_rng(5), families, totals)
    windows, _ = extract_tilt_series(paths, elements=["P", "Au"])
    model, summed = extract_tilt_series(paths, ExtractOptions(method="model"),
                                        elements=["P", "Au"])
    prov = model.provenance
    assert prov["channels"]["P"]["counts"] is False and model.background == {}
    assert model.channels["P"].dtype == np.float32
    assert summed.model is not None and summed.model_background is not None
    inverse = np.linalg.inv(np.asarray(prov["unmixing_matrix"]))
    elements = prov["unmixing_elements"]
    p_window = prov["channels"]["P"]["integration_channels"]
    for t, tilt in enumerate(truth):
        gross = np.array([windows.channels[e][t].sum() for e in elements], dtype=float)
        # Variance of a linear combination of independent Poisson window totals.
        sigma = np.sqrt((inverse**2) @ gross)
        for i, element in enumerate(elements):
            window = prov["channels"][element]["integration_channels"]
            own, _ = _in_window(tilt, spectra, *window, [element])
            assert abs(model.channels[element][t].sum() - own.sum()) < 4 * sigma[i], element
        # The windows method's gross P counts hold the Au M tail, far beyond their noise.
        own, _ = _in_window(tilt, spectra, *p_window, ["P"])
        both, continuum = _in_window(tilt, spectra, *p_window, elements)
        sigma_p = np.sqrt(gross[elements.index("P")])
        assert abs(gross[elements.index("P")] - both.sum() - continuum.sum()) < 4 * sigma_p
        assert both.sum() - own.sum() > 4 * sigma_p


def test_model_signature_of_an_absent_element():
    """An element in the list but not in the specimen still gets a line shape of unit sum
    in its own window, so the unmixing matrix stays defined (its net counts are then ~0)."""
    spectrum = (3e4 * syn.element_spectrum("P", {"K": 1.0})
                + 1e6 * syn.continuum_spectrum())
    acquisition = _acquisition(n_channel=syn.N_CHANNEL, offset=0.0, scale=syn.ENERGY_SCALE_KEV)
    plan = plan_lines(["P", "Zn"], acquisition)
    fit = fit_eds_model(spectrum, acquisition, plan)
    for element, windows in plan.items():
        start, stop = channel_range(windows.integration_keV, 0.0, syn.ENERGY_SCALE_KEV,
                                    syn.N_CHANNEL)
        assert fit.signatures[element][start:stop].sum() == pytest.approx(1.0)
        assert np.all(fit.signatures[element] >= 0)
    ranges = {e: channel_range(p.integration_keV, 0.0, syn.ENERGY_SCALE_KEV, syn.N_CHANNEL)
              for e, p in plan.items()}
    np.testing.assert_allclose(unmixing_matrix(fit.signatures, ranges), np.eye(2), atol=1e-3)


def test_bad_arguments(tmp_path):
    paths, _, _ = _series_truth(tmp_path, np.random.default_rng(6), {"Zn": {"K": 1.0}},
                                {"Zn": 500.0}, angles=(0.0, 5.0), shape=(6, 6))
    with pytest.raises(EdxtomoInputError, match="key 'extract.method': Input should be 'windows'"):
        extract_tilt_series(paths, {"method": "fit"}, elements=["Zn"])
    with pytest.raises(EdxtomoInputError, match="no raw files"):
        extract_tilt_series([], elements=["Zn"])
    with pytest.raises(EdxtomoInputError, match="key 'extract.integration_fwhm'"):
        extract_tilt_series(paths, {"integration_fwhm": 0}, elements=["Zn"])


# ---------------------------------------------------------------------------------------------
# A simulated Velox tilt series (edxtomo.simulate) against its ground truth
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    import json

    from edxtomo.simulate import simulate_acquisition
    from edxtomo.simulate.series import load_preset

    spec = load_preset(syn.Path(__file__).resolve().parents[1] / "resources" / "specimens"
                       / "qd_demo.yaml")
    spec.update(n_tilts=5, tilt_range_deg=[-60.0, 60.0], voxel_size_nm=0.8,
                image_shape_px=[40, 48], volume_depth_px=40, supersample=2)
    spec["specimen"].update(count=2, touching_pairs=1, margin_nm=2.0)
    spec["acquisition"].update(n_channels=700, dispersion_ev=20.0, n_frames=3, n_detectors=2,
                               dose_e_per_nm2=3e8, zero_peak_counts_per_pixel=0.02)
    out = tmp_path_factory.mktemp("simulated")
    paths = simulate_acquisition(spec, out, seed=7)
    truth = out / "truth"
    series, summed = extract_tilt_series(paths[::-1])
    return {"paths": paths, "series": series, "summed": summed,
            "expected": dict(np.load(truth / "expected_counts.npz")),
            "acq": json.loads((truth / "acquisition.json").read_text())}


def _expected_in_window(sim, start, stop):
    """Expected line counts (all lines of all elements) and bremsstrahlung per tilt and pixel
    in channels [start, stop), from the simulator's truth files."""
    expected = sim["expected"]
    energy = expected["energy_kev"]
    half = (energy[1] - energy[0]) / 2
    edges = np.append(energy - half, energy[-1] + half)
    lines = 0.0
    for line in sim["acq"]["lines"]:
        sigma = line["fwhm_kev"] / (2 * np.sqrt(2 * np.log(2)))
        in_window = np.diff(ndtr((edges[[start, stop]] - line["energy_kev"]) / sigma))[0]
        lines = lines + (expected[line["element"]] * line["fraction_of_element"]
                         / line["fraction_inside"] * in_window)
    continuum = expected["background"] * expected["background_spectrum"][start:stop].sum()
    return lines, continuum


@pytest.mark.slow
def test_simulated_calibration(simulated):
    series, acq = simulated["series"], simulated["acq"]
    np.testing.assert_array_equal(series.angles_deg, acq["angles_deg"])
    assert series.pixel_size_nm == acq["pixel_size_nm"]
    assert series.elements == ["In", "P", "Zn", "Se", "S"]  # the files' element selection
    assert [simulated["summed"].lines[e].line for e in series.elements] == [
        "In_La", "P_Ka", "Zn_Ka", "Se_Ka", "S_Ka"]
    # HAADF: Poisson draws of the truth's expectation, pixel for pixel.
    expected = simulated["expected"]["HAADF"]
    residual = (series.haadf - expected) / np.sqrt(expected)
    assert abs(residual.mean()) < 5 / np.sqrt(residual.size)
    assert abs(residual.std() - 1) < 5 / np.sqrt(2 * residual.size)


@pytest.mark.slow
def test_simulated_net_counts_match_truth(simulated):
    series = simulated["series"]
    for element in series.elements:
        prov = series.provenance["channels"][element]
        start, stop = prov["integration_channels"]
        axis = [series.provenance[k] for k in ("energy_offset_keV", "energy_scale_keV",
                                               "n_channel")]
        n_background = sum(b - a for a, b in (channel_range(w, *axis)
                                              for w in prov["background_windows_keV"]))
        lines, continuum = _expected_in_window(simulated, start, stop)
        for t in range(series.n_tilt):
            gross = series.channels[element][t]
            background = series.background[element][t].sum()
            # Poisson variance of the gross counts and of the background estimate (counts in
            # the background channels scaled by n_integration / n_background).
            sigma = np.sqrt(gross.sum() + background * (1 + (stop - start) / n_background))
            assert abs(series.net_counts(element)[t].sum() - lines[t].sum()) < 4 * sigma
            assert abs(background - continuum[t].sum()) < 4 * sigma
            # Pixel by pixel, the gross counts are Poisson draws of lines + continuum:
            # E[(n - mu)^2 / mu] = 1 and Var = 2 + 1 / mu for each pixel.
            mu = (lines[t] + continuum[t]).ravel()
            keep = mu > 0.05
            chi2 = np.sum((gross.ravel()[keep] - mu[keep]) ** 2 / mu[keep])
            assert abs(chi2 - keep.sum()) < 5 * np.sqrt(np.sum(2 + 1 / mu[keep])), (element, t)


@pytest.mark.slow
def test_simulated_frames_add_up(simulated):
    series = simulated["series"]
    framed, _ = extract_tilt_series(simulated["paths"], ExtractOptions(keep_frames=True))
    for element in series.elements:
        assert framed.channels[element].shape == (5, 3, 40, 48)
        np.testing.assert_array_equal(framed.summed(element), series.channels[element])
