"""Simulated STEM-EDX tilt series of core-shell nanocrystals, written as Velox EMD files.

- :mod:`~edxtomo.simulate.phantoms`: quantum dots with direction-dependent shells and
  missing patches, Au nanorods, their voxelisation and the true shell thickness.
- :mod:`~edxtomo.simulate.placement`: the particles of a preset drawn and placed in the
  field.
- :mod:`~edxtomo.simulate.acquisition`: X-ray lines, detector response, Poisson counts,
  HAADF, bremsstrahlung and stage misalignment.
- :mod:`~edxtomo.simulate.velox`: the Velox EMD writer.
- :mod:`~edxtomo.simulate.series`: a whole tilt series from a preset, with the ground truth.
- :mod:`~edxtomo.simulate.counts`: count maps of a preset at a chosen dose (the plan).
- :mod:`~edxtomo.simulate.export`: float maps as other software exports them.
"""

from edxtomo.simulate.acquisition import Acquisition, apply_misalignment, xray_lines
from edxtomo.simulate.phantoms import (
    direction_zyx,
    number_densities,
    true_shell_radii,
    true_shell_thickness,
    voxelize,
)
from edxtomo.simulate.placement import build_specimen
from edxtomo.simulate.series import load_preset, simulate_acquisition, tilt_file_name
from edxtomo.simulate.velox import VeloxSettings, XrayEvents, write_velox_emd

__all__ = [
    "Acquisition",
    "VeloxSettings",
    "XrayEvents",
    "apply_misalignment",
    "build_specimen",
    "direction_zyx",
    "load_preset",
    "number_densities",
    "simulate_acquisition",
    "tilt_file_name",
    "true_shell_radii",
    "true_shell_thickness",
    "voxelize",
    "write_velox_emd",
    "xray_lines",
]
