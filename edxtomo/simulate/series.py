"""Simulate a whole tilt series from a specimen preset: Velox files plus the ground truth.

Output of :func:`simulate_acquisition` in ``out_dir``::

    tilt_000.emd ... tilt_{n-1}.emd   one Velox file per tilt, ascending angle
    truth/{element}.tif (+ .hspy)     number density volumes, atoms/nm^3, (nz, ny, nx)
    truth/HAADF.tif (+ .hspy)         sum_e Z_e^1.7 * density, the HAADF contrast per voxel
    truth/particles.json              every particle (see edxtomo.simulate.phantoms)
    truth/drift.tsv                   the true misalignment, transforms.tsv columns
    truth/expected_counts.npz         noise-free expectations per tilt, after misalignment
    truth/acquisition.json            X-ray lines, settings and the counts actually drawn
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

import edxtomo
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import atomic_path, write_volume
from edxtomo.simulate.acquisition import (
    HAADF_Z_EXPONENT,
    Acquisition,
    apply_misalignment,
    atomic_number,
    bremsstrahlung_spectrum,
    draw_drift,
    draw_xray_events,
    expected_bremsstrahlung,
    expected_haadf,
    expected_line_counts,
    xray_lines,
)
from edxtomo.simulate.phantoms import particle_elements, voxelize
from edxtomo.simulate.placement import build_specimen
from edxtomo.simulate.velox import VeloxSettings, write_velox_emd

log = logging.getLogger(__name__)

TRUTH_DIR = "truth"
ANGLE_CONVENTION = (
    "direction (z, y, x) = (sin theta, cos theta sin phi, cos theta cos phi); theta is the "
    "latitude from the x-y plane towards +z, phi the azimuth from +x towards +y, in degrees"
)

# Allowed keys per block of a preset (None: the value is not a mapping of known keys).
_SPEC_KEYS: dict[str, Any] = {
    "description": None, "n_tilts": None, "tilt_range_deg": None, "angles_deg": None,
    "voxel_size_nm": None, "image_shape_px": None, "volume_depth_px": None,
    "supersample": None, "elements": None,
    "specimen": {"kind", "count", "touching_pairs", "z_spread_nm", "margin_nm", "core",
                 "shells", "material", "length_nm", "radius_nm", "axis_out_of_plane_deg"},
    "acquisition": None,  # checked by Acquisition.from_spec
    "haadf": {"electrons_per_pixel", "cross_section_barn", "background_electrons_per_pixel"},
    "misalignment": {"shift_max_px", "axis_rotation_deg", "axis_offset_px"},
    "output": {"compression"},
}
_REQUIRED = ("n_tilts", "voxel_size_nm", "image_shape_px", "specimen", "acquisition", "haadf")


def tilt_file_name(index: int) -> str:
    """Name of the Velox file of the ``index``-th tilt (ascending angle)."""
    return f"tilt_{index:03d}.emd"


def _check_spec(spec: Mapping[str, Any]) -> None:
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise EdxtomoInputError(
            f"simulation preset: unknown key(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(_SPEC_KEYS)}"
        )
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise EdxtomoInputError(f"simulation preset: missing key(s) {', '.join(missing)}")
    for key in ("n_tilts", "voxel_size_nm", "volume_depth_px", "supersample"):
        value = spec.get(key)
        if value is None and key in ("volume_depth_px", "supersample"):
            continue  # optional: default nx and 3
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise EdxtomoInputError(f"simulation preset: {key} must be positive, got {value!r}")
    shape = spec["image_shape_px"]
    if (not isinstance(shape, list | tuple) or len(shape) != 2
            or not all(isinstance(n, int) and n > 0 for n in shape)):
        raise EdxtomoInputError(
            f"simulation preset: image_shape_px must be [ny, nx] in pixels, got {shape!r}"
        )
    for block, allowed in _SPEC_KEYS.items():
        if allowed is None or block not in spec:
            continue
        if not isinstance(spec[block], Mapping):
            raise EdxtomoInputError(f"simulation preset: {block} must be a mapping")
        extra = sorted(set(spec[block]) - allowed)
        if extra:
            raise EdxtomoInputError(
                f"simulation preset: unknown key(s) {', '.join(f'{block}.{k}' for k in extra)}"
                f"; allowed: {', '.join(sorted(allowed))}"
            )


def tilt_angles(spec: Mapping[str, Any]) -> np.ndarray:
    """The preset's tilt angles in degrees, ascending: ``angles_deg`` or ``n_tilts`` evenly
    spaced over ``tilt_range_deg`` (inclusive)."""
    n_tilts = int(spec["n_tilts"])
    if "angles_deg" in spec:
        angles = np.sort(np.asarray(spec["angles_deg"], dtype=float))
        if angles.size != n_tilts:
            raise EdxtomoInputError(
                f"simulation preset: angles_deg has {angles.size} angles but n_tilts is {n_tilts}"
            )
    else:
        lo, hi = spec.get("tilt_range_deg", (-60.0, 60.0))
        angles = np.linspace(float(lo), float(hi), n_tilts)
    if n_tilts < 1 or np.unique(angles).size != n_tilts:
        raise EdxtomoInputError(f"simulation preset: tilt angles must be distinct, got {angles}")
    return angles


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``numpy.savez_compressed`` with fixed zip timestamps, so the bytes are reproducible."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            archive.writestr(info, buffer.getvalue())


def _write_json(path: Path, document: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")


def _write_truth_table(path: Path, angles_deg: np.ndarray, drift: np.ndarray,
                       misalignment: Mapping[str, float]) -> None:
    table = pd.DataFrame({
        "angle_deg": angles_deg,
        "shift_x_px": drift[:, 0],
        "shift_y_px": drift[:, 1],
        "axis_rotation_deg": float(misalignment.get("axis_rotation_deg", 0.0)),
        "axis_offset_px": float(misalignment.get("axis_offset_px", 0.0)),
        "correlation": 1.0,  # the exact transform
        "registered": True,
    })
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.9g")


def simulate_acquisition(spec: Mapping[str, Any], out_dir: str | os.PathLike,
                         seed: int) -> list[Path]:
    """Simulate a STEM-EDX tilt series of a specimen preset and write it as Velox files.

    Parameters
    ----------
    spec : mapping
        The parsed preset YAML (``resources/specimens/*.yaml`` documents every key and unit).
    out_dir : path-like
        Receives ``tilt_{i:03d}.emd`` (ascending angle) and ``truth/`` (see the module
        docstring).
    seed : int
        Seeds every random step; the same seed gives the same bytes in every file except
        the ``.hspy`` copies of the truth volumes (HyperSpy stamps them with the save time).

    Returns
    -------
    list of Path
        The ``.emd`` files, in tilt order.
    """
    _check_spec(spec)
    out_dir = Path(out_dir)
    angles = tilt_angles(spec)
    voxel = float(spec["voxel_size_nm"])
    ny, nx = (int(n) for n in spec["image_shape_px"])
    volume_shape = (int(spec.get("volume_depth_px") or nx), ny, nx)
    acq = Acquisition.from_spec(spec["acquisition"])
    haadf_spec = spec["haadf"]
    misalignment = dict(spec.get("misalignment", {}))
    specimen_seed, drift_seed, counts_seed, uuid_seed = np.random.SeedSequence(seed).spawn(4)

    particles = build_specimen(spec["specimen"], volume_shape, voxel,
                               float(np.abs(angles).max()), np.random.default_rng(specimen_seed))
    elements = particle_elements(particles)
    selection = list(spec.get("elements") or elements)
    lines = xray_lines(elements, acq)
    densities = voxelize(particles, volume_shape, voxel, int(spec.get("supersample") or 3))
    haadf_volume = sum(atomic_number(el) ** HAADF_Z_EXPONENT * densities[el] for el in elements)

    from edxtomo.tomo import project  # CPU: the same bytes on every machine

    ideal = project(np.stack([densities[el] for el in elements]), angles, device="cpu") * voxel
    drift = draw_drift(len(angles), float(misalignment.get("shift_max_px", 0.0)),
                       np.random.default_rng(drift_seed))
    expected: dict[str, np.ndarray] = {
        key: np.zeros((len(angles), ny, nx), dtype=np.float32)
        for key in [*elements, "background", "HAADF"]
    }
    drawn = np.zeros((len(angles), len(lines) + 2), dtype=np.int64)
    tilt_seeds = counts_seed.spawn(len(angles))
    file_seeds = uuid_seed.generate_state(len(angles))
    paths = []
    for i in tqdm(range(len(angles)), desc="simulate tilts", unit="tilt"):
        rng = np.random.default_rng(tilt_seeds[i])
        moved = apply_misalignment(
            ideal[:, i], drift[i, 0], drift[i, 1],
            float(misalignment.get("axis_rotation_deg", 0.0)),
            float(misalignment.get("axis_offset_px", 0.0)),
        )
        atoms = dict(zip(elements, moved, strict=True))
        per_line = expected_line_counts(atoms, lines, acq.dose_e_per_nm2, voxel)
        background = expected_bremsstrahlung(atoms, acq, voxel)
        haadf_mean = expected_haadf(
            atoms, float(haadf_spec["electrons_per_pixel"]),
            float(haadf_spec["cross_section_barn"]),
            float(haadf_spec.get("background_electrons_per_pixel", 0.0)),
        )
        events, source = draw_xray_events(per_line, lines, background, acq, rng)
        haadf = rng.poisson(haadf_mean).astype(np.float32)
        for el in elements:
            expected[el][i] = sum(per_line[ln.name] for ln in lines if ln.element == el)
        expected["background"][i] = background
        expected["HAADF"][i] = haadf_mean
        drawn[i] = np.bincount(source, minlength=len(lines) + 2)

        settings = VeloxSettings(
            pixel_size_nm=voxel, n_channels=acq.n_channels, dispersion_ev=acq.dispersion_ev,
            energy_offset_ev=acq.energy_offset_ev, beam_energy_kev=acq.beam_energy_kev,
            tilt_deg=float(angles[i]), elements=selection, n_frames=acq.n_frames,
            n_detectors=acq.n_detectors,
            extra={"edxtomo.seed": seed, "edxtomo.version": edxtomo.__version__},
        )
        paths.append(write_velox_emd(
            out_dir / tilt_file_name(i), events, {"HAADF": haadf}, settings,
            uuid_seed=int(file_seeds[i]), compression=spec.get("output", {}).get("compression"),
        ))

    per_element = {el: drawn[:, [k for k, ln in enumerate(lines) if ln.element == el]].sum(1)
                   for el in elements}
    for el, counts in per_element.items():
        log.info("%s: %.0f counts per tilt (min %d, max %d)", el, counts.mean(), counts.min(),
                 counts.max())
    _write_truth(out_dir / TRUTH_DIR, spec, seed, particles, densities, haadf_volume, voxel,
                 angles, drift, misalignment, expected, acq, lines, per_element, drawn)
    return paths


def _write_truth(truth: Path, spec, seed, particles, densities, haadf_volume, voxel, angles,
                 drift, misalignment, expected, acq: Acquisition, lines, per_element,
                 drawn) -> None:
    for el, volume in densities.items():
        write_volume(truth / f"{el}.tif", volume, voxel, el,
                     {"quantity": "number density", "units": "atoms/nm^3"})
    write_volume(truth / "HAADF.tif", haadf_volume, voxel, "HAADF",
                 {"quantity": "sum over elements of Z^1.7 x number density",
                  "units": "atoms/nm^3"})
    _write_json(truth / "particles.json", {
        "voxel_size_nm": voxel,
        "volume_shape": list(next(iter(densities.values())).shape),
        "angle_convention": ANGLE_CONVENTION,
        "center_nm_origin": "volume centre; center_vox are voxel indices (z, y, x)",
        "particles": particles,
    })
    _write_truth_table(truth / "drift.tsv", angles, drift, misalignment)
    _write_npz(truth / "expected_counts.npz", {
        "angles_deg": angles,
        "energy_kev": acq.energy_axis.centers_kev,
        "background_spectrum": bremsstrahlung_spectrum(acq) / bremsstrahlung_spectrum(acq).sum(),
        **expected,
    })
    detected = {ln.name: ln.cross_section_barn * ln.fraction_inside for ln in lines}
    share = {ln.name: detected[ln.name] / sum(detected[m.name] for m in lines
                                              if m.element == ln.element) for ln in lines}
    _write_json(truth / "acquisition.json", {
        "seed": seed,
        "pixel_size_nm": voxel,
        "angles_deg": angles.tolist(),
        "acquisition": acq.as_dict(),
        "haadf": dict(spec["haadf"]),
        "misalignment": dict(misalignment),
        "lines": [{"name": ln.name, "element": ln.element, "line": ln.line,
                   "energy_kev": ln.energy_kev, "fwhm_kev": ln.fwhm_kev, "weight": ln.weight,
                   "cross_section_barn": ln.cross_section_barn,
                   "fraction_inside": ln.fraction_inside,
                   "fraction_of_element": share[ln.name]} for ln in lines],
        "counts_per_element": {el: c.tolist() for el, c in per_element.items()},
        "counts_per_line": {ln.name: drawn[:, k].tolist() for k, ln in enumerate(lines)},
        "counts_background": drawn[:, len(lines)].tolist(),
        "counts_zero_peak": drawn[:, len(lines) + 1].tolist(),
        "expected_counts_keys": "per element: counts of all its lines (a line's share is "
                                "lines[].fraction_of_element); background: bremsstrahlung "
                                "over all channels; HAADF: electrons",
    })


def load_preset(path: str | os.PathLike) -> dict[str, Any]:
    """Read a specimen preset YAML file."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EdxtomoInputError(f"{path}: cannot read the simulation preset ({exc})") from exc
    if not isinstance(spec, dict):
        raise EdxtomoInputError(f"{path}: a simulation preset must be a YAML mapping")
    return spec

