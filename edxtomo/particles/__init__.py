"""The analyze stage's first half: a reconstructed specimen segmented into particles.

- :mod:`~edxtomo.particles.segment`: the segmentation signal, its threshold, the watershed
  that splits touching particles, and :func:`segment_particles`, which keeps only the
  objects that stand above the noise.
- :mod:`~edxtomo.particles.noise`: the noise of the signal (:func:`background_noise`) and
  each object's significance against it (:func:`object_significance`, with the test and
  its threshold :data:`SIGNIFICANCE_SIGMA`).
- :mod:`~edxtomo.particles.geometry`: the particle table (:data:`PARTICLE_COLUMNS`),
  sphericity, and each particle's region for the shell measurements.
"""

from edxtomo.particles.geometry import (
    PARTICLE_CENTER,
    PARTICLE_COLUMNS,
    empty_particle_table,
    particle_regions,
    particle_table,
    sphericity,
)
from edxtomo.particles.noise import (
    SIGNIFICANCE_SIGMA,
    BackgroundNoise,
    background_noise,
    object_significance,
)
from edxtomo.particles.segment import (
    THRESHOLD_METHODS,
    Segmentation,
    load_specimen,
    segment_particles,
    segmentation_signal,
    threshold_value,
)

__all__ = [
    "PARTICLE_CENTER",
    "PARTICLE_COLUMNS",
    "SIGNIFICANCE_SIGMA",
    "THRESHOLD_METHODS",
    "BackgroundNoise",
    "Segmentation",
    "background_noise",
    "empty_particle_table",
    "load_specimen",
    "object_significance",
    "particle_regions",
    "particle_table",
    "segment_particles",
    "segmentation_signal",
    "sphericity",
    "threshold_value",
]
