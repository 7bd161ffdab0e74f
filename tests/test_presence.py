"""Elements that must earn their maps, and background windows that avoid every line.

The presence test and the peak search work on the spectrum summed over a series; the cases
of the issue "No silent wrong results" are reproduced: elements requested but absent (U,
Pb) are flagged, the demo specimen's own elements never are, and a strong line of an
unlisted element (Cu Ka in Zn Ka's background window) moves that window.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import synthetic_eds as syn
from scipy.stats import norm, poisson

from edxtomo.extract import (
    LINE_CLEARANCE_FWHM,
    auto_background_windows,
    avoid_peaks,
    channel_range,
    element_presence,
    extract_tilt_series,
    find_peaks,
    line_energy_keV,
    plan_lines,
    poisson_significance,
    top_hat,
    window_background,
    write_extracted,
    xray_fwhm_keV,
)
from edxtomo.io import Acquisition

DEMO_ELEMENTS = ["In", "P", "Zn", "Se", "S"]


def _acquisition(n_channel=syn.N_CHANNEL) -> Acquisition:
    return Acquisition(path=syn.Path("synthetic.hspy"), angle_deg=0.0, pixel_size_nm=0.5,
                       image_shape=(8, 8), n_frame=None, energy_offset_keV=syn.ENERGY_OFFSET_KEV,
                       energy_scale_keV=syn.ENERGY_SCALE_KEV, n_channel=n_channel,
                       beam_energy_keV=syn.BEAM_ENERGY_KEV,
                       resolution_mnka_eV=syn.RESOLUTION_MNKA_EV, elements=())


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def test_poisson_significance_is_the_exact_tail():
    for counts, expected in [(10, 4.0), (30, 27.6), (150, 100.0), (5, 0.5)]:
        exact = norm.isf(poisson.sf(counts - 1, expected))
        assert poisson_significance(counts, expected) == pytest.approx(exact, rel=1e-9)
    # Far out the tail underflows: the likelihood-ratio form keeps it finite and growing.
    far = [poisson_significance(n, 100.0) for n in (2000, 4000, 8000)]
    assert np.all(np.isfinite(far)) and far[0] > 37 and np.all(np.diff(far) > 0)
    assert poisson_significance(80, 100.0) < 0 and poisson_significance(0, 0.4) < 0
    assert poisson_significance(3, 0.0) == np.inf


def test_element_presence(caplog):
    with caplog.at_level(logging.WARNING, logger="edxtomo.extract"):
        absent = element_presence("Pb", 1010.0, 1000.0)
        present = element_presence("Zn", 1200.0, 1000.0)
        untested = element_presence("S", 50.0, None)
        floored = element_presence("Cu", 3.0, 0.0, min_background_counts=0.25)
    assert absent.absent and absent.net_counts == 10.0 and absent.significance_sigma < 1
    assert not present.absent and present.significance_sigma > 5
    assert not untested.absent and np.isnan(untested.significance_sigma)
    assert floored.background_counts == 0.25 and floored.absent  # 3 counts over 0.25: 2.9 sigma
    assert "Pb: not in the specimen? Its net counts over the series, 10.0" in caplog.text
    assert "above the background of 1000.0 counts" in caplog.text
    assert "S: presence not tested" in caplog.text and "Zn:" not in caplog.text


def test_top_hat_cancels_a_linear_continuum_and_finds_a_line():
    channels = np.arange(400)
    linear = 500.0 + 2.0 * channels
    fwhm = np.full(400, 8.0)
    valid = np.ones(400, bool)
    net, continuum, _ = top_hat(linear, fwhm, valid)
    inner = slice(20, -20)
    np.testing.assert_allclose(net[inner], 0.0, atol=1e-9)
    np.testing.assert_allclose(continuum[inner], 9 * linear[inner])  # 9 channels wide
    line = 5000.0 * np.exp(-0.5 * ((channels - 200) / (8.0 / 2.355)) ** 2)
    net, _, significance = top_hat(linear + line, fwhm, valid)
    # The central lobe (1 FWHM) holds 76 % of the line, the side lobes take back 1/4 of that.
    assert np.argmax(significance) == 200 and net[200] > 0.55 * line.sum()


# ---------------------------------------------------------------------------------------------
# Peaks and background windows
# ---------------------------------------------------------------------------------------------


def test_find_peaks_names_the_lines_of_listed_and_unlisted_elements():
    spectrum = (2e4 * syn.element_spectrum("Zn", {"K": 1.0, "L": 0.4})
                + 3e4 * syn.element_spectrum("Cu", {"K": 1.0, "L": 0.4})
                + 2e6 * syn.continuum_spectrum())
    counts = np.random.default_rng(0).poisson(spectrum)
    # synthetic_eds's continuum steps up from 0 at 0.3 keV, which no real spectrum does; the
    # filter sees that step as a line: look above it.
    peaks = [p for p in find_peaks(counts, _acquisition(), ["Zn"]) if p.energy_keV > 0.5]
    lines = {p.line: p.listed for p in peaks}
    # Zn La (1.01 keV) hides in the side lobe of the stronger Cu La (0.93 keV), 1 FWHM away.
    assert lines == {"Cu_La": False, "Cu_Ka": False, "Cu_Kb": False, "Zn_Ka": True,
                     "Zn_Kb": True}
    continuum = np.random.default_rng(1).poisson(2e6 * syn.continuum_spectrum())
    assert not [p for p in find_peaks(continuum, _acquisition(), ["Zn"]) if p.energy_keV > 0.5]


def test_avoid_peaks_keeps_explicit_windows_with_a_warning(caplog):
    acquisition = _acquisition()
    cu = line_energy_keV("Cu_Ka")
    plan = plan_lines(["Zn"], acquisition, background={"Zn": [[7.9, 8.2]]})
    with caplog.at_level(logging.WARNING, logger="edxtomo.extract"):
        kept = avoid_peaks(plan, [cu], acquisition, background={"Zn": [[7.9, 8.2]]})
    assert kept["Zn"].background_keV == ((7.9, 8.2),)
    assert "Zn_Ka background window 7.900-8.200 keV (given in extract: background) holds a " \
           "peak of the summed spectrum at 8.048 keV" in caplog.text


FAMILIES = {"Zn": {"K": 1.0}, "Cu": {"K": 1.0}}
TOTALS = {"Zn": 3000.0, "Cu": 20000.0}  # Cu: a grid or a contamination, not listed
CONTINUUM_TOTAL = 150_000.0


@pytest.fixture(scope="module")
def copper(tmp_path_factory):
    """Three synthetic tilts of Zn on a strong Cu background; only Zn is listed."""
    tmp_path = tmp_path_factory.mktemp("copper")
    rng = np.random.default_rng(11)
    shape = (16, 16)
    spectra = {e: syn.element_spectrum(e, f) for e, f in FAMILIES.items()}
    paths, truth = [], []
    for k, angle in enumerate((-20.0, 0.0, 20.0)):
        maps = {"Zn": TOTALS["Zn"] * syn.blob(shape, (8, 8), 2.5),
                "Cu": np.full(shape, TOTALS["Cu"] / np.prod(shape))}
        continuum = np.full(shape, CONTINUUM_TOTAL / np.prod(shape))
        counts = rng.poisson(syn.expected_cube(maps, spectra, continuum))
        paths.append(syn.write_tilt(tmp_path / f"tilt_{k}.hspy", counts, angle))
        truth.append({"maps": maps, "continuum": continuum})
    series, summed = extract_tilt_series(paths, elements=["Zn"])
    return series, summed, truth, spectra


def test_background_windows_move_off_an_unlisted_line(copper):
    series, summed, truth, spectra = copper
    cu_lines = [line_energy_keV(line) for line in ("Cu_Ka", "Cu_Kb")]
    # Without the peak search, Zn Ka's lower window would sit on Cu Ka.
    naive = auto_background_windows("Zn_Ka", ["Zn"], (0.2, 12.8), syn.RESOLUTION_MNKA_EV)
    assert any(low <= cu_lines[0] <= high for low, high in naive)
    assert {p.line for p in summed.peaks if not p.listed} >= {"Cu_Ka", "Cu_Kb"}
    windows = series.provenance["channels"]["Zn"]["background_windows_keV"]
    assert windows
    for energy in cu_lines:
        clearance = LINE_CLEARANCE_FWHM * float(xray_fwhm_keV(energy, syn.RESOLUTION_MNKA_EV))
        assert all(energy <= low - clearance + 1e-9 or energy >= high + clearance - 1e-9
                   for low, high in windows)
    # The naive windows overestimate the background far beyond its Poisson error.
    start, stop = series.provenance["channels"]["Zn"]["integration_channels"]
    axis = (syn.ENERGY_OFFSET_KEV, syn.ENERGY_SCALE_KEV, syn.N_CHANNEL)
    naive_background = window_background(summed.counts, (start, stop),
                                         [channel_range(w, *axis) for w in naive],
                                         syn.energy_keV(), syn.BEAM_ENERGY_KEV)
    true_background = sum(t["continuum"].sum() for t in truth) * syn.continuum_spectrum()[
        start:stop].sum()
    assert naive_background - true_background > 10 * np.sqrt(true_background)


def test_net_counts_stay_true_next_to_an_unlisted_line(copper):
    series, _, truth, spectra = copper
    start, stop = series.provenance["channels"]["Zn"]["integration_channels"]
    for t, tilt in enumerate(truth):
        lines = sum(tilt["maps"][e].sum() * spectra[e][start:stop].sum() for e in FAMILIES)
        gross = series.channels["Zn"][t].sum()
        background = series.background["Zn"][t].sum()
        # Poisson error of the gross counts and of the background estimate.
        sigma = np.sqrt(gross + 2 * background)
        assert abs(series.net_counts("Zn")[t].sum() - lines) < 4 * sigma, t
    assert series.provenance["channels"]["Zn"]["element_absent"] is False


# ---------------------------------------------------------------------------------------------
# Elements requested but absent: the demo specimen at its dose
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from edxtomo.simulate import simulate_acquisition
    from edxtomo.simulate.series import load_preset

    spec = load_preset(syn.Path(__file__).resolve().parents[1] / "resources" / "specimens"
                       / "qd_demo.yaml")
    return simulate_acquisition(spec, tmp_path_factory.mktemp("demo"), seed=3)


@pytest.mark.slow
def test_the_demo_elements_are_never_flagged(demo, tmp_path):
    series, summed = extract_tilt_series(demo)
    assert series.elements == DEMO_ELEMENTS
    for element in DEMO_ELEMENTS:
        channel = series.provenance["channels"][element]
        assert channel["element_absent"] is False, element
        assert channel["significance_sigma"] >= 5, element
    assert all(p.listed for p in summed.peaks)  # no line of anything else in the spectrum
    write_extracted(series, summed, tmp_path)
    table = pd.read_csv(tmp_path / "windows.tsv", sep="\t")
    assert {"net_counts", "significance_sigma", "element_absent"} <= set(table.columns)
    assert not table["element_absent"].any()


@pytest.mark.slow
def test_absent_elements_are_flagged(demo, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="edxtomo.extract"):
        series, summed = extract_tilt_series(demo, elements=[*DEMO_ELEMENTS, "U", "Pb"])
    for element in ("U", "Pb"):
        channel = series.provenance["channels"][element]
        assert channel["element_absent"] is True and channel["significance_sigma"] < 5
        assert series.channels[element].shape == series.channels["Zn"].shape  # still written
        assert f"{element}: not in the specimen? Its net counts over the series" in caplog.text
    for element in ("In", "P", "Zn", "Se"):
        assert series.provenance["channels"][element]["element_absent"] is False
    write_extracted(series, summed, tmp_path)
    table = pd.read_csv(tmp_path / "windows.tsv", sep="\t")
    flagged = set(table.loc[table["element_absent"], "element"])
    assert flagged == {"U", "Pb"}
