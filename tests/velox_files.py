"""Small Velox files with a known stage tilt, beam energy and detectors, for the tests of
headers, tilt ordering and the checks before any job."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edxtomo.extract import line_energy_keV
from edxtomo.simulate.velox import VeloxSettings, XrayEvents, write_velox_emd

SHAPE = (4, 5)
N_CHANNELS, DISPERSION_EV = 512, 20.0
ACQUISITION_ORDER = np.arange(-60.0, 61.0, 10.0)  # t1 ... t13


def small_velox(path: Path, tilt_deg: float | None, *, index: int = 0,
                beam_kev: float = 300.0, n_detectors: int = 1, seed: int = 0) -> Path:
    """A small Velox file: Zn Ka counts on a flat continuum, a HAADF image equal to
    ``index`` (to recognise the file in a series)."""
    rng = np.random.default_rng(seed)
    zn = line_energy_keV("Zn_Ka") * 1000 / DISPERSION_EV
    channel = np.concatenate([np.rint(rng.normal(zn, 3.0, 300)), rng.integers(30, 500, 300)])
    n = channel.size
    events = XrayEvents(np.zeros(n, int), rng.integers(0, SHAPE[0], n),
                        rng.integers(0, SHAPE[1], n), channel.astype(int),
                        rng.integers(0, n_detectors, n))
    settings = VeloxSettings(pixel_size_nm=0.5, n_channels=N_CHANNELS,
                             dispersion_ev=DISPERSION_EV, energy_offset_ev=0.0,
                             beam_energy_kev=beam_kev, tilt_deg=tilt_deg, elements=("Zn",),
                             n_detectors=n_detectors)
    return write_velox_emd(path, events, {"HAADF": np.full(SHAPE, index, np.float32)},
                           settings, uuid_seed=seed)
