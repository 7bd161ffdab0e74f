"""Simulator: phantoms and their truth, acquisition physics, and whole simulated series."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, special

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import read_volume
from edxtomo.simulate import (
    Acquisition,
    apply_misalignment,
    build_specimen,
    direction_zyx,
    load_preset,
    number_densities,
    simulate_acquisition,
    true_shell_radii,
    true_shell_thickness,
    voxelize,
    xray_lines,
)
from edxtomo.simulate.acquisition import detector_efficiency
from edxtomo.simulate.phantoms import outer_radius, random_harmonic_thickness
from edxtomo.tomo import project

SPECIMENS = Path(__file__).resolve().parents[1] / "resources" / "specimens"
AVOGADRO = 6.02214076e23


def _small_spec() -> dict:
    """The demo preset shrunk to a fast, non-square field with stronger misalignment."""
    spec = load_preset(SPECIMENS / "qd_demo.yaml")
    spec.update(n_tilts=5, tilt_range_deg=[-60.0, 60.0], voxel_size_nm=0.8,
                image_shape_px=[40, 48], volume_depth_px=40, supersample=2)
    spec["specimen"].update(count=2, touching_pairs=1, margin_nm=2.0)
    spec["acquisition"].update(n_channels=700, dispersion_ev=20.0, n_frames=3, n_detectors=2,
                               dose_e_per_nm2=3e8, zero_peak_counts_per_pixel=0.02)
    spec["misalignment"] = {"shift_max_px": 2.0, "axis_rotation_deg": 6.0,
                            "axis_offset_px": 1.5}
    return spec


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    spec = _small_spec()
    paths = simulate_acquisition(spec, out, seed=11)
    truth = out / "truth"
    return {
        "spec": spec, "paths": paths, "dir": out,
        "expected": dict(np.load(truth / "expected_counts.npz")),
        "acq": json.loads((truth / "acquisition.json").read_text()),
        "drift": pd.read_csv(truth / "drift.tsv", sep="\t"),
        "particles": json.loads((truth / "particles.json").read_text()),
    }


# --------------------------------------------------------------------------------------
# Phantoms
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("material, grams_per_cm3", [
    ("InP", 4.81), ("ZnSe", 5.27), ("ZnS", 4.09), ("Au", 19.32),
])
def test_number_densities_match_bulk_densities(material, grams_per_cm3):
    from exspy.material import elements as database

    densities = number_densities(material)
    grams = sum(n * 1e21 * database[el]["General_properties"]["atomic_weight"] / AVOGADRO
                for el, n in densities.items())  # atoms/nm^3 -> atoms/cm^3 is x 1e21
    # Handbook densities and X-ray lattice constants agree to better than 1 %.
    assert grams == pytest.approx(grams_per_cm3, rel=0.01)


def _sphere_grid(step_deg: float = 1.0):
    theta = np.arange(-90 + step_deg / 2, 90, step_deg)
    phi = np.arange(0, 360, step_deg)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    weights = np.cos(np.deg2rad(t))
    return t, p, weights / weights.sum()


def test_harmonic_thickness_mean_and_bound():
    rng = np.random.default_rng(0)
    params = random_harmonic_thickness(2.0, anisotropy=0.5, rng=rng)
    particle = {"kind": "core_shell", "layers": [
        {"material": "InP", "thickness": {"mean_nm": 1.0}},
        {"material": "ZnS", "thickness": params}]}
    t, p, w = _sphere_grid()
    thickness = true_shell_thickness(particle, "ZnS", t, p)
    # mean_nm is the exact area-weighted mean of a degree <= 2 harmonic expansion; the
    # midpoint rule on a 1-degree grid integrates it to ~1e-4 relative.
    assert (w * thickness).sum() == pytest.approx(2.0, rel=1e-3)
    assert np.abs(thickness - 2.0).max() <= 0.5 * 2.0 + 1e-12
    assert np.abs(thickness - 2.0).max() > 0.5 * 0.6 * 2.0 - 0.05  # the budget is used


def _hand_particle() -> dict:
    """Core 2 nm; ZnSe 1.5 nm thicker by 0.5 nm towards +z; ZnS 1 nm thicker by 0.4 nm
    towards +x, missing in a 20-degree cap around +y."""
    return {"id": 1, "kind": "core_shell", "layers": [
        {"material": "InP", "thickness": {"mean_nm": 2.0}, "missing_patches": []},
        {"material": "ZnSe", "thickness": {"mean_nm": 1.5, "dipole_nm": [0.5, 0.0, 0.0]},
         "missing_patches": []},
        {"material": "ZnS", "thickness": {"mean_nm": 1.0, "dipole_nm": [0.0, 0.0, 0.4]},
         "missing_patches": [{"direction_zyx": [0.0, 1.0, 0.0], "half_angle_deg": 20.0}]},
    ]}


def test_true_thickness_follows_the_angle_convention():
    particle = _hand_particle()
    # (theta, phi) = (90, *) is +z, (0, 0) is +x, (0, 90) is +y.
    assert true_shell_thickness(particle, "ZnSe", 90, 0) == pytest.approx(2.0)
    assert true_shell_thickness(particle, "ZnSe", -90, 0) == pytest.approx(1.0)
    assert true_shell_thickness(particle, "ZnS", 0, 0) == pytest.approx(1.4)
    assert true_shell_thickness(particle, "ZnS", 0, 180) == pytest.approx(0.6)
    assert true_shell_thickness(particle, "ZnS", 0, 90) == 0.0  # inside the patch
    assert true_shell_thickness(particle, "ZnS", 0, 90 + 25) == pytest.approx(  # outside it
        1.0 + 0.4 * np.cos(np.deg2rad(115)))
    # Elements: S is the ZnS layer, Zn spans ZnSe and ZnS, In is the core from radius 0.
    assert true_shell_thickness(particle, "S", 0, 0) == pytest.approx(1.4)
    np.testing.assert_allclose(true_shell_radii(particle, "Zn", 0, 0), (2.0, 4.9))
    np.testing.assert_allclose(true_shell_radii(particle, "In", 45, 10), (0.0, 2.0))
    with pytest.raises(EdxtomoInputError, match="has no layer 'Au'"):
        true_shell_thickness(particle, "Au", 0, 0)


def test_voxelized_shells_match_the_truth_along_rays():
    voxel = 0.3
    shape = (40, 44, 48)
    particle = _hand_particle()
    center_vox = np.array([19.3, 21.6, 23.8])  # off the voxel grid on purpose
    particle["center_vox"] = center_vox.tolist()
    densities = voxelize([particle], shape, voxel, supersample=3)
    rho_s = number_densities("ZnS")["S"]
    step = 0.02  # nm along the ray
    radius = np.arange(0, 7, step)
    for theta, phi in [(90, 0), (-90, 0), (0, 0), (0, 180), (0, 270), (35, 60), (-50, 225)]:
        n = direction_zyx(theta, phi)
        coords = center_vox[:, None] + n[:, None] * radius / voxel
        profile = ndimage.map_coordinates(densities["S"], coords, order=1)
        inside = radius[profile > rho_s / 2]
        inner, outer = true_shell_radii(particle, "S", theta, phi)
        # Partial-volume edges put the half-density crossing on the true interface up to
        # the sub-voxel sampling (voxel / 3) and the curvature of the surface within a
        # voxel: half a voxel bounds both.
        assert inside.min() == pytest.approx(inner, abs=voxel / 2)
        assert inside.max() == pytest.approx(outer, abs=voxel / 2)


def test_voxelized_core_holds_the_right_number_of_atoms():
    voxel, s = 0.4, 3
    particle = _hand_particle()
    particle["center_vox"] = [15.2, 15.7, 16.1]
    densities = voxelize([particle], (32, 32, 32), voxel, supersample=s)
    atoms = densities["In"].sum() * voxel**3
    r = 2.0
    exact = number_densities("InP")["In"] * 4 / 3 * np.pi * r**3
    # A misclassified sub-voxel lies within half its diagonal of the surface, so the
    # volume error is at most area * sqrt(3)/2 * voxel / s.
    bound = number_densities("InP")["In"] * 4 * np.pi * r**2 * np.sqrt(3) / 2 * voxel / s
    assert abs(atoms - exact) <= bound
    assert abs(atoms - exact) < 0.02 * exact


def test_nanorod_shape_and_atoms():
    voxel, s = 0.5, 3
    rod = {"id": 1, "kind": "spherocylinder", "material": "Au", "length_nm": 10.0,
           "radius_nm": 3.0, "axis_zyx": direction_zyx(0, 30).tolist(),
           "center_vox": [15.3, 15.6, 15.9]}
    axis = np.asarray(rod["axis_zyx"])
    side = direction_zyx(90, 0)  # +z is perpendicular to an in-plane axis
    np.testing.assert_allclose(outer_radius(rod, np.stack([axis, -axis, side])), [8, 8, 3])
    atoms = voxelize([rod], (32, 32, 32), voxel, supersample=s)["Au"].sum() * voxel**3
    r, length = 3.0, 10.0
    rho = number_densities("Au")["Au"]
    exact = rho * (np.pi * r**2 * length + 4 / 3 * np.pi * r**3)
    area = 2 * np.pi * r * length + 4 * np.pi * r**2
    assert abs(atoms - exact) <= rho * area * np.sqrt(3) / 2 * voxel / s  # as for the core


def test_specimen_touching_pair_and_field_of_view():
    spec = load_preset(SPECIMENS / "qd_demo.yaml")
    shape = (64, 64, 64)
    voxel = spec["voxel_size_nm"]
    particles = build_specimen(spec["specimen"], shape, voxel, 60.0,
                               np.random.default_rng(5))
    assert [p["touching"] for p in particles] == [[2], [1], [], []]
    assert all(any(layer["missing_patches"] for layer in p["layers"]) for p in particles)
    zn = voxelize(particles, shape, voxel, supersample=2)["Zn"]
    _, n_components = ndimage.label(zn > 0, structure=np.ones((3, 3, 3)))
    assert n_components == 3  # the touching pair is one connected object
    # Nothing leaves the field at any tilt: the projection's border stays empty.
    margin = int(spec["specimen"]["margin_nm"] / voxel)
    proj = project(zn, [-60.0, 0.0, 60.0], device="cpu")
    assert proj[:, :, :margin].max() == 0 and proj[:, :, -margin:].max() == 0
    assert proj[:, :margin].max() == 0 and proj[:, -margin:].max() == 0


# --------------------------------------------------------------------------------------
# Acquisition physics
# --------------------------------------------------------------------------------------

def test_detector_efficiency():
    eff = detector_efficiency([0.2, 1.0, 5.0, 30.0], 0.4, 17.0)
    assert eff[0] < 0.5 < eff[1] and eff[2] > 0.99 and eff[3] < 0.5


def test_xray_lines_come_from_exspy():
    acq = Acquisition.from_spec(load_preset(SPECIMENS / "qd_demo.yaml")["acquisition"])
    lines = {line.name: line for line in xray_lines(["S", "Se"], acq)}
    assert lines["S_Ka"].energy_kev == pytest.approx(2.3072)
    assert lines["S_Kb"].weight == pytest.approx(0.06525)
    assert lines["S_Kb"].cross_section_barn / lines["S_Ka"].cross_section_barn == pytest.approx(
        0.06525 * detector_efficiency(2.46427, 0.4, 17.0) / detector_efficiency(2.3072, 0.4, 17.0))
    assert {"Se_Ka", "Se_La"} <= set(lines)
    with pytest.raises(EdxtomoInputError, match="no entry for element 'Au'"):
        xray_lines(["Au"], acq)
    far = Acquisition.from_spec({**acq.as_dict(), "xray_cross_sections_barn": {"In": {"K": 1}}})
    with pytest.raises(EdxtomoInputError, match="'In'.*falls in the spectrum range"):
        xray_lines(["In"], far)


def test_misalignment_moves_features_as_the_contract_says():
    ny, nx = 48, 56
    y, x = np.mgrid[:ny, :nx]
    r = np.array([5.0, -3.0])  # (x_c, y_c) of a blob in the ideal image
    blob = np.exp(-((x - (nx - 1) / 2 - r[0]) ** 2 + (y - (ny - 1) / 2 - r[1]) ** 2) / 8.0)
    shift, alpha, offset = np.array([2.5, -1.5]), 10.0, 4.0
    moved = apply_misalignment(blob, *shift, alpha, offset)
    a = np.deg2rad(alpha)
    expected = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ (
        r + [offset, 0.0]) + shift
    cy, cx = ndimage.center_of_mass(moved)
    # Cubic resampling of a 2-px Gaussian moves its centroid by far less than 0.01 px.
    np.testing.assert_allclose([cx - (nx - 1) / 2, cy - (ny - 1) / 2], expected, atol=0.01)
    assert moved.sum() == pytest.approx(blob.sum(), rel=1e-4)


# --------------------------------------------------------------------------------------
# Whole simulated series
# --------------------------------------------------------------------------------------

def test_series_files_and_metadata(series):
    import hyperspy.api as hs

    spec = series["spec"]
    angles = np.linspace(-60, 60, spec["n_tilts"])
    assert [p.name for p in series["paths"]] == [f"tilt_{i:03d}.emd" for i in range(5)]
    for path, angle in zip(series["paths"], angles, strict=True):
        si = hs.load(path, select_type="spectrum_image", sum_frames=False)
        assert si.data.shape == (3, 40, 48, 700)
        tem = si.metadata.Acquisition_instrument.TEM
        assert tem.Stage.tilt_alpha == pytest.approx(angle, abs=1e-3)
        assert tem.beam_energy == spec["acquisition"]["beam_energy_kev"]
        assert list(si.metadata.Sample.elements) == spec["elements"]
        for name in ("x", "y"):
            assert si.axes_manager[name].scale == pytest.approx(0.8, rel=1e-12)
        haadf = hs.load(path, select_type="images")
        assert haadf.metadata.General.title == "HAADF" and haadf.data.shape == (40, 48)
    truth = series["dir"] / "truth"
    for el in ["In", "P", "Zn", "Se", "S", "HAADF"]:
        volume, voxel = read_volume(truth / f"{el}.tif")
        assert volume.shape == (40, 40, 48) and voxel == pytest.approx(0.8)
    np.testing.assert_allclose(series["drift"]["angle_deg"], angles)


def _channel_fractions(energy_kev, dispersion_kev, centre_kev, sigma_kev):
    """Probability that a Gaussian count lands in each channel (edges at +-dispersion/2)."""
    edges = np.append(energy_kev - dispersion_kev / 2, energy_kev[-1] + dispersion_kev / 2)
    cdf = 0.5 * (1 + special.erf((edges - centre_kev) / (np.sqrt(2) * sigma_kev)))
    return np.diff(cdf)


@pytest.fixture(scope="module")
def spectra(series):
    """Measured and expected summed spectra per tilt, (n_tilt, n_channels), and the axis.

    The expectation is built here from the truth files alone: each line's expected counts
    (element total x its share), spread over the channels of the file's own energy axis by
    a Gaussian of the line's FWHM, plus the bremsstrahlung.
    """
    import hyperspy.api as hs

    measured, energy = [], None
    for path in series["paths"]:
        si = hs.load(path, select_type="spectrum_image")
        measured.append(np.asarray(si.data).sum(axis=(0, 1)))
        energy = si.axes_manager.signal_axes[0]
    energy_kev = energy.axis
    expected = np.zeros((len(measured), energy_kev.size))
    for line in series["acq"]["lines"]:
        total = series["expected"][line["element"]].sum(axis=(1, 2)) * line["fraction_of_element"]
        shape = _channel_fractions(energy_kev, energy.scale, line["energy_kev"],
                                   line["fwhm_kev"] / (2 * np.sqrt(2 * np.log(2))))
        expected += total[:, None] * shape / line["fraction_inside"]
    expected += (series["expected"]["background"].sum(axis=(1, 2))[:, None]
                 * series["expected"]["background_spectrum"])
    return np.array(measured), expected, energy_kev


@pytest.mark.parametrize("line", ["In_La", "P_Ka", "Zn_Ka", "Zn_La", "Se_Ka", "Se_La", "S_Ka"])
def test_counts_match_the_dose(series, spectra, line):
    measured, expected, energy_kev = spectra
    props = next(ln for ln in series["acq"]["lines"] if ln["name"] == line)
    window = np.abs(energy_kev - props["energy_kev"]) <= props["fwhm_kev"]
    n, mu = measured[:, window].sum(axis=1), expected[:, window].sum(axis=1)
    # Window counts are Poisson(mu) per tilt. |z| < 4.5 has a false-alarm rate of 7e-6 per
    # test, under 1e-3 over all tilts and lines together.
    z = (n - mu) / np.sqrt(mu)
    assert np.abs(z).max() < 4.5, (n, mu)
    assert np.abs(z.sum() / np.sqrt(len(z))) < 4.5


def test_dose_calibration_is_physical(series):
    """Counts per tilt = dose x cross-section x efficiency x atoms, whatever the pixel size."""
    acq, voxel = series["acq"], series["spec"]["voxel_size_nm"]
    for el in ["Zn", "S"]:
        density, _ = read_volume(series["dir"] / "truth" / f"{el}.tif")
        atoms = density.astype(np.float64).sum() * voxel**3
        sigma_barn = sum(ln["cross_section_barn"] * ln["fraction_inside"]
                         for ln in acq["lines"] if ln["element"] == el)
        counts = series["expected"][el].sum(axis=(1, 2))
        # Projection conserves the atoms exactly and nothing leaves the field; the cubic
        # resampling of the misalignment conserves the sum of these smooth, well-sampled
        # images to far better than 1 %.
        np.testing.assert_allclose(
            counts, acq["acquisition"]["dose_e_per_nm2"] * sigma_barn * 1e-10 * atoms, rtol=0.01)


@pytest.mark.parametrize("line", ["Zn_Ka", "Se_Ka", "S_Ka", "Se_La"])
def test_lines_land_at_their_energy(series, spectra, line):
    measured, expected, energy_kev = spectra
    props = next(ln for ln in series["acq"]["lines"] if ln["name"] == line)
    sigma = props["fwhm_kev"] / (2 * np.sqrt(2 * np.log(2)))
    window = np.abs(energy_kev - props["energy_kev"]) <= 1.5 * sigma
    spectrum, model = measured.sum(axis=0)[window], expected.sum(axis=0)[window]
    e = energy_kev[window]
    centroid = (spectrum * e).sum() / spectrum.sum()
    model_centroid = (model * e).sum() / model.sum()
    dispersion = energy_kev[1] - energy_kev[0]
    # The model's centroid differs from the line energy only by the tails of neighbouring
    # lines and the background slope: a small fraction of a channel for these lines.
    assert abs(model_centroid - props["energy_kev"]) < 0.25 * dispersion
    # The measured centroid scatters by sd / sqrt(N) around the model's (5 sd bound).
    spread = np.sqrt((spectrum * (e - centroid) ** 2).sum() / spectrum.sum())
    assert abs(centroid - model_centroid) < 5 * spread / np.sqrt(spectrum.sum())


def test_drift_in_the_truth_matches_the_images(series):
    from skimage import transform

    drift = series["drift"]
    angles = drift["angle_deg"].to_numpy()
    truth = series["dir"] / "truth"
    haadf_ideal = project(read_volume(truth / "HAADF.tif")[0], angles, device="cpu")
    s_ideal = project(read_volume(truth / "S.tif")[0], angles, device="cpu")
    haadf = series["expected"]["HAADF"] - series["spec"]["haadf"]["background_electrons_per_pixel"]
    ny, nx = haadf.shape[1:]
    centre = np.array([(nx - 1) / 2, (ny - 1) / 2])
    rows, cols = np.mgrid[:ny, :nx]
    for i, row in drift.iterrows():
        a = np.deg2rad(row["axis_rotation_deg"])
        shift = np.array([row["shift_x_px"], row["shift_y_px"]])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        # Centroids: the ideal image's, mapped by the contract's model, is the measured one.
        cy, cx = ndimage.center_of_mass(haadf_ideal[i].astype(np.float64))
        predicted = rot @ (np.array([cx, cy]) - centre + [row["axis_offset_px"], 0]) + shift
        my, mx = ndimage.center_of_mass(haadf[i].astype(np.float64))
        # Resampling moves the centroid of these smooth images by far less than 0.02 px.
        np.testing.assert_allclose(np.array([mx, my]) - centre, predicted, atol=0.02)
        # Every pixel: scikit-image's affine transform, built from the table, gives the
        # sampling positions; the expected S counts are the ideal S projection resampled
        # there (cubic spline, clipped at 0) times the dose factor, to float32 rounding.
        forward = (transform.AffineTransform(translation=-centre)
                   + transform.AffineTransform(translation=(row["axis_offset_px"], 0))
                   + transform.AffineTransform(rotation=a)
                   + transform.AffineTransform(translation=centre + shift))
        source = forward.inverse(np.stack([cols.ravel(), rows.ravel()], axis=1))
        warped = np.maximum(ndimage.map_coordinates(
            s_ideal[i].astype(np.float64), [source[:, 1].reshape(ny, nx),
                                            source[:, 0].reshape(ny, nx)], order=3), 0)
        measured = series["expected"]["S"][i]
        scale = (warped * measured).sum() / (warped**2).sum()
        np.testing.assert_allclose(scale * warped, measured, rtol=0,
                                   atol=1e-4 * measured.max())


def test_same_seed_same_bytes(series, tmp_path):
    again = tmp_path / "again"
    simulate_acquisition(copy.deepcopy(series["spec"]), again, seed=11)
    files = sorted(p.relative_to(series["dir"]) for p in series["dir"].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    # HyperSpy stamps each .hspy file with its save time; the .tif twins carry the same data.
    compared = [f for f in files if f.suffix != ".hspy"]
    assert len(compared) == 5 + 10  # 5 tilts; 6 volumes, particles, drift, counts, acquisition
    for name in compared:
        assert (series["dir"] / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    simulate_acquisition(copy.deepcopy(series["spec"]), other, seed=12)
    assert (other / "tilt_000.emd").read_bytes() != (again / "tilt_000.emd").read_bytes()


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key.*colour"),
    ({"specimen": {"kind": "quantum_dots", "count": 2, "radius": 3}},
     "unknown key.*specimen.radius"),
    ({"angles_deg": [0.0, 10.0]}, "angles_deg has 2 angles but n_tilts is 5"),
    ({"acquisition": {"beam_energy_kev": 300}}, "acquisition: missing key"),
    ({"image_shape_px": [40]}, "image_shape_px must be"),
    ({"voxel_size_nm": "0.5"}, "voxel_size_nm must be positive"),
])
def test_bad_presets_are_rejected(tmp_path, change, message):
    spec = {**_small_spec(), **change}
    with pytest.raises(EdxtomoInputError, match=message):
        simulate_acquisition(spec, tmp_path, seed=0)
    assert not list(tmp_path.iterdir())


def test_acquisition_values_are_checked():
    good = load_preset(SPECIMENS / "qd_demo.yaml")["acquisition"]
    with pytest.raises(EdxtomoInputError, match="acquisition.n_frames must be an integer"):
        Acquisition.from_spec({**good, "n_frames": 2.5})
    with pytest.raises(EdxtomoInputError, match="acquisition.dose_e_per_nm2 must be a number"):
        Acquisition.from_spec({**good, "dose_e_per_nm2": "lots"})
    with pytest.raises(EdxtomoInputError, match="acquisition.dose_e_per_nm2 must be positive"):
        Acquisition.from_spec({**good, "dose_e_per_nm2": 0})
    with pytest.raises(EdxtomoInputError, match="unknown key.*dose_per_nm2"):
        Acquisition.from_spec({**good, "dose_per_nm2": 1})


def test_a_crowded_field_is_rejected(tmp_path):
    spec = _small_spec()
    spec["specimen"]["count"] = 12
    with pytest.raises(EdxtomoInputError, match="cannot place 12 particles"):
        simulate_acquisition(spec, tmp_path, seed=0)


@pytest.mark.parametrize("preset", [
    "qd_demo.yaml", pytest.param("au_rod.yaml", marks=pytest.mark.slow),
])
def test_presets_simulate(tmp_path, preset):
    spec = load_preset(SPECIMENS / preset)
    paths = simulate_acquisition(spec, tmp_path, seed=0)
    assert len(paths) == spec["n_tilts"]
    counts = json.loads((tmp_path / "truth" / "acquisition.json").read_text())
    for el, per_tilt in counts["counts_per_element"].items():
        if el in ("Zn", "Se", "S", "Au"):  # the real regime: hundreds to thousands per tilt
            assert 300 < np.mean(per_tilt) < 5000, el
