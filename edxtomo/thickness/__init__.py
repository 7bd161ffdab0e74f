"""Spherical shell-thickness maps of one particle, their equal-area statistics, and the tables.

Rays leave the particle's centre in every direction of a (theta, phi) grid; each element's
volume is sampled along every ray, and the element is present where it exceeds a threshold
(half of its level in the particle by default). Statistics weight each direction by its
solid angle.

- :mod:`~edxtomo.thickness.sphere`: the grid of directions, solid-angle weights, weighted
  quantiles.
- :mod:`~edxtomo.thickness.rays`: :func:`shell_thickness`, thickness and radii along each ray
  (:class:`ShellMaps`).
- :mod:`~edxtomo.thickness.profile_fit`: a blurred shell fitted to each ray's profile (the
  ``profile_fit`` reading: radii free of the blur and of a thin shell's lost contrast).
- :mod:`~edxtomo.thickness.alignment`: the mean profile with each ray shifted onto the
  shell's radius in its direction (the ``aligned_profile`` level: no smear of a shell whose
  radius varies with direction).
- :mod:`~edxtomo.thickness.equal_area`: :func:`shell_statistics`, the sinusoidal projection
  and the histogram of a map.
- :mod:`~edxtomo.thickness.intervals`: jackknife intervals of the statistics from count-split
  replicates (:func:`add_intervals`).
- :mod:`~edxtomo.thickness.table`: one row per particle and element
  (:func:`particle_thickness_table`), the stacked maps, per-sample summaries.
"""

from edxtomo.thickness.equal_area import (
    THICKNESS_COLUMNS,
    shell_statistics,
    sinusoidal_projection,
    thickness_histogram,
)
from edxtomo.thickness.intervals import (
    INTERVAL_COLUMNS,
    INTERVAL_METRICS,
    add_intervals,
    jackknife_interval,
    jackknife_se,
)
from edxtomo.thickness.rays import ShellMaps, shell_thickness
from edxtomo.thickness.sphere import (
    ray_directions,
    ray_step_deg,
    solid_angle_weights,
    sphere_grid,
    weighted_quantile,
)
from edxtomo.thickness.table import (
    FLAG_ELEMENT_ABSENT,
    FLAG_NO_PARTICLES,
    FLAG_OK,
    FLAG_TOUCHES_BORDER,
    ROW_COLUMNS,
    SUMMARY_METRICS,
    particle_center,
    particle_shell_maps,
    particle_thickness_table,
    shared_blur_vox,
    stack_shell_maps,
    summarize_samples,
)

__all__ = [
    "FLAG_ELEMENT_ABSENT",
    "FLAG_NO_PARTICLES",
    "FLAG_OK",
    "FLAG_TOUCHES_BORDER",
    "INTERVAL_COLUMNS",
    "INTERVAL_METRICS",
    "ROW_COLUMNS",
    "SUMMARY_METRICS",
    "THICKNESS_COLUMNS",
    "ShellMaps",
    "add_intervals",
    "jackknife_interval",
    "jackknife_se",
    "particle_center",
    "particle_shell_maps",
    "particle_thickness_table",
    "ray_directions",
    "ray_step_deg",
    "shell_statistics",
    "shared_blur_vox",
    "shell_thickness",
    "sinusoidal_projection",
    "solid_angle_weights",
    "sphere_grid",
    "stack_shell_maps",
    "summarize_samples",
    "thickness_histogram",
    "weighted_quantile",
]
